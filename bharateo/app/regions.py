"""The Regions page's logic: its session keys and map events, reading regions for a session
(with progress on the page, through a server-wide store, so thirty students choosing Delhi read
it once), the presets, the land-cover overviews under the map, and what the page says about
each region (ground size on the WGS84 ellipsoid, provenance, class and native-code counts).
The map itself is bharateo/app/mapview.py; the pictures are bharateo/app/pictures.py. The
sidebar and Home use data_in_use_text.
"""
from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from bharateo.data.geodesy import (bounds_text, ground_size, km_text, lon_lat_text,
                                   pixel_metres)
from bharateo.errors import BharatEOError, RegionError
from bharateo.data.cache import cache_path, data_dir
from bharateo.data.roi import (
    NOTEBOOK_ROIS,
    SAMPLE_ROIS,
    Roi,
    RoiSpec,
    check_no_overlap,
    check_roi_spec,
    default_presets,
    default_roi_name,
    load_roi,
    roi_window,
)
from bharateo.data.worldcover import (
    NATIVE_TO_COLLAPSED_NAME,
    NATIVE_WORLDCOVER_CLASSES,
    NODATA,
    NODATA_NAME,
    NUM_CLASSES,
    SAMPLE_TILES,
    DataSource,
    bundled_tile_path,
    collapse_worldcover,
    data_source_from_env,
)

SIZE_OPTIONS = [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
DEFAULT_SIZE = 2048


# --- ground size (the geodesy is bharateo/data/geodesy.py) -------------------------------
def size_label(pixels: int, pixel_m: tuple[float, ...] | None = None) -> str:
    """A region side for the size slider and the reading progress, before any latitude.

    `pixel_m` None: WorldCover pixels, 2048 -> '2048 px (≈ 19 km N-S)': north-south, 1/12000
    degree is 9.21-9.31 m wherever the region is (pixel_metres); east-west it depends on the
    latitude, which spec_summary and the region captions give. Otherwise the square pixel sizes
    in metres of the Sentinel-2 scenes the region may come from (region_pixel_metres):
    (100.0,) -> '256 px (≈ 25.6 km a side, 100 m pixels)'; several -> a range.
    """
    if pixel_m is None:
        return f"{pixels} px (≈ {pixels * pixel_metres(45.0)[0] / 1000:.0f} km N-S)"
    if not pixel_m:
        return f"{pixels} px (the scene's own pixel size)"
    lo, hi = min(pixel_m), max(pixel_m)
    if lo == hi:
        return f"{pixels} px (≈ {km_text(pixels * lo)} a side, {lo:g} m pixels)"
    return (f"{pixels} px (≈ {km_text(pixels * lo)}–{km_text(pixels * hi)} a side, "
            f"{lo:g}–{hi:g} m pixels by scene)")


def region_pixel_metres() -> tuple[float, ...] | None:
    """Pixel sizes (m) a region read now would have: None for WorldCover (1/12000 degree,
    pixel_metres), else the Sentinel-2 source's (sentinel2.folder_pixel_metres: a local folder's
    scenes' own, 10 m from a STAC API)."""
    if pixel_query()[0] == "worldcover":
        return None
    from bharateo.data.sentinel2 import folder_pixel_metres

    return tuple(folder_pixel_metres())


def region_size_format(pixel_m: tuple[float, ...] | None):
    """The size slider's format_func for pixels of `pixel_m` (region_pixel_metres, looked up once
    per page run, not once per slider option): size_label with those sizes."""
    return lambda pixels: size_label(pixels, pixel_m)


def size_help(pixel_m: tuple[float, ...] | None) -> str:
    """The size slider's help for pixels of `pixel_m` (region_pixel_metres)."""
    return ("Side of the square; used for map clicks and for the form below. " + (
        "East-west it is cos(latitude) times shorter than north-south." if pixel_m is None else
        "Sentinel-2 pixels are square on the scene's UTM grid: its ground size is pixels x the "
        "scene's pixel size."))


def roi_pixel_metres(roi: Roi) -> tuple[float, float]:
    """(north-south, east-west) metres of one pixel of `roi`: a Sentinel-2 region's scene grid
    (its provenance's pixel_m, square UTM pixels: 10 m, 100 m for the shared downsampled scene),
    else WorldCover's 1/12000 degree at the region's centre (pixel_metres)."""
    pixel_m = roi.provenance.get("pixel_m") if getattr(roi, "pixels", None) is not None else None
    if pixel_m:
        return float(pixel_m), float(pixel_m)
    return pixel_metres(roi.spec.lat)


def region_metres_by_name(name: str) -> float:
    """North-south metres of one pixel of the session's region `name` (roi_pixel_metres): the
    chips cut from it have that size too. WorldCover's at the equator when it is not loaded."""
    for roi in st.session_state.get("rois", []):
        if roi.spec.name == name:
            return roi_pixel_metres(roi)[0]
    return pixel_metres(0.0)[0]


def roi_ground_size(roi: Roi) -> str:
    """ground_size for a read region, in its own pixels: WorldCover's at its latitude, or a
    Sentinel-2 scene's ('256 px of 100 m ≈ 25.6 km a side')."""
    if getattr(roi, "pixels", None) is not None and roi.provenance.get("pixel_m"):
        m = float(roi.provenance["pixel_m"])
        return f"{roi.spec.size} px of {m:g} m ≈ {km_text(roi.spec.size * m)} a side"
    return ground_size(roi.spec.size, roi.spec.lat)


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


def spec_summary(spec: RoiSpec, pixel_m: tuple[float, ...] | None = None) -> str:
    """'centre 77.2300°E 28.6100°N, 2048 px ≈ 18.9 km N-S x 16.7 km E-W at 28.61°N, tile N27E075'
    for WorldCover pixels (`pixel_m` None); for Sentinel-2 scenes of `pixel_m` metres pixels,
    'centre ..., 256 px (≈ 25.6 km a side, 100 m pixels), WorldCover labels from tile ...'."""
    if pixel_m is not None:  # its WorldCover label tiles depend on the scene's grid: not known yet
        return f"centre {lon_lat_text(spec.lon, spec.lat)}, {size_label(spec.size, pixel_m)}"
    tiles = spec_tiles(spec)
    return (f"centre {lon_lat_text(spec.lon, spec.lat)}, {ground_size(spec.size, spec.lat)}, "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}")


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


def roi_from_cache(roi: Roi) -> bool:
    return str(roi.provenance.get("source", "")).startswith("local cache")


def roi_summary(roi: Roi) -> str:
    """One line under an ROI's picture: where it is and where its pixels came from."""
    if getattr(roi, "pixels", None) is not None:  # Sentinel-2
        p = roi.provenance
        text = (f"Centre {lon_lat_text(roi.spec.lon, roi.spec.lat)}; Sentinel-2 L2A scene "
                f"{p.get('scene_id')} (MGRS {p.get('mgrs_tile')}, {p.get('scene_date')}), bands "
                f"{' '.join(roi.bands)}; {p.get('reflectance_rule')}; source: {p.get('source')}. "
                f"Labels: WorldCover tiles {', '.join(t.get('tile', '?') for t in p.get('tiles', []))} "
                f"reprojected onto the scene's grid ({(p.get('labels') or {}).get('resampling')}).")
        if roi.synthetic:
            text += " The labels are a synthetic test fixture, not WorldCover; the reflectance is real."
        return text
    tiles = [t.get("tile", "?") for t in roi.provenance.get("tiles", [])]
    text = (f"Centre {lon_lat_text(roi.spec.lon, roi.spec.lat)}; "
            f"tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}; "
            f"source: {roi.provenance.get('source', '?')}.")
    nodata = nodata_pixels(roi)
    if nodata:
        from bharateo.data.chips import MAX_CHIP_NODATA_FRACTION  # imports torch: only when needed

        text += (f" No data (open sea / outside coverage): {nodata:,} pixels, "
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
        ("size", roi_ground_size(roi)),
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


# --- reading regions for a session ----------------------------------------------------------
SHARED_ROIS = 64  # regions kept in the server's memory for every session


@st.cache_resource(show_spinner=False)
def _shared_rois() -> tuple[threading.Lock, OrderedDict]:
    """The server-wide store of regions read: (lock, {(lon, lat, size, source): Roi}), newest
    last. A plain store, not st.cache_data, so that a read can draw its progress on the page."""
    return threading.Lock(), OrderedDict()


@st.cache_data(ttl=30, show_spinner=False)
def current_presets(source: DataSource) -> list[RoiSpec]:
    """roi.default_presets(source), asked at most every 30 s (it may ask the source)."""
    return default_presets(source)


@st.cache_data(show_spinner=False, max_entries=256)
def _tile_overview(tile: str, path: str, mtime_ns: int, cache_dir: str):
    from bharateo.data.overview import tile_overview

    return tile_overview(tile, path, Path(cache_dir))


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_region_overviews(folder: str, listing: tuple):
    from bharateo.data.overview import cached_region_overviews

    return cached_region_overviews(Path(folder))


def map_overviews(source: DataSource) -> list:
    """Land-cover pictures for the map (bharateo.data.overview.Overview): every local or bundled tile
    from its own COG overviews (~1 km), then every cached region (~80 m), all offline. Cached per
    file (and under data/overviews/), so a rerun reads nothing."""
    from bharateo.data.overview import local_tiles

    tiles = local_tiles(source.location) if source.kind == "folder" else {}
    for tile in SAMPLE_TILES:
        if tile not in tiles and (path := bundled_tile_path(tile)) is not None:
            tiles[tile] = path
    out = []
    for tile, path in tiles.items():
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if (overview := _tile_overview(tile, str(path), mtime, str(data_dir()))) is not None:
            out.append(overview)
    folder, listing = data_dir(), []
    for f in sorted(folder.glob("worldcover_*.npz")) if folder.is_dir() else []:
        try:
            listing.append((f.name, f.stat().st_mtime_ns))
        except OSError:  # moved aside or replaced meanwhile
            continue
    return out + (_cached_region_overviews(str(folder), tuple(listing)) if listing else [])


def pixel_query() -> tuple[str, str, float]:
    """(pixel source, Sentinel-2 dates, cloud limit) the Regions page reads with this session."""
    state = st.session_state
    return (state.get("pixel_source", "worldcover"), state.get("s2_dates", "2021-01-01/2021-12-31"),
            float(state.get("s2_max_cloud", 20.0)))


def source_choices() -> dict[str, str]:
    """Pixel source name -> its label, for the Regions page."""
    from bharateo.data.sources import PIXEL_SOURCES

    return {name: src.label for name, src in PIXEL_SOURCES.items()}


def set_pixel_query(kind: str, dates: str | None = None, max_cloud: float | None = None) -> str:
    """Make `kind` (with Sentinel-2 dates and cloud limit) what Regions reads; '' when done,
    else what is wrong with the dates or cloud limit (the previous values are kept)."""
    from bharateo.data.sentinel2 import S2Query

    state = st.session_state
    if kind != "worldcover":
        try:
            S2Query(str(dates), float(max_cloud)).check()
        except (BharatEOError, TypeError, ValueError) as exc:
            return f"Sentinel-2 regions are read with the last good settings: {exc}"
        state.s2_dates, state.s2_max_cloud = str(dates).strip(), float(max_cloud)
    state.pixel_source = kind
    return ""


def source_mismatch() -> str:
    """A sentence when the session's regions were not read from the chosen pixel source."""
    from bharateo.data.sentinel2 import source_of_rois

    rois, kind = st.session_state.rois, pixel_query()[0]
    found = source_of_rois(rois) if rois else kind
    if found == kind:
        return ""
    labels = source_choices()
    return (f"Your regions were read as {labels.get(found, 'a mix of sources')}, not as "
            f"{labels.get(kind, kind)}: chips are cut from one source. Remove them and add them "
            "again to read them from the chosen source.")


def s2_presets() -> list[RoiSpec]:
    """One region per scene of the local Sentinel-2 folder (BHARATEO_S2_DIR), if one is set."""
    from bharateo.data.sentinel2 import folder_presets

    return folder_presets()


def s2_folder_mode() -> bool:
    """Whether this session reads Sentinel-2 pixels from a local folder (BHARATEO_S2_DIR)."""
    return not offers_worldcover_presets()


def s2_scene_outlines() -> list:
    """[(scene id, (west, south, east, north))] of the local folder's scenes, for the map, in
    Sentinel-2 folder mode; [] otherwise (WorldCover, or a STAC source)."""
    from bharateo.data.sentinel2 import folder_footprints

    return folder_footprints() if s2_folder_mode() else []


def s2_skipped_notes() -> list[str]:
    """'skipped: <folder>: <why>' for each sub-folder of the local Sentinel-2 folder
    (BHARATEO_S2_DIR) that is no scene; [] for a STAC source. The page shows them only while
    Sentinel-2 pixels are picked."""
    from bharateo.data.sentinel2 import folder_notes

    return folder_notes()


def proposal_outside(spec: RoiSpec) -> str:
    """In Sentinel-2 folder mode, the message reading `spec` would fail with when its centre is
    outside every scene of the folder (sentinel2.folder_outside); '' otherwise."""
    from bharateo.data.sentinel2 import folder_outside

    return folder_outside(spec) if s2_folder_mode() else ""


def s2_dates_default() -> str:
    """The Sentinel-2 dates the Regions page's date field starts with: the session's, except
    while they are still the stock default (nothing typed, none from a lesson link) and the
    source is a local folder: then a range covering the folder's scenes (sentinel2.folder_dates),
    so a new user's first read finds them."""
    from bharateo.data.sentinel2 import DEFAULT_DATES, folder_dates

    dates = pixel_query()[1]
    return (folder_dates() or dates) if dates == DEFAULT_DATES else dates


def s2_reading_text() -> str:
    """Where a Sentinel-2 region is read from ('' when the session reads WorldCover)."""
    kind, dates, max_cloud = pixel_query()
    if kind == "worldcover":
        return ""
    from bharateo.data.sentinel2 import s2_source_from_env

    return (f"{s2_source_from_env().describe()} (scenes {dates}, at most {max_cloud:g} % cloud) "
            "with WorldCover labels")


def s2_source_text() -> str:
    from bharateo.data.sentinel2 import s2_source_from_env

    return (f"Scenes from {s2_source_from_env().describe()}: of the scenes in the date range under "
            "the cloud limit that cover the whole region, the least cloudy is read (only the "
            "region's bytes); cloud, cloud shadow and no-data pixels (the scene's SCL) become "
            "no data. Labels: WorldCover reprojected onto the scene's UTM grid.")


def chip_source_fields() -> dict:
    """ChipConfig source fields for chips cut from this session's regions: the regions' own
    source and (Sentinel-2) the dates and cloud limit they were read with; else the session's."""
    from bharateo.data.sentinel2 import source_of_rois

    rois = st.session_state.rois
    kind, dates, max_cloud = pixel_query()
    found = source_of_rois(rois) if rois else None
    if found and found != "worldcover":
        p = rois[0].provenance
        return {"source": found, "dates": p.get("dates", dates),
                "max_cloud": float(p.get("max_cloud", max_cloud))}
    return {"source": found or kind, "dates": dates, "max_cloud": max_cloud}


def _shared_read(key, load):
    """The region stored under `key` in the server-wide store (least recently used out past
    SHARED_ROIS), read with `load()` when it isn't there. The store's lock is not held while
    reading: two sessions asking at once may both read, and the last one stored wins. The key
    also holds the cache folder (BHARATEO_DATA_DIR): a region read into one folder's cache is
    not another's (its cache file, cache_error and notes are that folder's)."""
    key = (*key, str(data_dir()))
    lock, store = _shared_rois()
    with lock:
        roi = store.get(key)
        if roi is not None:
            store.move_to_end(key)
            return roi
    roi = load()
    with lock:
        store[key] = roi
        while len(store) > SHARED_ROIS:
            store.popitem(last=False)
    return roi


def read_s2_roi(spec: RoiSpec, kind: str, dates: str, max_cloud: float, progress=None):
    """A Sentinel-2 region (sentinel2.load_s2_roi) through the same server-wide store."""
    from dataclasses import replace

    from bharateo.data.sentinel2 import S2_SOURCES, S2Query, load_s2_roi, s2_source_from_env

    source = data_source_from_env()
    key = (spec.lon, spec.lat, spec.size, source, kind, dates, max_cloud, s2_source_from_env())
    roi = _shared_read(key, lambda: load_s2_roi(spec, S2_SOURCES[kind], S2Query(dates, max_cloud),
                                                wc_source=source, progress=progress))
    return replace(roi, spec=spec, provenance={**roi.provenance, "name": spec.name},
                   notes=list(roi.notes))


def read_roi(spec: RoiSpec, progress=None) -> Roi:
    """An ROI through the server-wide store (thirty students choosing Delhi read it once),
    carrying this user's name for it: WorldCover, or Sentinel-2 with WorldCover labels when the
    session's pixel source is one. `progress(fraction, text)` is called while a read from the
    source runs (bounded by BHARATEO_READ_TIMEOUT_S); raises BharatEOError as load_roi does."""
    kind, dates, max_cloud = pixel_query()
    if kind != "worldcover":
        return read_s2_roi(spec, kind, dates, max_cloud, progress)
    source = data_source_from_env()
    roi = _shared_read((spec.lon, spec.lat, spec.size, source),
                       lambda: load_roi(spec, source, progress=progress))  # notes name no region
    return Roi(spec, roi.native, {**roi.provenance, "name": spec.name}, list(roi.notes),
               roi.cache_error)


def add_roi(spec: RoiSpec, progress=None) -> Roi:
    """Read `spec` and add it to this session's regions (BharatEOError if it can't be used).

    Adding any region ends the current map proposal (it and its overlap warning were about the
    regions before this one)."""
    check_no_overlap(spec, st.session_state.rois)
    roi = read_roi(spec, progress)
    st.session_state.rois = [*st.session_state.rois, roi]
    st.session_state.proposed_roi = None
    return roi


def remove_roi(name: str) -> None:
    st.session_state.rois = [r for r in st.session_state.rois if r.spec.name != name]
    chips = st.session_state.train_chips
    if chips is not None and name in chips.roi_names:
        st.session_state.train_chips = st.session_state.heldout_chips = None


def is_cached(spec: RoiSpec) -> bool:
    kind, dates, max_cloud = pixel_query()
    if kind != "worldcover":
        from bharateo.data import sentinel2 as s2

        return s2.cache_path(spec, s2.S2_SOURCES[kind], s2.S2Query(dates, max_cloud),
                             s2.s2_source_from_env(), data_source_from_env()).exists()
    return cache_path(roi_window(spec), data_source_from_env()).exists()


def data_in_use_text() -> str:
    """data_in_use for this session: its regions' data, or (none yet) what the chosen pixel
    source reads: where the default presets lie, or the Sentinel-2 source (s2_in_use_text)."""
    rois = st.session_state.rois
    if not rois and pixel_query()[0] != "worldcover":
        return s2_in_use_text()
    return data_in_use(rois, [] if rois else current_presets(data_source_from_env()))


def s2_in_use_text() -> str:
    """Before any region, in Sentinel-2 mode: which bands from where (a local folder: where its
    scenes are), labelled from which WorldCover source, and the presets this source can read."""
    from bharateo.data.sentinel2 import S2_SOURCES, folder_places, s2_source_from_env

    s2, wc = s2_source_from_env(), data_source_from_env()
    kind = pixel_query()[0]
    text = (f"No regions chosen yet; {source_choices()[kind]} ({' '.join(S2_SOURCES[kind])}) "
            f"from {s2.describe()}")
    if s2.kind == "folder":
        places = folder_places(s2)
        text += (f", whose scenes are at {'; '.join(places)}" if places else
                 ", which holds no readable scene")
    text += f", with ESA WorldCover labels from {wc.describe()}."
    if offers_worldcover_presets():  # a STAC source finds scenes for the WorldCover presets
        text += f" The preset regions are in {presets_place(current_presets(wc))}."
    return text


def offers_worldcover_presets() -> bool:
    """Whether the WorldCover presets (the notebook's, the bundled sample's) can be read with the
    session's pixel source: WorldCover, or Sentinel-2 from a STAC API (it finds scenes anywhere);
    not from a local Sentinel-2 folder, whose scenes are at a few places of their own (offered
    as s2_presets instead)."""
    if pixel_query()[0] == "worldcover":
        return True
    from bharateo.data.sentinel2 import s2_source_from_env

    return s2_source_from_env().kind != "folder"


def intro_text() -> str:
    """The Regions page's first paragraph, for the chosen pixel source: what a region is a
    square of, and how to choose one (ground size: pixel_metres, from the Delhi example)."""
    how = ("Click the map to propose a region centred on the click, or type a "
           "longitude/latitude; ")
    kind = pixel_query()[0]
    if kind == "worldcover":
        return ("Pick the areas the model will learn from. Each region is a square of WorldCover "
                "pixels, 1/12000° each: about 9.3 m north-south everywhere and 9.3 m x "
                f"cos(latitude) east-west ({ground_size(2048, 28.61)}, Delhi). {how}preset "
                "regions are one button away.")
    from bharateo.data.sentinel2 import S2_SOURCES

    bands = S2_SOURCES[kind]
    text = (f"Pick the areas the model will learn from. Each region is a square of Sentinel-2 "
            f"L2A pixels ({len(bands)} bands: {' '.join(bands)}) on its scene's own grid (its "
            "UTM zone, 10 m pixels in a full-resolution scene), with ESA WorldCover classes "
            f"reprojected onto the same grid as the patch labels. {how}")
    return text + ("preset regions are one button away (the STAC source finds their scenes)."
                   if offers_worldcover_presets() else
                   "the local folder's scenes are one button away (a region must lie inside one).")


def form_start(defaults: list[RoiSpec]) -> RoiSpec:
    """Where the lon/lat form starts: a place the chosen source covers (the first local
    Sentinel-2 scene when those are the only presets offered, else the first default preset)."""
    scenes = [] if offers_worldcover_presets() else s2_presets()
    return (scenes or defaults)[0]


def place_form(defaults: list[RoiSpec]) -> None:
    """Call before drawing the lon/lat form: it starts at form_start, and moves with it when the
    presets on offer change (the pixel source: a rerun of its own, never a form submission),
    unless the user has typed another place."""
    state = st.session_state
    start, offer = form_start(defaults), offers_worldcover_presets()
    here, last = (float(start.lon), float(start.lat)), state.get("form_start_at")
    if ("form_lon" not in state or "form_lat" not in state
            or (offer != state.get("form_offer") and (state.form_lon, state.form_lat) == last)):
        state.form_lon, state.form_lat = here
        state.form_start_at = here
    state.form_offer = offer


def empty_hint(default_label: str) -> str:
    """What to do when the session has no regions yet, for the presets on offer."""
    if offers_worldcover_presets():
        return f"No regions yet. Press **{default_label}**, click the map, or use the form."
    return ("No regions yet. Press a scene's button under **Sentinel-2 scenes in the local "
            "folder**, or click the map or use the form inside one of its scenes.")

# --- the Regions page's state and events ------------------------------------------------------
def init_page_state() -> None:
    """The Regions page's own session keys, set before anything is drawn."""
    state = st.session_state
    state.setdefault("region_size_choice", DEFAULT_SIZE)  # not a widget key: survives pages
    state.setdefault("regions_messages", [])  # [(kind, text)] shown once, next to the map
    state.setdefault("regions_form_messages", [])  # the same, under the form whose read failed
    state.setdefault("region_map_view", None)  # ((lat, lon), zoom) where the user left the map
    state.setdefault("region_map_frame", None)  # (what the map draws, the view it was drawn at)
    state.setdefault("region_map_seen", None)  # st_folium's return value last acted on
    if "region_size" not in state:  # first run of this page since another page: the widget is new
        state.region_size = state.region_size_choice
        state.region_map_frame = None  # a new map component: draw it where the user left the map


def handle_map_event() -> None:
    """Act on the map's last report before the map is drawn, so it already shows the result: a
    pan or zoom by the user is kept as their view, a click proposes a region there."""
    from bharateo.app.mapview import drawn_view, map_event, propose_roi_from_click  # folium: here only

    state = st.session_state
    view, click = map_event(state.get("region_map"), state.region_map_seen)
    state.region_map_seen = state.get("region_map")
    if view is not None and not drawn_view(view, state.get("region_map_drawn", [])):
        state.region_map_view = view  # a pan or zoom by the user (not the map saying where we put it)
    if click is None:
        return
    try:
        spec = propose_roi_from_click({"last_clicked": click}, state.region_size_choice)
    except BharatEOError as exc:
        state.regions_messages.append(("error", str(exc)))
        return
    state.proposed_roi = spec


def on_size_change() -> None:
    """Region size slider callback: keep the choice for the session, resize the proposal."""
    state = st.session_state
    state.region_size_choice = state.region_size
    if state.proposed_roi is not None:
        try:
            state.proposed_roi = resized(state.proposed_roi, state.region_size)
        except BharatEOError as exc:  # said by the slider and the proposal, not atop the column
            state.regions_form_messages.append(("error", str(exc)))


def discard_proposal() -> None:
    st.session_state.proposed_roi = None


def read_regions(specs, refit: bool = True, at_form: bool = False) -> None:
    """Read and add `specs` showing progress (a status box where it is called), then rerun so
    every widget sees the new regions.

    With `refit` (presets, the form) the map frames all regions again afterwards; a region added
    from a map click (refit=False) keeps the user's view. With `at_form` (the lon/lat form, the
    proposal) what went wrong is said under the form, where the user clicked, not at the top of
    the column (off-screen by then)."""
    state = st.session_state
    # Kept until every spec is read: a map event arriving mid-read reruns the page and stops this
    # script, and the next run picks up what is left instead of adding only the first region.
    tries = state.pending_regions[2] + 1 if state.get("pending_regions") else 1
    state.pending_regions = (list(specs), refit, tries, at_form)
    errors, read = [], []
    pixel_m = region_pixel_metres()
    start = time.perf_counter()
    with st.status(f"Reading {len(specs)} region{'s' if len(specs) > 1 else ''}…",
                   expanded=True) as status:
        bar = st.progress(0.0)
        for k, spec in enumerate(specs):
            if spec in [r.spec for r in state.rois]:  # added by a run that was interrupted
                continue
            where = ("the local cache" if is_cached(spec) else s2_reading_text()
                     or ("the bundled sample" if all(bundled_tile_path(t) for t in spec_tiles(spec))
                         else data_source_from_env().describe()))
            bar.progress(k / len(specs),
                         text=f"{spec.name}: {size_label(spec.size, pixel_m)} from {where}…")

            def progress(fraction, text, k=k):  # each tile, and the seconds spent, while it reads
                bar.progress(min((k + fraction) / len(specs), 1.0), text=text)

            try:
                roi = add_roi(spec, progress)
                read.append(f"{spec.name} (from {roi.provenance.get('source', where)})")
                if roi.cache_error:
                    errors.append(("warning", f"**{spec.name}** is in use but was not cached: "
                                              f"{roi.cache_error}."))
            except BharatEOError as exc:
                errors.append(("error", f"**{spec.name}** was not added. {exc}"))
        bar.progress(1.0)
        state.pending_regions = None
        status.update(state="error" if any(k == "error" for k, _ in errors) else "complete")
    if read:  # add_roi also ended any proposal
        state.regions_messages.append(
            ("success", f"Read {', '.join(read)} in {time.perf_counter() - start:.1f} s."))
        if refit:
            state.region_map_view = None
    (state.regions_form_messages if at_form else state.regions_messages).extend(errors)
    st.rerun()
