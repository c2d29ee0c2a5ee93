"""Plotly figures of the sentiment study: direction similarity, recovery per layer, and the
per-token projection on a direction drawn over the text.

>>> import pandas as pd
>>> fig = recovery_figure(pd.DataFrame({"layer": [0, 2], "method": "mean_diff", "positions": "all",
...                                     "recovery": [0.9, 0.5]}))
>>> len(fig.data)
1
"""

from __future__ import annotations

import html
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def similarity_heatmap(cosines: pd.DataFrame, layers: Sequence[int] | None = None, max_panels: int = 6) -> go.Figure:
    """Cosine similarity between methods' directions, one heatmap panel per layer.

    ``cosines``: columns layer, a, b, cosine (from `fit_sentiment_directions`). At most
    ``max_panels`` layers, evenly spaced, unless ``layers`` names them.
    """
    missing = {"layer", "a", "b", "cosine"} - set(cosines.columns)
    if missing:
        raise ValueError(f"cosine table lacks columns {sorted(missing)}")
    available = sorted(cosines["layer"].unique())
    if layers is None:
        # prefer layers where every method (incl. DAS) was fit
        full = [layer for layer in available if cosines.loc[cosines.layer == layer, "a"].nunique()
                == cosines["a"].nunique()]
        pool = full or available
        step = max(1, len(pool) // max_panels + (len(pool) % max_panels > 0))
        layers = pool[::step][:max_panels]
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {layer}" for layer in layers],
                        horizontal_spacing=0.04)
    for col, layer in enumerate(layers, start=1):
        grid = cosines[cosines["layer"] == layer].pivot(index="a", columns="b", values="cosine")
        fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), zmin=-1, zmax=1,
                                 colorscale="RdBu", zmid=0, showscale=col == len(layers),
                                 texttemplate="%{z:.2f}", hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col)
    fig.update_layout(title="Cosine similarity between sentiment directions", template="plotly_white",
                      height=360, width=max(420, 300 * len(layers)))
    return fig


def recovery_figure(curve: pd.DataFrame, value: str = "recovery") -> go.Figure:
    """Logit-difference recovery (or ``value``) per layer, one line per method x position set."""
    if value not in curve.columns:
        raise ValueError(f"column {value!r} not in the patching table; columns: {list(curve.columns)}")
    fig = go.Figure()
    for (method, positions), part in curve.groupby(["method", "positions"], sort=False):
        part = part.sort_values("layer")
        fig.add_trace(go.Scatter(x=part["layer"], y=part[value], mode="lines+markers", name=f"{method} @ {positions}"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    fig.add_hline(y=0.0, line_color="gray")
    fig.update_layout(title=f"Directional patching: {value.replace('_', ' ')} per layer", xaxis_title="layer",
                      yaxis_title=value, template="plotly_white")
    return fig


def token_projection_figure(tokens: Sequence[str], values: Sequence[float], title: str = "") -> go.Figure:
    """The text with each token colored by its projection on the direction (red < 0 < blue).

    >>> token_projection_figure(["I", " loved", " it"], [0.1, 2.0, 0.5]).data[0].type
    'heatmap'
    """
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values; give one value per token")
    limit = max((abs(v) for v in values), default=1.0) or 1.0
    labels = [html.escape(t.replace("\n", "⏎")) for t in tokens]
    fig = go.Figure(go.Heatmap(z=[list(values)], x=list(range(len(tokens))), y=[""], colorscale="RdBu", zmid=0,
                               zmin=-limit, zmax=limit, text=[labels], texttemplate="%{text}",
                               customdata=[labels], hovertemplate="%{customdata}: %{z:.3f}<extra></extra>",
                               colorbar={"title": "projection"}))
    fig.update_layout(title=title or "Projection on the direction, per token", template="plotly_white",
                      height=200, width=max(500, 60 * len(tokens)), xaxis={"showticklabels": False})
    return fig


def token_projections(hm, text: str, site, vector) -> tuple[list[str], list[float]]:
    """Tokens of ``text`` and the projection of each token's state at ``site`` on ``vector`` (d,).

    >>> tokens, values = token_projections(hm, "I loved it", "L6.resid_post", u)   # doctest: +SKIP
    """
    states = next(iter(hm.cache(text, [site]).values()))[0]  # (T, d)
    ids = hm.tokenize(text)["input_ids"][0].tolist()
    tokens = [hm.tokenizer.decode([i]) for i in ids]
    return tokens, (states.float() @ vector.float()).tolist()
