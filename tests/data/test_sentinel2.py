"""Sentinel-2 input (issue 15) on the real shared L2A crop: band reads, the 20 m -> 10 m grid,
labels on the scene's UTM grid, per-band normalisation, a 4-band run end to end, the STAC search
through a local server, and the messages for a scene that doesn't cover the region or is cloud.

The reflectance is real (29RKH, 2020-02-19, downsampled 10x by its publisher: its "10 m" grid is
100 m here). Its labels are WorldCover fixtures (tests/support/s2_fixtures.py), never real WorldCover."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

from bharateo import cli
from bharateo.data.chips import ChipConfig, ChipSet, build_chip_sets, tokens_for
from bharateo.errors import BharatEOError, ConfigError, RegionError
from bharateo.training.experiment import RunConfig, load_rois, run_experiment
from bharateo.data.reflectance import BandStats, band_stats, composite, normalise
from bharateo.data.roi import FIXTURE_LABEL, RoiSpec
from bharateo.storage.runs import load_model, load_run
from bharateo.data.sentinel2 import (
    BANDS_4,
    BANDS_10,
    RegionGrid,
    S2Query,
    S2Source,
    load_s2_roi,
    read_scene_window,
    reflectance_rule,
    region_grid,
    scene_from_item,
    worldcover_on_grid,
)
from bharateo.data.sentinel2.bands import EARTH_SEARCH_ASSET_HOSTS
from bharateo.training.loop import TrainConfig
from bharateo.data.worldcover import NODATA_ID, PIXELS_PER_DEGREE, DataSource
from tests.support.fixture_tiles import closed_port_url, write_fixture_tile
from tests.support.s2_fixtures import (
    DATES,
    SAHARA,
    SAHARA_EAST,
    SCENE_DIR,
    SCENE_ID,
    VARIED,
    StacServer,
    copy_scene_files,
    sahara_labels,
    scene_folder,
    shared_item,
)
from tests.support.models import TINY_MODEL

pytestmark = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")


def shared_scene():
    return scene_from_item(shared_item(), EARTH_SEARCH_ASSET_HOSTS), {b: str(SCENE_DIR / f"{b}.tif") for b in
                                            (*BANDS_10, "SCL")}


def grid_on_scene(row: int, col: int, size: int) -> RegionGrid:
    with rasterio.open(SCENE_DIR / "B02.tif") as src:
        t = src.transform
        return RegionGrid(str(src.crs), (t.a, 0.0, t.c + col * t.a, 0.0, t.e, t.f + row * t.e),
                          size, (row, col), src.shape)


# --- reads -----------------------------------------------------------------------------------
def test_band_reads_equal_direct_rasterio_reads():
    scene, hrefs = shared_scene()
    scene = scene.__class__(**{**scene.__dict__, "hrefs": hrefs})
    grid = grid_on_scene(301, 417, 96)  # odd offsets: a 20 m pixel straddles the region's edge
    dn, scl, valid = read_scene_window(scene, grid, BANDS_4)
    for i, band in enumerate(BANDS_4):
        with rasterio.open(hrefs[band]) as src:
            direct = src.read(1, window=Window(417, 301, 96, 96))
        np.testing.assert_array_equal(dn[i], direct)
    assert dn.dtype == np.uint16 and valid.all() == (dn != 0).all()


def test_20m_bands_land_on_the_10m_grid():
    """Each 20 m pixel covers exactly the 2 x 2 10 m pixels under it, also at an odd offset."""
    scene, hrefs = shared_scene()
    scene = scene.__class__(**{**scene.__dict__, "hrefs": hrefs})
    row, col, size = 301, 417, 96
    dn, scl, _ = read_scene_window(scene, grid_on_scene(row, col, size), BANDS_10)
    with rasterio.open(hrefs["B05"]) as b05, rasterio.open(hrefs["SCL"]) as s:
        coarse, coarse_scl = b05.read(1), s.read(1)
        assert b05.transform.a == 2 * 100.0  # this crop: 200 m under 100 m
    for r in range(size):
        for c in (0, 1, 50, size - 1):
            assert dn[BANDS_10.index("B05"), r, c] == coarse[(row + r) // 2, (col + c) // 2]
            assert scl[r, c] == coarse_scl[(row + r) // 2, (col + c) // 2]
    # the whole band, vectorised: the coarse pixel of every fine pixel
    rr, cc = np.meshgrid(np.arange(row, row + size) // 2, np.arange(col, col + size) // 2,
                         indexing="ij")
    np.testing.assert_array_equal(dn[BANDS_10.index("B12")],
                                  rasterio.open(hrefs["B12"]).read(1)[rr, cc])


def test_checkerboard_labels_land_on_the_right_utm_pixels(tmp_path):
    """A checkerboard on the WorldCover grid, squares of 3 x 3 WorldCover pixels, reprojected
    onto a 10 m UTM grid: every UTM pixel gets the class of the WorldCover pixel under its
    centre (computed independently with pyproj-free rasterio.warp.transform)."""
    from rasterio.warp import transform as warp

    lon0, lat0, n = -11.5, 24.75, 600  # inside tile N24W012
    t_col, t_row = round((lon0 + 12) * PIXELS_PER_DEGREE), round((27 - lat0) * PIXELS_PER_DEGREE)
    rr, cc = np.indices((n, n))
    board = np.where(((rr // 3) + (cc // 3)) % 2 == 0, 10, 40).astype(np.uint8)
    write_fixture_tile(tmp_path, "N24W012", [(t_row, t_col, board)])
    # a 10 m grid in the scene's UTM zone (29N) whose NW corner is inside the board
    x0, y0 = warp("EPSG:4326", "EPSG:32629", [lon0 + 0.001], [lat0 - 0.001])
    size = 256
    grid = RegionGrid("EPSG:32629", (10.0, 0.0, round(x0[0]) + 3.7, 0.0, -10.0, round(y0[0]) + 1.3),
                      size, (0, 0), (size, size))
    labels, info = worldcover_on_grid(grid, DataSource("folder", str(tmp_path)))
    assert info["resampling"] == "nearest" and info["synthetic"]
    a, _, c, _, e, f = grid.transform
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    lons, lats = warp(grid.crs, "EPSG:4326", (c + a * cols).ravel(), (f + e * rows).ravel())
    fc, fr = (np.array(lons) - lon0) * PIXELS_PER_DEGREE, (lat0 - np.array(lats)) * PIXELS_PER_DEGREE
    expected = board[np.floor(fr).astype(int), np.floor(fc).astype(int)].reshape(size, size)
    # a centre within 1 % of a WorldCover pixel (9 cm) of its edge is a tie that the warper's
    # and this test's coordinate transforms may break differently: only those are left out
    edge = np.minimum(np.minimum(fc % 1, 1 - fc % 1), np.minimum(fr % 1, 1 - fr % 1)) < 0.01
    edge = edge.reshape(size, size)
    assert edge.mean() < 0.05
    np.testing.assert_array_equal(labels[~edge], expected[~edge])
    assert set(np.unique(labels)) == {10, 40}  # class-preserving: no blended codes


def test_mode_resampling_on_a_coarse_grid_keeps_whole_squares(tmp_path):
    """On the shared crop's 100 m grid, labels take the most frequent class: a 100 m pixel lying
    inside one 1.2 km fixture square gets that square's class."""
    from rasterio.warp import transform as warp

    lon0, lat0, n, sq = -11.6, 24.9, 3600, 120
    t_col, t_row = round((lon0 + 12) * PIXELS_PER_DEGREE), round((27 - lat0) * PIXELS_PER_DEGREE)
    rr, cc = np.indices((n, n))
    board = np.where(((rr // sq) + (cc // sq)) % 2 == 0, 60, 20).astype(np.uint8)
    write_fixture_tile(tmp_path, "N24W012", [(t_row, t_col, board)])
    grid = region_grid(RoiSpec("m", lon0 + 0.15, lat0 - 0.15, 200), "EPSG:32629",
                       Affine(100, 0, 199980, 0, -100, 2800020), (1098, 1098))
    labels, info = worldcover_on_grid(grid, DataSource("folder", str(tmp_path)))
    assert info["resampling"] == "mode"
    a, _, c, _, e, f = grid.transform
    checked = 0
    for r in range(0, 200, 7):
        for col in range(0, 200, 7):
            xs = [c + a * (col + dx) for dx in (0, 1, 0, 1)]
            ys = [f + e * (r + dy) for dy in (0, 0, 1, 1)]
            lons, lats = warp(grid.crs, "EPSG:4326", xs, ys)
            sq_r = {math.floor((lat0 - la) * PIXELS_PER_DEGREE) // sq for la in lats}
            sq_c = {math.floor((lo - lon0) * PIXELS_PER_DEGREE) // sq for lo in lons}
            if len(sq_r) == len(sq_c) == 1:  # the whole 100 m pixel inside one square
                want = 60 if (sq_r.pop() + sq_c.pop()) % 2 == 0 else 20
                assert labels[r, col] == want
                checked += 1
    assert checked > 300


def test_reflectance_offset_rule():
    item = shared_item()
    assert reflectance_rule(scene_from_item(item))[0] == 0  # baseline 02.14
    new = shared_item(**{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False})
    assert reflectance_rule(scene_from_item(new))[0] == -1000
    done = shared_item(**{"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    assert reflectance_rule(scene_from_item(done))[0] == 0


# --- a region --------------------------------------------------------------------------------
def test_region_from_a_folder_is_real_reflectance_with_fixture_labels(s2_env):
    query = S2Query(DATES, 20)
    roi = load_s2_roi(SAHARA, BANDS_4, query)
    p = roi.provenance
    assert (p["scene_id"], p["scene_date"], p["mgrs_tile"], p["crs"]) == (
        SCENE_ID, "2020-02-19", "29RKH", "EPSG:32629")
    assert p["cloud_cover"] == pytest.approx(4.051854) and p["bands"] == list(BANDS_4)
    assert roi.pixels.shape == (4, 256, 256) and roi.native.shape == (256, 256)
    assert roi.synthetic and FIXTURE_LABEL in roi.data_label and "Sentinel-2" in roi.data_label
    row, col = p["scene_window"]
    with rasterio.open(SCENE_DIR / "B04.tif") as src:
        direct = src.read(1, window=Window(col, row, 256, 256))
    np.testing.assert_allclose(roi.pixels[2], direct / 10000, rtol=1e-6)
    # the second read is the cache's, bit for bit; a damaged cache is moved aside and read again
    again = load_s2_roi(SAHARA, BANDS_4, query)
    assert again.provenance["source"].startswith("local cache")
    np.testing.assert_array_equal(again.pixels, roi.pixels)
    cache = next((s2_env / "data" / "sentinel2").glob("*.npz"))
    cache.write_bytes(cache.read_bytes()[:1000])
    healed = load_s2_roi(SAHARA, BANDS_4, query)
    assert any("damaged" in n for n in healed.notes)
    np.testing.assert_array_equal(healed.pixels, roi.pixels)


def test_all_cloud_region_gives_a_clear_message(s2_env):
    folder = s2_env / "s2" / SCENE_ID
    (folder / "SCL.tif").unlink()
    with rasterio.open(SCENE_DIR / "SCL.tif") as src:
        profile, scl = src.profile, src.read(1)
    with rasterio.open(folder / "SCL.tif", "w", **profile) as dst:
        dst.write(np.full_like(scl, 9), 1)  # cloud, high probability everywhere
    with pytest.raises(RegionError, match=r"cloud.*Pick other dates"):
        load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20))


def test_region_outside_every_scene_gives_a_clear_message(s2_env):
    with pytest.raises(RegionError, match="covers the whole.*Move the centre"):
        load_s2_roi(RoiSpec("edge", -10.9, 24.8, 256), BANDS_4, S2Query(DATES, 20))
    with pytest.raises(RegionError, match=r"No Sentinel-2 L2A scene.*on 2020-02-19 "
                                          r"\(S2A_29RKH_20200219_0_L2A\): set the dates"):
        load_s2_roi(SAHARA, BANDS_4, S2Query("2021-01-01/2021-02-01", 20))
    with pytest.raises(ConfigError, match="dates must be a range"):
        S2Query("last winter", 20).check()
    # clear sky, but no WorldCover labels there (the fixture leaves it as sea / no data)
    with pytest.raises(RegionError, match="no-data once its WorldCover labels are added"):
        load_s2_roi(SAHARA_EAST, BANDS_4, S2Query(DATES, 20))


@pytest.mark.parametrize("labels", ["unreachable", "missing"])
def test_labels_that_cant_be_read_get_one_piece_of_advice(labels, s2_env, monkeypatch):
    """The scene is found but its WorldCover tile can't be read (offline, or not in the folder):
    the message names the tile and where to put it, and never sends the user to BHARATEO_S2_DIR
    (it is set, and holds only scenes)."""
    if labels == "unreachable":
        monkeypatch.delenv("BHARATEO_WORLDCOVER_DIR")
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url())
    else:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(s2_env / "empty_wc"))
        (s2_env / "empty_wc").mkdir()
    with pytest.raises(BharatEOError) as err:
        load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20))
    text = str(err.value)
    assert "labels need ESA WorldCover tile N24W012" in text and "BHARATEO_WORLDCOVER_DIR" in text
    assert "BHARATEO_S2_DIR" not in text and "go online" in text, text
    assert ("Could not reach" in text) == (labels == "unreachable")
    assert isinstance(err.value, RegionError) == (labels == "missing")


def test_no_scene_in_the_dates_names_the_folders_nearest_scene_dates(s2_env):
    """The default dates (2021) miss the shared 2020 scene: the message names the folder's scene
    dates nearest to the range first, the cloud limit when that is what excludes one, and the
    dates that include it, which then read it."""
    with pytest.raises(RegionError) as err:
        load_s2_roi(SAHARA, BANDS_4, S2Query())  # the default range, 2021
    text = str(err.value)
    assert f"folder {s2_env / 's2'} has a scene at this place on 2020-02-19 ({SCENE_ID})" in text
    assert "set the dates to include it (e.g. 2020-02-19/2021-12-31)" in text
    roi = load_s2_roi(SAHARA, BANDS_4, S2Query("2020-02-19/2021-12-31"))  # the suggestion works
    assert roi.provenance["scene_id"] == SCENE_ID
    scene_folder(s2_env / "s2", {"S2A_LATE": {"datetime": "2022-03-01T11:00:00Z",
                                              "eo:cloud_cover": 45.0},
                                 "S2A_EARLY": {"datetime": "2018-05-01T11:00:00Z"}})
    with pytest.raises(RegionError) as err:
        load_s2_roi(SAHARA, BANDS_4, S2Query("2021-06-01/2021-12-31", 20), use_cache=False)
    assert (f"has scenes at this place on 2022-03-01 (S2A_LATE, 45.0 % cloud); 2020-02-19 "
            f"({SCENE_ID}); 2018-05-01 (S2A_EARLY): set the dates to include it (e.g. "
            "2021-06-01/2022-03-01) and raise the cloud limit to at least 45 %") in str(err.value)
    # a place none of the folder's scenes covers: where they are, not "change the dates"
    with pytest.raises(RegionError) as err:
        load_s2_roi(RoiSpec("delhi", 77.2, 28.6, 256), BANDS_4, S2Query(), use_cache=False)
    assert_folder_elsewhere(str(err.value), 3)


def assert_folder_elsewhere(text: str, scenes: int) -> None:
    """A region no scene of the folder holds: the message places the folder's scenes (the shared
    one at its real footprint) and says to pick a region inside one or use STAC, and gives none
    of the advice that can't help (dates, cloud, moving the centre 'further inside')."""
    assert "the folder's scenes are at" in text and "11.98°W to 10.87°W, 24.30°N to 25.30°N" in text
    assert text.count("S2A_") == scenes and "use the STAC source" in text
    assert not any(w in text for w in ("widen the dates", "further inside", "cloud limit")), text


def test_a_region_far_from_every_folder_scene_says_where_they_are(s2_env):
    """In the dates or not, a region no folder scene holds gets the same plain message."""
    for dates in (DATES, "2021-01-01/2021-02-01"):
        with pytest.raises(RegionError) as err:
            load_s2_roi(RoiSpec("sao_tome", 6.6, 0.25, 256), BANDS_4, S2Query(dates, 20))
        assert_folder_elsewhere(str(err.value), 1)


# --- normalisation -----------------------------------------------------------------------------
def test_band_statistics_leave_out_nodata_and_cloud():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.05, 0.4, (6, 4, 32, 32)).astype(np.float32)
    valid = rng.random((6, 32, 32)) > 0.3
    stats = band_stats([(pixels[:4], valid[:4]), (pixels[4:], valid[4:])], BANDS_4)
    for i in range(4):
        values = pixels[:, i][valid]
        assert stats.mean[i] == pytest.approx(values.mean(), rel=1e-6)
        assert stats.std[i] == pytest.approx(values.std(), rel=1e-4)
    spoiled = pixels.copy()
    spoiled.transpose(1, 0, 2, 3)[:, ~valid] = 6.5  # cloud-bright values at every invalid pixel
    assert band_stats([(spoiled, valid)], BANDS_4) == stats
    x = normalise(spoiled, valid, stats)
    assert (x.transpose(1, 0, 2, 3)[:, ~valid] == 0).all()  # no-data reads as the band mean


def test_chip_statistics_ignore_cloudy_pixels_of_the_scene(s2_env):
    """Cloud in the SCL with absurd DNs under it: the chips' statistics equal those of the clear
    pixels alone, and the cloudy pixels are no-data in the chips."""
    folder = s2_env / "s2" / SCENE_ID
    with rasterio.open(SCENE_DIR / "SCL.tif") as src:
        profile, scl = src.profile, src.read(1)
    roi = load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), use_cache=False)
    r0, c0 = roi.provenance["scene_window"]
    cloud = scl.copy()
    # a thin cloud strip over rows 100-103 (covered whole; chips over it stay under 10 % cloud)
    cloud[(r0 + 100) // 2:(r0 + 105) // 2, c0 // 2:(c0 + 257) // 2] = 8
    (folder / "SCL.tif").unlink()
    with rasterio.open(folder / "SCL.tif", "w", **profile) as dst:
        dst.write(cloud, 1)
    for band in BANDS_4:  # bright values under the cloud
        with rasterio.open(SCENE_DIR / f"{band}.tif") as src:
            prof, data = src.profile, src.read(1)
        data[r0 + 100:r0 + 104, c0:c0 + 256] = 30000
        (folder / f"{band}.tif").unlink()
        with rasterio.open(folder / f"{band}.tif", "w", **prof) as dst:
            dst.write(data, 1)
    cloudy = load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), use_cache=False)
    assert (cloudy.native[100:104] == 0).all() and cloudy.provenance["cloud_fraction"] > 0.015
    train, _ = build_chip_sets([cloudy], ChipConfig(n_chips=24, chip_size=64, min_classes=1,
                                                    source="s2-4band"))
    px, valid = train.pixels, train.labels != NODATA_ID
    assert (~valid).any() and (px[:, 0][~valid] > 2).any()  # some chips do hold cloud
    for i in range(4):
        assert train.band_stats.mean[i] == pytest.approx(px[:, i][valid].mean(), rel=1e-5)
        assert train.band_stats.mean[i] < 1.0
    assert float(train.tokens().abs().max()) < 50  # no cloud value reaches the model


# --- a 4-band run ------------------------------------------------------------------------------
def tiny_config(source="s2-4band", **chips) -> RunConfig:
    return RunConfig(rois=(SAHARA,), chips=ChipConfig(**{
        "n_chips": 16, "chip_size": 64, "patch_size": 16, "source": source, "dates": DATES,
        "holdout_roi": SAHARA.name, "holdout_block": "east", "n_holdout_chips": 8, **chips}),
        model=TINY_MODEL, train=TrainConfig(epochs=1, batch_size=8))


def test_a_4band_run_trains_reconstructs_and_evaluates(s2_env):
    from bharateo.training import evaluate as ev

    config = tiny_config()
    assert config.model.in_chans == 4 and config.tokens().token_dim == 4 * 16 * 16
    result = run_experiment(config, name="s2-four")
    assert result.end.reason == "finished" and math.isfinite(result.metrics["train_loss"])
    chips = result.train_chips
    assert chips.bands == BANDS_4 and chips.channels == 4
    assert chips.tokens().shape == (16, 16, 1024)
    saved = load_run("s2-four")
    assert BandStats.from_dict(saved.config["band_stats"]) == chips.band_stats
    assert saved.config["data"][0]["scene_id"] == SCENE_ID
    model = load_model(saved)
    assert model.config.in_chans == 4 and model.band_stats == chips.band_stats
    # evaluation and reconstruction read chips with the run's statistics, not the chips' own
    other = BandStats(BANDS_4, (0.0,) * 4, (1.0,) * 4)
    shifted = ChipSet(**{**chips.__dict__, "band_stats": other})
    assert torch.equal(tokens_for(model, shifted), chips.tokens())
    rec = ev.reconstruct_chip(model, shifted, 0, 0.75)
    assert rec.target.shape == (64, 64, 3) and rec.false_colour["target"].shape == (64, 64, 3)
    assert 0 <= rec.target.min() and rec.target.max() <= 1 and rec.masked_mae is not None
    np.testing.assert_allclose(rec.target, composite(chips.pixels[0], BANDS_4, "true",
                                                     chips.labels[0] != NODATA_ID), atol=1e-5)
    scores = ev.evaluate(model, result.heldout_chips)
    assert scores["chips"] == 8 and 0 <= scores["accuracy"] <= 1
    # a run whose statistics are damaged or missing is listed as damaged, never used
    from bharateo.errors import RunDamagedError
    from bharateo.storage.runs import scan_runs

    config_path = saved.path / "config.json"
    for damage in ({"bands": ["B02"], "mean": [0.1], "std": [0.0]}, None):
        broken = dict(saved.config)
        broken.pop("band_stats")
        if damage is not None:
            broken["band_stats"] = damage
        config_path.write_text(json.dumps(broken))
        with pytest.raises(RunDamagedError, match="band statistics"):
            load_run("s2-four")
        assert "s2-four" in [d.name for d in scan_runs()[1]]


@pytest.mark.app  # a training in the app's worker process: the app tier, not the quick one
def test_the_apps_training_worker_trains_and_saves_a_4band_run(s2_env):
    """The app's path (a TrainingJob in a worker process) trains the same 4-band run as the
    core and saves its band statistics; the app's model carries them."""
    from bharateo.jobs import service as jobs

    config = tiny_config()
    rois = load_rois(config.rois, chips=config.chips)
    job = jobs.TrainingJob(config, rois, "s2-worker", queue=jobs.TrainingQueue()).start()
    job.join(180)
    assert job.status == "finished", job.error
    saved = load_run("s2-worker")
    assert BandStats.from_dict(saved.config["band_stats"]) == job.train_chips.band_stats
    assert job.model.band_stats == job.train_chips.band_stats
    assert saved.config["model"]["in_chans"] == 4 and saved.config["chips"]["source"] == "s2-4band"


def test_10band_chips_and_a_source_mix_is_refused(s2_env):
    ten = load_rois(tiny_config("s2-10band").rois, chips=tiny_config("s2-10band").chips)
    train, held = build_chip_sets(ten, tiny_config("s2-10band").chips)
    assert train.channels == 10 and train.tokens([0]).shape == (1, 16, 2560)
    assert held.band_stats is train.band_stats  # held-out chips use the training statistics
    assert RunConfig(chips=ChipConfig(source="s2-10band")).model.in_chans == 10
    with pytest.raises(ConfigError, match="Unknown pixel source"):
        RunConfig(chips=ChipConfig(source="landsat")).validate()
    from bharateo.errors import ChipError
    from bharateo.data.roi import load_roi

    palette = load_roi(RoiSpec("sao_tome", 6.60, 0.25, 512))
    with pytest.raises(ChipError, match="same source|chips' source"):
        build_chip_sets([palette, *ten], tiny_config("s2-10band").chips)
    with pytest.raises(ChipError, match="Sentinel-2 pixels"):
        build_chip_sets(ten, ChipConfig(n_chips=4, chip_size=64))


# --- the STAC search through a local server ----------------------------------------------------
def test_stac_search_picks_the_least_cloudy_scene_in_range(tmp_path, monkeypatch):
    files = tmp_path / "files"
    for scene_id in ("S2A_OLD", "S2A_CLOUDY", "S2A_ELSEWHERE", "S2A_BEST", SCENE_ID):
        copy_scene_files(files, scene_id) if scene_id in ("S2A_BEST", SCENE_ID) else None
    away = json.loads(json.dumps(shared_item()["geometry"]))
    away["coordinates"] = [[[x + 0.6, y] for x, y in ring] for ring in away["coordinates"]]
    items = [shared_item("S2A_OLD", datetime="2019-06-01T11:00:00Z", **{"eo:cloud_cover": 0.1}),
             shared_item("S2A_CLOUDY", datetime="2020-02-10T11:00:00Z", **{"eo:cloud_cover": 35.0}),
             {**shared_item("S2A_ELSEWHERE", datetime="2020-02-12T11:00:00Z",
                            **{"eo:cloud_cover": 0.5}), "geometry": away},
             shared_item("S2A_BEST", datetime="2020-02-24T11:00:00Z", **{"eo:cloud_cover": 1.5}),
             shared_item()]
    # a region inside the first 512 px block of the 10 m bands: few blocks to fetch
    spec = RoiSpec("northwest", -11.8172, 25.1454, 128)
    sahara_labels(tmp_path / "wc", spec, weights=VARIED)
    monkeypatch.setenv("BHARATEO_DATA_DIR", str(tmp_path / "data"))
    with StacServer(files, items) as server:
        source = S2Source("stac", server.url)
        roi = load_s2_roi(spec, BANDS_4, S2Query(DATES, 20), source,
                          DataSource("folder", str(tmp_path / "wc")))
        sent = server._files_server.bytes_sent
        assert server.searches and server.searches[0]["collections"] == ["sentinel-2-l2a"]
        assert server.searches[0]["datetime"].startswith("2020-01-01")
    assert roi.provenance["scene_id"] == "S2A_BEST" and roi.provenance["cloud_cover"] == 1.5
    assert roi.provenance["band_files"]["B02"].startswith("http://127.0.0.1")
    whole = sum((files / "S2A_BEST" / f"{b}.tif").stat().st_size for b in (*BANDS_4, "SCL"))
    assert 0 < sent < whole / 2  # windowed range reads: only part of each band file came
    with rasterio.open(SCENE_DIR / "B08.tif") as src:
        r, c = roi.provenance["scene_window"]
        assert r + 128 <= 512 and c + 128 <= 512
        np.testing.assert_allclose(roi.pixels[3], src.read(1, window=Window(c, r, 128, 128)) / 1e4,
                                   rtol=1e-6)


def test_stac_search_errors_are_clear(tmp_path):
    with StacServer(tmp_path, [shared_item(datetime="2019-01-01T00:00:00Z")]) as server:
        with pytest.raises(RegionError, match="No Sentinel-2 L2A scene"):
            load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), S2Source("stac", server.url),
                        DataSource("folder", str(tmp_path)), use_cache=False)
    from tests.support.fixture_tiles import closed_port_url

    with pytest.raises(Exception, match="search at .* failed.*BHARATEO_S2_DIR"):
        load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), S2Source("stac", closed_port_url()),
                    DataSource("folder", str(tmp_path)), use_cache=False)


def test_stac_no_scene_in_the_dates_names_the_dates_the_api_has(tmp_path):
    """An API that filters by date and cloud returns nothing for early 2021: the same dates at
    any cloud cover find nothing either, so a year either side is searched (not all of
    Sentinel-2's life, which could be thousands of items): it finds the 2020 scene, not the 2019
    one, and the message names it."""
    items = [shared_item("S2A_2019", datetime="2019-01-01T11:00:00Z"), shared_item()]
    with StacServer(tmp_path, items, honour_dates=True) as server:
        with pytest.raises(RegionError) as err:
            load_s2_roi(SAHARA, BANDS_4, S2Query("2021-01-01/2021-03-01", 20),
                        S2Source("stac", server.url), DataSource("folder", str(tmp_path)),
                        use_cache=False)
        assert [s["datetime"][:10] for s in server.searches] == ["2021-01-01", "2021-01-01",
                                                                 "2020-01-01"]
    assert (f"has a scene at this place on 2020-02-19 ({SCENE_ID}): set the dates to include it "
            "(e.g. 2020-02-19/2021-03-01)") in str(err.value)
    assert "S2A_2019" not in str(err.value)


def test_stac_scenes_in_the_dates_but_too_cloudy_say_raise_the_cloud_limit(tmp_path):
    """Every scene in the dates is over the cloud limit (the API leaves it out): the message
    says to raise the limit, not to move the dates by years."""
    items = [shared_item(**{"eo:cloud_cover": 47.5}),
             shared_item("S2A_2018", datetime="2018-01-01T11:00:00Z", **{"eo:cloud_cover": 1.0})]
    with StacServer(tmp_path, items, honour_dates=True) as server:
        with pytest.raises(RegionError) as err:
            load_s2_roi(SAHARA, BANDS_4, S2Query("2020-01-01/2020-03-01", 20),
                        S2Source("stac", server.url), DataSource("folder", str(tmp_path)),
                        use_cache=False)
        assert len(server.searches) == 2  # the same dates at any cloud cover found it
    assert "raise the cloud limit to at least 48 %" in str(err.value)
    assert "S2A_2018" not in str(err.value)


# --- the CLI ---------------------------------------------------------------------------------
def test_cli_prefetch_inspect_and_train_take_the_source(s2_env, capsys):
    flags = ["--source", "s2-4band", "--dates", DATES, "--max-cloud", "20",
             "--lon", str(SAHARA.lon), "--lat", str(SAHARA.lat), "--size", "256",
             "--name", SAHARA.name]
    assert cli.main(["prefetch", *flags]) == 0
    out = capsys.readouterr().out
    assert SCENE_ID in out and FIXTURE_LABEL in out
    assert cli.main(["inspect", *flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scene_id"] == SCENE_ID and report["bands"] == list(BANDS_4)
    assert report["synthetic_fixture"] and report["crs"] == "EPSG:32629"
    assert cli.main(["train", "--run", "cli-s2", *flags, "--n-chips", "16", "--chip-size", "64",
                     "--embed-dim", "32", "--depth", "1", "--heads", "2", "--epochs", "1",
                     "--quiet"]) == 0
    assert load_run("cli-s2").config["chips"]["source"] == "s2-4band"
    assert cli.main(["inspect", *flags[:2], "--dates", "2020-03-01/2020-01-01"]) == 2
    assert "ends before it starts" in capsys.readouterr().err


def test_folders_that_are_no_scene_are_skipped_with_a_reason_a_teacher_can_act_on(tmp_path):
    """Each kind of non-scene sub-folder is named with why: band files without their STAC item,
    a multi-band composite (the shared Belgium mosaic), nothing usable at all."""
    from bharateo.data.sentinel2 import folder_scenes
    from tests.support.s2_fixtures import BELGIUM_TIF, SCENE_DIR

    tmp_path = tmp_path / "s2"  # beside whatever else the test's folder holds
    (tmp_path / "bands_only").mkdir(parents=True)
    (tmp_path / "bands_only" / "B02.tif").symlink_to(SCENE_DIR / "B02.tif")
    (tmp_path / "composite").mkdir()
    shutil.copyfile(BELGIUM_TIF, tmp_path / "composite" / BELGIUM_TIF.name)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_item").mkdir()
    (tmp_path / "bad_item" / "item.json").write_text("{not json")
    scenes, notes = folder_scenes(tmp_path)
    assert scenes == [] and len(notes) == 4 and all(n.startswith("skipped: ") for n in notes)
    why = dict(n.removeprefix("skipped: ").split(": ", 1) for n in notes)
    assert why["bands_only"].startswith("band files without a STAC item JSON")
    assert why["composite"].startswith("a 4-band composite without a STAC item: not an L2A scene")
    assert why["empty"].startswith("no band files and no STAC item: not a scene folder")
    assert why["bad_item"].startswith("its STAC item item.json can't be read")
