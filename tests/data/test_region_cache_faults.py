"""One read / cache / deadline flow for every pixel source (issue 24): the same disk fault fed to a
WorldCover region (roi.load_roi) and a Sentinel-2 region (sentinel2.load_s2_roi) meets the same
outcome in the same words. The two flows had drifted: Sentinel-2 swallowed the OSError of a
damaged cache file it could not move aside (and said it had moved it), named neither the
.corrupt file nor the error's kind, left out what the lesson does with a region it could not
cache, and never said that a region it could not read again had a damaged cached copy.

Faults are injected at the write (tempfile.mkstemp) and at the move aside (os.replace), with
the errno a read-only folder or a full disk gives, so they run unprivileged (tests/
test_data_faults.py mounts a real read-only or full tmpfs where it may)."""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from bharateo.data.roi import RoiSpec, load_roi, roi_window
from bharateo.errors import BharatEOError
from tests.support.fixture_tiles import synthetic_native, window_in_tile, write_fixture_tile
from tests.support.s2_fixtures import SAHARA, SCENE_DIR, sahara_labels, scene_folder

pytestmark = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")

WC_SPEC = RoiSpec("wc_fault", 76.0, 29.0, 256)  # a spot no other test reads: never in memory
S2_DATES = "2020-01-01/2020-03-01"
FAULTS = {"read-only": errno.EROFS, "full": errno.ENOSPC}


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """{"worldcover": read, "sentinel2": read}: each reads its region through its cache under
    one BHARATEO_DATA_DIR; both sources' files are local folders (removable: "source gone")."""
    from bharateo.data.sentinel2 import BANDS_4, S2Query, load_s2_roi

    wc, s2 = tmp_path / "wc", tmp_path / "s2"
    r, c = window_in_tile(roi_window(WC_SPEC), "N27E075")
    write_fixture_tile(wc, "N27E075", [(r, c, synthetic_native(256, 256))])
    sahara_labels(wc)  # the Sentinel-2 region's labels, in the same WorldCover folder
    scene_folder(s2)
    for key, folder in (("BHARATEO_WORLDCOVER_DIR", wc), ("BHARATEO_S2_DIR", s2),
                        ("BHARATEO_DATA_DIR", tmp_path / "data"),
                        ("BHARATEO_CHECKPOINT_DIR", tmp_path / "runs")):
        monkeypatch.setenv(key, str(folder))
    monkeypatch.delenv("BHARATEO_S2_STAC_URL", raising=False)
    return {"worldcover": (lambda: load_roi(WC_SPEC), wc),
            "sentinel2": (lambda: load_s2_roi(SAHARA, BANDS_4, S2Query(S2_DATES, 20)), s2)}


def cache_file(data: Path) -> Path:
    """The one region cache file under `data` (WorldCover's in data/, Sentinel-2's in
    data/sentinel2/)."""
    (path,) = list(data.rglob("*.npz"))
    return path


def in_words(text: str, folder: Path) -> str:
    """`text` with cache file names and their folder replaced by placeholders, so two sources'
    messages compare word for word."""
    text = text.replace(str(folder), "<folder>")
    return re.sub(r"[\w.-]+?\.(npz|corrupt)\b", r"<name>.\1", text)


def refuse_writes(mp, code: int) -> None:
    """Every new temp file fails with `code`, as in a read-only folder or on a full disk."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    mp.setattr(tempfile, "mkstemp", refuse)


def refuse_moves_aside(mp, code: int) -> None:
    """Moving a file to <name>.corrupt fails with `code` (a read-only folder); others work."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".corrupt"):
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *args, **kwargs)

    mp.setattr(os, "replace", replace)


def both(sources, data: Path, damage=None, fault=None) -> dict:
    """{source: outcome} of reading each source's region once more after `damage(cache file)`
    (if given; the region is read once before) with `fault(monkeypatch)` in place. An outcome is
    what the reader sees, with cache file names and their folder as placeholders."""
    out = {}
    for kind, (read, _) in sources.items():
        folder = data / "sentinel2" if kind == "sentinel2" else data
        if damage is not None:
            read()
            damage(cache_file(data))
        with pytest.MonkeyPatch.context() as mp:
            if fault is not None:
                fault(mp)
            roi = read()
        out[kind] = {"cache_error": in_words(roi.cache_error, folder),
                     "notes": [in_words(n, folder) for n in roi.notes if "cache" in n.lower()],
                     "files": sorted(in_words(p.name, folder) for p in folder.glob("*")
                                     if p.is_file()) if folder.is_dir() else []}
        shutil.rmtree(data, ignore_errors=True)
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_a_data_folder_that_cant_be_written_keeps_either_region_in_memory_in_the_same_words(
        sources, tmp_path, fault):
    data = tmp_path / "data"
    seen = both(sources, data, fault=lambda mp: refuse_writes(mp, FAULTS[fault]))
    assert seen["sentinel2"] == seen["worldcover"]
    wc = seen["worldcover"]
    assert fault in wc["cache_error"] and "<folder>" in wc["cache_error"]
    assert len(wc["notes"]) == 1 and "not saved to the cache" in wc["notes"][0]
    assert "lesson goes on" in wc["notes"][0] and wc["files"] == []  # nothing half-written


def test_a_damaged_cache_file_is_moved_aside_and_read_again_in_the_same_words(sources, tmp_path):
    data = tmp_path / "data"
    seen = both(sources, data, damage=lambda path: path.write_bytes(path.read_bytes()[:1000]))
    assert seen["sentinel2"] == seen["worldcover"]
    (note,) = seen["worldcover"]["notes"]
    assert "<name>.npz was damaged" in note and "moved to <name>.corrupt" in note
    assert "read again" in note and seen["worldcover"]["cache_error"] == ""
    assert seen["worldcover"]["files"] == ["<name>.corrupt", "<name>.npz"]


def test_a_damaged_cache_file_in_a_read_only_folder_is_said_not_moved(sources, tmp_path):
    """Sentinel-2 swallowed the OSError and said the file "was moved aside"."""
    data = tmp_path / "data"

    def read_only(mp):
        refuse_moves_aside(mp, errno.EROFS)
        refuse_writes(mp, errno.EROFS)

    seen = both(sources, data, damage=lambda path: path.write_bytes(b"not a zip"),
                fault=read_only)
    assert seen["sentinel2"] == seen["worldcover"]
    notes = seen["worldcover"]["notes"]
    assert "could not be moved aside" in notes[0] and "read-only" in notes[0]
    assert "not saved to the cache" in notes[1]
    assert "read-only" in seen["worldcover"]["cache_error"]
    assert seen["worldcover"]["files"] == ["<name>.npz"]  # the damaged file, left where it was


def test_a_damaged_cache_file_and_no_source_says_so_for_either_source(sources, tmp_path):
    """A damaged cache moved aside while the source is gone: the error says both."""
    data = tmp_path / "data"
    messages = {}
    for kind, (read, folder) in sources.items():
        read()
        path = cache_file(data)
        path.write_bytes(path.read_bytes()[:1000])
        folder.rename(tmp_path / "away")  # the source is gone
        with pytest.raises(BharatEOError) as e:
            read()
        (tmp_path / "away").rename(folder)
        messages[kind] = str(e.value)
        assert path.with_suffix(".corrupt").exists() and not path.exists()
        shutil.rmtree(data)
    for kind, message in messages.items():
        assert message.startswith("The cached copy of this region was damaged and moved aside, "
                                  "and the region could not be read again: "), (kind, message)
