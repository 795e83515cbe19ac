"""Issue 21 item 5: what training reads is what the run records. A shard replaced or rewritten
while a training runs is named, and no run is saved as trained on that store (CLI: exit 2)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace

import pytest

from bharateo.training import distributed
from bharateo.storage import runs
from bharateo.cli import main
from bharateo.errors import ChipStoreError
from bharateo.training.experiment import RunConfig
from bharateo.storage.chipstore import ChipStore, build_store
from bharateo.training.loop import EpochMetrics, StepMetrics, TrainConfig
from tests.support.stores import CHIPS, make_rois
from tests.support.models import TINY_MODEL

STORE_CHIPS = replace(CHIPS, n_chips=12, n_holdout_chips=4)
CONFIG = RunConfig(model=TINY_MODEL,
                   train=TrainConfig(epochs=2, batch_size=4, seed=7))
VICTIM = "train-00001.labels.npy"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("changes") / "chips", make_rois(), STORE_CHIPS,
                       shard_size=4)


@pytest.fixture
def store(built, tmp_path):
    return shutil.copytree(built, tmp_path / "chips")


def rewrite_in_place(path, keep_mtime=False):
    """Flip one byte of the array data in place (same file, same size)."""
    info = path.stat()
    with open(path, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        byte = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x3]))
    if keep_mtime:  # a rewrite the size and time can't show: only the checksum can
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def replace_file(path, same_bytes=False):
    """Replace `path` by a new file (another inode): the same bytes, or one byte changed."""
    data = bytearray(path.read_bytes())
    if not same_bytes:
        data[-10] ^= 0x3
    new = path.with_name(path.name + ".new")
    new.write_bytes(bytes(data))
    os.replace(new, path)


def train_with_hook(store, change, when):
    """train_from_store under a reserved name, calling change() at the first event `when` picks."""
    done = []

    def on_event(event):
        if not done and when(event):
            done.append(event)
            change()

    name = runs.reserve_run_name("store-run")
    try:
        return distributed.train_from_store(CONFIG, store, name, on_event)
    finally:
        runs.release_run_name(name)


FIRST_STEP = lambda e: isinstance(e, StepMetrics)  # noqa: E731
LAST_EPOCH = lambda e: isinstance(e, EpochMetrics) and e.epoch == CONFIG.train.epochs  # noqa: E731


@pytest.mark.parametrize("change, when", [
    (rewrite_in_place, FIRST_STEP),  # read again in later steps: named at that read
    (replace_file, FIRST_STEP),
    (lambda p: rewrite_in_place(p, keep_mtime=True), LAST_EPOCH),  # never read again: the
], ids=["rewritten", "replaced", "rewritten-after-last-read"])  # check before saving names it
def test_a_shard_changed_during_training_is_named_and_no_run_is_saved(store, change, when):
    with pytest.raises(ChipStoreError, match=f"{VICTIM} changed while it was in use"):
        train_with_hook(store, lambda: change(store / VICTIM), when)
    assert runs.scan_runs() == ([], [])  # nothing saved, the reservation given back


def test_a_shard_replaced_by_the_same_bytes_still_trains_and_records_the_store(store):
    result = train_with_hook(store, lambda: replace_file(store / VICTIM, same_bytes=True), FIRST_STEP)
    saved = json.loads((result.path / "config.json").read_text())
    assert saved["chip_store"]["manifest_sha256"] == hashlib.sha256(
        (store / "manifest.json").read_bytes()).hexdigest()


def test_a_changed_manifest_is_named_before_the_save(store):
    manifest = store / "manifest.json"

    def change():
        data = json.loads(manifest.read_text())
        data["created"] = "2000-01-01T00:00:00+00:00"
        manifest.write_text(json.dumps(data))

    with pytest.raises(ChipStoreError, match="manifest.json changed"):
        train_with_hook(store, change, FIRST_STEP)
    assert runs.scan_runs() == ([], [])


def test_a_store_read_outside_training_names_a_shard_rewritten_since_it_was_opened(store):
    chips = ChipStore(store)
    chips.labels([4, 5])  # shard 1, checked and read
    rewrite_in_place(store / VICTIM)
    with pytest.raises(ChipStoreError, match=f"{VICTIM} changed while it was in use"):
        chips.labels([4, 5])


def test_cli_training_on_a_changed_store_exits_2_with_one_message(store, monkeypatch, capsys):
    import bharateo.cli as cli

    def printer(quiet):
        done = []

        def on_event(event):
            if not done and isinstance(event, StepMetrics):
                done.append(1)
                rewrite_in_place(store / VICTIM)
        return on_event

    monkeypatch.setattr(cli, "_progress_printer", printer)
    code = main(["train", "--run-name", "cli-store", "--chips-dir", str(store), "--embed-dim", "32",
                 "--depth", "1", "--heads", "2", "--epochs", "2", "--batch-size", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and VICTIM in err and "Traceback" not in err
    assert not runs.run_dir("cli-store").exists()
