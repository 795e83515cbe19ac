"""The Regions map loads only vendored assets and draws the grid and ROIs; clicks -> RoiSpecs."""
import io
import json
import os
import re
import shutil
import subprocess

from pathlib import Path

import folium
import numpy as np
import pytest

from bharateo.errors import RegionError
from bharateo.app.mapview import (
    LOCAL_CSS,
    LOCAL_JS,
    STATIC_DIR,
    STATIC_URL,
    build_region_map,
    fit_bounds,
    map_event,
    map_view,
    offline_map,
    propose_roi_from_click,
)
from bharateo.data.overview import (
    OVERVIEW_PX,
    cached_region_overviews,
    local_tiles,
    read_tile_overview,
    region_overview,
    tile_bounds,
    tile_data_label,
    tile_overview,
)
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, roi_window
from bharateo.data.worldcover import (
    CLASS_COLORS_255,
    NATIVE_WORLDCOVER_CLASSES,
    bundled_tile_path,
    collapse_worldcover,
    tile_id,
)
from tests.support.paths import SHARED

CHOSEN = [(spec.name, roi_window(spec).bounds) for spec in NOTEBOOK_ROIS]


def rendered(fmap: folium.Map) -> str:
    return fmap.get_root().render()


def div_icon_html(page: str) -> list[str]:
    """The html of every L.divIcon in a rendered map, in order."""
    return [json.loads(text) for text in re.findall(r'"html": ("(?:[^"\\]|\\.)*")', page)]


def static_file(url: str):
    assert url.startswith(STATIC_URL + "/"), url
    return STATIC_DIR / url[len(STATIC_URL) + 1:]


# --- propose_roi_from_click ---------------------------------------------------------------
def test_click_gives_roi_centred_on_it():
    state = {"last_clicked": {"lat": 28.612345678, "lng": 77.230049}, "zoom": 6}
    spec = propose_roi_from_click(state, 1024)
    assert spec == RoiSpec("roi_77.2300E_28.6123N", 77.23, 28.6123, 1024)


def test_numpy_integer_size_is_accepted():
    np = pytest.importorskip("numpy")
    spec = propose_roi_from_click({"last_clicked": {"lat": 28.0, "lng": 77.0}}, np.int64(256))
    assert spec.size == 256 and type(spec.size) is int


def test_click_keeps_given_name():
    spec = propose_roi_from_click({"last_clicked": {"lat": 27.3, "lng": 77.5}}, 512, name=" agra ")
    assert spec.name == "agra"


@pytest.mark.parametrize("state", [None, {}, {"last_clicked": None, "zoom": 6}])
def test_no_click_gives_none(state):
    assert propose_roi_from_click(state, 2048) is None


@pytest.mark.parametrize("size", [63, 4097, 0, -2048, 1024.5, True])
def test_bad_size_is_a_region_error(size):
    with pytest.raises(RegionError, match="between 64 and 4096"):
        propose_roi_from_click({"last_clicked": {"lat": 28.0, "lng": 77.0}}, size)


@pytest.mark.parametrize("lng, lon", [(437.23, 77.23), (-282.77, 77.23), (180.0, -180.0),
                                      (-180.0, -180.0), (539.99999, -180.0)])
def test_longitude_is_wrapped(lng, lon):
    spec = propose_roi_from_click({"last_clicked": {"lat": 28.61, "lng": lng}}, 2048)
    assert spec.lon == pytest.approx(lon, abs=1e-9)
    assert -180 <= spec.lon < 180


def test_wrapped_click_names_the_wrapped_point():
    spec = propose_roi_from_click({"last_clicked": {"lat": -12.5, "lng": -437.25}}, 2048)
    assert spec.name == "roi_77.2500W_12.5000S"
    roi_window(spec)  # a usable spec


def test_click_outside_worldcover_is_a_region_error():
    with pytest.raises(RegionError, match="outside WorldCover coverage"):
        propose_roi_from_click({"last_clicked": {"lat": 85.0, "lng": 10.0}}, 2048)


# --- the map ------------------------------------------------------------------------------
def test_map_loads_local_leaflet_and_no_cdn_js_or_css():
    page = rendered(build_region_map(CHOSEN))
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    styles = re.findall(r'<link[^>]*\bhref="([^"]+)"', page)
    assert scripts == [url for _, url in LOCAL_JS]
    assert styles == [url for _, url in LOCAL_CSS]
    assert not re.search(r'https?://[^"\'\s]+\.(?:js|css)\b', page)


def test_st_folium_is_handed_only_the_local_assets(monkeypatch):
    """streamlit-folium collects default_js/default_css itself; see what reaches its frontend."""
    import streamlit_folium

    sent = {}
    monkeypatch.setattr(streamlit_folium, "_component_func",
                        lambda **kwargs: sent.update(kwargs) or kwargs["default"])
    streamlit_folium.st_folium(build_region_map(CHOSEN, proposed=CHOSEN[0]), key="regions")
    assert sent["js_links"] == [url for _, url in LOCAL_JS]
    assert sent["css_links"] == [url for _, url in LOCAL_CSS]
    assert "function tileId" in sent["script"] and "L.polyline" in sent["script"]
    assert ".leaflet-container { background" in sent["header"]


def test_vendored_files_exist():
    for _, url in LOCAL_JS + LOCAL_CSS:
        path = static_file(url)
        assert path.is_file() and path.stat().st_size > 1000, path
    leaflet = static_file(LOCAL_JS[0][1])
    assert 'version="1.9.3"' in leaflet.read_text()
    for image in re.findall(r"url\((images/[^)]+)\)", static_file(LOCAL_CSS[0][1]).read_text()):
        assert (leaflet.parent / image).is_file(), image
    assert (leaflet.parent / "LICENSE").is_file()


def test_marker_image_path_is_set_before_any_marker():
    page = rendered(build_region_map(CHOSEN))
    path = re.search(r'L\.Icon\.Default\.imagePath = "([^"]+)";', page)
    assert path and path.start() < page.index("L.marker(")
    assert path.group(1).endswith("/")
    assert (static_file(path.group(1).rstrip("/")) / "marker-icon.png").is_file()


def test_offline_map_leaves_folium_defaults_alone():
    """folium's add_js_link edits the class-wide lists; offline_map must not touch them."""
    offline_map((27.5, 77.0), 6)
    assert dict(folium.Map.default_js)["leaflet"].startswith("https://")
    assert dict(folium.Map.default_css)["leaflet_css"].startswith("https://")


def test_grid_lines_cover_all_of_worldcover():
    """The grid was drawn over 66-93E only; São Tomé (6E) or Lima (77W) had no tile edges."""
    page = rendered(build_region_map([]))
    polyline = re.search(r"L\.polyline\(\s*(\[\[\[.*?\]\]\]),\s*(\{.*?\})", page, re.S)
    lines, options = polyline.groups()
    assert '"interactive": false' in options  # clicks on a grid line reach the map
    segments = json.loads(lines)
    assert all(v % 3 == 0 for seg in segments for point in seg for v in point)
    meridians = {seg[0][1] for seg in segments if seg[0][1] == seg[1][1]}
    parallels = {seg[0][0] for seg in segments if seg[0][0] == seg[1][0]}
    assert meridians == set(range(-180, 181, 3)) and parallels == set(range(-60, 85, 3))
    for seg in segments:  # every line spans the whole coverage, not one region of it
        assert seg[0][1] != seg[1][1] and sorted([seg[0][1], seg[1][1]]) == [-180, 180] or \
            sorted([seg[0][0], seg[1][0]]) == [-60, 84]


NODE_MAP = """
const labels = [];
const marker = (ll, o) => ({addTo: () => labels.push([o.icon.html, ll])});
global.L = {layerGroup: () => ({addTo() { return this; }, clearLayers: () => labels.length = 0}),
            marker, divIcon: o => o};
const stubMap = {getBounds: () => ({getWest: () => W, getEast: () => E, getSouth: () => S,
                                getNorth: () => N}), on() {}, whenReady: f => f()};
"""


def labels_in_view(west, south, east, north) -> list:
    """[(tile name, [lat, lon])] the map's label script writes for that view (node, stub Leaflet)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    page = rendered(build_region_map([]))
    script = re.search(r"\(function \(\) \{\s*var map = .*?\}\)\(\);", page, re.S).group(0)
    script = re.sub(r"var map = \w+,", "var map = stubMap,", script)
    program = (f"const W = {west}, S = {south}, E = {east}, N = {north};" + NODE_MAP + script
               + "\nconsole.log(JSON.stringify(labels));")
    out = subprocess.run([node, "-e", program], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("bounds, expected", [
    ((76.4, 27.1, 78.6, 29.2), {"N27E075", "N27E078"}),  # Delhi: the tiles seen, only those
    ((6.2, 0.1, 7.9, 1.9), {"N00E006"}),  # São Tomé and Príncipe
    ((-77.5, -13.0, -76.0, -11.5), {"S15W078"}),  # Lima, west and south of 0
    ((437.0, 28.0, 438.0, 29.0), {"N27E075"}),  # a panned-around copy of the world
])
def test_tile_labels_follow_the_view(bounds, expected):
    """Run the map's label script in node with a stub Leaflet: the tiles in view are named."""
    west, south, east, north = bounds
    labels = labels_in_view(west, south, east, north)
    names = {name for name, _ in labels}
    assert expected <= names
    for name, (lat, lon) in labels:  # each at its tile's south-west corner
        assert tile_id(lon + 0.5, lat + 0.5) == name or tile_id(lon - 360 + 0.5, lat + 0.5) == name
        assert west - 3 < lon <= east and south - 3 < lat <= north


def test_tile_labels_stop_when_zoomed_out_to_a_continent():
    assert labels_in_view(-180, -60, 180, 84) == []


def test_chosen_rois_are_solid_and_proposed_is_dashed():
    proposed = ("new_site", (76.0, 29.0, 76.2, 29.2))
    page = rendered(build_region_map(CHOSEN, proposed=proposed))
    rectangles = re.findall(r"L\.rectangle\(\s*(\[\[.*?\]\]),\s*(\{.*?\})", page, re.S)
    assert len(rectangles) == len(CHOSEN) + 1
    for (_, (west, south, east, north)), (corners, options) in zip(CHOSEN, rectangles):
        assert corners == f"[[{south}, {west}], [{north}, {east}]]"
        assert '"dashArray": null' in options
    corners, options = rectangles[-1]
    assert corners == "[[29.0, 76.0], [29.2, 76.2]]"
    assert '"dashArray": "6 4"' in options
    labels = [re.sub(r"<[^>]+>", "", html) for html in div_icon_html(page) if "<span" in html]
    assert labels == [name for name, _ in CHOSEN] + ["new_site (proposed)"]


SCENE = ("S2A_29RKH_20200219_0_L2A", (-11.98, 24.30, -10.87, 25.30))


def test_folder_scenes_are_outlined_unfilled_and_let_clicks_through():
    page = rendered(build_region_map(CHOSEN, scenes=[SCENE]))
    rectangles = re.findall(r"L\.rectangle\(\s*(\[\[.*?\]\]),\s*(\{.*?\})", page, re.S)
    scene = [(c, o) for c, o in rectangles if c == "[[24.3, -11.98], [25.3, -10.87]]"]
    assert len(rectangles) == len(CHOSEN) + 1 and len(scene) == 1
    assert '"fill": false' in scene[0][1] and '"interactive": false' in scene[0][1]
    labels = [re.sub(r"<[^>]+>", "", html) for html in div_icon_html(page) if "<span" in html]
    assert "Sentinel-2 scene S2A_29RKH_20200219_0_L2A" in labels


def test_the_map_frames_regions_then_folder_scenes_then_overviews():
    """Regions and the proposal win; with none, a folder's scene footprints (Sentinel-2 from a
    folder), else the land-cover overviews (WorldCover mode, unchanged)."""
    class Overview:
        bounds = (6.0, 0.0, 9.0, 3.0)

    proposed = ("p", (76.0, 29.0, 76.2, 29.2))
    assert fit_bounds(CHOSEN, proposed, [SCENE], [Overview]) == [b for _, b in CHOSEN] + [proposed[1]]
    assert fit_bounds([], None, [SCENE], [Overview]) == [SCENE[1]]
    assert fit_bounds([], None, [], [Overview]) == [Overview.bounds]
    (lat, lon), zoom = map_view(fit_bounds([], None, [SCENE], [Overview]))
    assert -11.98 < lon < -10.87 and 24.3 < lat < 25.3 and zoom >= 7


def test_roi_names_are_escaped_in_tooltips():
    page = rendered(build_region_map([("<b>`${x}`", (76.0, 29.0, 76.2, 29.2))]))
    assert "&lt;b&gt;&#96;&#36;{x}&#96;" in page
    assert "<b>`${x}`" not in page


# --- map events: pan/zoom kept, old clicks never proposed again -------------------------------
def test_a_pan_is_a_view_and_not_a_click():
    seen = {"last_clicked": {"lat": 0.3, "lng": 6.6}, "center": {"lat": 0.3, "lng": 6.6}, "zoom": 9}
    panned = {**seen, "center": {"lat": 1.6, "lng": 367.4}, "zoom": 11}
    assert map_event(panned, seen) == (((1.6, 7.4), 11), None)  # longitude wrapped
    assert map_event(seen, seen) == (None, None)  # a rerun with the same value does nothing
    clicked = {**panned, "last_clicked": {"lat": 1.61, "lng": 7.41}}
    assert map_event(clicked, panned) == (None, {"lat": 1.61, "lng": 7.41})
    assert map_event({"last_clicked": None}, None) == (None, None)


# --- offline land-cover overviews, on the real tile ---------------------------------------------
# the bundled sample once it is there, else the shared copy beside the project (../shared)
REAL_TILE = bundled_tile_path("N00E006") or (
    SHARED / "data" / "worldcover"
    / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif")
REAL_DIR = REAL_TILE.parent
needs_real_tile = pytest.mark.skipif(not REAL_TILE.is_file(), reason="real N00E006 tile absent")


def pixel_at(native: np.ndarray, bounds, lon: float, lat: float) -> int:
    """The overview pixel holding lon/lat (row 0 is the north edge)."""
    west, south, east, north = bounds
    rows, cols = native.shape
    return int(native[min(int((north - lat) / (north - south) * rows), rows - 1),
                      min(int((lon - west) / (east - west) * cols), cols - 1)])


@needs_real_tile
def test_real_tile_overview_has_land_on_sao_tome_and_no_data_offshore():
    native, tags = read_tile_overview(REAL_TILE)
    assert native.shape == (OVERVIEW_PX, OVERVIEW_PX) and native.dtype == np.uint8
    bounds = tile_bounds("N00E006")
    assert bounds == (6.0, 0.0, 9.0, 3.0)
    assert pixel_at(native, bounds, 6.60, 0.25) == 10  # São Tomé's forest
    assert pixel_at(native, bounds, 7.40, 1.61) == 10  # Príncipe
    assert pixel_at(native, bounds, 6.2, 2.8) == 0  # open Gulf of Guinea: no data
    assert set(np.unique(native)) <= {0, *NATIVE_WORLDCOVER_CLASSES}  # codes, not blends
    # the overview agrees with a direct full-resolution read of the same spot
    import rasterio
    from rasterio.windows import Window
    with rasterio.open(REAL_TILE) as src:
        row, col = src.index(6.60, 0.25)
        assert src.read(1, window=Window(col, row, 1, 1))[0, 0] == 10
    assert tile_data_label(tags, "N00E006") == "ESA WorldCover 10 m 2021 v200"
    assert tile_data_label(tags, "N27E075") == "not verified as ESA WorldCover"


@needs_real_tile
def test_tile_overview_png_is_palette_with_clear_sea_and_cached_on_disk(tmp_path):
    from PIL import Image

    overview = tile_overview("N00E006", REAL_TILE, cache_dir=tmp_path)
    image = np.asarray(Image.open(io.BytesIO(overview.png)))
    assert image.shape == (OVERVIEW_PX, OVERVIEW_PX, 4)
    native, _ = read_tile_overview(REAL_TILE)
    assert (image[..., 3][native == 0] == 0).all() and (image[..., 3][native != 0] == 255).all()
    land = native == 10
    assert (image[land][:, :3] == CLASS_COLORS_255[collapse_worldcover(np.uint8(10))]).all()
    cached = list((tmp_path / "overviews").glob("N00E006_*.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == overview.png
    again = tile_overview("N00E006", REAL_TILE, cache_dir=tmp_path)
    assert again == overview


def test_a_tile_without_overviews_or_tags_is_not_read_whole_nor_called_worldcover(tmp_path):
    import rasterio
    from affine import Affine

    path = tmp_path / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
    data = np.full((1024, 1024), 40, np.uint8)
    profile = dict(driver="GTiff", width=1024, height=1024, count=1, dtype="uint8", nodata=0,
                   crs="EPSG:4326", transform=Affine(3 / 1024, 0, 6, 0, -3 / 1024, 3),
                   tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    assert tile_overview("N00E006", path) is None  # no overviews: skipped, not decoded whole
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4])
    overview = tile_overview("N00E006", path)
    assert overview.data_label == "not verified as ESA WorldCover"
    assert local_tiles(tmp_path) == {"N00E006": path} and local_tiles(tmp_path / "none") == {}


def test_overviews_are_drawn_as_image_overlays_under_the_grid():
    native = np.zeros((100, 100), np.uint8)
    native[40:60, 40:60] = 50
    overview = region_overview("x", native, (6.5, 0.2, 6.7, 0.4), "ESA WorldCover 10 m 2021 v200")
    page = rendered(build_region_map(CHOSEN, overviews=[overview]))
    overlay = re.search(r'L\.imageOverlay\(\s*"(data:image/png;base64,[^"]+)",\s*(\[\[.*?\]\]),'
                        r'\s*(\{.*?\})', page, re.S)
    assert overlay and overlay.group(1) == overview.data_uri
    assert json.loads(overlay.group(2)) == [[0.2, 6.5], [0.4, 6.7]]
    assert '"interactive": false' in overlay.group(3) and "Copernicus" in overlay.group(3)
    assert page.index("L.imageOverlay(") < page.index("L.polyline(") < page.index("L.rectangle(")
    fixture = region_overview("y", native, (6.5, 0.2, 6.7, 0.4), "synthetic test fixture")
    page = rendered(build_region_map([], overviews=[fixture]))
    assert "Copernicus" not in page and "synthetic test fixture" in page


def test_cached_regions_give_overviews(tmp_path):
    from bharateo.data.roi import load_roi
    from bharateo.data.worldcover import DataSource

    if not REAL_TILE.is_file():
        pytest.skip("real N00E006 tile absent")
    roi = load_roi(RoiSpec("sao_tome", 6.60, 0.25, 1024), DataSource("folder", str(REAL_DIR)))
    (overview,) = cached_region_overviews(Path(os.environ["BHARATEO_DATA_DIR"]))
    assert overview.bounds == tuple(roi.provenance["bounds"])
    assert overview.data_label == roi.data_label
    (tmp_path / "worldcover_bad_s64_x.npz").write_bytes(b"junk")
    assert cached_region_overviews(tmp_path) == []
