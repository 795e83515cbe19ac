"""What the Regions and Chips pages show, computed from ROIs and chips (no Streamlit here).

The pages only lay these out: ROI pictures and provenance, map framing, held-out choices, chip
thumbnails, and the notebook's "patch tokens" panels (token mean RGB, token colour variance,
one token's 16 x 16 x 3 values) with the tensor-shape journey spelled out for one chip.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bharateo.chips import HOLDOUT_BLOCKS, ChipConfig, ChipSet
from bharateo.errors import RegionError
from bharateo.mapview import default_roi_name
from bharateo.model import ModelConfig
from bharateo.render import draw_grid, labels_image, thumbnail_labels, to_uint8, upscale
from bharateo.roi import (
    NOTEBOOK_ROIS,
    Roi,
    RoiSpec,
    check_roi_spec,
    roi_window,
)
from bharateo.words import ordinal
from bharateo.worldcover import (
    CLASS_COLORS_255,
    CLASS_COLORS_HEX,
    CLASS_NAMES,
    NATIVE_TO_COLLAPSED_NAME,
    NATIVE_WORLDCOVER_CLASSES,
    NODATA,
    NUM_CLASSES,
    collapse_worldcover,
)

PIXEL_METRES = 10
SIZE_OPTIONS = [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
DEFAULT_SIZE = 2048
NODATA_RGB = (255, 255, 255)  # sea / outside coverage in ROI pictures
CHANNELS = ("R", "G", "B")
CHANNEL_NAMES = ("red", "green", "blue")


# --- legends and labels ----------------------------------------------------------------------
def legend_html(classes=None) -> str:
    """Inline HTML swatches for the collapsed classes (all, or the ids in `classes`)."""
    ids = range(NUM_CLASSES) if classes is None else sorted(set(int(c) for c in classes))
    return " ".join(
        f"<span style='background:{CLASS_COLORS_HEX[i]};padding:1px 7px;border-radius:3px;"
        f"color:{text_color(i)};font-size:0.8em'>{html.escape(CLASS_NAMES[i])}</span>"
        for i in ids)


def text_color(class_id: int) -> str:
    """Black or white, whichever reads better on the class colour."""
    r, g, b = (int(v) for v in CLASS_COLORS_255[class_id])
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def share_legend_html(counts) -> str:
    """Swatches of the classes present in `counts` (pixels per class), with their shares."""
    counts = np.asarray(counts, dtype=np.int64)
    total = max(int(counts.sum()), 1)
    return " ".join(
        f"<span style='background:{CLASS_COLORS_HEX[i]};padding:1px 6px;border-radius:3px;"
        f"color:{text_color(i)};font-size:0.8em;white-space:nowrap'>"
        f"{html.escape(CLASS_NAMES[i])} {100 * counts[i] / total:.1f}%</span>"
        for i in np.argsort(-counts, kind="stable") if counts[i])


def class_swatch_html(class_id: int, text: str | None = None) -> str:
    """One class as a coloured swatch followed by its name (or `text`)."""
    return (f"<span style='display:inline-block;width:1.1em;height:1.1em;vertical-align:-0.2em;"
            f"border:1px solid #555;background:{CLASS_COLORS_HEX[class_id]}'></span> "
            f"<b>{html.escape(text or CLASS_NAMES[class_id])}</b>")


def size_label(pixels: int) -> str:
    """2048 -> '2048 px (20.5 km)': ROI side at 10 m per pixel."""
    return f"{pixels} px ({pixels * PIXEL_METRES / 1000:g} km)"


def lon_lat_text(lon: float, lat: float) -> str:
    return f"{abs(lon):.4f}°{'E' if lon >= 0 else 'W'} {abs(lat):.4f}°{'N' if lat >= 0 else 'S'}"


def bounds_text(bounds) -> str:
    west, south, east, north = bounds
    return f"W {west:.4f}, S {south:.4f}, E {east:.4f}, N {north:.4f}"


# --- regions ---------------------------------------------------------------------------------
def spec_from_form(name: str, lon: float, lat: float, size: int) -> RoiSpec:
    """A checked RoiSpec from the page's lon/lat form (RegionError if it can't be a region)."""
    if lon is None or lat is None:
        raise RegionError("Enter both a longitude and a latitude.")
    lon, lat = round(float(lon), 4), round(float(lat), 4)
    spec = RoiSpec((name or "").strip() or default_roi_name(lon, lat), lon, lat, int(size))
    check_roi_spec(spec)
    roi_window(spec)  # also rejects regions crossing 180°
    return spec


def resized(spec: RoiSpec, size: int) -> RoiSpec:
    """The same proposal with a new size (RegionError if the new size can't be used)."""
    new = RoiSpec(spec.name, spec.lon, spec.lat, int(size))
    roi_window(new)
    return new


def missing_presets(rois: list[Roi]) -> list[RoiSpec]:
    """The notebook's ROIs not chosen yet (by name)."""
    chosen = {r.spec.name for r in rois}
    return [spec for spec in NOTEBOOK_ROIS if spec.name not in chosen]


def spec_tiles(spec: RoiSpec) -> list[str]:
    return [tile for tile, _, _ in roi_window(spec).tiles()]


def spec_summary(spec: RoiSpec) -> str:
    """'centre 77.2300°E 28.6100°N, 2048 px (20.5 km) square, tile N27E075'."""
    tiles = spec_tiles(spec)
    return (f"centre {lon_lat_text(spec.lon, spec.lat)}, {size_label(spec.size)} square, "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}")


def map_layers(rois: list[Roi], proposed: RoiSpec | None):
    """(chosen [(name, bounds)], proposed (name, bounds) | None) for mapview.build_region_map."""
    chosen = [(r.spec.name, tuple(r.provenance.get("bounds") or roi_window(r.spec).bounds))
              for r in rois]
    return chosen, (None if proposed is None else (proposed.name, roi_window(proposed).bounds))


def map_view(bounds_list, default=((27.5, 77.0), 6), width_px: int = 700, height_px: int = 450,
             min_span_deg: float = 2.5, zoom_range=(5, 8)):
    """(centre (lat, lon), zoom) framing every (west, south, east, north) in `bounds_list`.

    Keeps at least `min_span_deg` in view so the tile grid around the regions stays visible.
    """
    if not bounds_list:
        return default
    west = min(b[0] for b in bounds_list)
    south = min(b[1] for b in bounds_list)
    east = max(b[2] for b in bounds_list)
    north = max(b[3] for b in bounds_list)
    lat_c, lon_c = (south + north) / 2, (west + east) / 2
    span_lon = max((east - west) * 1.3, min_span_deg)
    span_lat = max((north - south) * 1.3, min_span_deg) / max(math.cos(math.radians(lat_c)), 0.2)
    fit = min(math.log2(width_px * 360 / (256 * span_lon)),
              math.log2(height_px * 360 / (256 * span_lat)))
    zoom = int(min(max(math.floor(fit), zoom_range[0]), zoom_range[1]))
    return (round(lat_c, 4), round(lon_c, 4)), zoom


def native_code_counts(roi: Roi) -> np.ndarray:
    """Pixels per native code 0..255 (one pass; np.unique would sort 4M pixels)."""
    return np.bincount(roi.native.ravel(), minlength=256)


def collapsed_counts(roi: Roi) -> np.ndarray:
    """Pixels per collapsed class (8), leaving out no-data (sea / outside coverage) pixels."""
    native = native_code_counts(roi)
    native[NODATA] = 0
    return np.bincount(collapse_worldcover(np.arange(256, dtype=np.uint8)), weights=native,
                       minlength=NUM_CLASSES).astype(np.int64)


@dataclass
class RoiPicture:
    image: np.ndarray  # h x w x 3 uint8 palette picture
    step: int  # every step-th pixel shown
    caption: str


def roi_picture(roi: Roi, max_side: int = 512) -> RoiPicture:
    """The ROI in the class palette (every k-th pixel for big ROIs; no-data in white)."""
    native = thumbnail_labels(roi.native, max_side)
    step = max(1, math.ceil(max(roi.native.shape) / max_side))  # as thumbnail_labels
    image = labels_image(collapse_worldcover(native))
    nodata = native == NODATA
    if nodata.any():
        image = image.copy()
        image[nodata] = NODATA_RGB
    size = roi.spec.size
    scale = "full resolution" if step == 1 else f"every {ordinal(step)} pixel shown (1:{step})"
    caption = (f"{size} x {size} px at 10 m = {size * PIXEL_METRES / 1000:g} x "
               f"{size * PIXEL_METRES / 1000:g} km; {scale}; north is up.")
    if nodata.any():
        caption += " White: no data (sea / outside coverage)."
    return RoiPicture(image, step, caption)


def roi_from_cache(roi: Roi) -> bool:
    return str(roi.provenance.get("source", "")).startswith("local cache")


def roi_summary(roi: Roi) -> str:
    """One line under an ROI's picture: where it is and where its pixels came from."""
    tiles = [t.get("tile", "?") for t in roi.provenance.get("tiles", [])]
    text = (f"Centre {lon_lat_text(roi.spec.lon, roi.spec.lat)}; "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}; "
            f"source: {roi.provenance.get('source', '?')}.")
    if roi.synthetic:
        text += " Synthetic test fixture, not WorldCover."
    return text


def provenance_rows(roi: Roi) -> pd.DataFrame:
    """Where an ROI's pixels came from, as a two-column table."""
    p = roi.provenance
    tiles = [t.get("tile", "?") for t in p.get("tiles", [])]
    source = str(p.get("source", "?"))
    rows = [
        ("source", source + (" (synthetic test fixture, NOT WorldCover)" if roi.synthetic else "")),
        ("cache", "read from the local disk cache (no download)" if roi_from_cache(roi)
         else "read from the source, then cached on disk"),
        ("tiles", ", ".join(tiles) or "?"),
        ("centre", lon_lat_text(roi.spec.lon, roi.spec.lat)),
        ("bounds (deg)", bounds_text(p["bounds"]) if p.get("bounds") else "?"),
        ("size", size_label(roi.spec.size)),
        ("CRS", str(p.get("crs", "?"))),
        ("no-data share", f"{float(p.get('nodata_fraction', 0.0)):.1%}"),
        ("first read at", str(p.get("read_at", "?")).replace("T", " ")),
    ]
    rows += [("note", note) for note in roi.notes]
    return pd.DataFrame(rows, columns=["", "value"])


def provenance_markdown(roi: Roi) -> str:
    """The provenance table as a markdown list (wraps in a narrow column)."""
    return "\n".join(f"- **{key}**: {html.escape(str(value))}"
                     for key, value in provenance_rows(roi).itertuples(index=False))


def native_counts_table(roi: Roi) -> pd.DataFrame:
    """The notebook's printed native-code counts, with names and the collapsed class."""
    counts = {code: int(n) for code, n in enumerate(native_code_counts(roi)) if n}
    return pd.DataFrame([
        {"code": code, "WorldCover class": NATIVE_WORLDCOVER_CLASSES.get(code, "no data / sea"
                                                                        if code == NODATA else "?"),
         "pixels": count, "collapsed to": NATIVE_TO_COLLAPSED_NAME.get(code, "(left out)")}
        for code, count in sorted(counts.items())])


# --- chips -----------------------------------------------------------------------------------
CHIP_SIZES = [64, 128, 256]


def holdout_choices(roi_names: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Label -> (holdout_roi, holdout_block), 'none' first."""
    choices = {"none (all regions train)": (None, None)}
    for name in roi_names:
        choices[f"all of {name}"] = (name, None)
        for block in HOLDOUT_BLOCKS:
            choices[f"{name}: {block} half"] = (name, block)
    return choices


def holdout_label(config: ChipConfig, roi_names: list[str]) -> str:
    """The choice label matching `config` (or 'none' when its ROI is gone)."""
    for label, value in holdout_choices(roi_names).items():
        if value == (config.holdout_roi, config.holdout_block):
            return label
    return next(iter(holdout_choices(roi_names)))


def chips_stale(chips: ChipSet | None, rois: list[Roi]) -> bool:
    """True if the chips were cut from regions other than the ones chosen now."""
    return chips is not None and chips.roi_names != [r.spec.name for r in rois]


def chip_picture(chips: ChipSet, i: int, mode: str = "rgb", display_px: int = 256) -> np.ndarray:
    """Chip i as uint8, enlarged (nearest) to about display_px: its RGB, or its patch labels."""
    if mode == "rgb":
        image = labels_image(chips.labels[i])
    else:
        image = labels_image(chips.patch_labels[i])
    return upscale(image, max(1, display_px // image.shape[0]))


def chip_indices(chips: ChipSet, roi_name: str | None = None) -> list[int]:
    """Indices of the chips from `roi_name` (all chips when None)."""
    if roi_name is None:
        return list(range(len(chips)))
    if roi_name not in chips.roi_names:
        return []
    return np.flatnonzero(chips.roi_index == chips.roi_names.index(roi_name)).tolist()


def chip_caption(chips: ChipSet, i: int) -> str:
    return f"#{i} · {chips.roi_names[chips.roi_index[i]]}"


@dataclass
class TokenView:
    """The notebook's patch-token view of one chip."""

    tokens: np.ndarray  # N x (3*p*p) float32, the model's input rows
    tokens_rgb: np.ndarray  # N x 3 x p x p
    mean_rgb: np.ndarray  # N x 3
    color_var: np.ndarray  # G x G: per-channel variance inside a token, averaged over channels
    grid: int
    patch: int

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def rowcol(self, token: int) -> tuple[int, int]:
        return divmod(int(token), self.grid)


def token_view(chips: ChipSet, i: int) -> TokenView:
    """Tokens of chip i plus the notebook's token mean RGB and token colour variance."""
    tokens = chips.tokens([i])[0].numpy()
    p, g = chips.patch_size, chips.grid_size
    tokens_rgb = tokens.reshape(g * g, 3, p, p)
    mean_rgb = tokens_rgb.mean(axis=(-1, -2))
    flat = tokens_rgb.reshape(g * g, 3, p * p).astype(np.float64)
    color_var = flat.var(axis=-1, ddof=1).mean(axis=1).reshape(g, g)  # torch .var is unbiased
    return TokenView(tokens, tokens_rgb, mean_rgb, color_var, g, p)


def chip_with_grid(chips: ChipSet, i: int, token: int | None, display_px: int = 384) -> np.ndarray:
    """Chip i enlarged, with its token grid drawn and token `token` outlined."""
    g = chips.grid_size
    image = upscale(labels_image(chips.labels[i]), max(1, display_px // chips.chip_size))
    return draw_grid(image, g, highlight=None if token is None else divmod(int(token), g))


def mean_rgb_picture(view: TokenView, token: int | None, display_px: int = 384) -> np.ndarray:
    """G x G token mean colours, enlarged, token `token` outlined."""
    image = to_uint8(view.mean_rgb.reshape(view.grid, view.grid, 3))
    image = upscale(image, max(1, display_px // view.grid))
    return draw_grid(image, view.grid, color=(255, 255, 255),
                     highlight=None if token is None else view.rowcol(token))


def token_values(view: TokenView, token: int) -> dict[str, pd.DataFrame]:
    """Channel -> p x p table of token `token`'s values (rows u, columns v), 3 decimals."""
    out = {}
    for c, name in enumerate(CHANNELS):
        values = np.round(view.tokens_rgb[token, c].astype(np.float64), 3)
        out[name] = pd.DataFrame(values, columns=[str(v) for v in range(view.patch)])
    return out


def token_class_mix(chips: ChipSet, i: int, token: int) -> list[tuple[int, int]]:
    """[(class id, pixels)] inside token `token` of chip i, most pixels first."""
    p, g = chips.patch_size, chips.grid_size
    r, c = divmod(int(token), g)
    block = chips.labels[i, r * p:(r + 1) * p, c * p:(c + 1) * p]
    counts = np.bincount(block.ravel(), minlength=NUM_CLASSES)
    return [(int(k), int(counts[k])) for k in np.argsort(-counts, kind="stable") if counts[k]]


def token_mix_text(chips: ChipSet, i: int, token: int) -> str:
    """'Pixels by class: built_up 180, tree 76 (of 256); the most frequent class is the label.'"""
    mix = token_class_mix(chips, i, token)
    text = ("Pixels by class: " + ", ".join(f"{CLASS_NAMES[k]} {n}" for k, n in mix)
            + f" (of {chips.patch_size ** 2}); the most frequent class is the label")
    if len(mix) > 1 and mix[0][1] == mix[1][1]:
        text += " (a tie goes to the class listed first in the legend)"
    return text + "."


def token_label(chips: ChipSet, i: int, token: int) -> int:
    g = chips.grid_size
    r, c = divmod(int(token), g)
    return int(chips.patch_labels[i, r, c])


def token_picture(view: TokenView, token: int, display_px: int = 128) -> np.ndarray:
    """Token `token`'s p x p pixels, enlarged."""
    image = to_uint8(view.tokens_rgb[token].transpose(1, 2, 0))
    return upscale(image, max(1, display_px // view.patch))


def embed_dim_from_state(model_state) -> tuple[int, str]:
    """(embed dim, where it came from) for the current model, else the notebook's default."""
    if model_state:
        config = model_state.get("config")
        dim = getattr(getattr(config, "model", None), "embed_dim", None)
        if dim:
            return int(dim), f"the current model, {model_state.get('label', 'loaded')}"
    return ModelConfig().embed_dim, "the notebook's default; no model trained or loaded yet"


def shape_journey(chips: ChipSet, i: int, view: TokenView, embed_dim: int, embed_source: str,
                  token: int = 0) -> str:
    """Markdown: how chip i becomes the model's input, with this chip's numbers."""
    s, p, g, n = chips.chip_size, chips.patch_size, view.grid, view.n_tokens
    dim = view.tokens.shape[1]
    r0, c0 = (int(v) for v in chips.origins[i])
    roi = chips.roi_names[chips.roi_index[i]]
    classes = sorted(set(np.unique(chips.labels[i]).tolist()))
    lo, hi = float(view.tokens.min()), float(view.tokens.max())
    first = ", ".join(f"{v:.3f}" for v in view.mean_rgb[0])
    chosen = ", ".join(f"{v:.3f}" for v in view.mean_rgb[token])
    tr, tc = view.rowcol(token)
    return "\n".join([
        f"**Chip {i}** was cut from `{roi}` at rows {r0}–{r0 + s - 1}, columns {c0}–{c0 + s - 1} "
        f"of the region ({s * PIXEL_METRES / 1000:g} km square).",
        "",
        f"1. **{s} × {s}** class ids (classes here: "
        f"{', '.join(CLASS_NAMES[k] for k in classes)}) are painted in the palette: the input "
        f"tensor is **3 × {s} × {s}** = {3 * s * s:,} values, min {lo:.3f}, max {hi:.3f}.",
        f"2. Patchify: cutting the chip into {g} × {g} patches of {p} × {p} px gives "
        f"**{n} × {dim}**: {n} tokens, each 3 channels × {p} × {p} px = {dim} values (all red "
        "values, then green, then blue).",
        f"3. The linear patch embedding ({dim} → {embed_dim}) turns them into "
        f"**{n} × {embed_dim}**, the transformer's sequence (embed dim {embed_dim}: "
        f"{embed_source}).",
        f"4. The encoder keeps **{n} × {embed_dim}**; the pixel head maps each token back to "
        f"{dim} values and the patch head to {NUM_CLASSES} class scores: **{n} × {dim}** and "
        f"**{n} × {NUM_CLASSES}**.",
        "",
        f"First token's mean RGB: ({first}); its colour variance "
        f"{float(view.color_var.flat[0]):.4f}. Selected token {token} (row {tr}, col {tc}): mean "
        f"RGB ({chosen}), variance {float(view.color_var[tr, tc]):.4f}.",
    ])


