"""The "Inside the model" page's logic: attention pictures, the embedding map and its selection.

The science is in bharateo/inspect_model.py (attention weights, token embeddings, PCA, nearest
chips); here it becomes pictures and plotly figures, and the embedding map is computed once per
model + chips and stored beside the run (results.stored_result, like the evaluations).
Nothing here calls Streamlit, so it is tested directly.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from bharateo import inspect_model as im
from bharateo.app import results
from bharateo.app.pictures import draw_grid, labels_image, magma, upscale
from bharateo.chips import ChipSet
from bharateo.runs import SavedRun
from bharateo.worldcover import CLASS_COLORS_255, CLASS_NAMES, NODATA_NAME

OVERLAY_SIDE = 256  # px of the attention pictures (an integer upscale of the chip)
SMALL_SIDE = 128  # px of each layer x head picture
MAX_MAP_POINTS = 60_000  # points drawn on the embedding map (every token is stored)
HIDDEN_GREY = np.array([235, 235, 235], dtype=np.uint8)


def embedding_map(model, chips: ChipSet, run: SavedRun | None = None) -> results.StoredResult:
    """inspect_model.embedding_map, computed once per model + chips, stored beside `run`."""
    params = {"neighbours": im.NEIGHBOURS, "projection": "pca"}
    return results.stored_result("embedding_map", model, chips, params,
                                 lambda: im.embedding_map(model, chips, im.NEIGHBOURS), run)


def default_query(maps: im.AttentionMaps) -> int:
    """The first hidden patch (what a hidden patch looks at is the lesson), else token 0."""
    hidden = np.flatnonzero(maps.mask.ravel())
    return int(hidden[0]) if len(hidden) else 0


def masked_picture(chips: ChipSet, index: int, mask: np.ndarray, query: int | None,
                   side: int = OVERLAY_SIDE) -> np.ndarray:
    """The chip's land-cover picture with hidden patches light grey and patch `query` outlined."""
    g = mask.shape[0]
    p = chips.chip_size // g
    image = labels_image(chips.labels[index]).copy()
    image[np.kron(mask, np.ones((p, p), dtype=bool))] = HIDDEN_GREY
    image = upscale(image, max(1, side // chips.chip_size))
    return draw_grid(image, g, color=(255, 255, 255),
                     highlight=None if query is None else divmod(query, g))


def attention_picture(chips: ChipSet, index: int, weights: np.ndarray, query: int,
                      side: int = OVERLAY_SIDE) -> np.ndarray:
    """G x G attention weights of one query drawn over the chip: the chip's picture faded under
    a magma heat map scaled to this map's largest weight, the query patch outlined.
    H x W x 3 uint8 (side px)."""
    g = weights.shape[0]
    base = upscale(labels_image(chips.labels[index]), max(1, side // chips.chip_size)).astype(np.float32)
    top = float(weights.max())
    heat = magma(weights / top if top > 0 else weights, 0.0, 1.0)  # G x G x 3
    cell = base.shape[0] // g
    heat = upscale(heat, cell).astype(np.float32)
    alpha = upscale(np.clip(weights / top if top > 0 else weights, 0, 1), cell)[..., None]
    blended = base * (1 - 0.75 * np.sqrt(alpha)) + heat * 0.75 * np.sqrt(alpha)
    out = (blended + 0.5).astype(np.uint8)
    return draw_grid(out, g, color=(90, 90, 90), highlight=divmod(query, g))


def attention_grid_pictures(chips: ChipSet, index: int, maps: im.AttentionMaps, query: int,
                            side: int = SMALL_SIDE) -> list[list[tuple[np.ndarray, str]]]:
    """One row per layer, one (picture, caption) per head, for token `query`. A layer that did
    not compute this query (a visible-only encoder, a hidden query) gets a caption saying so."""
    rows = []
    for li, name in enumerate(maps.layers):
        row = []
        for h in range(maps.heads):
            if maps.queries[li, query]:
                grid = maps.grid(li, h, query)
                row.append((attention_picture(chips, index, grid, query, side),
                            f"{name} · head {h + 1} · max {grid.max():.2f}"))
            else:
                row.append((masked_picture(chips, index, maps.mask, query, side),
                            f"{name} · head {h + 1}: this layer never sees a hidden patch"))
        rows.append(row)
    return rows


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
