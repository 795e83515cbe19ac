"""ROI reads on the real WorldCover grid, from synthetic fixture tiles (folder and HTTP range)."""
from __future__ import annotations

import datetime as dt
import io
import math
import os
import shutil
import time

import numpy as np
import pytest

from bharateo import files as files_mod
from bharateo.data import reads as reads_mod
from bharateo.errors import (
    LandTileMissingError,
    MissingTileError,
    RegionError,
    SourceUnreachableError,
)
from bharateo.data.cache import cache_binding, cache_path, read_cache
from bharateo.data.grid import GlobalWindow
from bharateo.data.reads import SYNTHETIC_TAG
from bharateo.data.roi import NOTEBOOK_ROIS, Roi, RoiSpec, check_no_overlap, load_roi, roi_window
from bharateo.files import atomic_write_bytes
from bharateo.data.worldcover import (
    PUBLIC_BASE_URL,
    DataSource,
    data_source_from_env,
    tile_filename,
    tile_id,
    tile_url,
)
from tests.support.fixture_tiles import (
    RangeHTTPServer,
    closed_port_url,
    direct_read,
    disk_usage,
    synthetic_native,
    tile_rowcol,
    window_in_tile,
    write_fixture_tile,
)

NOTEBOOK_BOUNDS = {
    "delhi_ncr": (77.14466666666667, 28.52466666666667, 77.31533333333333, 28.695333333333334),
    "shekhawati": (75.71458333333334, 28.414666666666665, 75.88525, 28.585333333333335),
    "mathura_belt": (77.41466666666666, 27.21475, 77.58533333333334, 27.385416666666668),
}
SPECS = {s.name: s for s in NOTEBOOK_ROIS}


def expected_pixels(spec: RoiSpec, folder) -> np.ndarray:
    """Direct rasterio reads of the window from each tile it touches, stitched by hand."""
    w = roi_window(spec)
    out = np.full((w.size, w.size), 255, dtype=np.uint8)
    for tile, _, _ in w.tiles():
        r, c = window_in_tile(w, tile)
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + w.size, 36000), min(c + w.size, 36000)
        out[r0 - r:r1 - r, c0 - c:c1 - c] = direct_read(
            folder / tile_filename(tile), r0, c0, r1 - r0, c1 - c0)
    assert (out != 255).all()
    return out


def data_files(data_dir) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir())


def copy_tiles(info, dest, tiles=("N27E075", "N27E078")):
    dest.mkdir(parents=True, exist_ok=True)
    for t in tiles:
        shutil.copy(info.tiles[t], dest / tile_filename(t))
    return dest


# --- tile ids, URLs, windows ------------------------------------------------------------------
def test_tile_id_and_public_url():
    assert tile_id(77.23, 28.61) == "N27E075"
    assert tile_url("N27E075") == (
        "https://esa-worldcover.s3.eu-central-1.amazonaws.com/v200/2021/map/"
        "ESA_WorldCover_10m_2021_v200_N27E075_Map.tif")
    src = data_source_from_env()  # env cleared by the autouse fixture -> the public bucket
    assert (src.kind, src.location) == ("public", PUBLIC_BASE_URL)
    assert src.tile_path("N27E075") == tile_url("N27E075")
    assert DataSource("url", "http://h:1/x").tile_path("N27E078") == (
        "http://h:1/x/ESA_WorldCover_10m_2021_v200_N27E078_Map.tif")


@pytest.mark.parametrize("lon,lat,expected", [
    (-59.5, -2.5, "S03W060"),
    (-57.01, -0.01, "S03W060"),
    (-0.5, -0.5, "S03W003"),
    (0.0, 0.0, "N00E000"),
    (-180.0, 83.9, "N81W180"),
    (179.9, -59.9, "S60E177"),
    (78.0, 27.0, "N27E078"),
    (77.9999, 29.9999, "N27E075"),
])
def test_tile_ids_all_hemispheres(lon, lat, expected):
    assert tile_id(lon, lat) == expected


@pytest.mark.parametrize("name", list(NOTEBOOK_BOUNDS))
def test_roi_window_matches_notebook_bounds(name):
    w = roi_window(SPECS[name])
    assert w.size == 2048
    assert w.bounds == pytest.approx(NOTEBOOK_BOUNDS[name], abs=1e-9)
    assert [t[0] for t in w.tiles()] == ["N27E075"]
    # the centre pixel (size // 2 in) is the tile pixel holding lon/lat
    tile, row, col = tile_rowcol(SPECS[name].lon, SPECS[name].lat)
    assert window_in_tile(w, tile) == (row - 1024, col - 1024)


def test_roi_window_odd_size_and_negative_hemisphere():
    w = roi_window(RoiSpec("x", -59.5, -2.5, 65))
    west, south, east, north = w.bounds
    assert east - west == pytest.approx(65 / 12000) and north - south == pytest.approx(65 / 12000)
    assert west < -59.5 < east and south < -2.5 < north
    assert [t[0] for t in w.tiles()] == ["S03W060"]


# --- reading from a folder --------------------------------------------------------------------
def test_fixture_files_are_tagged_sparse_and_small(fixture_tiles_dir):
    import rasterio

    for tile, path in fixture_tiles_dir.tiles.items():
        assert path.name == f"ESA_WorldCover_10m_2021_v200_{tile}_Map.tif"
        with rasterio.open(path) as src:
            assert src.tags().get(SYNTHETIC_TAG) == "1"
            assert src.shape == (36000, 36000) and src.crs.to_epsg() == 4326
            assert src.nodata == 0 and src.block_shapes == [(512, 512)]
        assert disk_usage(path) < 2_000_000


def test_synthetic_native_is_deterministic_and_patchy():
    a = synthetic_native(512, 512, 7, "urban")
    assert np.array_equal(a, synthetic_native(512, 512, 7, "urban"))
    assert not np.array_equal(a, synthetic_native(512, 512, 8, "urban"))
    assert a.dtype == np.uint8 and 0 not in a
    assert set(np.unique(a)) <= {10, 20, 30, 40, 50, 60, 80, 90}
    crop = synthetic_native(1024, 1024, 1, "cropland")
    assert np.bincount(crop.ravel()).argmax() == 40
    assert len(np.unique(a[:128, :128])) >= 3  # a chip holds several classes


@pytest.mark.parametrize("name", list(NOTEBOOK_BOUNDS))
def test_load_roi_from_folder_matches_direct_read(worldcover_dir, name):
    spec = SPECS[name]
    roi = load_roi(spec)
    expected = expected_pixels(spec, worldcover_dir.folder)
    assert roi.native.dtype == np.uint8 and roi.native.shape == (2048, 2048)
    assert np.array_equal(roi.native, expected)
    assert len(np.unique(roi.native)) >= 4

    w = roi_window(spec)
    r, c = window_in_tile(w, "N27E075")
    p = roi.provenance
    assert p["name"] == name
    assert p["source_kind"] == "folder"
    assert str(worldcover_dir.folder.resolve()) in p["source"]
    assert [t["tile"] for t in p["tiles"]] == ["N27E075"]
    assert p["tiles"][0]["window"] == [c, r, 2048, 2048]
    assert p["global_window"] == [w.row, w.col, w.size]
    assert roi.window == w
    assert p["crs"] == "EPSG:4326"
    assert p["center_lon_lat"] == [spec.lon, spec.lat]
    assert p["size"] == 2048
    assert p["bounds"] == pytest.approx(NOTEBOOK_BOUNDS[name], abs=1e-9)
    assert p["nodata_fraction"] == 0.0
    read_at = dt.datetime.fromisoformat(p["read_at"])
    assert abs((dt.datetime.now(dt.timezone.utc) - read_at).total_seconds()) < 120
    assert p["synthetic"] is True and roi.synthetic
    assert roi.notes == []


def test_tile_edge_mosaic(worldcover_dir):
    spec = worldcover_dir.edge_spec
    w = roi_window(spec)
    assert [t[0] for t in w.tiles()] == ["N27E075", "N27E078"]
    roi = load_roi(spec)

    r, c = window_in_tile(w, "N27E075")
    west_w = 36000 - c
    west = direct_read(worldcover_dir.tiles["N27E075"], r, c, 512, west_w)
    east = direct_read(worldcover_dir.tiles["N27E078"], r, 0, 512, 512 - west_w)
    assert 0 < west_w < 512
    assert np.array_equal(roi.native, np.hstack([west, east]))
    assert (roi.native != 0).all()
    parts = {t["tile"]: t["window"] for t in roi.provenance["tiles"]}
    assert parts == {"N27E075": [c, r, west_w, 512], "N27E078": [0, r, 512 - west_w, 512]}


# --- reading over HTTP range requests ----------------------------------------------------------
def test_url_source_matches_folder_read(fixture_tiles_dir, monkeypatch):
    spec = fixture_tiles_dir.edge_spec
    folder_roi = load_roi(spec, DataSource("folder", str(fixture_tiles_dir.folder)),
                          use_cache=False)
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", srv.url)
        roi = load_roi(spec)
        assert srv.bytes_sent > 0
    assert np.array_equal(roi.native, folder_roi.native)
    assert roi.provenance["source_kind"] == "url"
    assert srv.url in roi.provenance["source"]
    assert [t["tile"] for t in roi.provenance["tiles"]] == ["N27E075", "N27E078"]
    assert roi.provenance["tiles"][0]["path"].startswith(srv.url + "/")
    assert roi.synthetic


def test_url_read_fetches_only_a_fraction_of_the_tile(fixture_tiles_dir, monkeypatch):
    """The served N27E075 holds ~5x the content of a 2048 window; a 512 read must not pull it."""
    spec = RoiSpec("small_delhi", 77.23, 28.61, 512)
    path = fixture_tiles_dir.tiles["N27E075"]
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", srv.url)
        roi = load_roi(spec)
        sent = srv.bytes_sent
    assert np.array_equal(roi.native, expected_pixels(spec, fixture_tiles_dir.folder))
    assert 0 < sent < path.stat().st_size / 3, (sent, path.stat().st_size)


def test_range_server_protocol(fixture_tiles_dir):
    import urllib.error
    import urllib.request

    path = fixture_tiles_dir.tiles["N27E078"]
    name = path.name
    blob = path.read_bytes()
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        req = urllib.request.Request(f"{srv.url}/{name}", headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(blob)}"
            assert r.read() == blob[100:200]
        req = urllib.request.Request(f"{srv.url}/{name}", method="HEAD")
        with urllib.request.urlopen(req) as r:
            assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
            assert int(r.headers["Content-Length"]) == len(blob) and r.read() == b""
        req = urllib.request.Request(f"{srv.url}/{name}", headers={"Range": "bytes=-10"})
        with urllib.request.urlopen(req) as r:
            assert r.read() == blob[-10:]
        assert srv.bytes_sent == 110
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{srv.url}/nope.tif")
        assert e.value.code == 404


# --- the cache ----------------------------------------------------------------------------------
def test_second_load_comes_from_cache(fixture_tiles_dir, isolated_env, tmp_path, monkeypatch):
    src = copy_tiles(fixture_tiles_dir, tmp_path / "tiles")
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(src))
    spec = SPECS["delhi_ncr"]
    first = load_roi(spec)
    assert len(list(isolated_env["data"].glob("*.npz"))) == 1
    shutil.rmtree(src)  # the source is gone: only the cache can answer now
    second = load_roi(spec)
    assert np.array_equal(second.native, first.native)
    assert second.provenance["source"] == f"local cache of {first.provenance['source']}"
    assert second.provenance["read_at"] == first.provenance["read_at"]
    assert second.synthetic and second.notes == []
    with pytest.raises(SourceUnreachableError):
        load_roi(spec, use_cache=False)


def test_use_cache_false_writes_nothing(worldcover_dir, isolated_env):
    load_roi(worldcover_dir.edge_spec, use_cache=False)
    assert data_files(isolated_env["data"]) == []


def test_cache_is_keyed_per_source(fixture_tiles_dir, isolated_env, monkeypatch):
    spec = fixture_tiles_dir.edge_spec
    folder_src = DataSource("folder", str(fixture_tiles_dir.folder))
    load_roi(spec, folder_src)
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        url_src = DataSource("url", srv.url)
        assert cache_path(roi_window(spec), url_src) != cache_path(roi_window(spec), folder_src)
        roi = load_roi(spec, url_src)
        assert roi.provenance["source_kind"] == "url"
        assert not roi.provenance["source"].startswith("local cache")
        sent = srv.bytes_sent
        assert sent > 0  # the URL source really read, not the folder's cache
        again = load_roi(spec, url_src)
        assert srv.bytes_sent == sent  # ...and now it hits its own cache
        assert again.provenance["source"].startswith("local cache of the WorldCover mirror")
    names = data_files(isolated_env["data"])
    assert len(names) == 2 and all(n.endswith(".npz") for n in names)
    assert any(folder_src.cache_key in n for n in names)
    assert any(url_src.cache_key in n for n in names)


def _tamper_checksum(path):
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    native = arrays["native"]
    native[0, 0] = 99 if native[0, 0] != 99 else 98
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _wrong_shape(path):
    import hashlib
    import json

    native = np.full((10, 10), 40, np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, native=native, provenance=np.array(json.dumps({"source": "x"})),
                        sha256=np.array(hashlib.sha256(native.tobytes()).hexdigest()))
    path.write_bytes(buf.getvalue())


def _missing_key(path):
    with np.load(path) as z:
        native, prov = z["native"], z["provenance"]
    buf = io.BytesIO()
    np.savez_compressed(buf, native=native, provenance=prov)
    path.write_bytes(buf.getvalue())


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
    "empty": lambda p: p.write_bytes(b""),
    "bad_checksum": _tamper_checksum,
    "wrong_shape": _wrong_shape,
    "missing_key": _missing_key,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_cache_is_moved_aside_and_reread(worldcover_dir, isolated_env, kind):
    spec = worldcover_dir.edge_spec
    good = load_roi(spec)
    path = cache_path(roi_window(spec), data_source_from_env())
    assert path.exists()
    CORRUPTIONS[kind](path)
    damaged = path.read_bytes()

    roi = load_roi(spec)
    assert np.array_equal(roi.native, good.native)
    assert np.array_equal(roi.native, expected_pixels(spec, worldcover_dir.folder))
    assert not roi.provenance["source"].startswith("local cache")  # it was read again
    assert len(roi.notes) == 1 and path.name in roi.notes[0] and "damaged" in roi.notes[0]
    aside = path.with_suffix(".corrupt")
    assert aside.read_bytes() == damaged
    native, prov = read_cache(path, cache_binding(roi_window(spec), data_source_from_env()))
    assert np.array_equal(native, good.native) and prov["synthetic"] is True

    third = load_roi(spec)
    assert third.notes == [] and third.provenance["source"].startswith("local cache")
    assert sorted(data_files(isolated_env["data"])) == sorted([path.name, aside.name])


def test_no_temp_files_left_after_writes(worldcover_dir, isolated_env):
    for spec in [worldcover_dir.edge_spec, RoiSpec("small", 77.23, 28.61, 256)]:
        load_roi(spec)
        load_roi(spec)
    names = data_files(isolated_env["data"])
    assert len(names) == 2
    assert all(n.endswith(".npz") and not n.startswith(".") for n in names)


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "atomic" / "x.npz"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files_mod.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["x.npz"]


# --- errors -------------------------------------------------------------------------------------
def test_region_over_sea_is_rejected(worldcover_dir, isolated_env):
    with pytest.raises(RegionError) as e:
        load_roi(worldcover_dir.sea_spec)
    assert not isinstance(e.value, MissingTileError)
    msg = str(e.value)
    assert "sea" in msg and "coverage" in msg and "100%" in msg
    assert data_files(isolated_env["data"]) == []


def test_missing_tile_in_folder(worldcover_dir):
    lon, lat = worldcover_dir.missing_tile_lon_lat
    with pytest.raises(MissingTileError) as e:
        load_roi(RoiSpec("north", lon, lat, 256))
    assert e.value.tile == worldcover_dir.missing_tile == "N30E075"
    assert "N30E075" in str(e.value)


NORTH_OF_AGRA = RoiSpec("north_of_agra", 77.97, 28.02, 2048)  # issue 22: a third in N27E078


@pytest.mark.parametrize("spec", [NORTH_OF_AGRA, None], ids=["north_of_agra", "tile_edge"])
@pytest.mark.parametrize("kind", ["folder", "url"])
def test_missing_land_tile_is_an_error_not_sea(spec, kind, fixture_tiles_dir, tmp_path,
                                               monkeypatch, isolated_env):
    """N27E078 (78-81E, 27-30N: Uttar Pradesh) is land: a folder or mirror without its file is an
    error naming it and how to get it, never a third of the region read as no-data."""
    spec = spec or fixture_tiles_dir.edge_spec
    only75 = copy_tiles(fixture_tiles_dir, tmp_path / "only75", tiles=("N27E075",))
    assert "N27E078" in {t for t, _, _ in roi_window(spec).tiles()}
    with RangeHTTPServer(only75) as srv:
        source = (DataSource("folder", str(only75)) if kind == "folder"
                  else DataSource("url", srv.url))
        with pytest.raises(LandTileMissingError) as e:
            load_roi(spec, source)
    msg = str(e.value)
    assert e.value.tile == "N27E078" and isinstance(e.value, MissingTileError)
    assert "N27E078 (78-81E, 27-30N) holds land" in msg and "GLOBE" in msg
    assert tile_url("N27E078") in msg and "prefetch" in msg
    assert ("BHARATEO_WORLDCOVER_DIR" in msg and str(only75) in msg) if kind == "folder" \
        else srv.url in msg
    assert data_files(isolated_env["data"]) == []  # nothing cached


def test_missing_open_sea_tile_reads_as_nodata(tmp_path, monkeypatch, isolated_env):
    """N15E069 (69-72E, 15-18N) is open Arabian Sea: a region on the Konkan coast's tile N15E072
    reaching west of 72E reads that part as no-data, listed as not published, with a note."""
    spec = RoiSpec("konkan_edge", 72.005, 16.5, 512)
    w = roi_window(spec)
    r, c = window_in_tile(w, "N15E072")
    assert c < 0 and {t for t, _, _ in w.tiles()} == {"N15E069", "N15E072"}
    land = synthetic_native(w.size, w.size + c, seed=7, class_weights="cropland")
    folder = tmp_path / "konkan"
    write_fixture_tile(folder, "N15E072", [(r, 0, land)])
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(folder))
    roi = load_roi(spec)
    west = -c
    assert (roi.native[:, :west] == 0).all() and np.array_equal(roi.native[:, west:], land)
    status = {t["tile"]: t["status"] for t in roi.provenance["tiles"]}
    assert status == {"N15E072": "read", "N15E069": reads_mod.NOT_PUBLISHED}
    assert roi.provenance["nodata_fraction"] == pytest.approx(west / w.size)
    assert len(roi.notes) == 1 and "N15E069" in roi.notes[0] and "no-data" in roi.notes[0]
    assert "GLOBE" in roi.notes[0]
    assert load_roi(spec).notes == roi.notes  # the cached region keeps saying so


def test_cache_that_read_a_land_tile_as_sea_is_read_again(fixture_tiles_dir, tmp_path,
                                                          monkeypatch, isolated_env):
    """A region cached before land was checked (N27E078 stored as no-data) is never shown: it is
    read again, an error while the tile is still missing, the real pixels once it is there."""
    only75 = copy_tiles(fixture_tiles_dir, tmp_path / "only75", tiles=("N27E075",))
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(only75))
    spec = fixture_tiles_dir.edge_spec
    with monkeypatch.context() as old_rule:  # what the lab did before: every missing tile is sea
        old_rule.setattr(reads_mod, "check_missing_tile_is_sea", lambda *a: None)
        stale = load_roi(spec)
    assert stale.provenance["tiles"][1]["status"] == reads_mod.NOT_PUBLISHED
    with pytest.raises(LandTileMissingError):
        load_roi(spec)
    copy_tiles(fixture_tiles_dir, only75, tiles=("N27E078",))
    roi = load_roi(spec)
    assert not roi.notes[1:] and "read again" in roi.notes[0]
    assert {t["status"] for t in roi.provenance["tiles"]} == {"read"}
    assert np.array_equal(roi.native, expected_pixels(spec, fixture_tiles_dir.folder))


def test_folder_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(tmp_path / "no_such_folder"))
    with pytest.raises(SourceUnreachableError) as e:
        load_roi(SPECS["delhi_ncr"])
    assert "no_such_folder" in str(e.value) and "does not exist" in str(e.value)


def test_url_on_closed_port_fails_fast(monkeypatch):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url())
    t0 = time.monotonic()
    with pytest.raises(SourceUnreachableError) as e:
        load_roi(SPECS["delhi_ncr"])
    assert time.monotonic() - t0 < 10
    assert not isinstance(e.value, RegionError)
    assert "N27E075" in str(e.value)


def test_closed_port_with_404_in_its_number_is_unreachable(monkeypatch):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url(contains="404"))
    with pytest.raises(SourceUnreachableError):
        load_roi(SPECS["delhi_ncr"])


def test_url_404_is_missing_tile(fixture_tiles_dir, monkeypatch):
    lon, lat = fixture_tiles_dir.missing_tile_lon_lat
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", srv.url)
        with pytest.raises(MissingTileError) as e:
            load_roi(RoiSpec("north", lon, lat, 256))
    assert e.value.tile == "N30E075" and srv.url in str(e.value)


@pytest.mark.parametrize("size", [10, 63, 4097, 10000, 0, -64])
def test_bad_size(size):
    with pytest.raises(RegionError, match="size"):
        roi_window(RoiSpec("x", 77.23, 28.61, size))


@pytest.mark.parametrize("size", [64, 4096])
def test_size_limits_are_inclusive(size):
    assert roi_window(RoiSpec("x", 77.23, 28.61, size)).size == size


@pytest.mark.parametrize("lon,lat", [
    (200.0, 28.0), (-181.0, 28.0), (180.0, 28.0), (77.0, 95.0), (77.0, -90.0),
    (math.nan, 28.0), (77.0, math.nan), (77.0, 84.5), (77.0, -65.0),
])
def test_bad_lon_lat(lon, lat):
    with pytest.raises(RegionError):
        roi_window(RoiSpec("x", lon, lat, 512))


def test_bad_region_never_touches_the_source(monkeypatch):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url())
    with pytest.raises(RegionError):
        load_roi(RoiSpec("x", 77.0, 95.0, 512))


def _roi_at(spec: RoiSpec) -> Roi:
    w = roi_window(spec)
    return Roi(spec, np.zeros((1, 1), np.uint8), {"global_window": [w.row, w.col, w.size]})


def test_check_no_overlap():
    chosen = [_roi_at(s) for s in NOTEBOOK_ROIS[:2]]
    check_no_overlap(NOTEBOOK_ROIS[2], chosen)  # the notebook's ROIs are disjoint

    near = RoiSpec("near_delhi", 77.23 + 1000 / 12000, 28.61, 2048)  # shares 1048 columns
    with pytest.raises(RegionError, match="overlaps 'delhi_ncr'"):
        check_no_overlap(near, chosen)
    clear = RoiSpec("east_of_delhi", 77.23 + 2100 / 12000, 28.61, 2048)
    check_no_overlap(clear, chosen)

    with pytest.raises(RegionError, match="already"):
        check_no_overlap(RoiSpec("delhi_ncr", 76.5, 29.5, 512), chosen)


def test_global_window_overlap_edges():
    a = GlobalWindow(100, 100, 64)
    assert a.overlaps(GlobalWindow(163, 163, 64))      # one shared pixel
    assert not a.overlaps(GlobalWindow(164, 100, 64))  # touching below
    assert not a.overlaps(GlobalWindow(100, 164, 64))  # touching right
    assert GlobalWindow(0, 0, 10).overlaps(GlobalWindow(2, 2, 3))  # contained
