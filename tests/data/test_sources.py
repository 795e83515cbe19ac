"""Where pixels come from, on the real ESA WorldCover tile N00E006: the bundled sample, tiles ESA
doesn't publish (open sea), a source that fails and comes back, a stalled source, and provenance
read from the file's own tags."""
from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest

from bharateo import cli
from bharateo.data import gdal as gdal_mod
from bharateo.data import reads as reads_mod
from bharateo.errors import (
    LandTileMissingError,
    MissingTileError,
    RegionError,
    SourceUnreachableError,
    TileFileError,
)
from bharateo.data.reads import NOT_PUBLISHED, read_window, source_has_tile
from bharateo.data.roi import (
    FIXTURE_LABEL,
    NOTEBOOK_ROIS,
    SAMPLE_ROIS,
    UNVERIFIED_LABEL,
    WORLDCOVER_LABEL,
    RoiSpec,
    default_presets,
    load_roi,
    roi_window,
)
from bharateo.data.worldcover import (
    SAMPLE_DIR,
    SAMPLE_TILES,
    DataSource,
    bundled_tile_path,
    data_source_from_env,
    tile_filename,
)
from tests.support.fixture_tiles import (
    RangeHTTPServer,
    StallingServer,
    closed_port_url,
    synthetic_native,
    window_in_tile,
    write_fixture_tile,
)
from tests.support.paths import SHARED

REAL_TILE = "N00E006"
_SHARED = SHARED / "data" / "worldcover"
# the real tile as a folder source: ../shared when present, else the bundled copy (same file)
REAL_DIR = _SHARED if (_SHARED / tile_filename(REAL_TILE)).is_file() else SAMPLE_DIR
SAO_TOME_SOUTH = RoiSpec("sao_tome_south", 6.60, 0.05, 2048)  # its south part is in S03E006 (land)
OPEN_SEA = RoiSpec("gulf_of_guinea", 8.5, 2.5, 1024)  # inside N00E006, all no-data
NO_TILE_AT_ALL = RoiSpec("off_gabon", 4.5, 1.5, 512)  # in N00E003, a tile ESA doesn't publish
REAL_TAGS = {"product_tile": "N00E006", "product_version": "V2.0.0",
             "time_start": "2021-01-01T00:00:00Z", "time_end": "2021-12-31T23:59:59Z"}


def bounds_read(path, bounds) -> np.ndarray:
    """A plain rasterio read of the pixels inside `bounds` (W, S, E, N); 0 outside the file."""
    import rasterio
    from rasterio.windows import Window

    west, south, east, north = bounds
    with rasterio.open(path) as src:
        t = src.transform
        c0, r0 = round((west - t.c) / t.a), round((north - t.f) / t.e)
        c1, r1 = round((east - t.c) / t.a), round((south - t.f) / t.e)
        out = np.zeros((r1 - r0, c1 - c0), np.uint8)
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, src.height), min(c1, src.width)
        out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = src.read(
            1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        return out


def counts(a: np.ndarray) -> dict[int, int]:
    return dict(zip(*[x.tolist() for x in np.unique(a, return_counts=True)]))


@pytest.fixture
def no_network(monkeypatch):
    """Every HTTP request GDAL makes goes to a proxy on a closed port, i.e. fails at once."""
    closed = closed_port_url()
    for var in ("GDAL_HTTP_PROXY", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, closed)
    monkeypatch.setattr(reads_mod, "_HAS_TILE", {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the bundled sample -------------------------------------------------------------------------
def test_bundled_sample_is_the_real_tile():
    assert SAMPLE_TILES == (REAL_TILE,)
    path = bundled_tile_path(REAL_TILE)
    assert path == SAMPLE_DIR / tile_filename(REAL_TILE) and path.is_file()
    assert bundled_tile_path("N27E075") is None
    assert path.read_bytes() == (REAL_DIR / tile_filename(REAL_TILE)).read_bytes()
    assert "CC-BY 4.0" in (SAMPLE_DIR / "README.md").read_text()


def test_fresh_offline_machine_loads_the_sample_regions(no_network):
    """No source configured (the public bucket) and no network: the presets are the sample's,
    and they read real, verified WorldCover pixels from the bundle, then from the cache."""
    source = data_source_from_env()
    assert source.kind == "public"
    assert default_presets(source) == SAMPLE_ROIS
    with pytest.raises(SourceUnreachableError):  # the network really is blocked
        load_roi(NOTEBOOK_ROIS[0])
    for spec in SAMPLE_ROIS:
        roi = load_roi(spec)
        p = roi.provenance
        assert p["source"].startswith("bundled sample")
        assert roi.verified and roi.data_label == WORLDCOVER_LABEL and not roi.synthetic
        assert p["nodata_fraction"] < 0.01 and len(counts(roi.native)) >= 4
        assert np.array_equal(roi.native, bounds_read(bundled_tile_path(REAL_TILE), p["bounds"]))
        again = load_roi(spec)
        assert again.provenance["source"].startswith("local cache of bundled sample")
        assert again.verified and again.data_label == WORLDCOVER_LABEL


def test_folder_without_the_tile_falls_back_to_the_bundle(tmp_path):
    source = DataSource("folder", str(tmp_path))
    roi = load_roi(SAMPLE_ROIS[0], source, use_cache=False)
    assert roi.provenance["source"].startswith("bundled sample") and roi.verified
    assert default_presets(source) == SAMPLE_ROIS


def test_default_presets_are_the_notebooks_when_their_tile_is_there(worldcover_dir, tmp_path):
    assert default_presets(data_source_from_env()) == NOTEBOOK_ROIS
    # a region cached from a folder that has since lost its tiles still counts
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    shutil.copy(worldcover_dir.tiles["N27E075"], tiles / tile_filename("N27E075"))
    source = DataSource("folder", str(tiles))
    load_roi(RoiSpec("mathura_belt", 77.50, 27.30, 2048), source)
    shutil.rmtree(tiles)
    assert default_presets(source) == NOTEBOOK_ROIS


def test_source_has_tile_over_http_and_when_down(fixture_tiles_dir, monkeypatch):
    monkeypatch.setattr(reads_mod, "_HAS_TILE", {})
    monkeypatch.setattr(reads_mod, "NEGATIVE_TTL_S", 0.0)
    port = free_port()
    source = DataSource("url", f"http://127.0.0.1:{port}")
    assert source_has_tile(REAL_TILE, source)  # the bundle, no request needed
    assert not source_has_tile("N27E075", source)  # nothing listens yet
    with RangeHTTPServer(fixture_tiles_dir.folder, port):
        assert source_has_tile("N27E075", source)  # the failure was not remembered
        assert not source_has_tile("N30E075", source)  # 404


# --- real pixels: a region is exactly the window its bounds name ------------------------------
@pytest.mark.parametrize("spec", SAMPLE_ROIS, ids=lambda s: s.name)
def test_native_counts_equal_a_direct_read_of_the_bounds(spec):
    roi = load_roi(spec, DataSource("folder", str(REAL_DIR)))
    direct = bounds_read(REAL_DIR / tile_filename(REAL_TILE), roi.provenance["bounds"])
    assert direct.shape == (spec.size, spec.size)
    assert np.array_equal(roi.native, direct) and counts(roi.native) == counts(direct)
    assert roi.provenance["tiles"][0]["tags"]["product_tile"] == REAL_TILE and roi.verified


# --- tiles ESA doesn't publish, and tiles that hold land ----------------------------------------
def test_region_reaching_into_a_missing_land_tile_is_an_error():
    """S03E006 (6-9E, 3S-0) holds Gabon's Cap Lopez (8.7E 0.6S): a folder or mirror without its
    file can't read the south of Sao Tome as sea; the error names the tile and how to get it."""
    for source, server in ((DataSource("folder", str(REAL_DIR)), None),
                           (None, RangeHTTPServer(REAL_DIR))):
        if server is not None:
            with server as srv:
                with pytest.raises(LandTileMissingError) as e:
                    load_roi(SAO_TOME_SOUTH, DataSource("url", srv.url))
                assert srv.requests > 0  # S03E006 was asked for (404)
        else:
            with pytest.raises(LandTileMissingError) as e:
                load_roi(SAO_TOME_SOUTH, source)
        assert e.value.tile == "S03E006" and "S03E006 (6-9E, 0-3S) holds land" in str(e.value)


@pytest.mark.parametrize("bundle", [True, False], ids=["bundle", "over-http"])
def test_window_reaching_into_an_open_sea_tile_reads_it_as_nodata(bundle, monkeypatch):
    """N00E003 (3-6E, 0-3N) is open Gulf of Guinea: west of 6E reads as no-data, listed as not
    published, both from the real tile's folder and over HTTP (404 for N00E003)."""
    window = roi_window(RoiSpec("west_of_6e", 6.01, 0.30, 1024))
    r, c = window_in_tile(window, REAL_TILE)
    assert c < 0
    folder_native, _ = read_window(window, DataSource("folder", str(REAL_DIR)))
    if not bundle:
        monkeypatch.setattr(reads_mod, "bundled_tile_path", lambda tile: None)
    with RangeHTTPServer(REAL_DIR) as srv:
        native, info = read_window(window, DataSource("url", srv.url))
        assert srv.requests > 0
    status = {t["tile"]: t["status"] for t in info["tiles"]}
    assert status == {REAL_TILE: "read", "N00E003": NOT_PUBLISHED}
    assert (native[:, :-c] == 0).all() and np.array_equal(native, folder_native)
    assert any("N00E003" in n and "no-data" in n for n in reads_mod.tile_notes(info))


def test_damaged_tile_is_an_error_not_sea(fixture_tiles_dir, tmp_path):
    """A file that is there but can't be read is never taken for an unpublished sea tile."""
    shutil.copy(fixture_tiles_dir.tiles["N27E075"], tmp_path / tile_filename("N27E075"))
    (tmp_path / tile_filename("N27E078")).write_bytes(b"II*\x00" + b"\x00" * 200)
    with pytest.raises(TileFileError) as e:
        load_roi(fixture_tiles_dir.edge_spec, DataSource("folder", str(tmp_path)))
    assert "N27E078" in str(e.value) and "damaged" in str(e.value)
    assert "try again" not in str(e.value).lower()


def test_region_on_open_sea_is_refused():
    source = DataSource("folder", str(REAL_DIR))
    with pytest.raises(RegionError) as e:
        load_roi(OPEN_SEA, source)
    msg = str(e.value)
    assert not isinstance(e.value, MissingTileError)
    assert "100%" in msg and "no-data" in msg and "open sea" in msg and "onto land" in msg
    with pytest.raises(MissingTileError) as e:  # every tile of the window unpublished
        load_roi(NO_TILE_AT_ALL, source)
    assert e.value.tile == "N00E003" and "open sea" in str(e.value) and "onto land" in str(e.value)


# --- a source that fails, then comes back; a source that stalls --------------------------------
def test_source_is_read_again_once_it_is_back(fixture_tiles_dir, monkeypatch):
    port = free_port()
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", f"http://127.0.0.1:{port}")
    spec = RoiSpec("small_delhi", 77.23, 28.61, 256)
    with pytest.raises(SourceUnreachableError) as e:
        load_roi(spec)
    assert "N27E075" in str(e.value)
    with RangeHTTPServer(fixture_tiles_dir.folder, port) as srv:
        roi = load_roi(spec)
        assert srv.bytes_sent > 0
    folder = load_roi(spec, DataSource("folder", str(fixture_tiles_dir.folder)), use_cache=False)
    assert np.array_equal(roi.native, folder.native)


def test_stalled_source_gives_a_clear_timeout(monkeypatch):
    monkeypatch.setattr(gdal_mod, "GDAL_ENV", {**gdal_mod.GDAL_ENV, "GDAL_HTTP_TIMEOUT": 2,
                                              "GDAL_HTTP_CONNECTTIMEOUT": 2,
                                              "GDAL_HTTP_LOW_SPEED_TIME": 1,
                                              "GDAL_HTTP_MAX_RETRY": 0})
    monkeypatch.setattr(reads_mod, "_HAS_TILE", {})
    with StallingServer() as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", srv.url)
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(RoiSpec("small_delhi", 77.23, 28.61, 256))
        assert srv.connections >= 1
        assert not source_has_tile("N27E075", DataSource("url", srv.url), timeout=1)
    msg = str(e.value)
    assert "timed out" in msg and "N27E075" in msg and srv.url in msg


def test_server_error_is_retried_then_named(monkeypatch):
    """HTTP 5xx is not "not published": GDAL retries it, then the error names tile and status."""
    import http.server
    import threading

    asked = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            asked.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    monkeypatch.setattr(gdal_mod, "GDAL_ENV", {**gdal_mod.GDAL_ENV, "GDAL_HTTP_RETRY_DELAY": 0.1})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(RoiSpec("small_delhi", 77.23, 28.61, 256), DataSource("url", url))
    finally:
        server.shutdown()
        server.server_close()
    assert len(asked) == 1 + gdal_mod.GDAL_ENV["GDAL_HTTP_MAX_RETRY"] >= 2
    assert not isinstance(e.value, RegionError)
    assert "N27E075" in str(e.value) and "HTTP 503" in str(e.value) and url in str(e.value)


# --- provenance from the file itself ----------------------------------------------------------
def test_provenance_shows_the_files_tags(capsys, monkeypatch):
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(REAL_DIR))
    roi = load_roi(SAMPLE_ROIS[0])
    tags = roi.provenance["tiles"][0]["tags"]
    assert {k: tags[k] for k in REAL_TAGS} == REAL_TAGS
    assert "CC-BY 4.0" in tags["license"] and "ESA WorldCover project" in tags["copyright"]
    spec = SAMPLE_ROIS[0]
    args = ["--lon", str(spec.lon), "--lat", str(spec.lat), "--size", str(spec.size)]
    assert cli.main(["inspect", *args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data"] == WORLDCOVER_LABEL and info["verified_worldcover"] is True
    assert info["file_tags"][REAL_TILE]["product_version"] == "V2.0.0"
    assert cli.main(["inspect", *args]) == 0
    out = capsys.readouterr().out
    assert f"data: {WORLDCOVER_LABEL}" in out and "product_tile=N00E006" in out


@pytest.mark.parametrize("tags,label", [
    ({}, UNVERIFIED_LABEL),  # an official name, but no tags at all
    ({**REAL_TAGS, "product_tile": "N00E006"}, UNVERIFIED_LABEL),  # another tile's tags
    ({**REAL_TAGS, "product_tile": "N27E075", "product_version": "V1.0.0",
      "time_start": "2020-01-01T00:00:00Z"}, UNVERIFIED_LABEL),  # WorldCover 2020 v100
    ({**REAL_TAGS, "product_tile": "N27E075"}, WORLDCOVER_LABEL),
    ({**REAL_TAGS, "product_tile": "N27E075", reads_mod.SYNTHETIC_TAG: "1"}, FIXTURE_LABEL),
], ids=["untagged", "other-tile", "v100", "v200", "fixture"])
def test_only_files_that_say_so_are_worldcover(tags, label, tmp_path, capsys, monkeypatch):
    spec = RoiSpec("small_delhi", 77.23, 28.61, 256)
    r, c = window_in_tile(roi_window(spec), "N27E075")
    write_fixture_tile(tmp_path, "N27E075", [(r, c, synthetic_native(256, 256))], tags=tags)
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(tmp_path))
    roi = load_roi(spec)
    assert roi.data_label == label and roi.verified == (label == WORLDCOVER_LABEL)
    assert load_roi(spec).data_label == label  # and from the cache
    assert cli.main(["inspect", "--lon", "77.23", "--lat", "28.61", "--size", "256"]) == 0
    out = capsys.readouterr().out
    assert f"data: {label}" in out
    if label != WORLDCOVER_LABEL:
        assert WORLDCOVER_LABEL not in out


def test_offline_a_region_past_the_bundled_tile_says_how_to_stay_inside_it(no_network):
    """Offline, the land tile S03E006 can't be read: the refusal names it, says it holds land,
    names the bundled tile and says how to stay inside it, instead of only 'check the network'."""
    with pytest.raises(SourceUnreachableError) as info:
        load_roi(SAO_TOME_SOUTH)
    message = str(info.value)
    assert "S03E006, which holds land" in message
    assert "stays inside N00E006" in message and "smaller" in message
    with pytest.raises(SourceUnreachableError) as info:  # no bundled tile involved: no advice to
        load_roi(NOTEBOOK_ROIS[0])  # shrink into it, only where the offline pixels are
    message = str(info.value)
    assert "stays inside N00E006" not in message and "smaller" not in message
    assert "needs tile N27E075" in message and "bundled sample's, tile N00E006" in message


def test_cli_train_offline_without_regions_uses_the_bundled_sample(monkeypatch, capsys):
    """The walkthrough's first CLI command failed offline: the notebook's tile can't be reached,
    so, as the Regions page does, `train` without --lon/--lat trains on São Tomé / Príncipe."""
    import json

    from bharateo import cli
    from bharateo.data import roi
    from bharateo.storage.runs import list_runs

    monkeypatch.setattr(roi, "source_has_tile", lambda tile, source, timeout=3.0: tile != "N27E075")
    assert cli.main(["train", "--run", "offline", "--epochs", "1", "--n-chips", "16",
                     "--embed-dim", "32", "--depth", "1", "--heads", "2", "--quiet"]) == 0
    assert "bundled sample" in capsys.readouterr().err
    (run,) = list_runs()
    config = json.loads((run.path / "config.json").read_text())
    assert [r["name"] for r in config["rois"]] == [s.name for s in roi.SAMPLE_ROIS]
