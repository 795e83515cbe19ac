"""Every plotly chart the pages draw: class bars (Regions), chip and class-balance charts and the
token variance heatmap (Chips), loss and accuracy curves (Train), the mask-ratio curve
(Reconstruct), confusion matrices and per-class error (Evaluate). Each function takes plain data
and returns a go.Figure."""
from __future__ import annotations

import plotly.graph_objects as go

from bharateo.data.worldcover import CLASS_COLORS_HEX, CLASS_NAMES, NODATA_COLOR_HEX, NODATA_NAME

# Plotly draws its toolbar (modebar) over the top right of a figure, and Streamlit its own
# element toolbar there too: a title in that row was covered ("collap▢sed class pixels"). Every
# title sits in a row of its own, just above the plot area (yref "paper"), under a top margin
# that leaves the toolbar's row free; axes grow their margin to fit their tick labels (long class
# names such as wetland_mangrove were cut at the bottom edge).
FIGURE_MARGIN = dict(l=10, r=10, t=64, b=10)
TITLE_STYLE = dict(x=0, xanchor="left", xref="paper", y=1, yanchor="bottom", yref="paper",
                   pad=dict(b=12), font=dict(size=15))
CLASS_TICK_ANGLE = -35  # class names on an x axis: slanted, all of them, never cut
# a legend under everything (the figure's bottom edge, not a share of the plot's height, which
# slanted class names below the axis reached)
LEGEND_BELOW = dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0)


def figure_title(text: str) -> dict:
    """A layout title in its own row above the plot area, clear of the toolbars (TITLE_STYLE)."""
    return dict(text=text, **TITLE_STYLE)


def class_axis(fig: go.Figure) -> go.Figure:
    """An x axis of class names: every name shown, slanted, the margin grown to fit them."""
    fig.update_xaxes(tickangle=CLASS_TICK_ANGLE, automargin=True)
    return fig


def _with_nodata(values: list, nodata) -> tuple[list, list, list]:
    """(x, y, colours): the classes, plus a black 'no data' bar apart at the end when `nodata`."""
    if not nodata:
        return CLASS_NAMES, values, CLASS_COLORS_HEX
    return CLASS_NAMES + [NODATA_NAME], values + [nodata], CLASS_COLORS_HEX + [NODATA_COLOR_HEX]


def class_bar_chart(counts, title: str, yaxis: str = "pixels", nodata: int = 0) -> go.Figure:
    """Bar per collapsed class in its palette colour (the notebook's class-count figure); with
    `nodata` pixels, a black 'no data' bar after the classes (never one of them)."""
    x, y, colors = _with_nodata([int(c) for c in counts], int(nodata))
    fig = go.Figure(go.Bar(x=x, y=y, marker_color=colors,
                           hovertemplate="%{x}: %{y:,}<extra></extra>"))
    fig.update_layout(title=figure_title(title), yaxis_title=yaxis, margin=FIGURE_MARGIN,
                      height=300)
    return class_axis(fig)


X_AXES = {"epoch": "per epoch", "time": "over training time (s)"}  # Train charts' x choices


def _training_layout(fig: go.Figure, title: str, x: str = "epoch", **layout) -> go.Figure:
    """Train's charts: x is the epoch or the seconds since training started (named in the title,
    not on the axis: a legend below the plot covered the axis title once two runs' entries
    wrapped onto more rows). The legend hangs from just under the tick labels and the figure
    grows by one legend row per entry (in a half-width column each entry takes a row), so the
    plot area keeps its height however many runs are compared."""
    entries = sum(t.showlegend is not False for t in fig.data)
    fig.update_layout(title=figure_title(f"{title} {X_AXES[x]}"), margin=FIGURE_MARGIN, height=300 + 18 * entries,
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0), **layout)
    fig.update_xaxes(title=None)
    return fig


RUN_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _training_traces(fig, series, color, metrics, step_keys, x: str = "epoch"):
    """Epoch markers (and faint per-step lines while training) for one run; x: "epoch" or
    "time" (the seconds since training started that each step and epoch recorded, so a faster
    run's curve ends further left on the same axes)."""
    step_x, epoch_x = ("progress", "epoch") if x == "epoch" else ("elapsed", "elapsed")
    for label, key, dash, scale in metrics:
        steps, epochs = series["steps"], series["epochs"]
        name = f"{series['label']}: {label}"
        if steps and key in step_keys:
            fig.add_trace(go.Scatter(
                x=[s[step_x] for s in steps], y=[scale(series) * s[key] for s in steps],
                mode="lines", line=dict(color=color, dash=dash, width=1), opacity=0.35,
                name=f"{name} (steps)", showlegend=False, hoverinfo="skip"))
        points = [(e.get(epoch_x), e.get(key)) for e in epochs
                  if e.get(key) is not None and e.get(epoch_x) is not None]
        if points:
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[scale(series) * p[1] for p in points],
                mode="lines+markers", line=dict(color=color, dash=dash), name=name))


def _change_markers(fig: go.Figure, all_series: list[dict], x: str = "epoch") -> None:
    """A dotted vertical line, labelled, where a run's settings were changed while it was paused
    (series["changes"]: [{"progress", "elapsed" or None, "text"}], the step it applies from).
    On the time axis a change with no recorded time is left out."""
    for i, series in enumerate(all_series):
        for change in series.get("changes") or ():
            at = change.get("progress") if x == "epoch" else change.get("elapsed")
            if at is None:
                continue
            fig.add_vline(x=at, line=dict(color=RUN_COLORS[i % len(RUN_COLORS)], dash="dot",
                                          width=1.5),
                          annotation=dict(text=change["text"], font=dict(size=10),
                                          bgcolor="rgba(255,255,255,0.8)",
                                          textangle=-90, xanchor="right", yanchor="top"),
                          annotation_position="top left")


def loss_figure(all_series: list[dict], x: str = "epoch") -> go.Figure:
    """The notebook's left plot: total loss, masked SmoothL1 and weight x ESA CE per epoch (or
    over training time: x="time")."""
    fig = go.Figure()
    one = lambda s: 1.0  # noqa: E731
    weighted = lambda s: s["patch_loss_weight"]  # noqa: E731
    metrics = [("total", "loss", "solid", one), ("masked SmoothL1", "rec", "dash", one),
               ("weight x ESA CE", "esa", "dot", weighted)]
    for i, series in enumerate(all_series):
        _training_traces(fig, series, RUN_COLORS[i % len(RUN_COLORS)], metrics,
                         {"loss", "rec", "esa"}, x)
    _change_markers(fig, all_series, x)
    return _training_layout(fig, "losses", x)


def accuracy_figure(all_series: list[dict], x: str = "epoch") -> go.Figure:
    """The notebook's right plot, plus the held-out region: masked MAE and ESA patch accuracy
    per epoch (or over training time: x="time"), each accuracy with its balanced accuracy and
    its majority baseline as a flat line (_baseline_traces)."""
    fig = go.Figure()
    one = lambda s: 1.0  # noqa: E731
    metrics = [("masked MAE", "rec_mae", "solid", one), ("ESA acc", "esa_acc", "dash", one),
               ("ESA balanced acc", "esa_balanced", "longdashdot", one),
               ("held-out MAE", "heldout_rec_mae", "dot", one),
               ("held-out ESA acc", "heldout_esa_acc", "dashdot", one),
               ("held-out balanced acc", "heldout_esa_balanced", "longdashdot", one)]
    for i, series in enumerate(all_series):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        _training_traces(fig, series, color, metrics, {"rec_mae", "esa_acc"}, x)
        _baseline_traces(fig, series, color, x)
    _change_markers(fig, all_series, x)
    return _training_layout(fig, "reconstruction error and ESA accuracy", x, yaxis_range=[0, 1])


def _baseline_traces(fig, series, color, x: str = "epoch") -> None:
    """The majority baselines as flat thin lines (always answering the most common class of the
    training chips, and of the held-out chips), from the events' majority_acc and
    heldout_majority_acc (the first step's, so the line is there from the first step; saved
    runs: their epochs'). Histories saved before baselines existed draw none."""
    step_x, epoch_x = ("progress", "epoch") if x == "epoch" else ("elapsed", "elapsed")
    rows = [(s.get(step_x), s.get("majority_acc")) for s in series["steps"]]
    epochs = series["epochs"]
    for label, key, dash in (("majority baseline", "majority_acc", "longdash"),
                             ("held-out majority baseline", "heldout_majority_acc", "dot")):
        points = [(e.get(epoch_x), e.get(key)) for e in epochs]
        if key == "majority_acc":
            points = rows + points
        points = sorted((px, py) for px, py in points if px is not None and py is not None)
        if not points:
            continue
        level = points[-1][1]
        fig.add_trace(go.Scatter(
            x=[0 if x == "epoch" else points[0][0], points[-1][0]], y=[level, level],
            mode="lines", line=dict(color=color, dash=dash, width=1), opacity=0.6,
            name=f"{series['label']}: {label} (always the most common class)",
            hovertemplate=f"{label}: %{{y:.1%}}<extra></extra>"))


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
    fig.update_layout(title=figure_title("chips per region"), yaxis_title="chips", barmode="stack",
                      margin=FIGURE_MARGIN, height=320, legend=LEGEND_BELOW)
    fig.update_xaxes(automargin=True)
    return fig


def class_share_chart(series: dict[str, list[int]], title: str = "patch-label class balance",
                      unit: str = "patches", nodata: dict[str, int] | None = None) -> go.Figure:
    """Share of each class per named set of counts (e.g. training vs held-out patch labels).

    Bars keep the class palette colours; a second set is hatched so the two can be told apart.
    `nodata` (set -> no-data count, e.g. IGNORE patches) adds a black 'no data' bar apart, and
    shares are then of all patches.
    """
    fig = go.Figure()
    nodata = nodata or {}
    extra = any(nodata.values())  # every set gets the bar then, so the groups stay aligned
    for k, (label, counts) in enumerate(series.items()):
        x, counts, colors = CLASS_NAMES, [int(c) for c in counts], CLASS_COLORS_HEX
        if extra:
            x, counts = x + [NODATA_NAME], counts + [int(nodata.get(label, 0))]
            colors = colors + [NODATA_COLOR_HEX]
        total = max(sum(counts), 1)
        fig.add_trace(go.Bar(
            x=x, y=[100 * c / total for c in counts], name=label, customdata=counts,
            marker=dict(color=colors, pattern_shape="/" if k else "",
                        line=dict(color="#333", width=0.5)),
            hovertemplate=f"{label} · %{{x}}: %{{y:.1f}}% (%{{customdata:,}} {unit})<extra></extra>"))
    fig.update_layout(title=figure_title(title), yaxis_title=f"% of {unit}", barmode="group",
                      margin=FIGURE_MARGIN, height=320, showlegend=len(series) > 1,
                      legend=LEGEND_BELOW)
    return class_axis(fig)


def token_variance_heatmap(color_var, highlight: tuple[int, int] | None = None) -> go.Figure:
    """G x G token colour variance in magma (the notebook's third token panel), with hover."""
    import numpy as np
    from plotly.colors import sequential

    values = np.asarray(color_var, dtype=float)
    g = values.shape[0]
    index = np.arange(g * g).reshape(g, g)
    magma = [[k / (len(sequential.Magma) - 1), c] for k, c in enumerate(sequential.Magma)]
    magma[0][1] = "#000000"  # Streamlit's frontend swaps #000001-#000010 for theme colours
    fig = go.Figure(go.Heatmap(
        z=values, colorscale=magma, zmin=0, zmax=max(float(values.max()), 1e-6),
        customdata=index, colorbar=dict(thickness=12, title=dict(text="var")),
        hovertemplate="token %{customdata} (row %{y}, col %{x})<br>variance %{z:.4f}<extra></extra>"))
    if highlight is not None:
        r, c = highlight
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line=dict(color="#22d3ee", width=3))
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False,
                     constrain="domain")
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False,
                     autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_layout(title=figure_title("token colour variance"), margin=FIGURE_MARGIN, height=340)
    return fig


# --- Reconstruct and Evaluate pages ----------------------------------------------------------
HEADROOM = 0.18  # mask_ratio_curve: the right axis runs to 118%, labelled up to 100%


def mask_ratio_curve(rows: list[dict], current_ratio: float | None = None,
                     train_ratio: float | None = None, title: str = "hide more, paint worse?") -> go.Figure:
    """Masked MAE (left axis) and ESA patch accuracy (right axis) against the mask ratio, with
    balanced accuracy and the majority baseline (a flat line) on the right axis.

    rows: [{ratio, masked_mae, patch_acc, majority_acc, balanced_acc}] (evaluate.mask_ratio_curve;
    rows stored without the last two draw without them). A dashed line marks `current_ratio`, a
    dotted one the ratio the run was trained at.
    """
    x = [r["ratio"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[r["masked_mae"] for r in rows], name="masked MAE",
                             mode="lines+markers", line=dict(color="#d62728"),
                             hovertemplate="%{x:.0%} hidden: masked MAE %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[r["patch_acc"] for r in rows], name="patch accuracy",
                             mode="lines+markers", line=dict(color="#1f77b4", dash="dash"), yaxis="y2",
                             hovertemplate="%{x:.0%} hidden: patch accuracy %{y:.1%}<extra></extra>"))
    if all(r.get("balanced_acc") is not None for r in rows):
        fig.add_trace(go.Scatter(
            x=x, y=[r["balanced_acc"] for r in rows], name="balanced accuracy",
            mode="lines+markers", line=dict(color="#9467bd", dash="dot"), yaxis="y2",
            hovertemplate="%{x:.0%} hidden: balanced accuracy %{y:.1%}<extra></extra>"))
    if rows and rows[0].get("majority_acc") is not None:
        fig.add_trace(go.Scatter(
            x=[0, 1], y=[rows[0]["majority_acc"]] * 2, mode="lines", yaxis="y2",
            name="majority baseline (always the most common class)",
            line=dict(color="#6b7280", dash="longdash", width=1),
            hovertemplate="majority baseline: %{y:.1%}<extra></extra>"))
    same = (train_ratio is not None and current_ratio is not None
            and f"{train_ratio:.0%}" == f"{current_ratio:.0%}")
    # the two labels never share a place: one label when the ratios are the same; else each on
    # the far side of its own line (the lower ratio's label left of its line, the other's right),
    # "trained at" at the bottom of the plot and "now" at the top
    now_left = same or (train_ratio is not None and current_ratio is not None
                        and current_ratio < train_ratio)  # same: left, clear of the right axis
    if train_ratio is not None:
        label = {} if same else dict(
            annotation_text=f"trained at {train_ratio:.0%}", annotation_font_color="#6b7280",
            annotation_position="bottom right" if now_left else "bottom left")
        fig.add_vline(x=train_ratio, line=dict(color="#9ca3af", dash="dot", width=1), **label)
    if current_ratio is not None:
        fig.add_vline(x=current_ratio, line=dict(color="#111827", dash="dash", width=2),
                      annotation_text=(f"now {current_ratio:.0%} = trained at" if same
                                       else f"now {current_ratio:.0%}"),
                      annotation_position="top left" if now_left else "top right",
                      annotation_bgcolor="rgba(255,255,255,0.85)")
    # both axes leave a band above the data for the "now" label: an accuracy near 100% (a model
    # answering the majority class on tree cover) ran through it
    top = max([r["masked_mae"] for r in rows] + [0.05]) * 1.2
    fig.update_layout(
        title=figure_title(title), margin=dict(FIGURE_MARGIN, r=60), height=360,
        xaxis=dict(title="mask ratio (share of patches hidden)", range=[0, 1], tickformat=".0%"),
        yaxis=dict(title="masked MAE (lower is better)", range=[0, top]),
        yaxis2=dict(title="patch accuracy", overlaying="y", side="right", range=[0, 1 + HEADROOM],
                    tickmode="array", tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%",
                    showgrid=False),
        legend=LEGEND_BELOW)
    return fig


def share_text(share: float) -> str:
    """0.25 -> '25%'; a share that is not zero never reads '0%' (0.0006 -> '<1%'), nor a share
    short of all '100%' (0.9996 -> '>99%')."""
    text = f"{share:.0%}"
    if share > 0 and text == "0%":
        return "<1%"
    if share < 1 and text == "100%":
        return ">99%"
    return text


def confusion_heatmap(counts, shares, normalised: bool = False, title: str = "") -> go.Figure:
    """The notebook's ESA patch confusion matrix: rows = target class, columns = predicted.
    A second trace, an invisible point on every cell with patches, takes clicks (Evaluate lists
    that cell's patches, results.clicked_cell) and outlines the clicked cell.

    counts: C x C patch counts; shares: the same matrix row-normalised (shown as percentages).
    Cells with no patches stay blank; the hover always gives both the count and the share of the
    target class. No colour bar: every cell is labelled, and the matrix gets the width.
    """
    import numpy as np

    counts, shares = np.asarray(counts), np.asarray(shares, dtype=float)
    text = [["" if counts[i, j] == 0 else (share_text(shares[i, j]) if normalised else f"{counts[i, j]:,}")
             for j in range(counts.shape[1])] for i in range(counts.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=(shares if normalised else counts).tolist(), x=CLASS_NAMES, y=CLASS_NAMES,
        colorscale="Blues", zmin=0, zmax=1 if normalised else max(int(counts.max()), 1), text=text,
        texttemplate="%{text}", textfont=dict(size=11), customdata=np.dstack([counts, shares]).tolist(),
        showscale=False,  # the cells carry their numbers; the width goes to the matrix
        hoverinfo="skip"))
    # one invisible point per cell with patches: a heatmap takes no click selection in
    # st.plotly_chart (on_select), a scatter point does; the clicked cell gets a square outline
    cells = [(i, j) for i in range(counts.shape[0]) for j in range(counts.shape[1]) if counts[i, j]]
    fig.add_trace(go.Scatter(
        x=[CLASS_NAMES[j] for _, j in cells], y=[CLASS_NAMES[i] for i, _ in cells], mode="markers",
        marker=dict(symbol="square-open", size=30, color="#111", opacity=0, line=dict(width=3)),
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
        customdata=[[int(counts[i, j]), float(shares[i, j])] for i, j in cells],
        showlegend=False, name="cells",
        hovertemplate="target %{y} → predicted %{x}<br>%{customdata[0]:,} patches "
                     "(%{customdata[1]:.0%} of the target's patches)<br>click to see them"
                     "<extra></extra>"))
    fig.update_xaxes(title="predicted", tickangle=CLASS_TICK_ANGLE, automargin=True)
    fig.update_yaxes(title="target", autorange="reversed", automargin=True)
    fig.update_layout(title=figure_title(title), margin=FIGURE_MARGIN, height=470)
    return fig


def per_class_mae_chart(series: dict[str, list]) -> go.Figure:
    """Masked reconstruction MAE per class, one bar group per named set (None = no such pixels)."""
    colors = ["#374151", "#ea580c"]
    fig = go.Figure()
    for k, (label, values) in enumerate(series.items()):
        fig.add_trace(go.Bar(x=CLASS_NAMES, y=list(values),
                             name=label, marker_color=colors[k % len(colors)],
                             hovertemplate=f"{label} · %{{x}}: MAE %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=figure_title("reconstruction error per class (hidden pixels of that class)"),
                      yaxis_title="masked MAE", barmode="group", margin=FIGURE_MARGIN, height=340,
                      legend=LEGEND_BELOW)
    return class_axis(fig)
