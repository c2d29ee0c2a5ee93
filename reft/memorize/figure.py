"""Plotly figure of a memorization sweep: recovered share vs N, one line per layer and variant.

>>> fig = capacity_figure(df)           # doctest: +SKIP
>>> fig.write_html("memorization.html")  # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd

DASHES = {"natural": "solid", "shuffled": "dash", "random": "dot"}


def capacity_figure(df: pd.DataFrame, title: str | None = None) -> "go.Figure":
    """Share of the target recited exactly (greedy) vs total target tokens (log2 axis).

    One line per (layer, variant, rank, kind, pairs); colour follows the layer, dash the variant.
    Hover shows steps, seconds and the exact prefix.
    """
    import plotly.graph_objects as go  # here, not at the top: reft.memorize must import without plotly (GPU machine)

    needed = {"total_tokens", "share", "layer", "variant"}
    if not needed <= set(df.columns):
        raise ValueError(f"the table lacks columns {sorted(needed - set(df.columns))}; give a memorize_sweep table")
    fig = go.Figure()
    keys = [k for k in ("layer", "variant", "rank", "kind", "n_pairs", "seed") if k in df.columns]
    multi = {k: df[k].nunique() > 1 for k in keys}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
    layers = sorted(df["layer"].unique())
    for values, part in df.groupby(keys, sort=True):
        spec = dict(zip(keys, values))
        part = part.sort_values("total_tokens")
        name = ", ".join(f"{k}={spec[k]}" for k in keys if k in ("layer", "variant") or multi[k])
        hover = [f"N={r.total_tokens}<br>exact prefix {r.exact_prefix}<br>{r.steps} steps, {r.seconds:.0f} s"
                 for r in part.itertuples()]
        fig.add_trace(go.Scatter(
            x=part["total_tokens"], y=part["share"], mode="lines+markers", name=name, text=hover,
            hovertemplate="%{text}<br>share %{y:.3f}<extra>" + name + "</extra>",
            line={"color": palette[layers.index(spec["layer"]) % len(palette)],
                  "dash": DASHES.get(spec["variant"], "solid")}))
    fig.update_layout(
        title=title or "Memorization: share of the target recited exactly by greedy decoding",
        xaxis={"title": "target tokens N (all pairs)", "type": "log", "dtick": 0.30103},  # log2 ticks
        yaxis={"title": "exact-match prefix / N", "range": [-0.02, 1.05]}, template="plotly_white")
    return fig
