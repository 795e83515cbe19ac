"""Every picture the pages draw, as uint8 RGB arrays for st.image (no matplotlib), and the class
legends beside them: regions (Regions), chips, token grids and tokens (Chips), chip thumbnails
and the reconstruction panels (Reconstruct). One place draws chip pictures, so no-data is black
and every class has its palette colour everywhere.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from plotly.colors import sample_colorscale

from bharateo.data.geodesy import ground_size
from bharateo.words import ordinal
from bharateo.data.worldcover import (
    CLASS_COLORS_255,
    CLASS_COLORS_HEX,
    CLASS_NAMES,
    NODATA_HELP,
    NODATA,
    NODATA_COLOR_255,
    NODATA_COLOR_HEX,
    NODATA_ID,
    NODATA_NAME,
    NUM_CLASSES,
    PALETTE_255,
    collapse_worldcover,
)

if TYPE_CHECKING:
    from bharateo.app.chips import TokenView
    from bharateo.data.chips import ChipSet
    from bharateo.training.evaluate import ChipReconstruction
    from bharateo.training.inspect_model import AttentionMaps
    from bharateo.data.roi import Roi

PANEL_SIDE = 256  # px of every reconstruction panel (an integer upscale of the chip)
THUMB_SIDE = 80  # px of a chip thumbnail
ERROR_RANGE = (0.0, 0.5)  # the notebook's magma range for |RGB error|
REFLECTANCE_ERROR_RANGE = (0.0, 2.0)  # |error| of per-band normalised reflectance, in std units
UNSCORED_GREY = np.array([0.55, 0.55, 0.55], dtype=np.float32)
NODATA_RGB = NODATA_COLOR_255  # sea / outside coverage in every picture: black


# --- building blocks -------------------------------------------------------------------------
def to_uint8(image: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> uint8; a uint8 picture is returned as it is (read as 0-1
    floats, every non-zero value would turn white: Sentinel-2 thumbnails once did)."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement so small chips stay crisp in the browser."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def labels_image(labels: np.ndarray) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 palette picture. No-data (NODATA_ID pixels,
    IGNORE_INDEX patch labels, any id outside 0..7) is black, never a class colour."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = np.where((labels >= 0) & (labels < NUM_CLASSES), labels, NODATA_ID).astype(np.uint8)
    return PALETTE_255[labels]


def thumbnail_labels(labels: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Shrink a big label map by taking every k-th pixel (keeps exact class colours)."""
    step = max(1, int(np.ceil(max(labels.shape) / max_side)))
    return labels[::step, ::step]


def draw_grid(image: np.ndarray, cells: int, color=(255, 255, 255), highlight=None) -> np.ndarray:
    """Draw a cells x cells grid on an H x W x 3 uint8 image; outline cell `highlight` (r, c)."""
    out = image.copy()
    h, w = out.shape[:2]
    for i in range(1, cells):
        out[i * h // cells, :] = color
        out[:, i * w // cells] = color
    if highlight is not None:
        r, c = highlight
        r0, r1 = r * h // cells, (r + 1) * h // cells - 1
        c0, c1 = c * w // cells, (c + 1) * w // cells - 1
        for t in range(2):
            out[r0 + t, c0:c1 + 1] = out[r1 - t, c0:c1 + 1] = (0, 0, 0)
            out[r0:r1 + 1, c0 + t] = out[r0:r1 + 1, c1 - t] = (0, 0, 0)
    return out


_MAGMA = (np.array([[int(v) for v in c[4:-1].split(",")]
                    for c in sample_colorscale("Magma", list(np.linspace(0, 1, 256)))],
                   dtype=np.uint8))


def magma(values: np.ndarray, vmin: float = 0.0, vmax: float = 0.5) -> np.ndarray:
    """H x W floats -> H x W x 3 uint8 with the magma colour map on [vmin, vmax]."""
    idx = np.clip((values - vmin) / (vmax - vmin) * 255, 0, 255).astype(np.int64)
    return _MAGMA[idx]


# --- class legends (HTML beside the pictures) -------------------------------------------------
def _is_class(class_id) -> bool:
    return 0 <= int(class_id) < NUM_CLASSES


def _hex(class_id: int) -> str:
    return CLASS_COLORS_HEX[class_id] if _is_class(class_id) else NODATA_COLOR_HEX


def legend_html(classes=None, nodata: bool = False) -> str:
    """Inline HTML swatches for the collapsed classes (all, or the ids in `classes`), plus a
    black 'no data' swatch, listed apart, when `nodata` or when `classes` holds a no-data id
    (NODATA_ID, IGNORE_INDEX)."""
    ids = range(NUM_CLASSES) if classes is None else sorted(set(int(c) for c in classes))
    nodata = nodata or any(not _is_class(i) for i in ids)
    items = [(_hex(i), text_color(i), CLASS_NAMES[i]) for i in ids if _is_class(i)]
    items += [(NODATA_COLOR_HEX, "#fff", NODATA_NAME)] if nodata else []
    return " ".join(
        f"<span style='background:{color};padding:1px 7px;border-radius:3px;"
        f"color:{text};font-size:0.8em'>{html.escape(name)}</span>" for color, text, name in items)


def text_color(class_id: int) -> str:
    """Black or white, whichever reads better on the class colour (white on no-data black)."""
    if not _is_class(class_id):
        return "#fff"
    r, g, b = (int(v) for v in CLASS_COLORS_255[class_id])
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def share_legend_html(counts, nodata: int = 0) -> str:
    """Swatches of the classes present in `counts` (pixels per class), with their shares; with
    `nodata` pixels, shares are of all pixels and a black 'no data' swatch comes last, apart."""
    counts = np.asarray(counts, dtype=np.int64)
    total = max(int(counts.sum()) + int(nodata), 1)
    items = [(i, CLASS_NAMES[i], counts[i]) for i in np.argsort(-counts, kind="stable") if counts[i]]
    items += [(-1, NODATA_NAME, int(nodata))] if nodata else []
    return " ".join(
        f"<span style='background:{_hex(i)};padding:1px 6px;border-radius:3px;"
        f"color:{text_color(i)};font-size:0.8em;white-space:nowrap'>"
        f"{html.escape(name)} {100 * n / total:.1f}%</span>" for i, name, n in items)


def class_swatch_html(class_id: int, text: str | None = None) -> str:
    """One class as a coloured swatch followed by its name (or `text`); a no-data id (NODATA_ID,
    IGNORE_INDEX) is a black swatch named 'no data (left out of losses and metrics)'."""
    default = CLASS_NAMES[class_id] if _is_class(class_id) else f"{NODATA_NAME} ({NODATA_HELP})"
    return (f"<span style='display:inline-block;width:1.1em;height:1.1em;vertical-align:-0.2em;"
            f"border:1px solid #555;background:{_hex(class_id)}'></span> "
            f"<b>{html.escape(text or default)}</b>")


# --- regions, chips and tokens (Regions, Chips) -----------------------------------------------
@dataclass
class RoiPicture:
    image: np.ndarray  # h x w x 3 uint8 palette picture
    step: int  # every step-th pixel shown
    caption: str


def cloud_text(cloud) -> str:
    """A scene's eo:cloud_cover as '4.1 % cloud' ('cloud cover not given' without one)."""
    return f"{cloud:.1f} % cloud" if isinstance(cloud, (int, float)) else "cloud cover not given"


def roi_picture(roi: Roi, max_side: int = 512) -> RoiPicture:
    """The ROI in the class palette (every k-th pixel for big ROIs; no-data in black); a
    Sentinel-2 region in true colour (B4 B3 B2, 2-98 % stretch; cloud and no-data black)."""
    if getattr(roi, "pixels", None) is not None:
        from bharateo.data.reflectance import composite

        step = max(1, math.ceil(max(roi.native.shape) / max_side))
        valid = roi.native[::step, ::step] != NODATA
        image = to_uint8(composite(roi.pixels[:, ::step, ::step], roi.bands, "true", valid))
        p = roi.provenance
        caption = (f"True colour (B4 B3 B2, 2–98 % stretch) of Sentinel-2 scene {p.get('scene_id')} "
                   f"({p.get('scene_date')}, {cloud_text(p.get('cloud_cover'))} over the scene), "
                   f"{roi.spec.size} px of {p.get('pixel_m', 10):g} m; north is up (UTM "
                   f"{p.get('crs')}). Black: cloud, cloud shadow or no data, "
                   f"{1 - valid.mean():.1%}; never a land-cover class.")
        return RoiPicture(image, step, caption)
    native = thumbnail_labels(roi.native, max_side)
    step = max(1, math.ceil(max(roi.native.shape) / max_side))  # as thumbnail_labels
    image = labels_image(collapse_worldcover(native))
    nodata = native == NODATA
    if nodata.any():
        image = image.copy()
        image[nodata] = NODATA_RGB
    scale = "full resolution" if step == 1 else f"every {ordinal(step)} pixel shown (1:{step})"
    caption = f"{ground_size(roi.spec.size, roi.spec.lat)}; {scale}; north is up."
    if nodata.any():
        caption += (" Black: no data (sea / outside coverage), "
                    f"{nodata.mean():.1%} of the pixels shown; never a land-cover class.")
    return RoiPicture(image, step, caption)


def chip_modes(chips: ChipSet) -> dict[str, str]:
    """What the Chips page can show of these chips: label -> chip_picture mode."""
    from bharateo.data.reflectance import composite_bands

    if chips.pixels is None or not composite_bands(chips.bands, "true"):
        return {"RGB chip (model input)": "rgb", "patch labels (targets)": "patch"}
    return {"true colour (B4 B3 B2)": "true", "false colour (B8 B4 B3)": "false",
            "patch labels (targets)": "patch"}


def chip_colour(chips: ChipSet, i: int) -> np.ndarray:
    """Chip i as an S x S x 3 uint8 picture: palette colours, or reflectance in true colour
    (chips whose bands make no true colour picture: their class colours)."""
    from bharateo.data.reflectance import composite_bands

    if chips.pixels is None or not composite_bands(chips.bands, "true"):
        return labels_image(chips.labels[i])
    return to_uint8(chips.picture(i, "true"))


def chip_picture(chips: ChipSet, i: int, mode: str = "rgb", display_px: int = 256) -> np.ndarray:
    """Chip i as uint8, enlarged (nearest) to about display_px: its RGB, its true or false colour
    picture (Sentinel-2 chips: modes "true", "false"), or its patch labels."""
    if mode in ("true", "false") and chips.pixels is not None and chips.band_stats is not None:
        image = to_uint8(chips.picture(i, mode))
    elif mode in ("rgb", "true", "false"):
        image = chip_colour(chips, i)
    else:
        image = labels_image(chips.patch_labels[i])
    return upscale(image, max(1, display_px // image.shape[0]))


def chip_with_grid(chips: ChipSet, i: int, token: int | None, display_px: int = 384) -> np.ndarray:
    """Chip i enlarged, with its token grid drawn and token `token` outlined."""
    g = chips.grid_size
    image = upscale(chip_colour(chips, i), max(1, display_px // chips.chip_size))
    return draw_grid(image, g, highlight=None if token is None else divmod(int(token), g))


def mean_rgb_picture(view: TokenView, token: int | None, display_px: int = 384) -> np.ndarray:
    """G x G token mean colours (reflectance: of the true colour picture), enlarged, token
    `token` outlined."""
    means = view.mean_rgb if view.picture is None else view.picture.mean(axis=(-1, -2))
    image = to_uint8(means.reshape(view.grid, view.grid, 3))
    image = upscale(image, max(1, display_px // view.grid))
    return draw_grid(image, view.grid, color=(255, 255, 255),
                     highlight=None if token is None else view.rowcol(token))


def token_picture(view: TokenView, token: int, display_px: int = 128) -> np.ndarray:
    """Token `token`'s p x p pixels (reflectance: in true colour), enlarged."""
    pixels = view.tokens_rgb if view.picture is None else view.picture
    image = to_uint8(pixels[token].transpose(1, 2, 0))
    return upscale(image, max(1, display_px // view.patch))


def patch_picture(chips: ChipSet, index: int, token: int, display_px: int = 128) -> np.ndarray:
    """Token `token` of chip `index` as its p x p picture (palette colours, or reflectance in
    true colour, as chip_colour), enlarged (nearest) to about display_px: p*k x p*k x 3 uint8.
    The caller keeps index and token in range (0..K-1, 0..G*G-1)."""
    p = chips.patch_size
    r, c = divmod(int(token), chips.grid_size)
    patch = chip_colour(chips, index)[r * p:(r + 1) * p, c * p:(c + 1) * p]
    return upscale(patch, max(1, display_px // p))


# --- reconstruction panels and thumbnails (Reconstruct) ---------------------------------------
@dataclass
class Panel:
    image: np.ndarray  # H x W x 3 uint8, nearest-upscaled
    title: str


def _chip_picture(image: np.ndarray, side: int) -> np.ndarray:
    return upscale(to_uint8(image), max(1, side // image.shape[0]))


def _grid_picture(labels: np.ndarray, side: int) -> np.ndarray:
    g = labels.shape[0]
    return draw_grid(upscale(labels_image(labels), max(1, side // g)), g, color=(255, 255, 255))


PASTED = "reconstruction + visible"  # the MAE paper's figures: visible patches from the input
RAW = "model output, all patches"  # what the pixel head paints everywhere, visible patches too


def reconstruction_panels(rec: ChipReconstruction, mask_ratio: float, index: int,
                          side: int = PANEL_SIDE) -> list[Panel]:
    """The notebook's panels (plus the patch-label target), each `side` px, crisp, in this order:
    target, masked input, reconstruction + visible, model output (all patches), error, ESA patch
    pred, ESA patch target; Sentinel-2 chips add target, masked input, reconstruction + visible
    and model output in false colour.

    "Reconstruction + visible" pastes the visible patches from the input over the model's output
    (as the figures of He et al. 2021 do): the pixel loss scores hidden patches only, so the
    model's output on visible patches is untrained and looks speckled. The raw output is the
    fourth panel, for a class that wants to see why. The error panel shows |target - predicted|
    (mean over channels, magma) on the hidden patches only, as the notebook's text describes it;
    visible patches are grey because they are not scored.
    """
    p = rec.target.shape[0] // rec.mask.shape[0]
    pixel_mask = np.kron(rec.mask, np.ones((p, p), dtype=bool))
    reflectance = rec.false_colour is not None  # Sentinel-2: true colour here, false colour after
    low, high = REFLECTANCE_ERROR_RANGE if reflectance else ERROR_RANGE
    error = magma(rec.abs_error, low, high)
    error[~pixel_mask] = to_uint8(UNSCORED_GREY)
    hidden = int(rec.mask.sum())
    what = "true colour (B4 B3 B2)" if reflectance else "RGB"
    panels = [
        Panel(_chip_picture(rec.target, side), f"target {what} · chip {index}"),
        Panel(_chip_picture(rec.masked_input, side),
              f"{mask_ratio:.0%} masked input ({hidden} of {rec.mask.size} patches hidden)"),
        Panel(_chip_picture(rec.composite, side),
              f"{PASTED} (hidden patches painted by the model, visible ones pasted from the input)"),
        Panel(_chip_picture(rec.predicted, side),
              f"{RAW} ({what}; only hidden patches are trained, so visible ones look speckled)"),
        Panel(upscale(error, max(1, side // error.shape[0])),
              f"abs error on hidden patches, normalised reflectance (0–{high:g} std)" if reflectance
              else f"abs RGB error on hidden patches ({low:g}–{high:g})"),
        Panel(_grid_picture(rec.patch_prediction, side), "ESA patch pred"),
        Panel(_grid_picture(rec.patch_target, side), "ESA patch target (patch labels)"),
    ]
    if reflectance:  # the same four panels in false colour: vegetation shows red
        f = rec.false_colour
        panels += [Panel(_chip_picture(f["target"], side), f"target false colour (B8 B4 B3) · chip {index}"),
                   Panel(_chip_picture(f["masked_input"], side), "masked input, false colour"),
                   Panel(_chip_picture(f["composite"], side), f"{PASTED}, false colour"),
                   Panel(_chip_picture(f["predicted"], side), f"{RAW}, false colour")]
    return panels


# where each group sits in reconstruction_panels' list: the one place that knows its order
PICTURE_PANELS, SCORE_PANELS, FALSE_COLOUR_PANELS = slice(0, 4), slice(4, 7), slice(7, 11)


def picture_rows(panels: list[Panel], raw: bool) -> list[list[Panel]]:
    """The picture rows of reconstruction_panels (one per colour: RGB or true colour, then false
    colour), each target, masked input, reconstruction + visible, and the raw model output only
    when `raw`."""
    rows = [panels[PICTURE_PANELS]] + ([panels[FALSE_COLOUR_PANELS]]
                                       if len(panels) > FALSE_COLOUR_PANELS.start else [])
    return [row if raw else row[:3] for row in rows]


def score_panels(panels: list[Panel]) -> list[Panel]:
    """The scoring panels of reconstruction_panels: error, ESA patch pred, ESA patch target."""
    return panels[SCORE_PANELS]


def error_legend_caption(rec: ChipReconstruction) -> str:
    """The caption under the error colour bar: what the error is measured in, and its range."""
    if rec.false_colour is not None:
        low, high = REFLECTANCE_ERROR_RANGE
        return (f"mean |error| of the normalised bands: {low:g} (black) … {high:g} std or more "
                "(yellow); grey = visible, not scored")
    low, high = ERROR_RANGE
    return (f"mean |RGB error|: {low:g} (black) … {high:g} or more (yellow); grey = visible, not "
            "scored")


def thumbnail(chips: ChipSet, index: int, side: int = THUMB_SIDE) -> np.ndarray:
    """Chip `index` as a side x side uint8 picture (nearest sampling: exact class colours;
    reflectance chips in true colour, as chip_colour)."""
    idx = np.arange(side) * chips.chip_size // side
    return chip_colour(chips, index)[np.ix_(idx, idx)]  # palette colours or true colour


def magma_legend(width: int = PANEL_SIDE, height: int = 12) -> np.ndarray:
    """A horizontal magma bar for 0 ... 0.5."""
    row = magma(np.linspace(*ERROR_RANGE, width)[None, :], *ERROR_RANGE)
    return np.repeat(row, height, axis=0)


# --- attention (the Inside-the-model page) -------------------------------------------------------
ATTENTION_SIDE = 256  # px of the attention pictures (an integer upscale of the chip)
ATTENTION_SMALL_SIDE = 128  # px of each layer x head picture
HIDDEN_GREY = np.array([235, 235, 235], dtype=np.uint8)


def hidden_patches_picture(chips: ChipSet, index: int, mask: np.ndarray, query: int | None,
                   side: int = ATTENTION_SIDE) -> np.ndarray:
    """The chip's land-cover picture with hidden patches light grey and patch `query` outlined."""
    g = mask.shape[0]
    p = chips.chip_size // g
    image = labels_image(chips.labels[index]).copy()
    image[np.kron(mask, np.ones((p, p), dtype=bool))] = HIDDEN_GREY
    image = upscale(image, max(1, side // chips.chip_size))
    return draw_grid(image, g, color=(255, 255, 255),
                     highlight=None if query is None else divmod(query, g))


def attention_picture(chips: ChipSet, index: int, weights: np.ndarray, query: int,
                      side: int = ATTENTION_SIDE) -> np.ndarray:
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


def attention_grid_pictures(chips: ChipSet, index: int, maps: AttentionMaps, query: int,
                            side: int = ATTENTION_SMALL_SIDE) -> list[list[tuple[np.ndarray, str]]]:
    """One row per layer, one (picture, caption) per head, for token `query`. A layer that did
    not compute this query (a visible-only encoder, a hidden query) gets a caption saying so."""
    rows = []
    for li, name in enumerate(maps.layers):
        row = []
        for h in range(maps.layer_heads[li]):
            if maps.queries[li, query]:
                grid = maps.grid(li, h, query)
                row.append((attention_picture(chips, index, grid, query, side),
                            f"{name} · head {h + 1} · max {grid.max():.2f}"))
            else:
                row.append((hidden_patches_picture(chips, index, maps.mask, query, side),
                            f"{name} · head {h + 1}: this layer never sees a hidden patch"))
        rows.append(row)
    return rows


# --- one patch the model got wrong (Evaluate) -------------------------------------------------
def outlined(image: np.ndarray, cells: int, cell: int, side: int) -> np.ndarray:
    """An H x W x 3 chip picture (floats in [0, 1] or uint8) enlarged to about `side` px with
    patch `cell` (row-major in a cells x cells grid) outlined: black inside white, so the outline
    shows on dark water and on no-data black alike."""
    image = upscale(to_uint8(image), max(1, side // image.shape[0]))
    h, w = image.shape[:2]
    r, c = divmod(int(cell), cells)
    r0, r1 = r * h // cells, (r + 1) * h // cells - 1
    c0, c1 = c * w // cells, (c + 1) * w // cells - 1
    out = image.copy()
    for t, colour in ((0, (255, 255, 255)), (1, (0, 0, 0)), (2, (0, 0, 0)), (3, (255, 255, 255))):
        a0, a1, b0, b1 = max(r0 - 2 + t, 0), min(r1 + 2 - t, h - 1), max(c0 - 2 + t, 0), min(c1 + 2 - t, w - 1)
        out[a0, b0:b1 + 1] = out[a1, b0:b1 + 1] = colour
        out[a0:a1 + 1, b0] = out[a0:a1 + 1, b1] = colour
    return out


def mistake_pictures(rec: ChipReconstruction, patch: int, side: int = 160
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(the chip as the model's input shows it, the model's reconstruction + visible patches),
    both about `side` px with patch `patch` outlined (outlined). `rec`: reconstruct_chip under
    the evaluation's mask, so a hidden patch is painted by the model in the second picture."""
    g = rec.mask.shape[0]
    return outlined(rec.target, g, patch, side), outlined(rec.composite, g, patch, side)
