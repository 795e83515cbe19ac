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


RUN_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _training_traces(fig, series, color, metrics, step_keys):
    """Epoch markers (and faint per-step lines while training) for one run."""
    for label, key, dash, scale in metrics:
        steps, epochs = series["steps"], series["epochs"]
        name = f"{series['label']}: {label}"
        if steps and key in step_keys:
            fig.add_trace(go.Scatter(
                x=[s["progress"] for s in steps], y=[scale(series) * s[key] for s in steps],
                mode="lines", line=dict(color=color, dash=dash, width=1), opacity=0.35,
                name=f"{name} (steps)", showlegend=False, hoverinfo="skip"))
        points = [(e["epoch"], e.get(key)) for e in epochs if e.get(key) is not None]
        if points:
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[scale(series) * p[1] for p in points],
                mode="lines+markers", line=dict(color=color, dash=dash), name=name))


def loss_figure(all_series: list[dict]) -> go.Figure:
    """The notebook's left plot: total loss, masked SmoothL1 and weight x ESA CE per epoch."""
    fig = go.Figure()
    one = lambda s: 1.0  # noqa: E731
    weighted = lambda s: s["patch_loss_weight"]  # noqa: E731
    metrics = [("total", "loss", "solid", one), ("masked SmoothL1", "rec", "dash", one),
               ("weight x ESA CE", "esa", "dot", weighted)]
    for i, series in enumerate(all_series):
        _training_traces(fig, series, RUN_COLORS[i % len(RUN_COLORS)], metrics, {"loss", "rec", "esa"})
    fig.update_layout(title="losses", xaxis_title="epoch", margin=FIGURE_MARGIN, height=360,
                      legend=dict(orientation="h", y=-0.25))
    return fig


def accuracy_figure(all_series: list[dict]) -> go.Figure:
    """The notebook's right plot, plus the held-out region: masked MAE and ESA patch accuracy."""
    fig = go.Figure()
    one = lambda s: 1.0  # noqa: E731
    metrics = [("masked MAE", "rec_mae", "solid", one), ("ESA acc", "esa_acc", "dash", one),
               ("held-out MAE", "heldout_rec_mae", "dot", one),
               ("held-out ESA acc", "heldout_esa_acc", "dashdot", one)]
    for i, series in enumerate(all_series):
        _training_traces(fig, series, RUN_COLORS[i % len(RUN_COLORS)], metrics, {"rec_mae", "esa_acc"})
    fig.update_layout(title="reconstruction error and ESA accuracy", xaxis_title="epoch",
                      yaxis_range=[0, 1], margin=FIGURE_MARGIN, height=360,
                      legend=dict(orientation="h", y=-0.25))
    return fig


# --- Chips page ------------------------------------------------------------------------------
def chips_per_roi_chart(train: dict[str, int], heldout: dict[str, int] | None = None) -> go.Figure:
    """Stacked bars: training (and held-out) chips drawn from each ROI."""
    names = list(train)
    fig = go.Figure(go.Bar(x=names, y=[train[n] for n in names], name="training",
                           marker_color="#1d4ed8", hovertemplate="%{x}: %{y} training chips<extra></extra>"))
    if heldout:
        fig.add_trace(go.Bar(x=names, y=[heldout.get(n, 0) for n in names], name="held-out",
                             marker_color="#ea580c",
                             hovertemplate="%{x}: %{y} held-out chips<extra></extra>"))
    fig.update_layout(title="chips per region", yaxis_title="chips", barmode="stack",
                      margin=FIGURE_MARGIN, height=300, legend=dict(orientation="h", y=-0.2))
    return fig


def class_share_chart(series: dict[str, list[int]], title: str = "patch-label class balance",
                      unit: str = "patches") -> go.Figure:
    """Share of each class per named set of counts (e.g. training vs held-out patch labels).

    Bars keep the class palette colours; a second set is hatched so the two can be told apart.
    """
    fig = go.Figure()
    for k, (label, counts) in enumerate(series.items()):
        counts = [int(c) for c in counts]
        total = max(sum(counts), 1)
        fig.add_trace(go.Bar(
            x=CLASS_NAMES, y=[100 * c / total for c in counts], name=label, customdata=counts,
            marker=dict(color=CLASS_COLORS_HEX, pattern_shape="/" if k else "",
                        line=dict(color="#333", width=0.5)),
            hovertemplate=f"{label} · %{{x}}: %{{y:.1f}}% (%{{customdata:,}} {unit})<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=f"% of {unit}", barmode="group",
                      margin=FIGURE_MARGIN, height=300, showlegend=len(series) > 1,
                      legend=dict(orientation="h", y=-0.3))
    return fig


def token_variance_heatmap(color_var, highlight: tuple[int, int] | None = None) -> go.Figure:
    """G x G token colour variance in magma (the notebook's third token panel), with hover."""
    import numpy as np

    values = np.asarray(color_var, dtype=float)
    g = values.shape[0]
    index = np.arange(g * g).reshape(g, g)
    fig = go.Figure(go.Heatmap(
        z=values, colorscale="Magma", zmin=0, zmax=max(float(values.max()), 1e-6),
        customdata=index, colorbar=dict(thickness=12, title=dict(text="var")),
        hovertemplate="token %{customdata} (row %{y}, col %{x})<br>variance %{z:.4f}<extra></extra>"))
    if highlight is not None:
        r, c = highlight
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line=dict(color="#22d3ee", width=3))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor="x", constrain="domain")
    fig.update_layout(title="token colour variance", margin=FIGURE_MARGIN, height=340)
    return fig
