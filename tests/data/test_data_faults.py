"""Issue 11, data side: wrong data is detected (tiles off the WorldCover grid, a swapped cache
file), disk faults and damaged files get plain messages and lose nothing already read, a stalled
source fails within a bounded total time, and a mirror URL's credentials are never shown or
stored. Each test's input is the fault the issue reports."""
from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bharateo import cli
from bharateo.data import cache as cache_mod
from bharateo import files as files_mod
from bharateo.data import gdal as gdal_mod
from bharateo.data import reads as reads_mod
from bharateo.errors import BharatEOError, ConfigError, SourceUnreachableError, TileFileError
from bharateo.data.cache import cache_path
from bharateo.data.deadline import read_timeout_s
from bharateo.data.roi import RoiSpec, load_roi, roi_window
from bharateo.data.worldcover import DataSource, data_source_from_env, redact_text, redact_url, tile_filename
from tests.support.fixture_tiles import (
    AnswerServer,
    RangeHTTPServer,
    StallingServer,
    closed_port_url,
    direct_read,
    synthetic_native,
    window_in_tile,
    wrong_grids,
    write_fixture_tile,
)
from tests.support.paths import APP

SMALL = RoiSpec("small_delhi", 77.23, 28.61, 256)  # inside N27E075 and the fixture's content
OTHER = RoiSpec("small_shekhawati", 75.80, 28.50, 256)
SECRET = "s3cr3tT0k3n"


def expected(spec: RoiSpec, folder: Path, tile: str = "N27E075") -> np.ndarray:
    r, c = window_in_tile(roi_window(spec), tile)
    return direct_read(folder / tile_filename(tile), r, c, spec.size, spec.size)


def data_files(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir())


def page_text(at) -> str:
    """Every element's protobuf on an AppTest page (main area and sidebar), as text."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


# --- 1. wrong data: tiles off the WorldCover grid under an official name ----------------------
WRONG = {"utm32632": "EPSG:32632", "20m": "not 1/12000 degree", "shifted": "north-west corner",
         "uint16": "uint16"}


@pytest.mark.parametrize("kind", list(WRONG))
def test_tile_off_the_worldcover_grid_is_refused(kind, tmp_path, isolated_env, capsys, monkeypatch):
    """A reprojected (EPSG:32632), 20 m, shifted or 16-bit file named as N27E075 used to be read
    without complaint (or to crash with a broadcast ValueError): now a TileFileError names the
    file and what is wrong, and nothing is cached."""
    r, c = window_in_tile(roi_window(SMALL), "N27E075")
    path = write_fixture_tile(tmp_path / "tiles", "N27E075", [(r, c, synthetic_native(256, 256))],
                              grid=wrong_grids("N27E075")[kind])
    with pytest.raises(TileFileError) as e:
        load_roi(SMALL, DataSource("folder", str(path.parent)))
    msg = str(e.value)
    assert WRONG[kind] in msg and str(path) in msg and "N27E075" in msg and "official" in msg
    assert data_files(isolated_env["data"]) == []
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(path.parent))
    assert cli.main(["inspect", "--lon", "77.23", "--lat", "28.61", "--size", "256"]) == 2
    err = capsys.readouterr().err
    assert WRONG[kind] in err and "Traceback" not in err


def test_tile_off_the_grid_is_refused_over_http(tmp_path):
    r, c = window_in_tile(roi_window(SMALL), "N27E075")
    write_fixture_tile(tmp_path, "N27E075", [(r, c, synthetic_native(256, 256))],
                       grid=wrong_grids("N27E075")["20m"])
    with RangeHTTPServer(tmp_path) as srv, pytest.raises(TileFileError) as e:
        load_roi(SMALL, DataSource("url", srv.url))
    assert "not 1/12000 degree" in str(e.value) and srv.url in str(e.value)


# --- 1b. a cache file swapped for another region's ------------------------------------------
def test_swapped_cache_file_is_detected_and_read_again(worldcover_dir, isolated_env):
    """Another region's cache file under this region's name used to be served as this region."""
    source = data_source_from_env()
    folder = worldcover_dir.folder
    load_roi(SMALL, source), load_roi(OTHER, source)
    mine, theirs = (cache_path(roi_window(s), source) for s in (SMALL, OTHER))
    swapped = theirs.read_bytes()
    mine.write_bytes(swapped)
    roi = load_roi(SMALL, source)
    assert np.array_equal(roi.native, expected(SMALL, folder))
    assert not roi.provenance["source"].startswith("local cache")
    assert len(roi.notes) == 1 and mine.name in roi.notes[0] and "another region" in roi.notes[0]
    assert mine.with_suffix(".corrupt").read_bytes() == swapped
    assert load_roi(SMALL, source).provenance["source"].startswith("local cache")  # sound again


def test_cache_file_from_another_source_is_not_served(fixture_tiles_dir, tmp_path, isolated_env):
    """The same window cached from another source (other pixels) is not this source's region."""
    r, c = window_in_tile(roi_window(SMALL), "N27E075")
    write_fixture_tile(tmp_path / "b", "N27E075", [(r, c, synthetic_native(256, 256, seed=7))])
    a, b = DataSource("folder", str(fixture_tiles_dir.folder)), DataSource("folder", str(tmp_path / "b"))
    load_roi(SMALL, b)
    cache_path(roi_window(SMALL), a).write_bytes(cache_path(roi_window(SMALL), b).read_bytes())
    roi = load_roi(SMALL, a)
    assert np.array_equal(roi.native, expected(SMALL, fixture_tiles_dir.folder))
    assert not np.array_equal(roi.native, expected(SMALL, tmp_path / "b"))
    assert "another region" in roi.notes[0] and b.cache_key in roi.notes[0]


# --- 2. disk faults: a read-only or full data/ ------------------------------------------------
def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(params=["read-only", "full"])
def faulty_data(request, tmp_path, monkeypatch):
    """(kind, folder): BHARATEO_DATA_DIR on a really read-only or really full tmpfs where this
    machine lets the test mount one (root); elsewhere the same errno injected at the write."""
    kind, folder = request.param, tmp_path / "faulty"
    if _mount_tmpfs(folder, "size=64k"):
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], timeout=10))
        if kind == "full":
            filler = folder / "filler"
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, timeout=10)
    else:
        folder.mkdir(exist_ok=True)
        code = errno.EROFS if kind == "read-only" else errno.ENOSPC

        def refuse(*args, **kwargs):
            raise OSError(code, "injected", str(folder))

        monkeypatch.setattr(files_mod.tempfile, "mkstemp", refuse)
    monkeypatch.setenv("BHARATEO_DATA_DIR", str(folder))
    return kind, folder


def test_read_only_or_full_data_folder_keeps_the_region(faulty_data, worldcover_dir, capsys):
    kind, folder = faulty_data
    before = data_files(folder)
    roi = load_roi(SMALL)
    assert np.array_equal(roi.native, expected(SMALL, worldcover_dir.folder))  # kept in memory
    assert str(folder) in roi.cache_error and kind in roi.cache_error
    assert any("lesson goes on" in n and str(folder) in n for n in roi.notes)
    assert data_files(folder) == before  # no half-written or temp file left
    again = load_roi(SMALL)  # read again, same answer
    assert np.array_equal(again.native, roi.native) and again.cache_error

    assert cli.main(["prefetch", "--lon", "77.23", "--lat", "28.61", "--size", "256"]) == 2
    captured = capsys.readouterr()
    assert "could not be cached" in captured.err and str(folder) in captured.err
    assert kind in captured.err and "Traceback" not in captured.err + captured.out


def test_regions_page_keeps_a_region_it_could_not_cache(faulty_data, tmp_path, monkeypatch):
    kind, folder = faulty_data
    spec = RoiSpec("x", 76.0, 29.0, 512)  # a source and spot no other test reads: not in memory
    r, c = window_in_tile(roi_window(spec), "N27E075")
    write_fixture_tile(tmp_path / "tiles", "N27E075", [(r, c, synthetic_native(512, 512))])
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(tmp_path / "tiles"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/regions.py").run()
    at.select_slider(key="region_size").set_value(spec.size)
    at.number_input(key="form_lon").set_value(spec.lon)
    at.number_input(key="form_lat").set_value(spec.lat)
    at.button(key="FormSubmitter:roi_form-Add region now").click().run()
    assert not at.exception and not at.error
    assert [r.spec.lon for r in at.session_state["rois"]] == [spec.lon]
    warnings = "\n".join(w.value for w in at.warning)
    assert "not cached" in warnings and str(folder) in warnings and kind in warnings


# --- 2b. damaged files say so; an HTML page is named; a damaged cache while offline ----------
def test_truncated_tile_is_named_as_damaged(fixture_tiles_dir, tmp_path):
    """A tile cut short used to say 'Try again', which can't help."""
    src = fixture_tiles_dir.tiles["N27E075"]
    (tmp_path / src.name).write_bytes(src.read_bytes()[: src.stat().st_size * 3 // 10])
    with pytest.raises(TileFileError) as e:  # its pixels lie past the cut
        load_roi(fixture_tiles_dir.rois["mathura_belt"], DataSource("folder", str(tmp_path)))
    msg = str(e.value)
    assert "damaged" in msg and src.name in msg and "truncated" in msg
    assert "try again" not in msg.lower() and "See previous exception" not in msg


def test_html_page_served_as_the_tile_says_what_came_back():
    """A mirror answering 200 with a login page used to be 'could not reach the mirror'."""
    page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>login</body></html>"
    with AnswerServer(200, "text/html; charset=utf-8", page) as srv:
        with pytest.raises(TileFileError) as e:
            load_roi(SMALL, DataSource("url", srv.url))
    msg = str(e.value)
    assert "HTTP 200" in msg and "text/html" in msg and "<!DOCTYPE html>" in msg
    assert "N27E075" in msg and srv.url in msg and "could not reach" not in msg.lower()


def test_damaged_cache_while_offline_says_so(fixture_tiles_dir, tmp_path, isolated_env):
    folder = tmp_path / "tiles"
    folder.mkdir()
    shutil.copy(fixture_tiles_dir.tiles["N27E075"], folder)
    source = DataSource("folder", str(folder))
    load_roi(SMALL, source)
    path = cache_path(roi_window(SMALL), source)
    path.write_bytes(path.read_bytes()[:100])
    shutil.rmtree(folder)  # the source is gone too
    with pytest.raises(SourceUnreachableError) as e:
        load_roi(SMALL, source)
    msg = str(e.value)
    assert "cached copy" in msg and "damaged and moved aside" in msg and "does not exist" in msg
    assert path.with_suffix(".corrupt").exists() and not path.exists()


# --- 3. a stalled source fails within a bounded total time ----------------------------------
def test_stalled_source_is_given_up_after_the_read_timeout(monkeypatch):
    """A server that accepts and never answers used to take 53-150 s under GDAL's own limits
    (60 s per request, retries); the whole read now stops at BHARATEO_READ_TIMEOUT_S, reporting
    progress while it waits."""
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", "2")
    seen = []
    with StallingServer() as srv:
        start = time.monotonic()
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(SMALL, DataSource("url", srv.url),
                     progress=lambda fraction, text: seen.append((fraction, text)))
        print(f"stalled read gave up after {time.monotonic() - start:.1f} s")
        assert srv.connections >= 1
    msg = str(e.value)
    assert "within 2 s" in msg and "BHARATEO_READ_TIMEOUT_S" in msg and srv.url in msg
    assert seen and all(0 <= f <= 1 for f, _ in seen)
    assert any("N27E075" in text and "gives up after 2 s" in text for _, text in seen)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_read_timeout_setting_is_checked(value, monkeypatch):
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", value)
    with pytest.raises(ConfigError, match="BHARATEO_READ_TIMEOUT_S"):
        read_timeout_s()


def test_regions_page_reports_a_stalled_source(monkeypatch):
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", "2")
    monkeypatch.setattr(reads_mod, "_HAS_TILE", {})
    with StallingServer() as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", srv.url)
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/regions.py").run()
        at.number_input(key="form_lon").set_value(77.23)
        at.number_input(key="form_lat").set_value(28.61)
        at.button(key="FormSubmitter:roi_form-Add region now").click().run()
    assert not at.exception and at.session_state["rois"] == []
    errors = "\n".join(e.value for e in at.error)
    assert "was not added" in errors and "within 2 s" in errors


OFF_SAMPLE = RoiSpec("off_sample", 5.0, 1.0, 256)  # tile N00E003, beside the bundled N00E006
OFFLINE_ADVICE = ("N00E006 (lon 6–9 E, lat 0–3 N)", "BHARATEO_WORLDCOVER_DIR",
                  "python -m bharateo prefetch")


@pytest.mark.parametrize("fault", ["closed port", "stall"])
def test_offline_read_outside_the_bundled_tile_says_where_offline_data_is(fault, monkeypatch,
                                                                          capsys):
    """Offline (a refused connection or a stalled server), a region outside the bundled tile is
    refused naming its tile, where the bundled tile is and how to get more: the app's read and
    the CLI (exit 2) say the same."""
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", "1")
    with StallingServer() as srv:
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL",
                           srv.url if fault == "stall" else closed_port_url())
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(OFF_SAMPLE)
        assert cli.main(["inspect", "--lon", "5.0", "--lat", "1.0", "--size", "256"]) == 2
    err = capsys.readouterr().err
    for msg in (str(e.value), err):
        assert "N00E003" in msg and all(part in msg for part in OFFLINE_ADVICE), msg
    assert "Traceback" not in err


def test_offline_read_inside_the_bundled_tile_needs_no_network(monkeypatch):
    """The advice points at a tile that really works offline: the same source reads it."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", closed_port_url())
    roi = load_roi(RoiSpec("sample_inside", 7.5, 1.5, 256))
    assert roi.provenance["tiles"][0]["tile"] == "N00E006"


# --- 4. secrets stay secret -------------------------------------------------------------------
@pytest.mark.parametrize("url,shown", [
    ("http://user:tok@host/p", "http://***@host/p"),
    ("https://host/p?X-Amz-Signature=abc&X-Amz-Credential=k&region=eu",
     "https://host/p?X-Amz-Signature=***&X-Amz-Credential=***&region=eu"),
    ("https://host/p?token=a&api_key=b&sig=c", "https://host/p?token=***&api_key=***&sig=***"),
    ("https://host/p", "https://host/p"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_text(f"error at '/vsicurl/{url}' (404)") == f"error at '/vsicurl/{shown}' (404)"


def test_credentials_never_appear_anywhere(fixture_tiles_dir, isolated_env, monkeypatch, capsys,
                                           caplog):
    """A mirror URL with user:token: no message, cache file, provenance, CLI output, config.json
    of a training, sidebar or page shows the token."""
    from bharateo.data.chips import ChipConfig
    from bharateo.models.notebook import ModelConfig
    from bharateo.training.experiment import RunConfig, run_experiment
    from bharateo.training.loop import TrainConfig
    from bharateo.app.sidebar import source_status

    shown = []
    with RangeHTTPServer(fixture_tiles_dir.folder) as srv:
        url = srv.url.replace("http://", f"http://student:{SECRET}@")
        monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", url)
        source = data_source_from_env()
        shown += [repr(source), source.describe(), str(source)]
        rois = [load_roi(spec) for spec in fixture_tiles_dir.rois.values()]
        assert srv.bytes_sent > 0
        shown += [json.dumps(r.provenance) for r in rois] + [n for r in rois for n in r.notes]
        for p in isolated_env["data"].iterdir():  # cache files, decompressed
            with np.load(p) as z:
                shown += [str(z[k]) for k in z.files if k != "native"]
            shown.append(p.read_bytes().decode("latin-1"))
        with pytest.raises(BharatEOError) as e:  # a missing tile, and an unreachable mirror
            load_roi(RoiSpec("north", *fixture_tiles_dir.missing_tile_lon_lat, 256))
        shown.append(str(e.value))
        assert cli.main(["prefetch", "--lon", "77.23", "--lat", "28.61", "--size", "256"]) == 0
        assert cli.main(["inspect", "--lon", "77.23", "--lat", "28.61", "--size", "256",
                         "--json"]) == 0
        shown.append(str(source_status(source)))
        config = RunConfig(rois=tuple(fixture_tiles_dir.rois.values()),
                           chips=ChipConfig(n_chips=16, chip_size=64), model=ModelConfig(
                               embed_dim=16, depth=1, heads=2), train=TrainConfig(epochs=1))
        result = run_experiment(config, name="secret-check")
        shown += [p.read_bytes().decode("latin-1") for p in result.path.rglob("*") if p.is_file()]
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/regions.py").run()
        at.button(key="add_preset_delhi_ncr").click().run()
        assert not at.exception and len(at.session_state["rois"]) == 1
        shown.append(page_text(at))
        assert "***@127.0.0.1" in shown[-1]  # the sidebar and provenance show the mirror, redacted
    for bad in (closed_port_url().replace("http://", f"http://u:{SECRET}@"),):
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(SMALL, DataSource("url", bad), use_cache=False)
        shown.append(str(e.value))
    with AnswerServer(200, "text/html", b"<html>login</html>") as html:
        with pytest.raises(TileFileError) as e:
            load_roi(SMALL, DataSource("url", html.url.replace("//", f"//u:{SECRET}@")))
        shown.append(str(e.value))
    out = capsys.readouterr()
    shown += [out.out, out.err, caplog.text]
    assert "Reading from the WorldCover mirror at http://***@127.0.0.1" in out.out
    leaks = [text[:200] for text in shown if SECRET in text]
    assert leaks == []


# --- the map's overviews are held to the same rules -----------------------------------------
def test_map_overviews_skip_a_reprojected_tile_and_a_swapped_cache(worldcover_dir, tmp_path):
    """The Regions map draws tiles and cached regions too: a file named N00E006 but in EPSG:32632
    is not drawn over that tile, and a cache file swapped for another region's is not drawn at
    the first region's place."""
    import rasterio
    from affine import Affine

    from bharateo.data.overview import cached_region_overviews, tile_overview

    path = tmp_path / tile_filename("N00E006")
    profile = dict(driver="GTiff", width=1024, height=1024, count=1, dtype="uint8", nodata=0,
                   crs="EPSG:32632", transform=Affine(330, 0, 166_000, 0, -330, 332_000),
                   tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1024, 1024), 40, np.uint8), 1)
        dst.build_overviews([2, 4])
    assert tile_overview("N00E006", path) is None
    with rasterio.open(path, "r+", crs="EPSG:4326") as dst:  # the same file on the right place
        dst.crs, dst.transform = "EPSG:4326", Affine(3 / 1024, 0, 6, 0, -3 / 1024, 3)
    assert tile_overview("N00E006", path) is not None

    source = data_source_from_env()
    load_roi(SMALL, source), load_roi(OTHER, source)
    data = Path(cache_mod.data_dir())
    assert len(cached_region_overviews(data)) == 2
    mine, theirs = (cache_path(roi_window(s), source) for s in (SMALL, OTHER))
    mine.write_bytes(theirs.read_bytes())
    (drawn,) = cached_region_overviews(data)
    assert drawn.name == theirs.stem


def test_source_that_stalls_mid_read_is_given_up_in_total(fixture_tiles_dir, monkeypatch):
    """The issue's 53-150 s: the server answers the file's header, then accepts each later range
    request and never answers; GDAL's per-request limits and retries add up. The whole read now
    stops at BHARATEO_READ_TIMEOUT_S however many requests are left."""
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", "2")
    with RangeHTTPServer(fixture_tiles_dir.folder, stall_after=1) as srv:
        start = time.monotonic()
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(fixture_tiles_dir.rois["delhi_ncr"], DataSource("url", srv.url))
        print(f"mid-read stall gave up after {time.monotonic() - start:.1f} s")
        assert srv.stalled >= 1  # it did stall on a request after the header
    assert "within 2 s" in str(e.value) and srv.url in str(e.value)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("answered", [2, 3], ids=["in-the-header", "in-the-pixels"])
def test_a_stall_that_gdal_gives_up_on_is_not_called_wrong_data(answered, fixture_tiles_dir,
                                                                  monkeypatch):
    """When GDAL's own per-request limit ends a stalled request first, the file opens without its
    georeferencing or its blocks fail to read: that is a broken connection, never reported as a
    file off the WorldCover grid or as a damaged tile."""
    # GDAL ends each stalled request itself, after half a second and with no retry: its header
    # read makes a dozen requests, which took 14 s at 1-2 s each with retries
    monkeypatch.setattr(gdal_mod, "GDAL_ENV", {**gdal_mod.GDAL_ENV, "GDAL_HTTP_TIMEOUT": 0.5,
                                              "GDAL_HTTP_LOW_SPEED_TIME": 0,
                                              "GDAL_HTTP_MAX_RETRY": 0})
    monkeypatch.setenv("BHARATEO_READ_TIMEOUT_S", "120")
    with RangeHTTPServer(fixture_tiles_dir.folder, stall_after=answered) as srv:
        with pytest.raises(SourceUnreachableError) as e:
            load_roi(fixture_tiles_dir.rois["delhi_ncr"], DataSource("url", srv.url))
        assert srv.stalled >= 1
    msg = str(e.value)
    assert not isinstance(e.value, TileFileError) and "within 120 s" not in msg
    assert "N27E075" in msg and re.search(r"try(ing)? again", msg, re.I)
    assert "not on the WorldCover grid" not in msg


def test_cache_files_from_before_the_binding_still_serve_offline(fixture_tiles_dir, tmp_path,
                                                                 isolated_env):
    """A classroom that prefetched with the previous version (checksum over the pixels only) keeps
    its cache offline, as long as the file's own provenance names this window; another region's
    old file under this name is still caught."""
    import hashlib
    import io

    folder = tmp_path / "tiles"
    folder.mkdir()
    shutil.copy(fixture_tiles_dir.tiles["N27E075"], folder)
    source = DataSource("folder", str(folder))
    fresh = {s.name: load_roi(s, source) for s in (SMALL, OTHER)}
    for spec in (SMALL, OTHER):  # rewrite both in the old format
        path = cache_path(roi_window(spec), source)
        roi = fresh[spec.name]
        buf = io.BytesIO()
        np.savez_compressed(buf, native=roi.native, provenance=np.array(json.dumps(roi.provenance)),
                            sha256=np.array(hashlib.sha256(roi.native.tobytes()).hexdigest()))
        path.write_bytes(buf.getvalue())
    shutil.rmtree(folder)  # offline from now on
    old = load_roi(SMALL, source)
    assert old.provenance["source"].startswith("local cache") and not old.notes
    assert np.array_equal(old.native, fresh[SMALL.name].native)
    cache_path(roi_window(SMALL), source).write_bytes(cache_path(roi_window(OTHER), source).read_bytes())
    with pytest.raises(SourceUnreachableError, match="damaged and moved aside"):
        load_roi(SMALL, source)


def test_redact_text_hides_passwords_holding_brackets_and_quotes():
    from bharateo.data.worldcover import redact_text

    for url in ("https://user:pa(ss@host/x", "https://user:p'w@host/x", "http://u:a)b@h/t.tif"):
        shown = redact_text(f"GDAL: could not open {url} (timeout)")
        assert "pa(ss" not in shown and "p'w" not in shown and "a)b" not in shown, shown
        assert "***@" in shown


def test_a_cache_file_without_picture_keys_is_skipped_on_the_map(tmp_path, monkeypatch):
    import numpy as np
    from bharateo.data import overview

    (tmp_path / "worldcover_2021_v200_N27E075_r0_c0_s64_public.npz").write_bytes(b"x")
    monkeypatch.setattr(overview, "read_cache",
                        lambda path, binding: (np.zeros((64, 64), np.uint8), {"source": "?"}))
    assert overview.cached_region_overviews(tmp_path) == []


def test_credentials_never_follow_a_redirect_to_another_host():
    """urllib copies every header, Authorization too, to wherever a mirror redirects."""
    import http.server
    import threading
    import urllib.request

    from bharateo.data.worldcover import open_url, url_and_auth

    seen = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(("mirror", self.headers.get("Authorization")))
            self.send_response(302)  # on to another host (and port)
            self.send_header("Location", f"http://localhost:{target.server_port}/x")
            self.end_headers()

        def log_message(self, *args):
            pass

    mirror = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    for server in (target, mirror):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url, headers = url_and_auth(f"http://user:s3cret@127.0.0.1:{mirror.server_port}/t.tif")
        open_url(urllib.request.Request(url, headers=headers), timeout=5).close()
        assert seen[0][0] == "mirror" and seen[0][1].startswith("Basic ")  # the mirror gets them
        assert seen[1] is None  # another host does not
    finally:
        for server in (target, mirror):
            server.shutdown()
            server.server_close()
