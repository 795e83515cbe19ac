"""Issue 21: property-based tests (hypothesis) of every reader of untrusted input. Generated bad
JSON, item files, catalogue items, manifests, run files, stored results and lesson links: no
exception escapes but the project's own (BharatEOError; a link's parsers: ValueError, which the
page turns into a note), nothing outside the test's folder is opened, memory stays bounded.

Fast and never flaky: derandomize=True (the same examples every run), few examples, no deadline.
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bharateo.data.chips import ChipConfig
from bharateo.errors import BharatEOError
from bharateo.data.sources import PIXEL_SOURCES
from tests.support.s2_fixtures import SCENE_DIR, SCENE_ITEM
from tests.support.untrusted_fixtures import Opened, save_tiny_run

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

# --- generated JSON --------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


bad_texts = (st.integers(30, 5000).map(nested)
             | st.integers(30, 5000).map(lambda d: '{"a":' * d + "1" + "}" * d)
             | st.text(alphabet='[]{}",:0 \\ae', max_size=200)
             | values.map(lambda v: json.dumps(v, allow_nan=True)))


@st.composite
def mutated(draw, doc):
    """`doc` (a JSON value) with one value somewhere inside replaced by a generated one (or a
    key dropped), so the readers' deeper checks are reached, not only the first."""
    doc = json.loads(json.dumps(doc))
    node, path = doc, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return draw(values)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(values | st.integers(30, 200).map(
            lambda d: json.loads(nested(d)) if d < 900 else []))
    return doc


def mutated_text(doc):
    return mutated(doc).map(lambda d: json.dumps(d, allow_nan=True)) | bad_texts


# --- what a reader may do ---------------------------------------------------------------------
class Watch:
    """Inside: record every path the interpreter opens and the peak memory growth (maxrss)."""

    def __init__(self, folder: Path, allowed=()):
        self.folder, self.allowed = str(Path(folder).resolve()), tuple(map(str, allowed))

    def __enter__(self):
        Opened.paths, Opened.watching = [], True
        self.rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        Opened.watching = False
        paths, folder = [], None
        for p in map(str, Opened.paths):  # a bare name is opened relative to the folder opened
            if "/" not in p and folder is not None:  # just before it (runfolder.open_run_file's
                p = str(Path(folder) / p)  # dir_fd), so it is checked as that folder's file
            elif p.startswith("/"):
                folder = p
            paths.append(p)
        outside = [p for p in paths if not str(Path(p).resolve()).startswith(
            (self.folder, *self.allowed)) and not p.endswith((".py", ".pyc", ".so"))
            and "site-packages" not in p and "/proc/" not in p and "/dev/" not in p]
        assert not outside, f"opened outside the folder: {outside[:3]}"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss  # KiB
        assert grown < 200 * 1024, f"memory grew by {grown / 1024:.0f} MB"
        return False


def only_ours(call, *also):
    """call() -> its value, or None when it raised the project's own error (or one of `also`)."""
    try:
        return call()
    except (BharatEOError, *also):
        return None


# --- saved runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    folder = save_tiny_run(tmp_path_factory.mktemp("runs"))
    return {f: json.loads((folder / f).read_text())
            for f in ("config.json", "history.json", "metrics.json")}, folder


@pytest.mark.parametrize("filename", ["config.json", "history.json", "metrics.json"])
def test_generated_run_files_give_a_damaged_run_never_a_traceback(run_files, filename, monkeypatch):
    from bharateo.storage.runs import load_model, load_run, scan_runs

    files, saved = run_files

    @PROPERTY
    @given(text=mutated_text(files[filename]))
    def check(text):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(saved, Path(tmp) / "r")
            (Path(tmp) / "r" / filename).write_text(text)
            monkeypatch.setenv("BHARATEO_CHECKPOINT_DIR", tmp)
            with Watch(tmp):
                run = only_ours(lambda: load_run("r"))
                if run is not None:
                    only_ours(lambda: load_model(run))
                scan_runs()
    check()


def test_generated_model_files_are_refused_in_words(run_files, monkeypatch):
    from bharateo.storage.runs import load_model, load_run

    _, saved = run_files
    members = st.lists(st.tuples(st.sampled_from(["archive/data.pkl", "archive/data/0",
                                                  "archive/version", "x"]),
                                 st.binary(max_size=64) | st.integers(0, 2**23).map(bytes)),
                       max_size=4, unique_by=lambda m: m[0])

    @PROPERTY
    @given(members=members, raw=st.binary(max_size=256), as_zip=st.booleans())
    def check(members, raw, as_zip):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(saved, Path(tmp) / "r")
            path = Path(tmp) / "r" / "model.pt"
            if as_zip:
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                    for name, data in members:
                        z.writestr(name, data)
            else:
                path.write_bytes(raw)
            monkeypatch.setenv("BHARATEO_CHECKPOINT_DIR", tmp)
            with Watch(tmp):
                only_ours(lambda: load_model(load_run("r")))
    check()


# --- stored results and embedding maps ----------------------------------------------------------
def test_generated_stored_results_are_valid_or_not_never_an_error():
    from bharateo.app.results import valid_result
    from bharateo.training.inspect_model import valid_embedding_map

    @PROPERTY
    @given(kind=st.sampled_from(["evaluation", "ratio_curve", "embedding_map", "other"]),
           value=values)
    def check(kind, value):
        assert valid_result(kind, value) in (True, False)
        assert valid_embedding_map(value) in (True, False)
    check()


# --- chip-store manifests ----------------------------------------------------------------------
def manifest() -> dict:
    shard = {"name": "train-00000", "chips": 4,
             "files": {kind: {"sha256": "0" * 64, "bytes": 128} for kind in ("labels", "tokens")}}
    return {"format": "bharateo-chip-store", "version": 1, "created": "2026-01-01T00:00:00+00:00",
            "chip_size": 64, "patch_size": 16, "bands": list(PIXEL_SOURCES["worldcover"].bands),
            "chip_config": ChipConfig(n_chips=4, chip_size=64).to_dict(), "roi_names": ["a"],
            "regions": [{"spec": {"name": "a", "lon": 0.0, "lat": 0.0, "size": 256}}],
            "splits": {"train": {"chips": 4, "rejected_nodata": 0, "chips_per_roi": {"a": 4},
                                 "shards": [shard]}}}


def test_generated_manifests_give_a_chip_store_error_never_a_traceback(capsys):
    from bharateo import cli
    from bharateo.storage.chipstore import ChipStore, read_manifest

    @PROPERTY
    @given(text=mutated_text(manifest()))
    def check(text):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "manifest.json").write_text(text)
            with Watch(tmp):
                only_ours(lambda: read_manifest(Path(tmp)))
                only_ours(lambda: ChipStore(Path(tmp)))
                assert cli.main(["chips", "verify", tmp]) == 2
            err = capsys.readouterr().err.strip()
            assert "Traceback" not in err and len(err.splitlines()) == 1
    check()


# --- Sentinel-2 item files and catalogue items ------------------------------------------------
@pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
def test_generated_item_files_are_skipped_with_a_note():
    from bharateo.data.sentinel2.read import scene_bounds
    from bharateo.data.sentinel2.scenes import folder_scenes, footprint_contains, in_range, S2Query

    item = json.loads(SCENE_ITEM.read_text())

    @PROPERTY
    @given(text=mutated_text(item))
    def check(text):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "scene").mkdir()
            (Path(tmp) / "scene" / "item.json").write_text(text)
            with Watch(tmp):
                scenes, notes = folder_scenes(Path(tmp))
                for scene in scenes:  # what the pages do with a folder's scenes
                    scene_bounds(scene)
                    footprint_contains(scene.footprint, [(-11.4, 24.8)])
                    in_range(scene, S2Query())
                    scene.mgrs_tile
            assert len(scenes) + len(notes) == 1
    check()


@pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
def test_generated_catalogue_items_name_only_http_files_on_its_hosts():
    from bharateo.data.sentinel2.bands import EARTH_SEARCH_ASSET_HOSTS
    from bharateo.data.sentinel2.read import openable, scene_bounds
    from bharateo.data.sentinel2.scenes import footprint_contains, scene_from_item

    item = json.loads(SCENE_ITEM.read_text())
    hrefs = st.sampled_from(["/etc/passwd", "file:///etc/passwd", "/vsisubfile/0_1,/etc/passwd",
                             "https://evil.example/B02.tif", "s3://b/k.tif", "B02.tif",
                             "https://sentinel-cogs.s3.us-west-2.amazonaws.com/B02.tif"]) | st.text()

    @PROPERTY
    @given(doc=mutated(item), href=hrefs)
    def check(doc, href):
        if isinstance(doc, dict) and isinstance(doc.get("assets"), dict) and \
                isinstance(doc["assets"].get("blue"), dict):
            doc["assets"]["blue"]["href"] = href
        with Watch(tempfile.gettempdir()):
            scene = only_ours(lambda: scene_from_item(doc, EARTH_SEARCH_ASSET_HOSTS))
            if scene is not None:
                for band, url in scene.hrefs.items():
                    assert url.startswith("https://sentinel-cogs.s3.us-west-2.amazonaws.com/")
                    assert openable(url)
                footprint_contains(scene.footprint, [(-11.4, 24.8)])
                scene_bounds(scene) if "B02" not in scene.hrefs else None
    check()


# --- the lesson link --------------------------------------------------------------------------
class Params(dict):
    """st.query_params' reading interface over {key: [values]}."""

    def get(self, key, default=None):
        found = dict.get(self, key)
        return found[-1] if found else default

    def get_all(self, key):
        return list(dict.get(self, key, []))


link_text = (st.text(max_size=40)
             | st.lists(st.sampled_from(["", "1", "-1", "77.2", "nan", "inf", "1e999", "x",
                                         "train", "held", "0.75", "256", "s2-4band",
                                         "2021-01-01/2021-02-01", "../a", "a" * 70]),
                        max_size=9).map(",".join))


def test_generated_lesson_links_give_notes_never_an_exception(monkeypatch):
    import streamlit as st_

    from bharateo.app import lesson, teacher

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    keys = st.sampled_from(["roi", "chips", "run", "src", "show", "recon", "lr", "mask_ratio",
                            "epochs", "embed", "junk"]) | st.text(max_size=8)

    @PROPERTY
    @given(params=st.dictionaries(keys, st.lists(link_text, min_size=1, max_size=3), max_size=6))
    def check(params):
        with tempfile.TemporaryDirectory() as tmp:
            monkeypatch.setenv("BHARATEO_CHECKPOINT_DIR", tmp)
            monkeypatch.setenv("BHARATEO_DATA_DIR", tmp)
            for key in list(st_.session_state):
                del st_.session_state[key]
            with Watch(tmp, allowed=[SCENE_DIR.parent]):
                notes = lesson.restore_lesson(Params(params))
            assert all(isinstance(n, str) for n in notes)
            for raw in (v for vs in params.values() for v in vs):
                for parse in (lambda r: lesson._roi_from_param(r),
                              lambda r: lesson._chips_from_param(r, ["a"]),
                              lambda r: teacher.parse_recon(r, {"train": 4}),
                              lambda r: teacher.parse_show(r)):
                    only_ours(lambda: parse(raw), ValueError)
                for spec in teacher.knob_specs().values():
                    only_ours(lambda: teacher.parse_knob(spec, raw, ["a"]), ValueError)
    check()


# --- the reader itself --------------------------------------------------------------------------
def test_generated_json_text_parses_or_is_refused_in_words():
    from bharateo.untrusted import parse_json

    @PROPERTY
    @given(text=bad_texts | st.binary(max_size=200))
    def check(text):
        only_ours(lambda: parse_json(text, "x", 2**20))
    check()
