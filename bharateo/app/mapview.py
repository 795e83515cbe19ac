"""Folium maps for the Regions page that draw without internet.

folium points its Leaflet, jQuery, Bootstrap and Font Awesome links at CDNs, and streamlit-folium
loads every one of them before drawing; offline the first failed load stops the map. The maps here
load only Leaflet, from `static/vendor/` (served by Streamlit at `/app/static/...` when
`server.enableStaticServing` is on). Only the OpenStreetMap basemap needs the network; without it
the map shows the land-cover overviews of the tiles at hand (bharateo.overview) under the tile
grid and the regions.

The grid covers all of WorldCover (60S-84N, every longitude); the tile names are written by a
small script for the tiles in view after every pan or zoom, so they follow the user anywhere.
"""
from __future__ import annotations

import html
from numbers import Integral
from pathlib import Path

import folium
from branca.element import MacroElement
from folium.template import Template

from bharateo.errors import RegionError
from bharateo.roi import ROI_SIZE_RANGE, RoiSpec, check_roi_spec, default_roi_name
from bharateo.worldcover import ATTRIBUTION, TILE_DEGREES

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
    """Put one bharateo.overview.Overview (an RGBA PNG over its bounds) on the map.

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


def build_region_map(rois: list[tuple[str, Bounds]], proposed: tuple[str, Bounds] | None = None,
                     center: tuple[float, float] = (27.5, 77.0), zoom: int = 6,
                     overviews=()) -> folium.Map:
    """Offline map: land-cover `overviews` (bharateo.overview.Overview), the tile grid, each
    chosen ROI as a solid rectangle and `proposed` dashed.

    `rois` and `proposed` are (name, (west, south, east, north)); `center` is (lat, lon).
    """
    fmap = offline_map(center, zoom)
    for overview in overviews:
        add_overview(fmap, overview)
    add_tile_grid(fmap)
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
