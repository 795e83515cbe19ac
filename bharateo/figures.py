"""Plotly figures for the pages. Each function takes plain data and returns a go.Figure."""
from __future__ import annotations

import plotly.graph_objects as go

from bharateo.worldcover import CLASS_COLORS_HEX, CLASS_NAMES

FIGURE_MARGIN = dict(l=10, r=10, t=40, b=10)


def class_bar_chart(counts, title: str, yaxis: str = "pixels") -> go.Figure:
    """Bar per collapsed class in its palette colour (the notebook's class-count figure)."""
    fig = go.Figure(go.Bar(x=CLASS_NAMES, y=list(counts), marker_color=CLASS_COLORS_HEX,
                           hovertemplate="%{x}: %{y:,}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=yaxis, margin=FIGURE_MARGIN, height=300)
    return fig
