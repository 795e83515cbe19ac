"""The Regions map loads only vendored assets and draws the grid and ROIs; clicks -> RoiSpecs."""
import json
import re

import folium
import pytest

from bharateo.errors import RegionError
from bharateo.mapview import (
    LOCAL_CSS,
    LOCAL_JS,
    STATIC_DIR,
    STATIC_URL,
    build_region_map,
    offline_map,
    propose_roi_from_click,
)
from bharateo.roi import NOTEBOOK_ROIS, RoiSpec, roi_window

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
    assert "N27E075" in sent["script"]
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


def test_grid_labels_every_tile_over_north_india():
    labels = div_icon_html(rendered(build_region_map([])))
    for tile in ("N27E075", "N18E066", "N33E090", "N24E087"):
        assert tile in labels
    assert len(labels) == len(set(labels)) == 9 * 6
    assert "N36E066" not in labels and "N15E075" not in labels and "N27E093" not in labels


def test_grid_lines_lie_on_the_3_degree_grid():
    page = rendered(build_region_map([]))
    polyline = re.search(r"L\.polyline\(\s*(\[\[\[.*?\]\]\]),\s*(\{.*?\})", page, re.S)
    lines, options = polyline.groups()
    assert '"interactive": false' in options  # clicks on a grid line reach the map
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", lines)]
    assert numbers and all(x % 3 == 0 for x in numbers)
    assert min(numbers) == 18 and max(numbers) == 93


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


def test_roi_names_are_escaped_in_tooltips():
    page = rendered(build_region_map([("<b>`${x}`", (76.0, 29.0, 76.2, 29.2))]))
    assert "&lt;b&gt;&#96;&#36;{x}&#96;" in page
    assert "<b>`${x}`" not in page
