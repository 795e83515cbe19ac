"""The Regions page's map: folium maps that draw without internet, where the map opens and
stays (framing, the user's pan and zoom), clicks turned into proposed regions, and its key.

folium points its Leaflet, jQuery, Bootstrap and Font Awesome links at CDNs, and streamlit-folium
loads every one of them before drawing; offline the first failed load stops the map. The maps here
load only Leaflet, from `static/vendor/` (served by Streamlit at `/app/static/...` when
`server.enableStaticServing` is on). Only the OpenStreetMap basemap needs the network; without it
the map shows the land-cover overviews of the tiles at hand (bharateo.data.overview) under the tile
grid and the regions.

The grid covers all of WorldCover (60S-84N, every longitude); the tile names are written by a
small script for the tiles in view after every pan or zoom, so they follow the user anywhere.
"""
from __future__ import annotations

import html
import math
import re
from numbers import Integral
from pathlib import Path

import folium
from branca.element import MacroElement
from folium.template import Template

from bharateo.errors import RegionError
from bharateo.data.roi import ROI_SIZE_RANGE, Roi, RoiSpec, check_roi_spec, default_roi_name, roi_window
from bharateo.data.worldcover import ATTRIBUTION, TILE_DEGREES

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/app/static"  # where Streamlit serves STATIC_DIR
LEAFLET_URL = f"{STATIC_URL}/vendor/leaflet-1.9.3"
LOCAL_JS = [("leaflet", f"{LEAFLET_URL}/leaflet.js")]
LOCAL_CSS = [("leaflet_css", f"{LEAFLET_URL}/leaflet.css")]

GRID_LON_RANGE = (-180, 180)  # the whole WorldCover grid: 3-degree tiles from 60S to 84N
GRID_LAT_RANGE = (-60, 84)
MAX_TILE_LABELS = 400  # fewer labels than this in view, or none (zoomed out to a continent)
OVERVIEW_OPACITY = 0.75
GRID_COLOR = "#6b7280"
CHOSEN_COLOR = "#1d4ed8"
PROPOSED_COLOR = "#ea580c"
SCENE_COLOR = "#059669"

MAP_CSS = f"""<style>
.leaflet-container {{ background: #eef2f0; }}
.bharateo-tile-label, .bharateo-roi-label {{
    white-space: nowrap; pointer-events: none; text-shadow: 0 0 2px #fff, 0 0 2px #fff;
}}
.bharateo-tile-label {{ font: 11px/14px monospace; color: {GRID_COLOR}; }}
.bharateo-roi-label {{ font: bold 12px/16px sans-serif; }}
</style>"""

Bounds = tuple[float, float, float, float]  # (west, south, east, north) in degrees


class LeafletImagePath(MacroElement):
    """Sets L.Icon.Default.imagePath before any marker is added.

    Leaflet otherwise guesses it from leaflet.css, which streamlit-folium has not loaded yet when
    the map script runs, and asks for `.../leaflet-1.9.3marker-icon.png` (a 404). folium.Marker
    always makes the default icon first, even when a DivIcon replaces it.
    """

    _template = Template("""
        {% macro script(this, kwargs) %}
            L.Icon.Default.imagePath = {{ this.url|tojson }};
        {% endmacro %}
    """)

    def __init__(self, url: str):
        super().__init__()
        self._name = "LeafletImagePath"
        self.url = url


def offline_map(center: tuple[float, float], zoom: int) -> folium.Map:
    """A folium map centred on (lat, lon) that loads Leaflet from static/ instead of CDNs."""
    fmap = folium.Map(location=list(center), zoom_start=zoom, tiles="OpenStreetMap",
                      control_scale=True)
    # Instance lists: folium's add_js_link/add_css_link would edit the lists shared by every Map.
    fmap.default_js = list(LOCAL_JS)
    fmap.default_css = list(LOCAL_CSS)
    fmap.get_root().header.add_child(folium.Element(MAP_CSS), name="bharateo_map_css")
    LeafletImagePath(f"{LEAFLET_URL}/images/").add_to(fmap)
    return fmap


def _label_text(name: str) -> str:
    """`name` safe as HTML inside folium's JS template strings (tooltips, DivIcons)."""
    return html.escape(name).replace("`", "&#96;").replace("$", "&#36;")


def add_region(fmap: folium.Map, name: str, bounds: Bounds, color: str, dashed: bool) -> None:
    """Draw one ROI as a rectangle with its name written above its north-west corner.

    The name is a DivIcon, not a permanent tooltip: streamlit-folium runs the map script before
    leaflet.css has loaded, and Leaflet places a permanent tooltip once, measured without its CSS
    (hundreds of pixels off to the left).
    """
    west, south, east, north = bounds
    text = _label_text(name)
    folium.Rectangle(
        bounds=[[south, west], [north, east]],
        color=color, weight=2, fill=True, fill_color=color, fill_opacity=0.12,
        dash_array="6 4" if dashed else None, tooltip=text,
    ).add_to(fmap)
    label = folium.DivIcon(html=f'<span style="color: {color}">{text}</span>',
                           icon_size=(240, 16), icon_anchor=(0, 18),
                           class_name="bharateo-roi-label")
    folium.Marker([north, west], icon=label, interactive=False).add_to(fmap)


class TileLabels(MacroElement):
    """Writes each WorldCover tile's id (e.g. N27E075) at its south-west corner, for the tiles in
    view, again after every pan or zoom (none when more than MAX_TILE_LABELS would show)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, layer = L.layerGroup().addTo(map);
            var step = {{ this.step }}, lat_lo = {{ this.lat_lo }}, lat_hi = {{ this.lat_hi }};
            function pad(v, n) { v = String(Math.abs(v)); while (v.length < n) v = "0" + v; return v; }
            function tileId(lon0, lat0) {
                lon0 = ((lon0 + 180) % 360 + 360) % 360 - 180;  // a panned-around copy of the world
                return (lat0 >= 0 ? "N" : "S") + pad(lat0, 2) + (lon0 >= 0 ? "E" : "W") + pad(lon0, 3);
            }
            function draw() {
                layer.clearLayers();
                var b = map.getBounds();
                var w = Math.floor(b.getWest() / step) * step, e = b.getEast();
                var s = Math.max(Math.floor(b.getSouth() / step) * step, lat_lo);
                var n = Math.min(b.getNorth(), lat_hi);
                if ((e - w) / step * (n - s) / step > {{ this.max_labels }}) return;
                for (var lon = w; lon < e; lon += step) {
                    for (var lat = s; lat < n; lat += step) {
                        L.marker([lat, lon], {interactive: false, keyboard: false, icon: L.divIcon({
                            html: tileId(lon, lat), className: "bharateo-tile-label",
                            iconSize: [60, 14], iconAnchor: [-3, 16]})}).addTo(layer);
                    }
                }
            }
            map.on("moveend", draw);
            map.whenReady(draw);
        })();
        {% endmacro %}
    """)

    def __init__(self):
        super().__init__()
        self._name = "TileLabels"
        self.step, self.max_labels = TILE_DEGREES, MAX_TILE_LABELS
        self.lat_lo, self.lat_hi = GRID_LAT_RANGE


def grid_lines(lon_range=GRID_LON_RANGE, lat_range=GRID_LAT_RANGE) -> list[list[list[float]]]:
    """The 3-degree tile edges as [[lat, lon], [lat, lon]] segments: meridians, then parallels."""
    (lon_lo, lon_hi), (lat_lo, lat_hi) = lon_range, lat_range
    meridians = [[[lat_lo, lon], [lat_hi, lon]] for lon in range(lon_lo, lon_hi + 1, TILE_DEGREES)]
    parallels = [[[lat, lon_lo], [lat, lon_hi]] for lat in range(lat_lo, lat_hi + 1, TILE_DEGREES)]
    return meridians + parallels


def add_tile_grid(fmap: folium.Map) -> None:
    """Draw the WorldCover 3-degree tile edges everywhere; label the tiles in view (TileLabels)."""
    grid = folium.PolyLine(grid_lines(), color=GRID_COLOR, weight=1, opacity=0.7)
    grid.options["interactive"] = False  # folium's path options drop `interactive`
    grid.add_to(fmap)
    TileLabels().add_to(fmap)


def add_overview(fmap: folium.Map, overview) -> None:
    """Put one bharateo.data.overview.Overview (an RGBA PNG over its bounds) on the map.

    Leaflet stretches the picture linearly between its corners in Web Mercator while the pixels
    are equal-angle; over 3 degrees that puts the middle rows at most ~0.02 degrees (2 km, at
    60 degrees latitude) off, under one overview pixel up to mid latitudes.
    """
    west, south, east, north = overview.bounds
    verified = overview.data_label.startswith("ESA WorldCover")
    layer = folium.raster_layers.ImageOverlay(
        overview.data_uri, bounds=[[south, west], [north, east]], opacity=OVERVIEW_OPACITY,
        interactive=False, name=f"{overview.name} ({overview.data_label})",
        attr=f"Land cover: {ATTRIBUTION}" if verified else f"Land cover: {overview.data_label}")
    layer.options["className"] = "bharateo-overview"
    layer.add_to(fmap)


def add_scene(fmap: folium.Map, name: str, bounds: Bounds) -> None:
    """Outline one Sentinel-2 scene's footprint (no fill, not clickable: a click inside still
    proposes a region there), its id written above its north-west corner."""
    west, south, east, north = bounds
    outline = folium.Rectangle(bounds=[[south, west], [north, east]], color=SCENE_COLOR,
                               weight=2, fill=False, dash_array="2 6")
    outline.options["interactive"] = False  # folium's path options drop `interactive`
    outline.add_to(fmap)
    label = folium.DivIcon(html=f'<span style="color: {SCENE_COLOR}">Sentinel-2 scene '
                                f'{_label_text(name)}</span>',
                           icon_size=(360, 16), icon_anchor=(0, 18),
                           class_name="bharateo-roi-label")
    folium.Marker([north, west], icon=label, interactive=False).add_to(fmap)


def build_region_map(rois: list[tuple[str, Bounds]], proposed: tuple[str, Bounds] | None = None,
                     center: tuple[float, float] = (27.5, 77.0), zoom: int = 6,
                     overviews=(), scenes=()) -> folium.Map:
    """Offline map: land-cover `overviews` (bharateo.data.overview.Overview), the tile grid, the
    footprints of a local Sentinel-2 folder's `scenes` outlined, each chosen ROI as a solid
    rectangle and `proposed` dashed.

    `rois`, `proposed` and `scenes` are (name, (west, south, east, north)); `center` is (lat, lon).
    """
    fmap = offline_map(center, zoom)
    for overview in overviews:
        add_overview(fmap, overview)
    add_tile_grid(fmap)
    for name, bounds in scenes:
        add_scene(fmap, name, bounds)
    for name, bounds in rois:
        add_region(fmap, name, bounds, CHOSEN_COLOR, dashed=False)
    if proposed is not None:
        name, bounds = proposed
        add_region(fmap, f"{name} (proposed)", bounds, PROPOSED_COLOR, dashed=True)
    return fmap


def map_event(map_state: dict | None, seen: dict | None):
    """What the user did on the map since st_folium's return value was `seen` -> (view, click).

    `map_state` is st_folium's return value now (returned_objects last_clicked, center, zoom).
    view is ((lat, lon), zoom) where the user left the map; click is the new `last_clicked`
    ({"lat", "lng"}). Each is None when it has not changed since `seen`, so a rerun never
    proposes an old click again nor undoes a refit with an old pan.
    """
    map_state, seen = map_state or {}, seen or {}
    if map_state == seen:
        return None, None
    center, zoom = map_state.get("center"), map_state.get("zoom")
    view = None
    if center and zoom is not None and (center, zoom) != (seen.get("center"), seen.get("zoom")):
        lon = (float(center["lng"]) + 180) % 360 - 180
        view = ((round(float(center["lat"]), 5), round(lon, 5)), int(zoom))
    click = map_state.get("last_clicked")
    return view, (click if click and click != seen.get("last_clicked") else None)


def propose_roi_from_click(map_state: dict | None, size: int, name: str | None = None
                           ) -> RoiSpec | None:
    """RoiSpec of `size` pixels centred on the last map click in `st_folium`'s return value.

    None when nothing was clicked. Longitudes from a panned-around Leaflet map (e.g. 437.2) are
    wrapped into [-180, 180). Raises RegionError for a size outside ROI_SIZE_RANGE or a centre
    outside WorldCover coverage.
    """
    lo, hi = ROI_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, Integral) or not lo <= size <= hi:
        raise RegionError(f"ROI size must be a whole number of pixels between {lo} and {hi} "
                          f"(got {size!r}).")
    click = (map_state or {}).get("last_clicked")
    if not click:
        return None
    lon = round((round(float(click["lng"]), 4) + 180) % 360 - 180, 4)
    lat = round(float(click["lat"]), 4)
    spec = RoiSpec(name=(name or "").strip() or default_roi_name(lon, lat),
                   lon=lon, lat=lat, size=int(size))
    check_roi_spec(spec)
    return spec


# --- framing: where the map opens and stays ---------------------------------------------------
def map_layers(rois: list[Roi], proposed: RoiSpec | None):
    """(chosen [(name, bounds)], proposed (name, bounds) | None) for mapview.build_region_map."""
    chosen = [(r.spec.name, tuple(r.provenance.get("bounds") or roi_window(r.spec).bounds))
              for r in rois]
    return chosen, (None if proposed is None else (proposed.name, roi_window(proposed).bounds))


def fit_bounds(chosen, proposed, scenes=(), overviews=()) -> list[Bounds]:
    """What the map frames when it opens or is refitted: the regions and the proposal; with
    none, the local Sentinel-2 folder's scene footprints (where a region can go in that mode);
    else the land-cover overviews. Each argument as for build_region_map."""
    return ([b for _, b in chosen] + ([proposed[1]] if proposed else [])
            or [b for _, b in scenes] or [o.bounds for o in overviews])


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


def map_caption(overviews, scenes=()) -> str:
    """The map's key, naming the land-cover overviews on it and what their pixels are, and the
    Sentinel-2 scene outlines when `scenes` are drawn."""
    text = ("Grey lines: the WorldCover 3° tiles everywhere (60°S-84°N), each named at its "
            "south-west corner once zoomed in. Blue: your regions; dashed orange: the proposal.")
    if scenes:
        text += (" Dotted green: the local Sentinel-2 folder's scenes (a region must lie inside "
                 "one).")
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
        text += "; no data (open sea) left clear; sea near the coast is ESA's water class."
    return text + (" The OpenStreetMap background needs internet; offline the land-cover "
                   "colours, tiles, regions and clicks still work.")
