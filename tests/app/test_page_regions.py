"""Regions page (AppTest): presets, lon/lat form, proposals from clicks, errors, removal."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bharateo.app import mapview, pictures, regions as app_regions
from bharateo.app.mapview import propose_roi_from_click
from bharateo.data.cache import cache_path
from bharateo.data.roi import NOTEBOOK_ROIS, SAMPLE_ROIS, Roi, RoiSpec, load_roi, roi_window
from bharateo.data.worldcover import (SAMPLE_TILES, bundled_tile_path, collapse_worldcover,
                                 data_source_from_env)
from tests.support.paths import APP, SHARED

NOTEBOOK_NAMES = [spec.name for spec in NOTEBOOK_ROIS]


@pytest.fixture
def regions(worldcover_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/regions.py").run()
    assert not at.exception
    return at


def names(at) -> list[str]:
    return [r.spec.name for r in at.session_state["rois"]]


def errors(at) -> str:
    return "\n".join(e.value for e in at.error)


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def map_script(at) -> str:
    """The Leaflet script the st_folium component was given."""
    (component,) = at.get("component_instance")
    return json.loads(component.proto.json_args)["script"]


def metres_per_degree(lat: float) -> tuple[float, float]:
    """(N-S, E-W) metres per degree on WGS84 from the standard series (e.g. the NGA / Wikipedia
    'length of a degree' tables): an independent check of geodesy.pixel_metres."""
    phi = math.radians(lat)
    ns = 111132.954 - 559.822 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
    ew = 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi) + 0.118 * math.cos(5 * phi)
    return ns, ew


GROUND = re.compile(r"(\d+) px ≈ ([\d.]+) km N-S x ([\d.]+) km E-W at ([\d.]+)°([NS])")


def assert_true_ground_size(text: str, pixels: int, lat: float) -> None:
    """`text` gives the region's true size at its latitude (not 10 m x pixels)."""
    match = GROUND.search(text)
    assert match, text
    assert int(match.group(1)) == pixels
    assert float(match.group(4)) == pytest.approx(abs(lat), abs=0.005)
    ns, ew = (m * pixels / 12000 / 1000 for m in metres_per_degree(lat))
    assert float(match.group(2)) == pytest.approx(ns, abs=0.051)
    assert float(match.group(3)) == pytest.approx(ew, abs=0.051)


def submit_form(at, lon, lat, name="", size=512, button="Add region now"):
    at.select_slider(key="region_size").set_value(size)
    at.text_input(key="form_name").input(name)
    at.number_input(key="form_lon").set_value(lon)
    at.number_input(key="form_lat").set_value(lat)
    at.button(key=f"FormSubmitter:roi_form-{button}").click().run()
    assert not at.exception
    return at


def test_presets_load_from_the_fixture_tile(regions, worldcover_dir):
    at = regions
    assert at.info and "No regions yet" in at.info[0].value
    at.button(key="add_preset_shekhawati").click().run()
    assert not at.exception
    assert names(at) == ["shekhawati"]
    assert at.button(key="add_preset_shekhawati").disabled
    assert not at.button(key="add_presets").disabled  # two still missing
    at.button(key="add_presets").click().run()
    assert not at.exception
    assert names(at) == ["shekhawati", "delhi_ncr", "mathura_belt"]
    assert not at.error
    assert "Read delhi_ncr" in at.success[0].value and "mathura_belt" in at.success[0].value
    assert at.button(key="add_presets").disabled
    assert all(at.button(key=f"add_preset_{n}").disabled for n in NOTEBOOK_NAMES)

    # one palette picture, bar chart and provenance per region, and the fixture is flagged
    assert len(at.get("image")) == 3
    assert any("synthetic test fixture" in w.value for w in at.warning)
    captions = image_captions(at)
    assert [c.split("; ", 1)[1] for c in captions] == [
        "every 4th pixel shown (1:4); north is up."] * 3
    for caption, name in zip(captions, names(at)):
        assert_true_ground_size(caption, 2048, at.session_state["rois"][names(at).index(name)].spec.lat)
    captions = [c.value for c in at.caption]
    assert sum("tile N27E075" in c and "local folder" in c for c in captions) == 3
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    native = load_roi(worldcover_dir.rois["shekhawati"]).native
    expected = np.bincount(collapse_worldcover(native).ravel(), minlength=8)
    bars = json.loads(charts[0].proto.spec)["data"][0]["y"]
    assert bars == expected.tolist() and sum(bars) == 2048 * 2048
    provenance = [m.value for m in at.markdown if m.value.startswith("- **source**")]
    assert len(provenance) == 3 and "- **tiles**: N27E075" in provenance[0], provenance[0]
    # the notebook printed (75.71458333333334, 28.414666666666665, 75.88525, 28.585333333333335)
    assert "- **bounds (deg)**: W 75.7146, S 28.4147, E 75.8852, N 28.5853" in provenance[0]
    # every native code of the region in the counts table, none cut off (it wraps in the card)
    tables = [m.value for m in at.markdown if "bharateo-native-counts" in m.value]
    assert len(tables) == 3
    codes, counts = np.unique(native, return_counts=True)
    shekhawati_table = tables[names(at).index("shekhawati")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", shekhawati_table.replace("<wbr>", ""))
    assert [int(c) for c in cells[0::4]] == codes.tolist()
    assert [int(c.replace(",", "")) for c in cells[2::4]] == counts.tolist()

    # the map draws the three chosen regions, solid
    script = map_script(at)
    assert all(n in script for n in NOTEBOOK_NAMES) and "(proposed)" not in script
    # and their land cover, from the cache, named for what it is (never WorldCover); the bundled
    # real sample tile's overview is drawn too, and only it carries the WorldCover credit
    bundled = [t for t in SAMPLE_TILES if bundled_tile_path(t) is not None]
    assert script.count("L.imageOverlay(") == 3 + len(bundled)
    assert script.count("Copernicus") == len(bundled)
    assert script.count("Land cover: synthetic test fixture") == 3
    assert any("3 cached regions (synthetic test fixture)" in c.value for c in at.caption)


def test_add_by_lon_lat_and_remove(regions):
    at = submit_form(regions, 77.23, 28.61, name="delhi_small")
    assert names(at) == ["delhi_small"]
    roi = at.session_state["rois"][0]
    assert roi.spec == RoiSpec("delhi_small", 77.23, 28.61, 512)
    assert roi.native.shape == (512, 512)
    (caption,) = image_captions(at)
    assert caption.endswith("; full resolution; north is up.")
    assert_true_ground_size(caption, 512, 28.61)

    submit_form(at, 75.80, 28.50, name="b")
    assert names(at) == ["delhi_small", "b"] and len(at.get("image")) == 2
    at.button(key="remove_delhi_small").click().run()  # removing one keeps the other
    assert not at.exception
    assert names(at) == ["b"] and len(at.get("image")) == 1
    script = map_script(at)
    assert script.count("L.rectangle(") == 1 and re.search(r"<div>\s*b\s*</div>", script)


def test_propose_then_add_across_a_tile_edge(regions, worldcover_dir):
    lon, lat = worldcover_dir.edge_lon_lat
    at = submit_form(regions, lon, lat, name="edge", button="Propose")
    assert names(at) == []  # proposed, not read
    assert at.session_state["proposed_roi"] == RoiSpec("edge", lon, lat, 512)
    assert any("Proposed: edge" in m.value for m in at.markdown)
    assert "edge (proposed)" in map_script(at)
    at.button(key="add_proposed").click().run()
    assert not at.exception
    assert names(at) == ["edge"] and at.session_state["proposed_roi"] is None
    assert any("tiles N27E075, N27E078" in c.value for c in at.caption)
    assert "(proposed)" not in map_script(at)


def test_bad_regions_show_errors_and_keep_the_others(regions, worldcover_dir):
    at = submit_form(regions, 77.23, 28.61, name="delhi_small")
    assert names(at) == ["delhi_small"]

    sea = worldcover_dir.sea_spec
    submit_form(at, sea.lon, sea.lat, name="sea")
    assert "sea or outside WorldCover coverage" in errors(at)
    assert names(at) == ["delhi_small"]

    lon, lat = worldcover_dir.missing_tile_lon_lat
    submit_form(at, lon, lat, name="north")
    assert worldcover_dir.missing_tile in errors(at) and "holds land" in errors(at)
    assert names(at) == ["delhi_small"]

    submit_form(at, 77.231, 28.611, name="delhi_again")
    assert "overlaps 'delhi_small'" in errors(at)

    submit_form(at, 75.80, 28.50, name="delhi_small")
    assert "already a region called 'delhi_small'" in errors(at)

    submit_form(at, 77.0, 85.0, name="arctic", button="Propose")
    assert "outside WorldCover coverage" in errors(at)
    assert at.session_state["proposed_roi"] is None

    assert names(at) == ["delhi_small"]
    assert len(at.get("image")) == 1  # the good region is still shown
    assert not at.exception


def test_unreachable_source_is_an_error(regions, monkeypatch, tmp_path):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(tmp_path / "no_such_folder"))
    submit_form(regions, 77.23, 28.61, name="x")
    assert "does not exist" in errors(regions)
    assert names(regions) == []


def test_a_repaired_cache_file_is_reported(regions):
    spec = RoiSpec("repaired", 77.2412, 28.6012, 512)  # read nowhere else in these tests
    path = cache_path(roi_window(spec), data_source_from_env())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip file")
    at = submit_form(regions, spec.lon, spec.lat, name=spec.name)
    assert names(at) == ["repaired"]
    assert any("damaged" in w.value and path.name in w.value for w in at.warning)
    assert any("- **note**: The cache file" in m.value and "damaged" in m.value
               for m in at.markdown)
    assert path.with_suffix(".corrupt").exists() and path.exists()


def test_a_click_proposal_is_drawn_and_can_be_renamed_and_added(regions):
    at = regions
    click = {"last_clicked": {"lat": 28.61, "lng": 77.23}}
    at.session_state["proposed_roi"] = propose_roi_from_click(click, 512)
    at.run()
    assert not at.exception
    assert any("Proposed: roi_77.2300E_28.6100N" in m.value for m in at.markdown)
    script = map_script(at)
    assert "roi_77.2300E_28.6100N (proposed)" in script and '"dashArray": "6 4"' in script
    at.select_slider(key="region_size").set_value(1024).run()  # resizes the proposal
    assert at.session_state["proposed_roi"] == RoiSpec("roi_77.2300E_28.6100N", 77.23, 28.61, 1024)
    at.text_input(key="proposal_name_77.23_28.61").input("my_click")
    at.button(key="add_proposed").click().run()
    assert not at.exception
    assert names(at) == ["my_click"] and at.session_state["rois"][0].spec.size == 1024
    assert at.session_state["proposed_roi"] is None


def test_a_click_proposal_can_be_discarded(regions):
    at = regions
    at.session_state["proposed_roi"] = RoiSpec("somewhere", 77.23, 28.61, 512)
    at.run()
    at.button(key="discard_proposed").click().run()
    assert at.session_state["proposed_roi"] is None and names(at) == []
    assert "(proposed)" not in map_script(at)


def test_page_survives_being_the_first_run(worldcover_dir):
    """A page URL opened first may run without app.py (Streamlit's pages/ folder fallback)."""
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "regions.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Regions"


def test_no_data_pixels_are_black_and_left_out_of_the_counts():
    native = np.full((64, 64), 40, dtype=np.uint8)  # cropland
    native[:, :16] = 0  # a quarter sea
    native[0, 20] = 50
    roi = Roi(RoiSpec("coast", 77.0, 28.0, 64), native, {})
    counts = app_regions.collapsed_counts(roi)
    assert counts.sum() == 64 * 48 and counts[1] == 64 * 48 - 1 and counts[3] == 1
    picture = pictures.roi_picture(roi)
    assert (picture.image[:, :16] == 0).all() and picture.step == 1
    assert "Black: no data" in picture.caption


# --- issue 10: the data in use, the presets, the map view and state across pages ---------------
REAL_TILE = bundled_tile_path("N00E006") or (
    SHARED / "data" / "worldcover"
    / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif")
needs_real_tile = pytest.mark.skipif(not REAL_TILE.is_file(), reason="real N00E006 tile absent")


def map_view_of(at) -> tuple[list[float], int]:
    """([lat, lon], zoom) the map script opens at."""
    script = map_script(at)
    center = json.loads(re.search(r"center: (\[[^\]]*\])", script).group(1))
    return center, int(re.search(r"\"zoom\": (\d+)", script).group(1))


def test_region_size_survives_a_visit_to_another_page(regions):
    """The size slider came back at 2048 px after Home, and the next click proposed 2048."""
    at = regions
    at.select_slider(key="region_size").set_value(1024).run()
    at.switch_page("app.py").run()
    at.switch_page("pages/regions.py").run()
    assert not at.exception
    assert at.select_slider(key="region_size").value == 1024
    at.session_state["region_map"] = {"last_clicked": {"lat": 28.61, "lng": 77.23}}
    at.run()
    assert at.session_state["proposed_roi"].size == 1024


def test_adding_a_preset_ends_the_proposal_and_its_overlap_warning(regions):
    at = submit_form(regions, 77.23, 28.61, name="mine", button="Propose")
    at.button(key="add_preset_delhi_ncr").click().run()  # overlaps the proposal
    assert not at.exception
    assert names(at) == ["delhi_ncr"] and at.success
    assert at.session_state["proposed_roi"] is None
    assert not any("Proposed:" in m.value for m in at.markdown)
    assert not any("overlaps" in w.value for w in at.warning)
    assert "(proposed)" not in map_script(at)


def test_a_map_click_proposes_once_and_a_pan_keeps_the_view(regions):
    at = regions
    at.button(key="add_preset_delhi_ncr").click().run()
    center, zoom = map_view_of(at)
    assert zoom >= 9  # fitted to the region: a 19 km square is not a speck
    assert center == pytest.approx([28.61, 77.23], abs=0.05)

    # the user pans and zooms out, then clicks: the proposal is drawn where they are looking
    at.session_state["region_map"] = {"center": {"lat": 27.9, "lng": 76.1}, "zoom": 7,
                                      "last_clicked": None}
    at.run()
    at.session_state["region_map"] = {"center": {"lat": 27.9, "lng": 76.1}, "zoom": 7,
                                      "last_clicked": {"lat": 27.5, "lng": 75.9}}
    at.run()
    assert not at.exception
    assert at.session_state["proposed_roi"].lon == 75.9
    assert "(proposed)" in map_script(at)
    assert map_view_of(at) == ([27.9, 76.1], 7)

    # a rerun (e.g. the size slider) neither proposes the old click again nor moves the map
    at.button(key="discard_proposed").click().run()
    at.select_slider(key="region_size").set_value(512).run()
    assert at.session_state["proposed_roi"] is None
    assert map_view_of(at) == ([27.9, 76.1], 7)

    # a preset added from the buttons is framed again
    at.button(key="add_preset_mathura_belt").click().run()
    center, _ = map_view_of(at)
    assert center != [27.9, 76.1]
    lat = [r.spec.lat for r in at.session_state["rois"]]
    assert min(lat) - 0.2 < center[0] < max(lat) + 0.2


def test_map_frame_keeps_the_script_while_only_the_view_changes():
    fit = lambda: ((1.0, 2.0), 9)  # noqa: E731
    frame = mapview.map_frame(None, "a", None, fit)
    assert frame == ("a", ((1.0, 2.0), 9))
    assert mapview.map_frame(frame, "a", ((5.0, 6.0), 7), fit) is frame  # a pan: same map
    assert mapview.map_frame(frame, "b", ((5.0, 6.0), 7), fit) == ("b", ((5.0, 6.0), 7))
    assert mapview.map_frame(frame, "b", None, fit) == ("b", ((1.0, 2.0), 9))


@needs_real_tile
def test_offline_sample_presets_on_the_real_tile(monkeypatch):
    """Without north India's tile the defaults are São Tomé and Príncipe, read from the real
    N00E006 tile, called WorldCover because its tags say so, with its overview on the map."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(REAL_TILE.parent))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    (in_use,) = [m.value for m in at.markdown if m.value.startswith("**Data in use:**")]
    assert "São Tomé and Príncipe (tile N00E006)" in in_use and "north India" not in in_use
    at.switch_page("pages/regions.py").run()
    assert at.button(key="add_presets").label == "Add the offline sample's 2 regions"
    script = map_script(at)
    assert script.count("L.imageOverlay(") == 1 and "Copernicus" in script  # the tile overview
    assert any("N00E006: ESA WorldCover 10 m 2021 v200" in c.value for c in at.caption)
    center, zoom = map_view_of(at)  # fitted to the tile at hand
    assert 0 < center[0] < 3 and 6 < center[1] < 9 and zoom >= 6
    at.button(key="add_presets").click().run()
    assert not at.exception and not at.error
    assert names(at) == [s.name for s in SAMPLE_ROIS]
    assert not any("fixture" in w.value or "not verified" in w.value for w in at.warning)
    text = "\n".join(m.value for m in at.markdown)
    assert "**ESA WorldCover 10 m 2021 v200**: sao_tome, principe" in text
    # the map now also draws the two cached regions, finer, over the tile overview
    assert map_script(at).count("L.imageOverlay(") == 3
    for roi in at.session_state["rois"]:
        assert_true_ground_size(app_regions.spec_summary(roi.spec), 2048, roi.spec.lat)


def test_unverified_pixels_are_called_so_on_the_regions_page(regions, monkeypatch):
    at = submit_form(regions, 77.23, 28.61, name="plain")
    monkeypatch.setattr(Roi, "data_label", property(lambda self: "not verified as ESA WorldCover"))
    monkeypatch.setattr(Roi, "verified", property(lambda self: False))
    at.run()
    assert any("**not verified as ESA WorldCover**" in w.value and "plain" in w.value
               for w in at.warning)
    assert "**not verified as ESA WorldCover**: plain" in "\n".join(m.value for m in at.markdown)


def test_offline_sample_read_names_the_bundle_and_shows_the_files_tags(monkeypatch):
    """No source configured, no network: the presets are read from the bundled sample, and the
    success message, the form's start and the provenance say what was really read (the message
    named the public bucket; the provenance left out the file's own ESA tags)."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", "http://127.0.0.1:9/unreachable")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    assert at.number_input(key="form_lon").value == SAMPLE_ROIS[0].lon  # a place the data covers
    assert at.number_input(key="form_lat").value == SAMPLE_ROIS[0].lat
    at.button(key="add_presets").click().run()
    assert not at.exception and not at.error
    (done,) = [s.value for s in at.success if s.value.startswith("Read")]
    assert done.count("bundled sample") == 2 and "127.0.0.1" not in done
    provenance = [m.value for m in at.markdown if "- **source**" in m.value]
    assert len(provenance) == 2
    for text in provenance:
        assert "- **data**: ESA WorldCover 10 m 2021 v200" in text
        assert "product_tile=N00E006" in text and "product_version=V2.0.0" in text
        assert "time_start=2021-01-01T00:00:00Z" in text and "license=CC-BY 4.0" in text


def test_a_read_stopped_part_way_by_a_rerun_is_finished(regions):
    """A map event arriving while 'Add the notebook's three regions' reads stops that script run
    after the first region; the next run must read the other two, not leave them out."""
    at = regions
    at.button(key="add_preset_delhi_ncr").click().run()
    # what an interrupted run leaves: the first region added, the list still pending
    at.session_state["pending_regions"] = (list(NOTEBOOK_ROIS), True, 1)
    at.run()
    assert not at.exception and not at.error
    assert names(at) == ["delhi_ncr", "shekhawati", "mathura_belt"]
    assert at.session_state["pending_regions"] is None
    at.session_state["pending_regions"] = (list(NOTEBOOK_ROIS), True, 3)  # gave up after 3 tries
    at.run()
    assert at.session_state["pending_regions"] is None and len(names(at)) == 3


def test_a_late_report_of_an_old_view_does_not_undo_a_refit(regions):
    """The map drawn before the presets were added reports where it was drawn, late (a loaded
    machine): that is not the user moving the map, so the map stays fitted to the regions."""
    at = regions
    (old_center, old_zoom) = at.session_state["region_map_frame"][1]
    at.button(key="add_presets").click().run()
    fitted = map_view_of(at)
    at.session_state["region_map"] = {"center": {"lat": old_center[0], "lng": old_center[1]},
                                      "zoom": old_zoom, "last_clicked": None}
    at.run()
    assert not at.exception
    assert at.session_state["region_map_view"] is None and map_view_of(at) == fitted
    # a real pan is still kept
    at.session_state["region_map"] = {"center": {"lat": 28.0, "lng": 76.5}, "zoom": 9,
                                      "last_clicked": None}
    at.run()
    assert at.session_state["region_map_view"] == ((28.0, 76.5), 9)


def test_drawn_view_is_within_a_pixel():
    drawn = [((28.5, 77.0), 9)]
    assert mapview.drawn_view(((28.5 + 1e-4, 77.0 - 1e-4), 9), drawn)
    assert not mapview.drawn_view(((28.5, 77.01), 9), drawn)  # ~7 px at zoom 9: a pan
    assert not mapview.drawn_view(((28.5, 77.0), 10), drawn)  # a zoom


def test_a_proposal_that_cant_take_a_new_size_is_said_beside_the_slider_and_kept(regions):
    """Growing a proposal at 179.95°E past 180° fails; the error is drawn under the size slider
    and the form (where the user is), not at the top of the column, and the proposal is kept."""
    from tests.support.pages import drawn_after

    at = regions
    at.select_slider(key="region_size").set_value(512).run()
    at.number_input(key="form_lon").set_value(179.95)
    at.number_input(key="form_lat").set_value(10.0)
    at.button(key="FormSubmitter:roi_form-Propose").click().run()
    assert at.session_state["proposed_roi"].size == 512 and not at.error
    at.select_slider(key="region_size").set_value(4096).run()
    assert not at.exception and at.session_state["proposed_roi"].size == 512
    assert len(at.error) == 1 and drawn_after(at, at.error[0], "region_size")


def test_the_server_wide_region_store_keeps_each_cache_folder_apart(worldcover_dir, tmp_path,
                                                                    monkeypatch):
    """A region read into one BHARATEO_DATA_DIR is not handed to a server reading into another:
    the store's key holds the cache folder. Without it, the Regions page's map lost its cached
    regions' land cover whenever an earlier test in the same process had read the same preset
    (test_presets_load_from_the_fixture_tile failed under pytest-xdist)."""
    from bharateo.data.worldcover import data_source_from_env

    spec, source = worldcover_dir.rois["shekhawati"], data_source_from_env()
    for folder in (tmp_path / "first", tmp_path / "second"):
        folder.mkdir()
        monkeypatch.setenv("BHARATEO_DATA_DIR", str(folder))
        app_regions._shared_read((spec.lon, spec.lat, spec.size, source),
                                 lambda: load_roi(spec, source))
        assert cache_path(roi_window(spec), source).exists(), folder.name
