"""What the Regions and Chips pages show, computed from ROIs and chips (no Streamlit here).

The pages only lay these out: ROI pictures and provenance, map framing, held-out choices, chip
thumbnails, and the notebook's "patch tokens" panels (token mean RGB, token colour variance,
one token's 16 x 16 x 3 values) with the tensor-shape journey spelled out for one chip.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bharateo.chips import HOLDOUT_BLOCKS, MAX_CHIP_NODATA_FRACTION, ChipConfig, ChipSet
from bharateo.errors import RegionError
from bharateo.model import ModelConfig
from bharateo.app.pictures import draw_grid, labels_image, thumbnail_labels, to_uint8, upscale
from bharateo.roi import (
    NOTEBOOK_ROIS,
    SAMPLE_ROIS,
    Roi,
    RoiSpec,
    check_roi_spec,
    default_roi_name,
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
    NODATA_COLOR_255,
    NODATA_COLOR_HEX,
    NODATA_NAME,
    NUM_CLASSES,
    PIXELS_PER_DEGREE,
    class_name,
    collapse_worldcover,
)

WGS84_A = 6378137.0  # WGS84 semi-major axis, m (NIMA TR8350.2)
WGS84_F = 1 / 298.257223563  # WGS84 flattening
SIZE_OPTIONS = [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
DEFAULT_SIZE = 2048
NODATA_RGB = NODATA_COLOR_255  # sea / outside coverage in every picture: black
NODATA_HELP = "left out of losses and metrics"
CHANNELS = ("R", "G", "B")
CHANNEL_NAMES = ("red", "green", "blue")


# --- legends and labels ----------------------------------------------------------------------
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


def pixel_metres(lat: float) -> tuple[float, float]:
    """(north-south, east-west) ground size in metres of one WorldCover pixel at latitude `lat`.

    A pixel is 1/12000 degree each way. On the WGS84 ellipsoid one degree of latitude is
    M * pi/180 and one of longitude N * cos(lat) * pi/180, with M and N the meridional and
    prime-vertical radii of curvature: 9.21-9.31 m north-south (equator to pole), and 8.15 m
    east-west at Delhi (28.6N), 9.28 m at the equator.
    """
    e2 = WGS84_F * (2 - WGS84_F)
    phi = math.radians(lat)
    w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
    meridional, prime_vertical = WGS84_A * (1 - e2) / w ** 3, WGS84_A / w
    per_degree = math.pi / 180 / PIXELS_PER_DEGREE
    return meridional * per_degree, prime_vertical * math.cos(phi) * per_degree


def ground_size(pixels: int, lat: float) -> str:
    """2048, 28.61 -> '2048 px ≈ 18.9 km N-S x 16.7 km E-W at 28.61°N' (WGS84, see pixel_metres).

    The east-west size is the one at `lat` (a region's centre); it shrinks with cos(latitude).
    """
    ns, ew = pixel_metres(lat)
    return (f"{pixels} px ≈ {km_text(pixels * ns)} N-S x {km_text(pixels * ew)} E-W "
            f"at {abs(lat):.2f}°{'N' if lat >= 0 else 'S'}")


def km_text(metres: float) -> str:
    """18929.3 -> '18.9 km'; 590.4 -> '590 m'."""
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


def size_label(pixels: int) -> str:
    """2048 -> '2048 px (≈ 19 km N-S)': a region side for the size slider, before any latitude.

    North-south, 1/12000 degree is 9.21-9.31 m wherever the region is (pixel_metres); east-west
    it depends on the latitude, which spec_summary and the region captions give.
    """
    return f"{pixels} px (≈ {pixels * pixel_metres(45.0)[0] / 1000:.0f} km N-S)"


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


PRESET_PLACES = {"N27E075": "north India", "N00E006": "São Tomé and Príncipe"}


def missing_presets(rois: list[Roi], presets: list[RoiSpec] | None = None) -> list[RoiSpec]:
    """The presets (default: the notebook's three, then SAMPLE_ROIS) not chosen yet (by name)."""
    chosen = {r.spec.name for r in rois}
    presets = [*NOTEBOOK_ROIS, *SAMPLE_ROIS] if presets is None else presets
    return [spec for spec in presets if spec.name not in chosen]


def presets_place(presets: list[RoiSpec]) -> str:
    """Where a preset list lies, in words: 'north India (tile N27E075)'."""
    tiles = sorted({t for spec in presets for t in spec_tiles(spec)})
    places = sorted({PRESET_PLACES.get(t, t) for t in tiles})
    return f"{' and '.join(places)} (tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)})"


def data_in_use(rois: list[Roi], defaults: list[RoiSpec]) -> str:
    """Markdown naming the pixels the lab works on now: the regions chosen, grouped by what their
    files say they are (Roi.data_label), or else where the default presets lie."""
    if not rois:
        return f"No regions chosen yet; the default presets are in {presets_place(defaults)}."
    groups: dict[str, list[Roi]] = {}
    for roi in rois:
        groups.setdefault(roi.data_label, []).append(roi)
    parts = []
    for label, group in groups.items():
        tiles = sorted({t.get("tile", "?") for r in group for t in r.provenance.get("tiles", [])})
        places = sorted({PRESET_PLACES.get(t, t) for t in tiles})
        parts.append(f"**{label}**: {', '.join(r.spec.name for r in group)} "
                     f"({' and '.join(places)}; tile{'s' if len(tiles) > 1 else ''} "
                     f"{', '.join(tiles)})")
    return "; ".join(parts) + "."


def spec_tiles(spec: RoiSpec) -> list[str]:
    return [tile for tile, _, _ in roi_window(spec).tiles()]


def spec_summary(spec: RoiSpec) -> str:
    """'centre 77.2300°E 28.6100°N, 2048 px ≈ 18.9 km N-S x 16.7 km E-W at 28.61°N, tile N27E075'."""
    tiles = spec_tiles(spec)
    return (f"centre {lon_lat_text(spec.lon, spec.lat)}, {ground_size(spec.size, spec.lat)}, "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}")


def map_layers(rois: list[Roi], proposed: RoiSpec | None):
    """(chosen [(name, bounds)], proposed (name, bounds) | None) for mapview.build_region_map."""
    chosen = [(r.spec.name, tuple(r.provenance.get("bounds") or roi_window(r.spec).bounds))
              for r in rois]
    return chosen, (None if proposed is None else (proposed.name, roi_window(proposed).bounds))


def drawn_view(view, drawn) -> bool:
    """True when `view` ((lat, lon), zoom), reported by the map, is one of the views in `drawn`
    (the page's own recent frames) to within a screen pixel at that zoom (256 px tiles:
    360 / 2^(zoom + 8) degrees of longitude a pixel), i.e. not a pan or zoom by the user."""
    (lat, lon), zoom = view
    tolerance = 360 / 2 ** (zoom + 8)
    return any(z == zoom and abs(c[0] - lat) <= tolerance and abs(c[1] - lon) <= tolerance
               for c, z in drawn)


def map_view(bounds_list, default=((27.5, 77.0), 5), width_px: int = 700, height_px: int = 450,
             min_span_deg: float = 0.4, zoom_range=(2, 11)):
    """(centre (lat, lon), zoom) framing every (west, south, east, north) in `bounds_list`, the
    largest Web Mercator zoom at which they fit in `width_px` x `height_px` with a 30 % margin.

    Keeps at least `min_span_deg` in view, so one 2048 px region (0.17°) fills about a third of
    the map instead of being a speck or filling it.
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


def map_frame(frame, content, user_view, fit):
    """The (content, ((lat, lon), zoom)) to draw the Regions map at this run.

    `frame` is last run's; `content` anything hashable naming what the map draws; `user_view`
    where the user left the map (None until they pan or zoom, or after a refit); `fit()` the
    view framing the regions. Unchanged content keeps the frame, so the map script stays the same
    and st_folium keeps its live map (and the user's pan); new content is drawn where the user
    left the map, or fitted when they have not moved it.
    """
    if frame is not None and frame[0] == content:
        return frame
    return content, (user_view or fit())


def map_caption(overviews) -> str:
    """The map's key, naming the land-cover overviews on it and what their pixels are."""
    text = ("Grey lines: the WorldCover 3° tiles everywhere (60°S-84°N), each named at its "
            "south-west corner once zoomed in. Blue: your regions; dashed orange: the proposal.")
    tiles = [o for o in overviews if re.fullmatch(r"[NS]\d\d[EW]\d{3}", o.name)]
    labels: dict[str, list[str]] = {}
    for o in tiles:
        labels.setdefault(o.data_label, []).append(o.name)
    if tiles:
        text += " Colours: each tile at hand read offline from its own overviews (~1 km pixels; " + \
            "; ".join(f"{', '.join(names)}: {label}" for label, names in labels.items()) + ")"
    regions: dict[str, int] = {}
    for o in overviews:
        if o not in tiles:
            regions[o.data_label] = regions.get(o.data_label, 0) + 1
    if regions:
        text += (", " if tiles else " Colours: ") + ", ".join(
            f"{n} cached region{'s' * (n > 1)} ({label})" for label, n in regions.items())
    if overviews:
        text += "; no data (sea) left clear."
    return text + (" The OpenStreetMap background needs internet; offline the land-cover "
                   "colours, tiles, regions and clicks still work.")


def native_code_counts(roi: Roi) -> np.ndarray:
    """Pixels per native code 0..255 (one pass; np.unique would sort 4M pixels)."""
    return np.bincount(roi.native.ravel(), minlength=256)


def collapsed_counts(roi: Roi) -> np.ndarray:
    """Pixels per collapsed class (8), leaving out no-data (sea / outside coverage) pixels,
    which `nodata_pixels` counts apart."""
    native = native_code_counts(roi)
    native[NODATA] = 0
    return np.bincount(collapse_worldcover(np.arange(256, dtype=np.uint8)), weights=native,
                       minlength=256)[:NUM_CLASSES].astype(np.int64)


def nodata_pixels(roi: Roi) -> int:
    """No-data pixels (native code 0: sea / outside coverage) in the ROI."""
    return int(np.count_nonzero(roi.native == NODATA))


@dataclass
class RoiPicture:
    image: np.ndarray  # h x w x 3 uint8 palette picture
    step: int  # every step-th pixel shown
    caption: str


def roi_picture(roi: Roi, max_side: int = 512) -> RoiPicture:
    """The ROI in the class palette (every k-th pixel for big ROIs; no-data in black)."""
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


def roi_from_cache(roi: Roi) -> bool:
    return str(roi.provenance.get("source", "")).startswith("local cache")


def roi_summary(roi: Roi) -> str:
    """One line under an ROI's picture: where it is and where its pixels came from."""
    tiles = [t.get("tile", "?") for t in roi.provenance.get("tiles", [])]
    text = (f"Centre {lon_lat_text(roi.spec.lon, roi.spec.lat)}; "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}; "
            f"source: {roi.provenance.get('source', '?')}.")
    nodata = nodata_pixels(roi)
    if nodata:
        text += (f" No data (sea / outside coverage): {nodata:,} pixels, "
                 f"{nodata / roi.native.size:.1%} of the region; never a land-cover class (chips "
                 f"with more than {MAX_CHIP_NODATA_FRACTION:.0%} no-data are not used).")
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
        ("size", ground_size(roi.spec.size, roi.spec.lat)),
        ("CRS", str(p.get("crs", "?"))),
        ("no-data share", f"{float(p.get('nodata_fraction', 0.0)):.1%}"),
        ("first read at", str(p.get("read_at", "?")).replace("T", " ")),
    ]
    rows.insert(1, ("data", roi.data_label))
    for tile in p.get("tiles", []):  # the file's own tags: what it says it is
        if tile.get("status", "read") != "read":
            rows.append((f"{tile.get('tile', '?')}", str(tile.get("status"))))
        else:
            tags = tile.get("tags") or {}
            rows.append((f"{tile.get('tile', '?')} file tags",
                         "; ".join(f"{k}={v}" for k, v in tags.items())
                         or "none (not an ESA WorldCover file)"))
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
         "pixels": count, "collapsed to": (f"{NODATA_NAME} (never a class)" if code == NODATA
                                            else NATIVE_TO_COLLAPSED_NAME.get(code, "rare_other"))}
        for code, count in sorted(counts.items())])


def native_counts_html(roi: Roi) -> str:
    """native_counts_table as a small HTML table that wraps to its column's width, so every row
    and column shows in a narrow region card (st.table / st.dataframe cut the last columns off)."""
    table = native_counts_table(roi)
    cell = "<{tag} style='padding:2px 4px;text-align:{align};overflow-wrap:break-word'>{text}</{tag}>"

    def align(column) -> str:
        return "right" if pd.api.types.is_numeric_dtype(table[column]) else "left"

    head = "".join(cell.format(tag="th", align=align(c), text=html.escape(str(c)))
                   for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(cell.format(tag="td", align=align(c), text=html.escape(
            f"{v:,}" if c == "pixels" else str(v)).replace("_", "_<wbr>"))
            for c, v in zip(table.columns, values))
        + "</tr>" for values in table.itertuples(index=False))
    return (f"<table class='bharateo-native-counts' style='width:100%;"
            f"border-collapse:collapse;font-size:0.75em;line-height:1.25'><thead><tr>{head}"
            f"</tr></thead><tbody>{rows}</tbody></table>")


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


# The Chips form's typed fields: (label, low, high, why). Checked on Build, never clamped.
CHIP_FIELDS = {
    "n_chips": ("Training chips", 1, 4096, "more than 4096 take too long to cut and train in a lesson"),
    "seed": ("Seed", 0, 2**31 - 1, "seeds are whole numbers from 0 to 2^31 - 1"),
    "n_holdout_chips": ("Held-out chips", 1, 1024, "1024 are plenty to measure a held-out region"),
}


def chip_field_help(key: str) -> str:
    """The allowed range of one of the Chips form's typed fields, for its tooltip."""
    label, low, high, why = CHIP_FIELDS[key]
    return f"Whole number from {low:,} to {high:,}."


def chip_field_problems(values: dict) -> list[str]:
    """One sentence per invalid typed Chips field (empty: all fine), naming the field, the value
    typed and the allowed range; a value is never replaced by another."""
    problems = []
    for key, (label, low, high, why) in CHIP_FIELDS.items():
        value = values.get(key)
        allowed = f"type a whole number from {low:,} to {high:,}"
        if value is None or value != value:
            problems.append(f"**{label}** is empty: {allowed}.")
        elif not low <= value <= high or value != int(value):
            problems.append(f"**{label}** is {value:g}: {allowed} ({why}).")
    return problems


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
    """[(collapsed id, pixels)] inside token `token` of chip i, most pixels first (no-data, id
    NODATA_ID, among them)."""
    p, g = chips.patch_size, chips.grid_size
    r, c = divmod(int(token), g)
    block = chips.labels[i, r * p:(r + 1) * p, c * p:(c + 1) * p]
    counts = np.bincount(block.ravel(), minlength=NUM_CLASSES)
    return [(int(k), int(counts[k])) for k in np.argsort(-counts, kind="stable") if counts[k]]


def token_mix_text(chips: ChipSet, i: int, token: int) -> str:
    """'Pixels by class: built_up 180, tree 76 (of 256); the most frequent class is the label.'

    For a patch at least half no-data it says the label is no data, left out of losses and
    metrics (the no-data rule in bharateo/chips.py)."""
    mix = token_class_mix(chips, i, token)
    text = ("Pixels by class: " + ", ".join(f"{class_name(k)} {n}" for k, n in mix)
            + f" (of {chips.patch_size ** 2}); ")
    if token_label(chips, i, token) < 0:
        return text + (f"at least half is no data, so the patch label is {NODATA_NAME} "
                       f"({NODATA_HELP}).")
    land = [(k, n) for k, n in mix if k < NUM_CLASSES]
    text += "the most frequent " + ("land-cover class (no data never is)" if len(land) < len(mix)
                                    else "class") + " is the label"
    if len(land) > 1 and land[0][1] == land[1][1]:
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
    classes = sorted(set(np.unique(chips.labels[i]).tolist()))  # NODATA_ID (255) sorts last
    lo, hi = float(view.tokens.min()), float(view.tokens.max())
    first = ", ".join(f"{v:.3f}" for v in view.mean_rgb[0])
    chosen = ", ".join(f"{v:.3f}" for v in view.mean_rgb[token])
    tr, tc = view.rowcol(token)
    return "\n".join([
        f"**Chip {i}** was cut from `{roi}` at rows {r0}–{r0 + s - 1}, columns {c0}–{c0 + s - 1} "
        f"of the region (about {km_text(s * pixel_metres(0)[0])} a side).",
        "",
        f"1. **{s} × {s}** class ids (classes here: "
        f"{', '.join(class_name(k) for k in classes)}) are painted in the palette: the input "
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


