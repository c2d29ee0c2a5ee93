"""Plotly figures of the analyses' tables (heatmaps reuse `workbench.figures.sweep_heatmap`).

>>> fig = attribution_figure(positions, heads)     # doctest: +SKIP
>>> fig.write_html("attribution.html")             # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import sweep_heatmap


def _stack(panels: list[tuple[str, go.Figure]], title: str) -> go.Figure:
    """Heatmap panels one above the other, each with its own title and colour bar."""
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[name for name, _ in panels],
                        vertical_spacing=0.25 / max(1, len(panels)))
    for row, (_, panel) in enumerate(panels, start=1):
        trace = panel.data[0]
        trace.colorbar.update(len=1 / len(panels), y=1 - (row - 0.5) / len(panels))
        fig.add_trace(trace, row=row, col=1)
        fig.update_yaxes(title_text="layer", row=row, col=1)
    fig.update_layout(title=title, template="plotly_white", height=320 * len(panels))
    return fig


def attribution_figure(positions: pd.DataFrame, heads: pd.DataFrame | None, value: str = "attribution") -> go.Figure:
    """One heatmap per component (layer x position) and one of the heads (layer x head)."""
    panels = [(f"{c}: {value}", sweep_heatmap(g.drop(columns="component"), value=value))
              for c, g in positions.groupby("component", sort=False)]
    if heads is not None:
        panels.append((f"heads (z): {value}", sweep_heatmap(heads, value=value)))
    return _stack(panels, f"Attribution patching: (s − b) · ∂metric/∂b ({value})")


def comparison_figure(table: pd.DataFrame, correlations: dict) -> go.Figure:
    """Attribution estimate against the real patch effect, one colour per component."""
    fig = go.Figure()
    for component, group in table.groupby("component", sort=False):
        label = f"{component} (ρ = {correlations.get(component, float('nan')):.2f})"
        fig.add_trace(go.Scatter(x=group["patching"], y=group["attribution"], mode="markers", name=label))
    fig.update_layout(title=f"Attribution vs activation patching (Spearman ρ all = {correlations.get('all', float('nan')):.3f})",
                      xaxis_title="patching: metric change", yaxis_title="attribution estimate",
                      template="plotly_white")
    return fig


def lens_figure(df: pd.DataFrame) -> go.Figure:
    """Layer x position heatmap of the lens: the target's probability, else the top token's;
    hover shows the top tokens."""
    value = "target_prob" if "target_prob" in df.columns else "top_prob"
    grid = df.pivot_table(index="site", columns="position", values=value, sort=False)
    text = df.pivot_table(index="site", columns="position", values="top_tokens", aggfunc="first", sort=False)
    tokens = df.drop_duplicates("position").set_index("position")["token"]
    fig = go.Figure(go.Heatmap(
        z=grid.values, x=[f"{p}: {tokens[p]}" for p in grid.columns], y=list(grid.index), colorscale="Blues",
        zmin=0, zmax=1, text=[[repr(t[0]) for t in row] for row in text.values], texttemplate="%{text}",
        colorbar={"title": value}, hovertemplate="%{y}<br>%{x}<br>" + value + " %{z:.3f}<br>top %{text}<extra></extra>"))
    target = df.attrs.get("target")
    fig.update_layout(title=f"Logit lens: {value}" + (f" of {target!r}" if target else "") + " (text: top token)",
                      xaxis_title="position: token", yaxis_title="site", template="plotly_white")
    return fig


def dla_figure(df: pd.DataFrame) -> go.Figure:
    """Layer x (heads, MLP) heatmap of direct logit attribution, averaged over prompts."""
    parts = df[df.kind.isin(["head", "mlp"])].copy()
    parts["column"] = [f"head {h}" if k == "head" else "mlp" for k, h in zip(parts.kind, parts["head"])]
    grid = parts.pivot_table(index="layer", columns="column", values="dla", aggfunc="mean", sort=False)
    limit = float(grid.abs().max().max()) or 1.0
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="RdBu",
                               zmid=0, zmin=-limit, zmax=limit, colorbar={"title": "DLA"}))
    fig.update_layout(title=f"Direct logit attribution to {df.attrs.get('target')!r} − {df.attrs.get('foil')!r} "
                            f"(final norm scale frozen)", xaxis_title="component", yaxis_title="layer",
                      template="plotly_white")
    return fig


def path_figure(df: pd.DataFrame) -> go.Figure:
    """Layer x head heatmap of the path-patching effect (normalized) of each sender head."""
    heads = df[df["head"] >= 0]
    receivers = df.attrs.get("receivers", "logits")
    return sweep_heatmap(heads[["layer", "head", "normalized"]], title=f"Path patching: senders → {receivers}")


def concepts_figure(table: pd.DataFrame, factors: pd.DataFrame) -> go.Figure:
    """AUROC per method (left) and the validation concept probability against the factor (right)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["detection AUROC (test)", "concept probability (validation)"])
    fig.add_trace(go.Bar(x=table["method"], y=table["auroc"], name="AUROC", showlegend=False), row=1, col=1)
    for method, group in factors.groupby("method", sort=False):
        fig.add_trace(go.Scatter(x=group["factor"], y=group["concept_prob"], mode="lines+markers", name=method),
                      row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="steering factor (× mean state norm)", row=1, col=2)
    fig.update_layout(title=f"Concept detection and steering at {table.attrs.get('site', '')}", template="plotly_white")
    return fig
