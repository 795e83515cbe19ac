"""Chip store: shards on disk equal the in-memory chips; faults are named; training streams it."""
import errno
import json

import numpy as np
import pytest
import torch

from bharateo import store as store_module
from bharateo.chips import ChipConfig, build_chip_sets
from bharateo.cli import main
from bharateo.errors import ChipError, ChipStoreError
from bharateo.model import ModelConfig
from bharateo.roi import Roi, RoiSpec
from bharateo.store import ChipStore, build_store, read_manifest
from bharateo.train import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from bharateo.worldcover import IGNORE_INDEX
from tests.fixture_tiles import synthetic_native

# 64 px chips of 8 px patches: a sea strip 6 px wide makes whole patches at least half no-data
CHIPS = ChipConfig(n_chips=45, chip_size=64, patch_size=8, holdout_roi="b", holdout_block="east",
                   n_holdout_chips=7, seed=3)


def make_rois():
    """Two 384 px synthetic regions (in memory, labelled as such); 'a' has a no-data strip."""
    a = synthetic_native(384, 384, seed=1, class_weights="urban")
    a[:, :40] = 0  # open sea / outside coverage along the west edge
    b = synthetic_native(384, 384, seed=2, class_weights="cropland")
    return [Roi(RoiSpec("a", 0.0, 0.0, 384), a, {"synthetic": True, "source": "fixture a"}),
            Roi(RoiSpec("b", 0.0, 0.0, 384), b, {"synthetic": True, "source": "fixture b"})]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(store folder, in-memory training chips, in-memory held-out chips) from the same cut."""
    rois = make_rois()
    folder = build_store(tmp_path_factory.mktemp("store") / "chips", rois, CHIPS, shard_size=10)
    train_chips, heldout = build_chip_sets(rois, CHIPS)
    return folder, train_chips, heldout


def copy_store(folder, tmp_path):
    import shutil
    return shutil.copytree(folder, tmp_path / "copy")


def test_round_trip_equals_in_memory_chips(built):
    folder, chips, heldout = built
    assert chips.ignored_patches() > 0  # the no-data rule is exercised
    for split, mem in (("train", chips), ("heldout", heldout)):
        disk = ChipStore(folder, split)
        assert len(disk) == len(mem) and (disk.chip_size, disk.patch_size) == (64, 8)
        assert disk.channels == 3 and disk.bands == ("red", "green", "blue")
        assert np.array_equal(disk.labels(), mem.labels)
        assert np.array_equal(disk.patch_labels(), mem.patch_labels)
        roi_index, origins = disk.origins()
        assert np.array_equal(roi_index, mem.roi_index) and np.array_equal(origins, mem.origins)
        assert disk.roi_names == mem.roi_names and disk.chips_per_roi() == mem.chips_per_roi()
        assert disk.rejected_nodata == mem.rejected_nodata
        idx = np.random.default_rng(0).permutation(len(mem))  # across shards, any order
        assert torch.equal(disk.tokens(idx), mem.tokens(idx))  # bit-identical tokens
        assert torch.equal(disk.patch_targets(idx), mem.patch_targets()[idx])
        assert torch.equal(disk.tokens(slice(3, 17)), mem.tokens(slice(3, 17)))
    assert (IGNORE_INDEX == ChipStore(folder).patch_labels()).any()
    m = read_manifest(folder)
    assert m["chip_config"] == CHIPS.to_dict()
    assert [r["spec"]["name"] for r in m["regions"]] == ["a", "b"]
    assert [r["source"] for r in m["regions"]] == ["fixture a", "fixture b"]
    assert {r["data_label"] for r in m["regions"]} == {"synthetic test fixture"}
    assert [s["chips"] for s in m["splits"]["train"]["shards"]] == [10, 10, 10, 10, 5]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["chips"]  # no temp folder left


@pytest.mark.parametrize("damage, when", [("flip", "read"), ("truncate", "open"),
                                          ("delete", "open")])
def test_damaged_or_missing_shard_is_named(built, tmp_path, damage, when):
    folder = copy_store(built[0], tmp_path)
    victim = folder / "train-00002.labels.npy"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:-64]))
    else:
        victim.unlink()
    if when == "open":
        with pytest.raises(ChipStoreError, match="train-00002.labels.npy") as err:
            ChipStore(folder)
    else:
        disk = ChipStore(folder)
        disk.tokens([0, 1])  # shard 0 is fine
        with pytest.raises(ChipStoreError, match="train-00002.labels.npy.*damaged") as err:
            disk.tokens([5, 23])  # chip 23 lies in shard 2
        with pytest.raises(ChipStoreError, match="train-00002.labels.npy"):
            ChipStore(folder).verify()
    assert "Rebuild the store" in str(err.value)


def test_bad_manifests_are_refused(built, tmp_path):
    folder = copy_store(built[0], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(ChipStoreError, match="not a chip store"):
        ChipStore(tmp_path)
    for change, words in [
            (lambda m: m["splits"]["train"]["shards"][0].update(name="../../etc"), "bad name"),
            (lambda m: m["splits"]["train"].update(chips=46), "hold 45 chips, not the 46"),
            (lambda m: m.update(chip_size="64"), "chip_size"),
            (lambda m: m.update(format="other"), "format"),
            (lambda m: m["regions"][0].pop("spec"), "needs its 'spec'")]:
        bad = json.loads(json.dumps(manifest))
        change(bad)
        (folder / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ChipStoreError, match=words):
            ChipStore(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ChipStoreError, match="unreadable"):
        ChipStore(folder)


def test_build_is_atomic(tmp_path, monkeypatch):
    rois = make_rois()
    (tmp_path / "stores").mkdir()
    out = tmp_path / "stores" / "store"
    calls = []
    real = store_module._write_new

    def full_disk(path, data):
        calls.append(path.name)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store_module, "_write_new", full_disk)
    with pytest.raises(ChipStoreError, match="disk is full.*Nothing was kept"):
        build_store(out, rois, CHIPS, shard_size=10)
    assert list(out.parent.iterdir()) == []  # neither the store nor its temporary folder
    monkeypatch.setattr(store_module, "_write_new", real)
    build_store(out, rois, CHIPS, shard_size=10)
    with pytest.raises(ChipStoreError, match="already exists"):
        build_store(out, rois, CHIPS)
    with pytest.raises(ChipStoreError, match="Shard size"):
        build_store(tmp_path / "other", rois, CHIPS, shard_size=0)


def run_events(chips, heldout, config):
    model = make_model(ModelConfig(img_size=64, patch_size=8, embed_dim=32, depth=1, heads=2), 0)
    events = list(train(model, chips, config, heldout))
    return events, model.state_dict()


def test_training_from_the_store_is_the_in_memory_training(built, monkeypatch):
    """Same losses and weights bit for bit; the store is read one batch at a time."""
    folder, chips, heldout = built
    config = TrainConfig(epochs=2, batch_size=8, seed=5)
    disk, disk_held = ChipStore(folder), ChipStore(folder, "heldout")
    rows_read = []
    real = ChipStore._read

    def spy(self, kind, index):
        out = real(self, kind, index)
        rows_read.append(len(out))
        return out

    monkeypatch.setattr(ChipStore, "_read", spy)
    a, weights_a = run_events(chips, heldout, config)
    b, weights_b = run_events(disk, disk_held, config)
    assert isinstance(a[-1], TrainingEnd) and a[-1].reason == "finished"
    steps = [(e.loss, e.rec, e.esa, e.rec_mae, e.esa_acc) for e in a if isinstance(e, StepMetrics)]
    assert steps == [(e.loss, e.rec, e.esa, e.rec_mae, e.esa_acc) for e in b
                     if isinstance(e, StepMetrics)]
    assert a[-1].history[-1]["heldout_rec_mae"] == b[-1].history[-1]["heldout_rec_mae"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # memory that does not grow with the chip count: never more than a batch (or an evaluation
    # batch of held-out chips) is read at once
    assert rows_read and max(rows_read) <= max(config.batch_size, len(heldout))
    assert sum(rows_read) >= 2 * 2 * len(chips)  # tokens and targets, every epoch


def test_cli_builds_verifies_and_trains_from_a_store(worldcover_dir, tmp_path, capsys):
    out = tmp_path / "store"
    args = ["chips", "build", "--out", str(out), "--n-chips", "24", "--chip-size", "64",
            "--shard-size", "10", "--region", "delhi_ncr,77.23,28.61,512",
            "--region", "shekhawati,75.80,28.50,512", "--quiet"]
    assert main(args) == 0
    assert "24 chips in 3 shard(s)" in capsys.readouterr().out
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["chips", "verify", str(out)]) == 0
    assert main(["train", "--run", "s", "--chips-dir", str(out), "--n-chips", "10"]) == 2
    assert "drop the chip and region flags" in capsys.readouterr().err
    assert main(["train", "--run-name", "s", "--chips-dir", str(out), "--embed-dim", "32",
                 "--depth", "1", "--heads", "2", "--epochs", "1", "--quiet"]) == 0
    saved = json.loads((tmp_path / "checkpoints" / "s" / "config.json").read_text())
    assert saved["chips"]["n_chips"] == 24 and saved["model"]["img_size"] == 64
    assert [r["spec"]["name"] for r in saved["data"]] == ["delhi_ncr", "shekhawati"]
    assert saved["chip_store"]["chips"] == 24 and saved["distributed"]["world_size"] == 1
    shard = out / "train-00001.patches.npy"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x07")
    assert main(["chips", "verify", str(out)]) == 2
    assert "train-00001.patches.npy is damaged" in capsys.readouterr().err
    assert main(["chips", "build", "--out", str(tmp_path / "x"), "--region", "bad,1"]) == 2
    assert "NAME,LON,LAT" in capsys.readouterr().err


def three_rois():
    """make_rois plus a third region of another kind, so chips are cut from several regions."""
    c = synthetic_native(320, 320, seed=5, class_weights="arid")
    return make_rois() + [Roi(RoiSpec("c", 0.0, 0.0, 320), c, {"synthetic": True, "source": "c"})]


@pytest.mark.parametrize("config", [
    CHIPS,  # with a held-out half and a region holding no-data
    ChipConfig(n_chips=61, chip_size=64, patch_size=8, holdout_roi="c", n_holdout_chips=9, seed=8),
    ChipConfig(n_chips=40, chip_size=32, patch_size=8, min_classes=3, seed=11)])
def test_streamed_build_is_the_in_memory_build_written_shard_by_shard(tmp_path, monkeypatch,
                                                                      config):
    """Chip for chip, label for label, in the same order, while each shard is written before the
    next chips are even drawn: memory holds a shard and one sampling batch, not the chip set."""
    from bharateo import chips as chips_module

    rois = three_rois()
    mem_train, mem_held = build_chip_sets(rois, config)  # default batches: one per request here
    monkeypatch.setattr(chips_module, "CHUNK_BYTES", 3 * config.chip_size ** 2)  # 3-chip batches
    drawn, at_write, written = [], [], []
    real_write = store_module._write_shard

    def spy(folder, name, labels, *rest):
        at_write.append(drawn[-1])  # chips drawn so far when this shard is written
        written.append(len(labels))
        return real_write(folder, name, labels, *rest)

    monkeypatch.setattr(store_module, "_write_shard", spy)
    folder = build_store(tmp_path / "s", rois, config, shard_size=7,
                         progress=lambda done, total: drawn.append(done))
    for split, mem in (("train", mem_train), ("heldout", mem_held)):
        if mem is None:
            assert split not in read_manifest(folder)["splits"]
            continue
        disk = ChipStore(folder, split)
        disk.verify()
        assert np.array_equal(disk.labels(), mem.labels)
        assert np.array_equal(disk.patch_labels(), mem.patch_labels)
        roi_index, origins = disk.origins()
        assert np.array_equal(roi_index, mem.roi_index) and np.array_equal(origins, mem.origins)
        assert disk.chips_per_roi() == mem.chips_per_roi()
        assert disk.rejected_nodata == mem.rejected_nodata
    total = len(mem_train) + (len(mem_held) if mem_held is not None else 0)
    assert max(written) == 7 and drawn[-1] == total
    assert at_write[0] < 7 + 3  # the first shard went out once 7 chips were in, not at the end
    assert all(done - sum(written[:i + 1]) < 7 + 3 for i, done in enumerate(at_write))


@pytest.mark.parametrize("fault", [RuntimeError("injected fault"), KeyboardInterrupt()])
def test_an_interrupted_build_leaves_no_store(tmp_path, monkeypatch, fault):
    """A fault after the first shard: a clear message (Ctrl-C passes through), nothing at `out`,
    no temporary folder; and at that moment the half-written folder opens as no store at all
    (the manifest comes last), so a build killed there can't pass for a complete one."""
    rois, out = make_rois(), tmp_path / "stores" / "store"
    real_write, seen = store_module._write_shard, []

    def fail_after_first(folder, *args):
        if seen:
            with pytest.raises(ChipStoreError, match="not a chip store"):
                ChipStore(folder)  # what `chips verify` or training would find after a kill
            assert not (folder / "manifest.json").exists()
            raise fault
        seen.append(real_write(folder, *args))
        return seen[-1]

    monkeypatch.setattr(store_module, "_write_shard", fail_after_first)
    expected = ChipStoreError if isinstance(fault, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        build_store(out, rois, CHIPS, shard_size=10)
    if expected is ChipStoreError:
        assert "stopped part-way (RuntimeError: injected fault)" in str(err.value)
        assert "Nothing was kept" in str(err.value)
    assert seen and list(out.parent.iterdir()) == []  # neither the store nor its temporary folder


def test_the_store_is_not_bound_by_the_in_memory_chip_limit(tmp_path, monkeypatch):
    """Past MAX_IN_MEMORY_CHIPS, build_chip_sets refuses with a message naming the chip store,
    while build_store (which never holds the chip set) builds the same request; the chip settings
    accept the 1M-chip plan (docs/scale.md)."""
    from bharateo import chips as chips_module
    from bharateo.pipeline import RunConfig

    RunConfig(rois=(RoiSpec("a", 77.0, 28.0, 512),), chips=ChipConfig(n_chips=1_000_000)).validate()
    monkeypatch.setattr(chips_module, "MAX_IN_MEMORY_CHIPS", 44)
    with pytest.raises(ChipError, match=r"45 training chips are more than the 44 .*chips build "
                                        r"--out"):
        build_chip_sets(make_rois(), CHIPS)
    assert len(ChipStore(build_store(tmp_path / "s", make_rois(), CHIPS))) == 45


def test_ctrl_c_in_chips_build_is_a_sentence_and_leaves_nothing(worldcover_dir, tmp_path,
                                                                monkeypatch, capsys):
    """Ctrl-C part-way through `chips build`: exit 130 with a sentence, no traceback, no store."""
    real_write = store_module._write_shard

    def interrupt_after_first(folder, *args):
        if list(folder.glob("*.npy")):
            raise KeyboardInterrupt
        return real_write(folder, *args)

    monkeypatch.setattr(store_module, "_write_shard", interrupt_after_first)
    out = tmp_path / "stores" / "store"
    assert main(["chips", "build", "--out", str(out), "--n-chips", "24", "--chip-size", "64",
                 "--shard-size", "10", "--region", "delhi_ncr,77.23,28.61,512", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "stopped (Ctrl-C)" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []
