"""Sentinel-2 lesson in the app (AppTest): Regions offers the source and reads a scene of the
local folder, Chips shows true and false colour and the real channel count, Reconstruct shows
both colour rows. Reflectance: the real shared crop; labels: fixtures, labelled as such."""
from __future__ import annotations

import os
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from bharateo.data.chips import ChipConfig
from bharateo.training.experiment import RunConfig, run_experiment
from bharateo.data.sentinel2 import folder_presets
from bharateo.training.loop import TrainConfig
from bharateo.app.state import CurrentModel
from tests.support.pages import drawn_after
from tests.support.paths import APP
from tests.support.s2_fixtures import SCENE_DIR, sahara_labels, scene_folder
from tests.support.models import TINY_MODEL

pytestmark = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
VARIED = {40: .35, 60: .3, 20: .2, 50: .1, 30: .05}


@pytest.fixture
def s2_lesson(tmp_path, monkeypatch):
    scene_folder(tmp_path / "s2")
    monkeypatch.setenv("BHARATEO_S2_DIR", str(tmp_path / "s2"))
    spec = folder_presets()[0]
    sahara_labels(tmp_path / "wc", spec, weights=VARIED)
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(tmp_path / "wc"))
    return spec


def texts(at) -> str:
    return " ".join(str(getattr(e, "value", "")) for kind in ("markdown", "caption", "warning",
                                                             "error", "success", "info")
                    for e in at.get(kind))


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def test_a_sentinel2_lesson_from_regions_to_chips(s2_lesson):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    at.text_input(key="region_s2_dates").set_value("2020-01-01/2020-03-01").run()
    assert not at.exception
    at.button(key=f"add_s2_{s2_lesson.name}").click().run()
    assert not at.exception, at.exception
    roi = at.session_state["rois"][0]
    assert roi.provenance["scene_id"] == "S2A_29RKH_20200219_0_L2A" and roi.bands == (
        "B02", "B03", "B04", "B08")
    assert any("True colour (B4 B3 B2" in c for c in image_captions(at))
    assert "synthetic test fixture" in texts(at) and "reflectance is real" in texts(at)
    # bad dates: said, and the last good ones kept
    at.text_input(key="region_s2_dates").set_value("March").run()
    assert any("dates must be a range" in e.value for e in at.error)
    assert at.session_state["s2_dates"] == "2020-01-01/2020-03-01"

    at.switch_page("pages/chips.py").run()
    at.number_input(key="cfg_n").set_value(16)
    at.select_slider(key="cfg_size").set_value(64)
    at.button(key="build_chips").click().run()
    assert not at.exception, at.exception
    chips = at.session_state["train_chips"]
    assert chips.channels == 4 and at.session_state["chip_config"].source == "s2-4band"
    assert "4 × 16 × 16 = 1,024 values" in texts(at)
    assert list(at.radio(key="chip_mode").options) == [
        "true colour (B4 B3 B2)", "false colour (B8 B4 B3)", "patch labels (targets)"]
    at.radio(key="chip_mode").set_value("false colour (B8 B4 B3)").run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["B02", "B03", "B04", "B08"]
    assert "1024-long token vector" in texts(at) and "normalised by the training chips" in texts(at)

    # a refresh (a new session on the same address) restores the Sentinel-2 lesson
    home = AppTest.from_file(APP, default_timeout=120).run()  # the address as Home writes it
    for key in ("rois", "chip_config", "train_chips", "heldout_chips", "pixel_source", "s2_dates",
                "s2_max_cloud"):
        home.session_state[key] = at.session_state[key]
    params = dict(home.run().query_params)
    assert params["src"] == "s2-4band,2020-01-01/2020-03-01,20"
    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params.update(params)
    again.run()
    assert not again.exception
    assert [w.value for w in again.warning if "synthetic test fixture" not in w.value] == []
    restored = again.session_state["train_chips"]
    assert again.session_state["rois"][0].provenance["scene_id"] == roi.provenance["scene_id"]
    assert again.session_state["chip_config"] == at.session_state["chip_config"]
    assert (restored.pixels == chips.pixels).all() and restored.band_stats == chips.band_stats


def tiny_s2_run(region, name: str):
    """A one-epoch 4-band run on `region`, saved as `name` -> (config, its regions, result)."""
    from bharateo.training.experiment import load_rois

    config = RunConfig(rois=(region,), chips=ChipConfig(
        n_chips=16, chip_size=64, source="s2-4band", dates="2020-01-01/2020-03-01"),
        model=TINY_MODEL, train=TrainConfig(epochs=1, batch_size=8))
    rois = load_rois(config.rois, chips=config.chips)
    return config, rois, run_experiment(config, rois=rois, name=name)


def test_reconstruct_shows_true_and_false_colour(s2_lesson):
    config, rois, result = tiny_s2_run(s2_lesson, "s2-page")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.session_state["rois"] = rois
    at.session_state["chip_config"] = config.chips
    at.session_state["train_chips"] = result.train_chips
    at.session_state["heldout_chips"] = None
    at.session_state["model"] = CurrentModel(result.model, "s2-page", config, "s2-page")
    at.switch_page("pages/reconstruct.py").run()
    assert not at.exception, at.exception
    captions = image_captions(at)
    assert any(c.startswith("target true colour (B4 B3 B2)") for c in captions)
    assert any(c.startswith("target false colour (B8 B4 B3)") for c in captions)
    assert any("normalised reflectance" in c for c in captions)


def test_reconstruct_pastes_the_visible_patches_in_true_and_false_colour(s2_lesson, shown):
    """Both colour rows show 'reconstruction + visible': the input's visible patches and the
    model's hidden ones, pixel for pixel; the raw output of each colour behind the toggle."""
    import numpy as np

    from bharateo.training import evaluate as ev
    from bharateo.app.pictures import PANEL_SIDE, PASTED, RAW, THUMB_SIDE, chip_colour, thumbnail
    config, rois, result = tiny_s2_run(s2_lesson, "s2-paste")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.session_state["train_chips"] = chips = result.train_chips
    at.session_state["heldout_chips"] = None
    at.session_state["model"] = CurrentModel(result.model, "s2-paste", config, "s2-paste")
    at.switch_page("pages/reconstruct.py").run()
    at.toggle(key="recon_raw_output").set_value(True).run()
    assert not at.exception, at.exception
    rec = ev.reconstruct_chip(result.model, chips, 0, 0.75, seed=0)
    scale = PANEL_SIDE // chips.chip_size
    hidden = np.kron(rec.mask, np.ones((chips.patch_size * scale,) * 2, dtype=bool))
    for target, sep in (("target true colour", " ("), ("target false colour", ", false")):
        target, pasted, raw = (shown(at, start) for start in (target, PASTED + sep, RAW + sep))
        np.testing.assert_array_equal(pasted[~hidden], target[~hidden])
        np.testing.assert_array_equal(pasted[hidden], raw[hidden])
        assert not np.array_equal(raw[~hidden], target[~hidden])
    # the chip thumbnails beside the panels are the chips' true colour too (they were white)
    idx = np.arange(THUMB_SIDE) * chips.chip_size // THUMB_SIDE
    for i in range(3):
        np.testing.assert_array_equal(thumbnail(chips, i), chip_colour(chips, i)[np.ix_(idx, idx)])


def test_regions_page_dates_default_to_the_local_folders_scenes(s2_lesson, monkeypatch):
    """A new user picking Sentinel-2 with a folder source gets dates covering its scenes (the
    shared scene is from 2020, the stock default is 2021) and reads a scene without typing any;
    a typed range is kept; a STAC source keeps the stock default."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    assert not at.exception, at.exception
    assert at.text_input(key="region_s2_dates").value == "2020-01-01/2020-12-31"
    at.button(key=f"add_s2_{s2_lesson.name}").click().run()
    assert not at.exception, at.exception
    assert at.session_state["rois"][0].provenance["scene_id"] == "S2A_29RKH_20200219_0_L2A"
    assert at.session_state["s2_dates"] == "2020-01-01/2020-12-31"  # what chips are cut with
    at.text_input(key="region_s2_dates").set_value("2020-02-01/2020-02-29").run()
    at.switch_page("pages/chips.py").run()
    at.switch_page("pages/regions.py").run()
    assert at.text_input(key="region_s2_dates").value == "2020-02-01/2020-02-29"

    monkeypatch.delenv("BHARATEO_S2_DIR")  # Earth Search: no folder to look at, nothing read
    stac = AppTest.from_file(APP, default_timeout=120).run()
    stac.switch_page("pages/regions.py").run()
    stac.radio(key="region_pixel_source").set_value("s2-4band").run()
    assert not stac.exception, stac.exception
    assert stac.text_input(key="region_s2_dates").value == "2021-01-01/2021-12-31"


def test_the_folder_is_read_for_the_default_dates_once_and_an_unreadable_one_is_no_traceback(
        s2_lesson, monkeypatch):
    """The date field's default reads the folder only while the field has no value (not on every
    rerun); a folder the server may not read gives the stock dates, not a traceback."""
    import bharateo.data.sentinel2 as s2

    real, reads = s2.folder_dates, []
    monkeypatch.setattr(s2, "folder_dates", lambda *a: reads.append(1) or real(*a))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    at.run().run()
    assert reads == [1] and at.text_input(key="region_s2_dates").value == "2020-01-01/2020-12-31"

    import pathlib

    real_iterdir, folder = pathlib.Path.iterdir, pathlib.Path(os.environ["BHARATEO_S2_DIR"])

    def unreadable(path):  # as root, chmod can't take the permission away: refuse the listing
        if path == folder:
            raise PermissionError(13, "Permission denied")
        return real_iterdir(path)

    monkeypatch.setattr(pathlib.Path, "iterdir", unreadable)
    fresh = AppTest.from_file(APP, default_timeout=120).run()
    fresh.switch_page("pages/regions.py").run()
    fresh.radio(key="region_pixel_source").set_value("s2-4band").run()
    assert not fresh.exception, fresh.exception
    assert fresh.text_input(key="region_s2_dates").value == "2021-01-01/2021-12-31"


def button_keys(at) -> list[str]:
    return [b.key for b in at.button]


FOLDER_PLACE = "S2A_29RKH_20200219_0_L2A (11.98°W to 10.87°W, 24.30°N to 25.30°N)"


def test_sentinel2_from_a_folder_offers_and_describes_only_what_the_folder_can_serve(s2_lesson):
    """With a local Sentinel-2 folder, the Regions page offers the folder's scenes and none of
    the WorldCover presets (their places have no scene there), its text describes Sentinel-2
    pixels and where the folder's scenes are, and the form starts inside the scene. A region
    far from the scene is refused saying where the scenes are. WorldCover mode is unchanged."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    assert "add_presets" in button_keys(at) and "square of WorldCover pixels" in texts(at)
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    assert not at.exception, at.exception
    keys = button_keys(at)
    assert f"add_s2_{s2_lesson.name}" in keys
    assert not [k for k in keys if k.startswith("add_preset")], keys  # add_presets, add_preset_*
    page = texts(at)
    assert "Sentinel-2 L2A pixels (4 bands: B02 B03 B04 B08)" in page
    assert "square of WorldCover pixels" not in page and "1/12000°" not in page
    assert "São Tomé" not in page and "default presets" not in page
    assert f"whose scenes are at {FOLDER_PLACE}" in page and "No regions yet. Press a scene" in page
    assert (at.number_input(key="form_lon").value, at.number_input(key="form_lat").value) == (
        s2_lesson.lon, s2_lesson.lat)
    # a place far from the folder's scenes: where they are, not "move the centre / widen the dates"
    at.number_input(key="form_lon").set_value(6.6)
    at.number_input(key="form_lat").set_value(0.25)
    at.button(key="FormSubmitter:roi_form-Add region now").click().run()
    assert not at.exception and at.session_state["rois"] == []
    errors = " ".join(e.value for e in at.error)
    assert f"the folder's scenes are at {FOLDER_PLACE}" in errors and "STAC source" in errors
    assert "widen the dates" not in errors and "further inside" not in errors
    at.radio(key="region_pixel_source").set_value("worldcover").run()
    assert "add_presets" in button_keys(at) and "square of WorldCover pixels" in texts(at)


def regions_with_stac_source(monkeypatch):
    """Regions with Sentinel-2 10-band picked and a STAC source (an address nothing answers on:
    nothing is searched until a region is read), no local folder."""
    monkeypatch.delenv("BHARATEO_S2_DIR", raising=False)
    monkeypatch.setenv("BHARATEO_S2_STAC_URL", "http://127.0.0.1:9/stac")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-10band").run()
    assert not at.exception, at.exception
    return at


def test_sentinel2_from_stac_keeps_the_worldcover_presets(monkeypatch):
    """A STAC source finds scenes anywhere, so the WorldCover presets stay on offer; the text
    still says Sentinel-2 and names the STAC API (nothing is searched until a region is read)."""
    at = regions_with_stac_source(monkeypatch)
    assert {"add_presets", "add_preset_sao_tome"} <= set(button_keys(at))
    page = texts(at)
    assert "Sentinel-2 L2A pixels (10 bands" in page and "the STAC API at http://127.0.0.1:9/stac" in page
    assert "square of WorldCover pixels" not in page and "São Tomé and Príncipe" in page


def test_labels_that_cant_be_read_give_one_piece_of_advice_on_the_page(s2_lesson, monkeypatch):
    """The folder's scene is found but its WorldCover tile (N24W012) can't be read offline: the
    page says which tile and to set BHARATEO_WORLDCOVER_DIR, not to set BHARATEO_S2_DIR (set)."""
    from tests.support.fixture_tiles import closed_port_url

    monkeypatch.delenv("BHARATEO_WORLDCOVER_DIR")
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url())
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    at.button(key=f"add_s2_{s2_lesson.name}").click().run()
    assert not at.exception and at.session_state["rois"] == []
    errors = " ".join(e.value for e in at.error)
    assert "labels need ESA WorldCover tile N24W012" in errors
    assert "BHARATEO_WORLDCOVER_DIR" in errors and "BHARATEO_S2_DIR" not in errors, errors


@pytest.fixture
def s2_folder_with_composite(s2_lesson, tmp_path):
    """The lesson's folder plus the shared Belgium 4-band composite (no STAC item)."""
    composite = SCENE_DIR.parent / "S2_31UFS_2021-06_monthly_10m"
    if not composite.is_dir():
        pytest.skip("needs the shared composite folder")
    shutil.copytree(composite, tmp_path / "s2" / composite.name)  # a link out is never read
    return s2_lesson


def test_folder_mode_frames_and_outlines_the_folders_scenes_and_says_what_was_skipped(
        s2_folder_with_composite):
    """Sentinel-2 from a folder: the map opens on the folder's scene (Western Sahara), not on the
    WorldCover tiles at hand, and outlines it; the sub-folder that is no scene (the Belgium
    composite) is named with why. WorldCover mode frames and draws as before."""
    from bharateo.data.sentinel2 import folder_footprints

    (scene_id, (west, south, east, north)), = folder_footprints()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    wc_frame = at.session_state["region_map_frame"]
    assert "skipped:" not in texts(at) and not wc_frame[0][3]  # WorldCover: no scene drawn
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    assert not at.exception, at.exception
    content, ((lat, lon), zoom) = at.session_state["region_map_frame"]
    assert content[3] == ((scene_id, (west, south, east, north)),)  # drawn on the map
    assert west < lon < east and south < lat < north, (lat, lon)
    assert 700 * 360 / (256 * 2 ** zoom) >= east - west and zoom >= 7  # all of it, not a speck
    assert "Dotted green: the local Sentinel-2 folder's scenes" in texts(at)
    skipped = [e.value for e in at.caption if str(e.value).startswith("skipped:")]
    assert skipped == ["skipped: S2_31UFS_2021-06_monthly_10m: a 4-band composite without a STAC "
                       "item: not an L2A scene folder (one holds B02.tif ... SCL.tif and the "
                       "scene's STAC item JSON); see docs/sentinel2.md"]
    assert [x.label for x in at.expander if "skipped" in x.label] == [
        "1 folder in BHARATEO_S2_DIR skipped (not a scene)"]
    at.radio(key="region_pixel_source").set_value("worldcover").run()
    assert at.session_state["region_map_frame"] == wc_frame and "skipped:" not in texts(at)


def test_a_proposal_outside_the_folders_scenes_is_said_at_once_and_a_failed_add_under_the_form(
        s2_lesson):
    """Propose at a point no scene of the folder holds: the proposal says so at once, before any
    read, with where the scenes are; one inside the scene says nothing of it. Adding the far one
    (from the proposal or with "Add region now") fails with the error drawn under the form,
    where the click was, not at the top of the column."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    at.button(key="FormSubmitter:roi_form-Propose").click().run()  # the form starts in the scene
    assert at.session_state["proposed_roi"] is not None
    assert not [w for w in at.warning if "No scene of" in w.value]
    at.number_input(key="form_lon").set_value(6.6)
    at.number_input(key="form_lat").set_value(0.25)
    at.button(key="FormSubmitter:roi_form-Propose").click().run()
    assert not at.exception and at.session_state["rois"] == []
    warned = [w for w in at.warning if f"the folder's scenes are at {FOLDER_PLACE}" in w.value]
    assert len(warned) == 1 and "6.6000E 0.2500N" in warned[0].value and not at.error
    at.button(key="add_proposed").click().run()
    for submit in ("add_proposed", "FormSubmitter:roi_form-Add region now"):
        if submit != "add_proposed":
            at.button(key=submit).click().run()
        assert at.session_state["rois"] == []
        failed = [e for e in at.error if "was not added" in e.value]
        assert len(failed) == 1 and drawn_after(at, failed[0], "FormSubmitter:roi_form-Add region now")


def test_sizes_of_a_sentinel2_region_use_the_scenes_own_pixel_size(s2_lesson):
    """The shared scene has 100 m pixels (downsampled 10x): the size slider, the read region's
    provenance and a chip's journey say 100 m pixels, never WorldCover's ~9 m ('2048 px (≈ 19 km
    N-S)' for a scene of 100 m pixels was a teacher's report). WorldCover mode is unchanged."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/regions.py").run()
    assert at.select_slider(key="region_size").format_func(2048) == "2048 px (≈ 19 km N-S)"
    at.radio(key="region_pixel_source").set_value("s2-4band").run()
    at.text_input(key="region_s2_dates").set_value("2020-01-01/2020-03-01").run()
    assert not at.exception, at.exception
    assert at.select_slider(key="region_size").format_func(2048) == (
        "2048 px (≈ 204.8 km a side, 100 m pixels)")
    at.button(key=f"add_s2_{s2_lesson.name}").click().run()
    assert not at.exception, at.exception
    size = s2_lesson.size
    assert f"**size**: {size} px of 100 m ≈ {size / 10:.1f} km a side" in texts(at)
    assert "km N-S" not in texts(at)
    at.switch_page("pages/chips.py").run()
    at.number_input(key="cfg_n").set_value(16)
    at.select_slider(key="cfg_size").set_value(64)
    at.button(key="build_chips").click().run()
    assert not at.exception, at.exception
    assert "(about 6.4 km a side)" in texts(at)  # 64 px of 100 m


def test_sentinel2_from_stac_sizes_regions_in_10_m_pixels(monkeypatch):
    at = regions_with_stac_source(monkeypatch)
    assert at.select_slider(key="region_size").format_func(2048) == (
        "2048 px (≈ 20.5 km a side, 10 m pixels)")
