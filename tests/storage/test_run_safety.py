"""Issue 21, items 2, 6 and 7: changes to one run are serialised (a rename and a delete at the same
moment lose nothing and both callers are told the truth), a run folder's files are never read
through links, and what killed processes leave is cleaned and never listed as a run."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bharateo.storage import export
from bharateo.storage import runfolder
from bharateo.storage import runs
from bharateo.errors import RunDamagedError, RunNameError, RunNotFoundError
from bharateo.training.experiment import RunConfig
from bharateo.data.chips import ChipConfig
from bharateo.data.roi import RoiSpec
from bharateo.training.loop import TrainConfig, make_model
from tests.support.models import tiny_model_config
from tests.support.paths import REPO

FILES = 60  # a run folder with many files: a delete takes long enough to be caught mid-way
CONFIG = RunConfig(rois=(RoiSpec("a", 0.0, 0.0, 512),), chips=ChipConfig(n_chips=8, chip_size=64),
                   model=tiny_model_config(img_size=64),
                   train=TrainConfig(epochs=1))


def saved(name: str) -> Path:
    """A small valid run saved under `name` (untrained weights: only its files matter here)."""
    return runs.save_run(name, make_model(CONFIG.model, 0), CONFIG.to_dict(), [], {})


def many_files(name: str, files: int = FILES) -> Path:
    folder = runs.run_dir(name)
    folder.mkdir()
    for i in range(files):
        (folder / f"result_{i:03d}.json").write_text(json.dumps({"i": i}))
    return folder


def outcome(action):
    try:
        action()
        return "ok"
    except RunNotFoundError:
        return "not found"
    except Exception as exc:  # anything else is a wrong answer
        return f"{type(exc).__name__}: {exc}"


def check_round(renamed: str, deleted: str, k: int, files: int = FILES) -> None:
    """One of: renamed with every file (the delete found nothing), or deleted (the rename found
    nothing); never an empty or half folder, never an "ok" that isn't true."""
    moved = runs.run_dir(f"moved-{k}")
    assert {renamed, deleted} == {"ok", "not found"}, (renamed, deleted)
    assert not runs.run_dir(f"race-{k}").exists()
    if renamed == "ok":
        assert sorted(p.name for p in moved.iterdir()) == [f"result_{i:03d}.json" for i in range(files)]
    else:
        assert not moved.exists()


def test_racing_rename_and_delete_of_one_run_lose_nothing_and_tell_the_truth():
    for k in range(40):
        many_files(f"race-{k}")
        start, answers = threading.Barrier(2), {}

        def act(key, action):
            start.wait()
            answers[key] = outcome(action)

        threads = [threading.Thread(target=act, args=("rename", lambda: runs.rename_run(f"race-{k}", f"moved-{k}"))),
                   threading.Thread(target=act, args=("delete", lambda: runs.delete_run(f"race-{k}")))]
        for t in (threads if k % 2 else threads[::-1]):
            t.start()
        for t in threads:
            t.join()
        check_round(answers["rename"], answers["delete"], k)
    assert not [p.name for p in runs.checkpoint_root().iterdir() if p.name.startswith(".")]


def _race_in_a_process(action, k, start, answers):
    start.wait()
    answers.put((action, outcome(lambda: runs.rename_run(f"race-{k}", f"moved-{k}") if action == "rename"
                                 else runs.delete_run(f"race-{k}"))))


def test_racing_rename_and_delete_in_two_processes():
    ctx = multiprocessing.get_context("fork")
    for k in range(8):
        many_files(f"race-{k}", 600)  # processes wake less in step than threads: a longer delete
        start, answers = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race_in_a_process, args=(a, k, start, answers))
                 for a in ("rename", "delete")]
        for p in procs:
            p.start()
        got = dict(answers.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        check_round(got["rename"], got["delete"], k, 600)


def test_a_result_is_never_written_into_a_run_being_deleted():
    run = runs.load_run(saved("kept").name)
    done = threading.Event()

    def write_many():
        for i in range(30):
            try:
                runs.write_run_file(run, f"evaluation_{i}.json", {"i": i})
            except RunNotFoundError:
                pass
        done.set()

    writer = threading.Thread(target=write_many)
    writer.start()
    runs.delete_run("kept")
    writer.join()
    assert done.is_set() and not run.path.exists()  # never recreated by a late write


# --- item 6: files in a run folder stay inside it ------------------------------------------------
@pytest.mark.parametrize("filename", ["model.pt", "config.json", "history.json", "metrics.json"])
def test_a_run_file_that_is_a_link_is_refused_and_never_read(tmp_path, filename):
    folder = saved("linked")
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / filename).rename(outside / filename)
    (folder / filename).symlink_to(outside / filename)
    with pytest.raises(RunDamagedError, match=f"{filename} is a link"):
        runs.load_run("linked")
    (damaged,) = runs.scan_runs()[1]
    assert damaged.name == "linked" and "link" in damaged.reason
    runs.delete_run("linked")  # deletable; the file outside is untouched
    assert (outside / filename).is_file()


def test_model_results_and_the_zip_are_never_read_through_a_link(tmp_path):
    run = runs.load_run(saved("swap").name)  # loaded, then its files are swapped for links
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"secret": 1}))
    (run.path / "model.pt").rename(tmp_path / "model.pt")
    (run.path / "model.pt").symlink_to(tmp_path / "model.pt")
    with pytest.raises(RunDamagedError, match="model.pt is a link"):
        runs.load_model(run)
    (run.path / "evaluation_x.json").symlink_to(secret)
    assert runs.read_run_file(run, "evaluation_x.json") is None
    runs.write_run_file(run, "embedding_y.json", {"ok": 1})
    assert runs.read_run_file(run, "embedding_y.json") == {"ok": 1}
    names = sorted(Path(n).name for n in __import__("zipfile").ZipFile(
        __import__("io").BytesIO(export.run_archive(run))).namelist())
    assert names == ["config.json", "embedding_y.json", "history.json", "metrics.json"]


# --- item 7: leftovers are cleaned, never listed as runs ------------------------------------------
KILLED_SAVE = """
import os, signal, sys
from bharateo.storage import runs
from bharateo.training.loop import make_model
from tests.support.models import tiny_model_config
def killed(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # the server dies after writing, before the rename
runs._claim = killed
runs.save_run("late", make_model(tiny_model_config(img_size=64), 0),
              {"model": {}}, [], {})
"""


def test_a_killed_saves_temporary_folder_is_removed_and_never_listed():
    root = runs.checkpoint_root()
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE], cwd=REPO, env=os.environ.copy(),
                          capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    (left,) = [p for p in root.iterdir() if p.name.startswith(".save_run.")]
    assert (left / "model.pt").is_file()
    assert runs.scan_runs() == ([], [])  # never listed as a run
    mine = runfolder.make_temp_dir(root, "save_run")  # a save of a live process: kept
    (mine / "model.pt").write_bytes(b"x")
    old = root / ".older.abc123.tmp"  # an older version's temporary folder, an hour old
    old.mkdir()
    os.utime(old, (time.time() - 2 * runfolder.STALE_UNOWNED_S,) * 2)
    recent = root / ".recent.abc123.tmp"
    recent.mkdir()
    assert sorted(runs.clean_leftovers()) == sorted([left.name, old.name])
    assert sorted(p.name for p in root.iterdir()) == sorted([mine.name, recent.name])


def _fake_start(name: str, **change) -> None:
    marker = runs.run_dir(name) / runs.RESERVED
    marker.write_text(json.dumps({**json.loads(marker.read_text()), **change}))


def test_a_reservation_whose_pid_was_reused_is_stale_and_deletable():
    """The marker's PID is a live process (this one) that started at another time: not its owner."""
    runs.reserve_run_name("reused")
    me = runfolder.process_start(os.getpid())
    if me is None:
        pytest.skip("no /proc: only the PID can be checked here")
    _fake_start("reused", started=me + 1)
    (listed,) = runs.scan_runs()[1]
    assert listed.reserved and not listed.training and "ended without saving" in listed.reason
    runs.delete_run("reused")
    assert not runs.run_dir("reused").exists()
    # an older marker with no start time: a process started after the reservation isn't its owner
    runs.reserve_run_name("old-marker")
    marker = runs.run_dir("old-marker") / runs.RESERVED
    old = {k: v for k, v in json.loads(marker.read_text()).items() if k != "started"}
    marker.write_text(json.dumps({**old, "reserved_at": "2001-01-01T00:00:00+00:00"}))
    assert not runs.scan_runs()[1][0].training
    runs.rename_run("old-marker", "kept-files")


def test_a_live_reservation_is_kept_and_a_stale_empty_one_is_cleaned_at_start():
    runs.reserve_run_name("live")  # this process: training now
    runs.reserve_run_name("stopped")
    _fake_start("stopped", pid=2**22 + 7)  # the server that reserved it is gone
    runs.reserve_run_name("with-files")
    _fake_start("with-files", pid=2**22 + 7)
    (runs.run_dir("with-files") / "notes.txt").write_text("kept: not ours to throw away")
    assert runs.clean_leftovers() == ["stopped"]
    names = {d.name: d for d in runs.scan_runs()[1]}
    assert set(names) == {"live", "with-files"} and names["live"].training
    with pytest.raises(RunNameError, match="still running"):
        runs.delete_run("live")
    runs.delete_run("with-files")


def test_the_runs_lock_is_reentrant_within_a_thread():
    root = runs.checkpoint_root()
    with runfolder.runs_locked(root):
        with runfolder.runs_locked(root):  # no deadlock
            pass
        runs.release_run_name(runs.reserve_run_name("inside"))  # the changes take it again
    assert not runs.run_dir("inside").exists()


def test_no_file_name_opens_anything_outside_the_run_folder(tmp_path):
    """Generated names (paths, '..', links, NUL) either open a plain file directly inside the run
    folder (checked through /proc/self/fd) or raise OSError."""
    from hypothesis import HealthCheck, example, given, settings, strategies as st

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (tmp_path / "secret").write_text("s")
    (folder / "link").symlink_to(tmp_path / "secret")
    (folder / "sub").mkdir()
    opened = []
    special = ["config.json", "link", "sub", "..", ".", "../secret", "sub/../config.json",
               "/etc/passwd", "a\x00b", ""]
    names = st.one_of(st.text(max_size=12), st.sampled_from(special))

    # every special name is tried (one @example each), then 60 generated ones (derandomized:
    # the profile in tests/conftest.py)
    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(names)
    def check(name):
        try:
            with runfolder.open_run_file(folder, name) as f:
                opened.append(name)
                assert Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).parent == folder.resolve()
        except (OSError, ValueError):  # ValueError: an embedded NUL byte
            pass

    for name in special:
        check = example(name)(check)
    check()
    assert set(opened) == {"config.json"}  # the one plain file inside (an @example) and no other
    assert runfolder.read_run_bytes(folder, "config.json") == b"{}"
