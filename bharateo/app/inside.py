"""The "Inside the model" page's logic: the embedding map (stored once per run and chips), its
figure and selection, and which token to show first.

The science is in bharateo/inspect_model.py (attention weights, token embeddings, PCA, nearest
chips); the attention pictures are drawn in bharateo/app/pictures.py with the other chip pictures;
the embedding map is computed once per model + chips and stored beside the run
(results.stored_result, like the evaluations). Nothing here calls Streamlit.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from bharateo import inspect_model as im
from bharateo.app import results
from bharateo.chips import ChipSet
from bharateo.runs import SavedRun
from bharateo.worldcover import CLASS_COLORS_255, CLASS_NAMES, NODATA_NAME

MAX_MAP_POINTS = 60_000  # points drawn on the embedding map (every token is stored)


def embedding_map(model, chips: ChipSet, run: SavedRun | None = None) -> results.StoredResult:
    """inspect_model.embedding_map, computed once per model + chips, stored beside `run`."""
    params = {"neighbours": im.NEIGHBOURS, "projection": "pca"}
    return results.stored_result("embedding_map", model, chips, params,
                                 lambda: im.embedding_map(model, chips, im.NEIGHBOURS), run)


def default_query(maps: im.AttentionMaps) -> int:
    """The first hidden patch (what a hidden patch looks at is the lesson), else token 0."""
    hidden = np.flatnonzero(maps.mask.ravel())
    return int(hidden[0]) if len(hidden) else 0


def class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else NODATA_NAME


def embedding_figure(value: dict, selected_chip: int | None = None,
                     max_points: int = MAX_MAP_POINTS) -> go.Figure:
    """The embedding map as a plotly scatter: one trace per patch class (palette colours, legend
    toggles a class), hover naming chip, token, grid cell and class. customdata = [chip, token],
    so a selection gives back the point's chip. More than `max_points` points: every k-th chip is
    drawn (all tokens of a drawn chip), and the title says so. Tokens of `selected_chip` are
    drawn on top, outlined."""
    n, k = value["tokens_per_chip"], value["chips"]
    g = int(round(n ** 0.5))
    stride = max(1, -(-k * n // max_points))
    x, y = np.asarray(value["x"]), np.asarray(value["y"])
    chip, token, label = (np.asarray(value[c]) for c in ("chip", "token", "label"))
    drawn = chip % stride == 0
    fig = go.Figure()
    for cls in sorted(set(label[drawn].tolist())):
        sel = drawn & (label == cls)
        color = ("rgb(0,0,0)" if not 0 <= cls < len(CLASS_NAMES)
                 else "rgb({},{},{})".format(*CLASS_COLORS_255[cls]))
        fig.add_trace(go.Scattergl(
            x=x[sel], y=y[sel], mode="markers", name=class_name(cls),
            marker=dict(size=5, color=color, opacity=0.75, line=dict(width=0)),
            customdata=np.stack([chip[sel], token[sel]], axis=1),
            hovertemplate=("chip %{customdata[0]} · token %{customdata[1]}<br>" + class_name(cls) +
                           "<extra></extra>")))
    if selected_chip is not None and 0 <= selected_chip < k:
        sel = chip == selected_chip
        fig.add_trace(go.Scattergl(
            x=x[sel], y=y[sel], mode="markers", name=f"chip {selected_chip}",
            marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(width=2, color="#111")),
            customdata=np.stack([chip[sel], token[sel]], axis=1),
            text=[f"row {t // g}, col {t % g}" for t in token[sel]],
            hovertemplate="chip %{customdata[0]} · token %{customdata[1]} (%{text})<extra></extra>"))
    e1, e2 = value["explained"]
    title = (f"Token embeddings of {k:,} chips × {n} tokens, PCA to 2-D" +
             (f" (every {stride}th chip drawn)" if stride > 1 else ""))
    fig.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title=f"PC 1 ({e1:.0%} of the variance)",
                      yaxis_title=f"PC 2 ({e2:.0%})", legend_title="patch label",
                      dragmode="lasso", clickmode="event+select")
    return fig


def selected_point(event) -> tuple[int, int] | None:
    """(chip, token) of the first point in a st.plotly_chart selection event, else None.
    Anything malformed (a browser can send what it likes) is None."""
    try:
        points = event["selection"]["points"] if event else []
        for point in points:
            data = point.get("customdata")
            if isinstance(data, (list, tuple)) and len(data) >= 2:
                return int(data[0]), int(data[1])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


def neighbours(value: dict, chip: int) -> list[tuple[int, float]]:
    """"Chips like this one": (chip, cosine similarity of mean embeddings), best first."""
    if not 0 <= chip < value["chips"]:
        return []
    return list(zip(value["neighbours"][chip], value["similarity"][chip]))
