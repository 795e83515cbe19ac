"""Issue 21 items 1, 3 and 4 (and the property tests): no catalogue makes the server open local
files, every JSON or item file read from disk, a catalogue or a link is bounded and typed, and
sizes are checked before memory is spent."""
from __future__ import annotations

import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import rasterio
import torch

from bharateo import cli
from bharateo.errors import BharatEOError, RegionError, RunDamagedError, SourceUnreachableError
from bharateo.storage.runs import load_model, load_run, weights_limit
from bharateo.data.sentinel2 import BANDS_4, S2Query, S2Source, load_s2_roi
from bharateo.data.sentinel2.scenes import folder_scenes, stac_scenes
from bharateo.untrusted import json_depth, parse_json
from bharateo.data.worldcover import DataSource
from tests.support.s2_fixtures import SAHARA, SCENE_DIR, SCENE_ID, StacServer, scene_folder, shared_item
from tests.support.untrusted_fixtures import Opened, save_tiny_run

needs_scene = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
DATES = "2020-01-01/2020-03-01"
NESTED = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError before the fix


@pytest.fixture
def opened(monkeypatch):
    """(paths opened by Python, hrefs passed to rasterio.open) during the test."""
    gdal = []
    real = rasterio.open

    def spy(fp, *args, **kwargs):
        gdal.append(str(fp))
        return real(fp, *args, **kwargs)
    monkeypatch.setattr(rasterio, "open", spy)
    Opened.paths, Opened.watching = [], True
    yield Opened.paths, gdal
    Opened.watching = False


# --- item 1: a catalogue never makes the server open local files --------------------------------
class RawStacServer(StacServer):
    """The fixture STAC API answering its items' hrefs as given (no rewrite to its file server)."""

    def item_with_urls(self, item: dict) -> dict:
        return {**item, "links": []}


def _item_naming(href: str) -> dict:
    item = shared_item(datetime="2020-02-19T11:00:00Z", **{"eo:cloud_cover": 1.0})
    for asset in item["assets"].values():
        asset["href"] = href
    return item


def _read_stac(url: str, tmp_path: Path) -> Exception:
    with pytest.raises(BharatEOError) as err:
        load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), S2Source("stac", url),
                    DataSource("folder", str(tmp_path)), use_cache=False)
    return err.value


LOCAL_HREFS = {  # kind: (an href naming a file that exists here, one naming no file)
    "file-url": ("file:///etc/passwd", "file:///etc/no_such_file_bharateo"),
    "absolute": ("/etc/passwd", "/etc/no_such_file_bharateo"),
    "band-file": (str(SCENE_DIR / "B02.tif"), str(SCENE_DIR / "B99.tif")),
    "vsisubfile": (f"/vsisubfile/0_4096,{SCENE_DIR / 'B02.tif'}",
                   "/vsisubfile/0_4096,/etc/no_such_file_bharateo"),
    "vsicurl": ("/vsicurl/http://127.0.0.1:9/B02.tif", "/vsicurl/http://127.0.0.1:9/B99.tif"),
    "relative": ("../../etc/passwd", "../../etc/no_such_file_bharateo"),
}


@needs_scene
@pytest.mark.parametrize("kind", LOCAL_HREFS)
def test_a_catalogue_naming_local_files_opens_nothing_and_says_the_same_either_way(
        kind, tmp_path, opened):
    python_opens, gdal_opens = opened
    items = [_item_naming(href) for href in LOCAL_HREFS[kind]]
    python_opens.clear()  # the test's own reading of the shared item
    messages = []
    for item in items:
        with RawStacServer(tmp_path, [item]) as server:
            exc = _read_stac(server.url, tmp_path)
        assert isinstance(exc, RegionError) and "never opened" in str(exc)
        messages.append(str(exc))
    assert messages[0] == messages[1]  # nothing tells whether a server path exists
    assert gdal_opens == []
    assert not [p for p in python_opens if "etc" in Path(p).parts or p.startswith(str(SCENE_DIR))]


@needs_scene
@pytest.mark.parametrize("href", ["s3://sentinel-s2-l2a/tiles/B02.jp2",
                                  "http://user:secret@127.0.0.1/B02.tif",
                                  "http://169.254.169.254/latest/meta-data/B02.tif",
                                  "<VRTDataset rasterXSize='1'></VRTDataset>",
                                  "GTIFF_DIR:1:/etc/passwd"])
def test_a_catalogue_names_only_http_files_on_its_own_hosts(href, tmp_path, opened):
    item = _item_naming(href)
    with RawStacServer(tmp_path, [item]) as server:
        exc = _read_stac(server.url, tmp_path)
    assert "never opened" in str(exc) or "does not name" in str(exc)
    assert "secret" not in str(exc) and opened[1] == []


def test_asset_hosts_are_the_catalogues_and_its_configured_mirrors(monkeypatch):
    from bharateo.data.sentinel2.scenes import s2_source_from_env

    monkeypatch.delenv("BHARATEO_S2_DIR", raising=False)
    monkeypatch.delenv("BHARATEO_S2_STAC_URL", raising=False)
    monkeypatch.delenv("BHARATEO_S2_ASSET_HOSTS", raising=False)
    assert "sentinel-cogs.s3.us-west-2.amazonaws.com" in s2_source_from_env().hosts
    monkeypatch.setenv("BHARATEO_S2_STAC_URL", "https://stac.example.org/v1")
    monkeypatch.setenv("BHARATEO_S2_ASSET_HOSTS", "cogs.example.org, ")
    assert s2_source_from_env().hosts == ("cogs.example.org", "stac.example.org")


@needs_scene
def test_a_folders_links_out_of_it_are_never_read(tmp_path, opened):
    root = scene_folder(tmp_path / "s2")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(SCENE_DIR / "B02.tif", outside / "B02.tif")
    (root / SCENE_ID / "B02.tif").unlink()
    (root / SCENE_ID / "B02.tif").symlink_to(outside / "B02.tif")  # a band file linking out
    (root / "linked_scene").symlink_to(SCENE_DIR)  # a scene folder linking out
    (root / "linked_item").mkdir()
    (root / "linked_item" / "item.json").symlink_to(SCENE_DIR / f"{SCENE_ID}.json")
    python_opens, gdal_opens = opened
    python_opens.clear()  # the fixture's copies
    scenes, notes = folder_scenes(root)
    assert [s.id for s in scenes] == [SCENE_ID] and "B02" not in scenes[0].hrefs
    assert "outside" in scenes[0].refused["B02"]
    assert any(n.startswith("skipped: linked_scene: a link to a folder outside") for n in notes)
    assert any(n.startswith("skipped: linked_item: ") for n in notes)
    with pytest.raises(RegionError, match="band B02 is a link to a file outside"):
        load_s2_roi(SAHARA, BANDS_4, S2Query(DATES, 20), S2Source("folder", str(root)),
                    DataSource("folder", str(tmp_path)), use_cache=False)
    assert not [p for p in gdal_opens + python_opens
                if p.startswith((str(outside), str(SCENE_DIR)))]


# --- item 3: item files and catalogue answers are bounded and typed -----------------------------
BAD_ITEMS = {
    "nested": NESTED,
    "datetime-int": {"datetime": 5},
    "cloud-text": {"eo:cloud_cover": "abc"},
    "assets-strings": "assets",
    "geometry": "geometry",
    "not-an-object": "list",
}


def _bad_item(kind: str):
    item = shared_item()
    if kind == "nested":
        return NESTED
    if kind == "assets-strings":
        item["assets"] = {k: "B02.tif" for k in item["assets"]}
    elif kind == "geometry":
        item["geometry"] = {"type": "Polygon", "coordinates": [[["a", None], [1]]]}
    elif kind == "not-an-object":
        return [item]
    else:
        item["properties"].update(BAD_ITEMS[kind])
    return item


@needs_scene
@pytest.mark.parametrize("kind", BAD_ITEMS)
def test_a_bad_item_file_is_skipped_with_its_reason(kind, tmp_path):
    root = scene_folder(tmp_path / "s2")
    bad = _bad_item(kind)
    (root / SCENE_ID / f"{SCENE_ID}.json").write_text(bad if isinstance(bad, str) else json.dumps(bad))
    scenes, notes = folder_scenes(root)
    assert scenes == [] and len(notes) == 1
    assert notes[0].startswith(f"skipped: {SCENE_ID}: its STAC item {SCENE_ID}.json can't be read")


def test_an_item_file_too_big_is_not_read(tmp_path):
    (tmp_path / "s2" / "scene").mkdir(parents=True)
    (tmp_path / "s2" / "scene" / "item.json").write_bytes(b" " * (2**20 + 1))
    assert "item.json is larger than 1 MB" in folder_scenes(tmp_path / "s2")[1][0]


BAD_ANSWERS = {
    "features-text": {"type": "FeatureCollection", "features": "abc"},
    "assets-list": {"type": "FeatureCollection", "features": [{**shared_item(), "assets": []}]},
    "properties-text": {"type": "FeatureCollection",
                        "features": [{**shared_item(), "properties": "abc"}]},
    "geometry-bogus": {"type": "FeatureCollection",
                       "features": [{**shared_item(), "geometry": {"type": "Polygon",
                                                                   "coordinates": "x"}}]},
    "links-text": {"type": "FeatureCollection", "features": [shared_item()], "links": "abc"},
    "a-list": [1, 2, 3],
    "nested": NESTED.encode(),
    "not-json": b"<html>login</html>",
}


@needs_scene
@pytest.mark.parametrize("kind", BAD_ANSWERS)
def test_a_bad_catalogue_answer_is_one_plain_message(kind, tmp_path):
    with StacServer(tmp_path, [], answer=lambda body: BAD_ANSWERS[kind]) as server:
        with pytest.raises(SourceUnreachableError) as err:
            stac_scenes(S2Source("stac", server.url), (-11.5, 24.7, -11.4, 24.8), S2Query(DATES, 20))
    assert f"The Sentinel-2 search at {server.url}" in str(err.value)
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 600


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_catalogue_answer_is_cut_off_before_memory_is_spent(tmp_path, chunked):
    """A 48 MB answer (the issue's 200 MB cost +464 MB): refused at 16 MB, with the client's
    Python allocations at their peak below 40 MB (the answer is built before measuring)."""
    feature = json.dumps({"type": "Feature", "id": "x" * 200}).encode()
    body = b'{"type":"FeatureCollection","features":[' + b",".join(
        [feature] * (48 * 2**20 // len(feature))) + b"]}"
    with StacServer(tmp_path, [], answer=lambda _: body, chunked=chunked) as server:
        tracemalloc.start()
        try:
            with pytest.raises(SourceUnreachableError, match="larger than 16 MB|more than the 16 MB"):
                stac_scenes(S2Source("stac", server.url), (-11.5, 24.7, -11.4, 24.8),
                            S2Query(DATES, 20))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 40 * 2**20


# --- item 3: run files, stored results and manifests are bounded and typed ----------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A tiny run trained and saved by today's code, copied fresh into each test's folder."""
    return save_tiny_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run_copy(saved_run, isolated_env):
    target = isolated_env["checkpoints"] / "today"
    shutil.copytree(saved_run, target)
    return target


def test_a_run_saved_by_todays_code_loads(run_copy):
    run = load_run("today")
    assert load_model(run).training is False and run.history and run.metrics


@pytest.mark.parametrize("filename", ["config.json", "history.json", "metrics.json"])
def test_nested_arrays_in_a_run_file_are_a_damaged_run_not_a_recursion_error(
        run_copy, filename, capsys):
    (run_copy / filename).write_text(NESTED)
    with pytest.raises(RunDamagedError, match=f"{filename} nests deeper than"):
        load_run("today")
    assert cli.main(["evaluate", "today"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and f"{filename} nests deeper" in err and len(err.splitlines()) == 1


def test_a_huge_run_file_is_refused_before_it_is_read(run_copy):
    with open(run_copy / "history.json", "wb") as f:
        f.truncate(33 * 2**20)  # sparse: no disk spent
    with pytest.raises(RunDamagedError, match="history.json is larger than 32 MB"):
        load_run("today")
    (run_copy / "history.json").write_text("[" + "{}," * 2_100_000 + "{}]")
    with pytest.raises(RunDamagedError, match="history.json holds more than 2,000,000 values"):
        load_run("today")  # 6 MB of empty rows: refused before json.loads builds 2 M dicts


def test_a_zip_bomb_model_pt_is_refused_before_torch_load(run_copy, monkeypatch):
    """A model.pt whose archive declares 256 MB of weights (compressed to under 1 MB) for a
    model of ~0.3 MB: refused from its declared sizes, torch.load never called."""
    run = load_run("today")
    with zipfile.ZipFile(run_copy / "model.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (256 * 2**20))
    assert (run_copy / "model.pt").stat().st_size < 2**20
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(RunDamagedError, match=r"inflates to 256\.0 MB, more than the"):
        load_model(run)
    assert calls == [] and weights_limit(run.model_config) < 2 * 2**20


def test_stored_results_that_are_too_deep_are_computed_again(run_copy):
    from bharateo.storage.runs import read_run_file

    (run_copy / "evaluation.json").write_text(NESTED)
    assert read_run_file(load_run("today"), "evaluation.json") is None


# --- the reader itself ---------------------------------------------------------------------------
def test_json_depth_counts_brackets_outside_strings():
    assert json_depth(b'[[1, "[[[[\\"]]"], {"a": []}]') == 3
    assert json_depth(b'"{{{"') == 0 and json_depth(b"") == 0
    with pytest.raises(BharatEOError, match="nests deeper than 32"):
        parse_json(NESTED, "x", 2**20)
