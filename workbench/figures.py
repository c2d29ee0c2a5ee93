"""Plotly figures of sweep results.

>>> fig = sweep_heatmap(df)          # doctest: +SKIP
>>> fig.write_html("sweep.html")     # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def sweep_heatmap(df: pd.DataFrame, value: str = "normalized", title: str | None = None) -> go.Figure:
    """Heatmap of a layer x position (or layer x head) sweep; hover shows the value and token."""
    if value not in df.columns:
        raise ValueError(f"column {value!r} not in the sweep table; columns: {list(df.columns)}")
    by_head = "head" in df.columns
    x_col = "head" if by_head else "position"
    grid = df.pivot(index="layer", columns=x_col, values=value)  # (layers, x)
    if by_head:
        x_labels = [f"head {h}" for h in grid.columns]
        hover_text = None
    else:
        tokens = df.drop_duplicates("position").set_index("position")["token"]
        x_labels = [f"{p}: {tokens[p]}" for p in grid.columns]
        hover_text = [[f"{tokens[p]!r}" for p in grid.columns] for _ in grid.index]
    limit = float(df[value].abs().max()) if len(df) else 1.0
    heatmap = go.Heatmap(
        z=grid.values, x=x_labels, y=list(grid.index), colorscale="RdBu", zmid=0,
        zmin=-limit, zmax=limit, text=hover_text, colorbar={"title": value},
        hovertemplate=("layer %{y}<br>%{x}<br>" + value + " %{z:.3f}<extra></extra>"),
    )
    fig = go.Figure(heatmap)
    kind = df.attrs.get("kind", "sweep")
    component = df.attrs.get("component", "")
    fig.update_layout(
        title=title or f"Activation patching ({kind}, {component}): {value}",
        xaxis_title="head" if by_head else "position: base token", yaxis_title="layer",
        yaxis={"tickmode": "linear", "dtick": 1 if len(grid.index) <= 32 else 2}, template="plotly_white",
    )
    return fig
