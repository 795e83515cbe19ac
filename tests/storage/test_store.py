"""Chip store: shards on disk equal the in-memory chips; faults are named; training streams it."""
import errno
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bharateo.storage import chipstore as store_module
from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.cli import main
from bharateo.errors import ChipError, ChipStoreError
from bharateo.data.reflectance import BandStats
from bharateo.data.roi import Roi, RoiSpec
from bharateo.storage.chipstore import ChipStore, build_store, read_manifest
from bharateo.training.loop import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from bharateo.data.worldcover import IGNORE_INDEX
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import tiny_model_config
from tests.support.stores import CHIPS, S2_CHIPS, make_rois

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
            (lambda m: m["splits"]["train"]["shards"][0].update(name="../../etc"), r"shards\[0\]\.name"),
            (lambda m: m["splits"]["train"].update(chips=46), "hold 45 chips, not the 46"),
            (lambda m: m.update(chip_size="64"), "chip_size"),
            (lambda m: m.update(format="other"), "format"),
            (lambda m: m.update(bands=["B02", "B03", "B04", "B08"]),
             "not those of its chips' pixel source"),
            (lambda m: m["regions"][0].pop("spec"), r"'regions\[0\]\.spec' is missing")]:
        bad = json.loads(json.dumps(manifest))
        change(bad)
        (folder / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ChipStoreError, match=words):
            ChipStore(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ChipStoreError, match="not valid JSON"):
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
    model = make_model(tiny_model_config(img_size=64, patch_size=8), 0)
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
    from bharateo.data import chips as chips_module

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


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("a bug"), KeyboardInterrupt()])
def test_an_interrupted_build_leaves_no_store(tmp_path, monkeypatch, fault):
    """A fault after the first shard: a full disk is a clear message, a bug or Ctrl-C passes
    through as itself (a bug reworded as "try again" would hide it); either way nothing at `out`,
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
    expected = ChipStoreError if isinstance(fault, OSError) else type(fault)
    with pytest.raises(expected) as err:
        build_store(out, rois, CHIPS, shard_size=10)
    if expected is ChipStoreError:
        assert "the disk is full" in str(err.value) and "Nothing was kept" in str(err.value)
    assert seen and list(out.parent.iterdir()) == []  # neither the store nor its temporary folder


def test_the_store_is_not_bound_by_the_in_memory_chip_limit(tmp_path, monkeypatch):
    """Past MAX_IN_MEMORY_CHIPS, build_chip_sets refuses with a message naming the chip store,
    while build_store (which never holds the chip set) builds the same request; the chip settings
    accept the 1M-chip plan (docs/scale.md)."""
    from bharateo.data import chips as chips_module
    from bharateo.training.experiment import RunConfig

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


# --- Sentinel-2 stores: the real shared L2A crop with fixture labels (tests/support/s2_fixtures.py) ------
from bharateo.training.experiment import RunConfig, load_rois  # noqa: E402
from bharateo.data.sentinel2 import BANDS_4  # noqa: E402
from tests.support.s2_fixtures import DATES as S2_DATES, SAHARA, SCENE_DIR, SCENE_ID  # noqa: E402

needs_s2 = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
# S2_CHIPS (tests/support/stores.py): 20 training chips of the west half, 6 held out of the east
S2_MODEL = tiny_model_config(img_size=64, patch_size=16, in_chans=4)


def s2_built(tmp_path, chips=S2_CHIPS):
    """(store folder, in-memory training chips, in-memory held-out chips) from the same regions,
    read as `train --source s2-4band` reads them (pipeline.load_rois)."""
    rois = load_rois((SAHARA,), chips=chips)
    folder = build_store(tmp_path / "s2-chips", rois, chips, shard_size=7)
    return (folder, *build_chip_sets(rois, chips))


@needs_s2
def test_s2_store_round_trip_equals_the_in_memory_s2_chips(s2_env):
    folder, chips, heldout = s2_built(s2_env)
    stats = chips.band_stats
    for split, mem in (("train", chips), ("heldout", heldout)):
        disk = ChipStore(folder, split)
        disk.verify()
        assert disk.bands == BANDS_4 and disk.channels == 4 and len(disk) == len(mem)
        assert np.array_equal(disk.pixel_values(), mem.pixels)  # the reflectance, bit for bit
        assert np.array_equal(disk.labels(), mem.labels)
        assert np.array_equal(disk.patch_labels(), mem.patch_labels)
        roi_index, origins = disk.origins()
        assert np.array_equal(roi_index, mem.roi_index) and np.array_equal(origins, mem.origins)
        assert disk.band_stats == stats  # the training chips' statistics, held-out chips too
        idx = np.random.default_rng(1).permutation(len(mem))  # across shards, any order
        assert torch.equal(disk.tokens(idx), mem.tokens(idx))  # normalised as in memory
        other = BandStats(BANDS_4, (0.1,) * 4, (0.2,) * 4)  # a run's own statistics win
        assert torch.equal(disk.tokens(idx[:5], other), mem.tokens(idx[:5], other))
        back = disk.chip_set(idx[:4])
        assert np.array_equal(back.pixels, mem.pixels[idx[:4]]) and back.band_stats == stats
    m = read_manifest(folder)
    assert m["bands"] == list(BANDS_4) and m["chip_config"] == S2_CHIPS.to_dict()
    assert BandStats.from_dict(m["band_stats"]) == stats
    region = m["regions"][0]
    assert (region["scene_id"], region["bands"], region["crs"]) == (SCENE_ID, list(BANDS_4),
                                                                    "EPSG:32629")
    assert region["scene_date"] == "2020-02-19" and "synthetic test fixture" in region["data_label"]
    shard = m["splits"]["train"]["shards"][1]
    assert set(shard["files"]) == {"labels", "patches", "origins", "pixels"}
    raw = np.load(folder / "train-00001.pixels.npy", allow_pickle=False)  # plain NumPy reads it
    assert raw.dtype == np.float32 and raw.shape == (7, 4, 64, 64)
    with pytest.raises(ChipStoreError, match="palette-RGB"):  # palette stores hold no values
        ChipStore(build_store(s2_env / "p", make_rois(), CHIPS)).pixel_values([0])


@needs_s2
def test_training_from_an_s2_store_is_the_in_memory_s2_training(s2_env):
    """Same seed: the same losses bit for bit, and the model carries the store's statistics."""
    folder, chips, heldout = s2_built(s2_env)
    config = TrainConfig(epochs=2, batch_size=8, seed=5)
    runs = []
    for train_chips, held in ((chips, heldout), (ChipStore(folder), ChipStore(folder, "heldout"))):
        model = make_model(S2_MODEL, 0)
        events = list(train(model, train_chips, config, held))
        runs.append(([(e.loss, e.rec, e.esa, e.rec_mae, e.esa_acc) for e in events
                      if isinstance(e, StepMetrics)], events[-1], model))
    (mem_steps, mem_end, mem_model), (disk_steps, disk_end, disk_model) = runs
    assert disk_end.reason == "finished" and len(disk_steps) == 2 * 3
    assert disk_steps == mem_steps
    assert disk_end.history[-1]["heldout_rec_mae"] == mem_end.history[-1]["heldout_rec_mae"]
    assert disk_model.band_stats == mem_model.band_stats == chips.band_stats
    state = mem_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in disk_model.state_dict().items())


@needs_s2
@pytest.mark.parametrize("damage", ["flip", "truncate", "stats"])
def test_a_damaged_pixels_shard_is_named(s2_env, damage):
    folder = s2_built(s2_env, replace(S2_CHIPS, holdout_roi=None, holdout_block=None))[0]
    victim = folder / "train-00001.pixels.npy"
    data = victim.read_bytes()
    if damage == "flip":
        victim.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
        disk = ChipStore(folder)
        disk.tokens([0, 6])  # shard 0 is fine
        with pytest.raises(ChipStoreError, match="train-00001.pixels.npy is damaged"):
            disk.tokens([3, 9])  # chip 9 lies in shard 1
        with pytest.raises(ChipStoreError, match="train-00001.pixels.npy is damaged"):
            ChipStore(folder).verify()
    elif damage == "truncate":
        victim.write_bytes(data[:-64])
        with pytest.raises(ChipStoreError, match="train-00001.pixels.npy.*Rebuild the store"):
            ChipStore(folder)
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["band_stats"]["std"][2] = 0.0
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ChipStoreError, match="band statistics"):
            ChipStore(folder)


@needs_s2
def test_cli_builds_an_s2_store_and_trains_a_4band_run_from_it(s2_env, capsys):
    """`chips build --source s2-4band --dates --max-cloud` reads the regions as `train --source`
    does; `train --chips-dir` saves a 4-band run with the statistics an in-memory run records,
    which loads and evaluates and reconstructs as the app does."""
    from bharateo.training import evaluate as ev
    from bharateo.storage.runs import load_model, load_run

    out = s2_env / "store"
    region = f"{SAHARA.name},{SAHARA.lon},{SAHARA.lat},{SAHARA.size}"
    assert main(["chips", "build", "--out", str(out), "--source", "s2-4band", "--dates", S2_DATES,
                 "--max-cloud", "20", "--region", region, "--n-chips", "20", "--chip-size", "64",
                 "--holdout-roi", SAHARA.name, "--holdout-block", "east", "--n-holdout-chips",
                 "6", "--seed", "4", "--shard-size", "7", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "20 chips in 3 shard(s)" in printed and "bands B02 B03 B04 B08" in printed
    assert SCENE_ID in printed
    assert main(["chips", "verify", str(out)]) == 0
    assert main(["train", "--run-name", "s2-store", "--chips-dir", str(out), "--embed-dim", "32",
                 "--depth", "1", "--heads", "2", "--epochs", "1", "--batch-size", "8",
                 "--quiet"]) == 0
    run = load_run("s2-store")
    config = RunConfig.from_dict(run.config)
    assert run.config["model"]["in_chans"] == 4 and config.chips == S2_CHIPS
    rois = load_rois(config.rois, chips=config.chips)  # what the app reads for the run
    chips, heldout = build_chip_sets(rois, config.chips)
    assert BandStats.from_dict(run.config["band_stats"]) == chips.band_stats
    assert run.config["data"][0]["scene_id"] == SCENE_ID
    model = load_model(run)
    assert model.config.in_chans == 4 and model.band_stats == chips.band_stats
    rec = ev.reconstruct_chip(model, chips, 0, 0.75)  # Reconstruct's panels, in true colour
    assert rec.target.shape == (64, 64, 3) and rec.false_colour is not None
    assert ev.evaluate(model, heldout)["chips"] == 6  # Evaluate's held-out scores
    # the wrong source for the dates: refused before anything is read
    assert main(["chips", "build", "--out", str(s2_env / "x"), "--source", "s2-4band",
                 "--dates", "2020-03-01/2020-01-01", "--region", region, "--quiet"]) == 2
    assert "ends before it starts" in capsys.readouterr().err


# --- issue 21.8: a path flag that can't be used says what is wrong with it, before any work ----
def test_cli_path_flags_say_what_is_wrong_with_the_path(tmp_path, capsys, monkeypatch):
    """`chips build --out /etc/passwd/x` cut every chip, then reported that the output
    "appeared meanwhile"."""
    def no_reading(*args, **kwargs):
        raise AssertionError("regions read before the path was checked")

    monkeypatch.setattr("bharateo.training.experiment.load_rois", no_reading)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = {  # argv -> what the one line must say
        ("chips", "build", "--out", str(a_file / "x")): f"--out {a_file / 'x'}: {a_file} is a file, not a folder",
        ("chips", "build", "--out", str(a_file / "x" / "y")): f"{a_file} is a file, not a folder",
        ("chips", "build", "--out", str(a_file)): "already exists",
        ("chips", "verify", str(tmp_path / "missing")): f"there is no folder {tmp_path / 'missing'}",
        ("chips", "verify", str(a_file)): "is a file, not a folder",
        ("train", "--run", "r", "--chips-dir", str(a_file)): f"--chips-dir {a_file}: {a_file} is a file",
    }
    for argv, words in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "appeared meanwhile" not in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err  # one plain line


def test_build_store_refuses_an_unusable_folder_before_cutting_chips(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setattr(store_module, "plan_chips", lambda *a: pytest.fail("chips planned"))
    with pytest.raises(ChipStoreError, match="is a file, not a folder"):
        build_store(a_file / "store", make_rois(), CHIPS)
