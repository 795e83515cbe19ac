"""Issue 11, items 2-4 and 6 (checkpoints, CLI): damaged runs break nothing else, no training is
lost at save time, diverged runs keep the last good weights, NaN never crashes a save, and disk
faults and edge values give plain messages."""
from __future__ import annotations

import datetime as dt
import errno
import json
import shutil
import math
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bharateo.storage import runs
from bharateo.app import results, train as studio
from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.errors import ConfigError, RunDamagedError, RunNameError, RunNotFoundError, RunSaveError
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.training.experiment import PRESETS, RunConfig, run_experiment, save_experiment
from bharateo.data.roi import Roi, RoiSpec
from bharateo.storage.runs import (delete_run, list_runs, load_model, load_run, rename_run, reserve_run_name,
                           save_run, scan_runs, write_run_file)
from bharateo.training.loop import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from tests.support.cli import run_cli
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import TINY_MODEL, tiny_model_config


@pytest.fixture(scope="module")
def rois():
    return [Roi(RoiSpec(name, 0.0, 0.0, 512), synthetic_native(512, 512, seed=i, class_weights=kind))
            for i, (name, kind) in enumerate([("a", "urban"), ("b", "arid"), ("c", "cropland")])]


CONFIG = RunConfig(rois=tuple(RoiSpec(n, 0.0, 0.0, 512) for n in "abc"),
                   chips=ChipConfig(n_chips=24, chip_size=64, holdout_roi="c", n_holdout_chips=8),
                   model=TINY_MODEL, train=TrainConfig(epochs=1))


@pytest.fixture(scope="module")
def result(rois):
    return run_experiment(CONFIG, rois=rois)


def save(result, rois, name):
    return save_experiment(name, CONFIG, result, rois)


def edit_json(path: Path, filename: str, change):
    data = json.loads((path / filename).read_text())
    data = change(data)
    (path / filename).write_text(json.dumps(data))


# --- item 2: a damaged run breaks nothing else -----------------------------------------------
def _set(section, key, value):
    def change(d):
        d[section][key] = value
        return d
    return change


def _pop(key):
    def change(d):
        d.pop(key)
        return d
    return change


DAMAGES = {  # name: (file, change, words in the reason)
    "missing-train": ("config.json", _pop("train"), "'train' is missing"),
    "text-score": ("metrics.json", lambda d: {**d, "train_rec_mae": "abc"}, "train_rec_mae"),
    "config-list": ("config.json", lambda d: [d], "list, not an object"),
    "saved-at-int": ("config.json", lambda d: {**d, "saved_at": 1234567}, "saved_at"),
    "embed-text": ("config.json", _set("model", "embed_dim", "64"), "embed_dim' must be a whole number"),
    "embed-1e6": ("config.json", _set("model", "embed_dim", 1e6), "embed_dim' must be a whole number"),
    "embed-huge-int": ("config.json", _set("model", "embed_dim", 10**6), "Embed dim must be between"),
    "history-dict": ("history.json", lambda d: {"epochs": d}, "history.json holds a JSON dict"),
    "score-object": ("history.json", lambda d: [{**d[0], "loss": {"x": 1}}], "loss"),
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_run_is_listed_with_its_reason_and_the_others_still_work(rois, result, kind):
    filename, change, words = DAMAGES[kind]
    save(result, rois, "good")
    edit_json(save(result, rois, "bad"), filename, change)
    good, damaged = scan_runs()
    assert [r.name for r in good] == ["good"] and [r.name for r in list_runs()] == ["good"]
    assert [d.name for d in damaged] == ["bad"] and words in damaged[0].reason
    table = studio.runs_table(good, damaged)
    assert table["run"].tolist() == ["good", "bad"] and table["status"].tolist()[1] == "damaged"
    with pytest.raises(RunDamagedError, match="can't be used"):
        load_run("bad")
    load_model(load_run("good"))
    delete_run("bad")
    assert scan_runs()[1] == [] and [r.name for r in list_runs()] == ["good"]


def test_unreadable_files_are_damaged_too(rois, result):
    (save(result, rois, "no-json") / "config.json").write_text("{not json")
    (save(result, rois, "no-weights") / "model.pt").unlink()
    reasons = {d.name: d.reason for d in scan_runs()[1]}
    assert "not valid JSON" in reasons["no-json"] and "model.pt is missing" in reasons["no-weights"]
    rename_run("no-json", "kept-for-later")  # a damaged run can be renamed to keep its files
    assert {d.name for d in scan_runs()[1]} == {"kept-for-later", "no-weights"}


@pytest.mark.parametrize("kw, words", [(dict(embed_dim="64"), "whole number"),
                                       (dict(embed_dim=1e6), "whole number"),
                                       (dict(embed_dim=2**20), "Embed dim must be between"),
                                       (dict(embed_dim=1024, depth=32, heads=8), "parameters"),
                                       (dict(patch_size=1, img_size=1024), "patches per chip"),
                                       (dict(heads=True), "whole number")])
def test_model_sizes_are_checked_before_anything_is_allocated(kw, words, monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("a tensor was allocated for an invalid config")
    monkeypatch.setattr(torch.nn.Linear, "__init__", no_allocation)
    with pytest.raises(ConfigError, match=words):
        TinyRGBMAE(ModelConfig(**kw))


def _malicious_pt(path: Path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))
    path.write_bytes(pickle.dumps({"patch_embed.weight": Payload()}))


@pytest.mark.parametrize("damage", ["malicious", "truncated", "not-a-state-dict"])
def test_a_damaged_or_malicious_model_pt_gives_a_plain_message(rois, result, damage):
    path = save(result, rois, "evil")
    pt = path / "model.pt"
    if damage == "malicious":
        _malicious_pt(pt)
    elif damage == "truncated":
        pt.write_bytes(pt.read_bytes()[:200])
    else:
        torch.save([torch.zeros(3)], pt)
    with pytest.raises(RunDamagedError) as info:
        load_model(load_run("evil"))
    assert "damaged" in str(info.value) and "weights_only" not in str(info.value)


# --- item 3: no training lost at save time ---------------------------------------------------
def test_two_sessions_choosing_the_same_name_both_keep_their_training(rois, result):
    first, second = studio.free_run_name("same"), studio.free_run_name("same")  # Train clicks
    assert (first, second) == ("same", "same-2")
    assert save(result, rois, second).name == "same-2"
    assert save(result, rois, first).name == "same"
    assert sorted(r.name for r in list_runs()) == ["same", "same-2"] and scan_runs()[1] == []


def test_a_collision_found_at_save_saves_under_a_free_name(rois, result):
    name = reserve_run_name("busy")
    shutil.rmtree(runs.run_dir("busy"))  # the reservation removed by hand meanwhile ...
    save(result, rois, "busy")  # ... and a CLI run took the name
    before = (runs.run_dir("busy") / "model.pt").read_bytes()
    path = save(result, rois, name)
    assert path.name == "busy-2" and (runs.run_dir("busy") / "model.pt").read_bytes() == before
    assert {r.name for r in list_runs()} == {"busy", "busy-2"}


def test_a_taken_64_character_name_gets_a_suffix_that_fits(rois, result):
    long = "x" * 64
    save(result, rois, long)
    other = studio.free_run_name(long)
    assert len(other) == 64 and other.endswith("-2") and other != long
    assert save(result, rois, other).name == other
    assert save(result, rois, long).name == "x" * 62 + "-3"  # plain save of a taken name too


def test_automatic_names_are_unique_for_two_clicks_in_the_same_second(monkeypatch):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 11, 30, 6, 0, 0)
    monkeypatch.setattr(studio.dt, "datetime", Frozen)
    a, b = (studio.free_run_name(studio.default_run_name(CONFIG)) for _ in range(2))
    assert a != b and runs.run_dir(a).is_dir() and runs.run_dir(b).is_dir()


def test_a_reservation_is_listed_and_released_when_nothing_was_saved(rois, result):
    name = reserve_run_name("pending")
    (reserved,) = scan_runs()[1]
    assert reserved.reserved and "has not saved yet" in reserved.reason
    runs.release_run_name(name)
    assert not runs.run_dir("pending").exists()
    saved = reserve_run_name("kept")
    save(result, rois, saved)
    runs.release_run_name(saved)  # after a save: nothing to give back
    assert [r.name for r in list_runs()] == ["kept"]


def test_a_reservation_with_leftovers_stays_a_reservation_and_the_run_saves_elsewhere(rois, result):
    """A file left in our reservation: the marker was removed before the emptiness check, so the
    folder lost it and was listed as a damaged run forever."""
    name = reserve_run_name("leftover")
    (runs.run_dir("leftover") / "stray.tmp").write_text("x")
    saved = save(result, rois, name)
    assert saved.name == "leftover-2" and (saved / "config.json").exists()
    usable, damaged = scan_runs()
    assert [r.name for r in usable] == ["leftover-2"]
    (left,) = damaged
    assert left.name == "leftover" and left.reserved  # deletable as a reservation, not "damaged"


def test_a_running_trainings_reservation_is_not_renamed_or_deleted_under_it():
    from bharateo.errors import RunNameError

    reserve_run_name("busy")  # this process is alive: a training still running
    for action in (lambda: rename_run("busy", "moved"), lambda: delete_run("busy")):
        with pytest.raises(RunNameError, match="still running"):
            action()
    assert runs.run_dir("busy").is_dir() and not runs.run_dir("moved").exists()
    marker = runs.run_dir("busy") / runs.RESERVED
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "pid": 2**22 + 7}))
    delete_run("busy")  # a reservation whose training is gone can be deleted
    assert not runs.run_dir("busy").exists()


def test_evaluating_a_deleted_run_does_not_recreate_its_folder(rois, result):
    run = load_run(save(result, rois, "gone").name)
    delete_run("gone")
    with pytest.raises(RunNotFoundError):
        write_run_file(run, "evaluation_x.json", {"a": 1})
    results.clear_memory()
    chips, _ = build_chip_sets(rois, CONFIG.chips)
    stored = results.stored_result("evaluation", result.model, chips, {"p": 1}, lambda: {"v": 1}, run)
    assert stored.value == {"v": 1} and stored.filename is None
    assert not run.path.exists()


# --- item 4: diverged runs keep the last good weights; NaN never crashes a save ---------------
def test_divergence_at_lr_1_keeps_the_weights_of_the_step_before(rois):
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=48, chip_size=64))
    model = make_model(tiny_model_config(img_size=64), 0)
    after_step = [{k: v.clone() for k, v in model.state_dict().items()}]  # [0]: before any step
    for event in train(model, chips, TrainConfig(epochs=20, lr=1.0)):
        if isinstance(event, StepMetrics):
            after_step.append({k: v.clone() for k, v in model.state_dict().items()})
    assert isinstance(event, TrainingEnd) and event.reason == "diverged"
    # the step that diverged computed its loss with after_step[-1]; the good ones before it
    expected = after_step[-2]
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, after_step[-1][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("lr", [1e6, 1e9])
def test_lr_1e6_with_a_held_out_region_is_saved_with_null_for_nan(rois, lr):
    # one step an epoch: the step's loss is fine, its update breaks the weights, and the epoch's
    # held-out metrics were computed from those. On these fixture chips the small model reaches
    # NaN at 1e9 (1e6 gives ~2e13): NaN went into history.json and the save crashed.
    config = replace(CONFIG, chips=replace(CONFIG.chips, n_chips=16), train=TrainConfig(epochs=2, lr=lr))
    res = run_experiment(config, rois=rois, name="exploded")
    assert res.end.reason == "diverged"
    run = load_run("exploded")  # strict JSON, loaded back
    assert all(torch.isfinite(p).all() for p in load_model(run).parameters())
    def refuse(constant):
        raise AssertionError(f"{constant} written to JSON")
    for name in ("metrics.json", "history.json"):
        json.loads((run.path / name).read_text(), parse_constant=refuse)
    assert run.metrics["heldout_rec_mae"] is None or math.isfinite(run.metrics["heldout_rec_mae"])


def test_non_finite_metrics_are_written_as_null_and_shown_as_a_dash(rois, result):
    metrics = {**result.metrics, "heldout_rec_mae": float("nan"), "train_esa_acc": float("inf")}
    history = [{**result.history[0], "heldout_rec_mae": float("-inf")}]
    save_run("nan-run", result.model, {**CONFIG.to_dict()}, history, metrics)
    run = load_run("nan-run")
    assert run.metrics["heldout_rec_mae"] is None and run.metrics["train_esa_acc"] is None
    assert run.history[0]["heldout_rec_mae"] is None
    row = studio.runs_table([run]).iloc[0]
    assert row["held-out MAE"] == "—" and row["ESA acc"] == "—"


def test_the_runs_and_compare_tables_show_accuracy_beside_its_baselines_first(rois, result):
    """A page-wide table shows its first columns: the accuracies and their baselines lead, so
    a class never sees an accuracy without them (they were once past the right edge)."""
    save(result, rois, "first")
    run = load_run("first")
    for table, lead in ((studio.runs_table([run]), ["run", "status"]),
                        (studio.compare_table([run]), ["run"])):
        columns = list(table.columns)
        assert columns[:len(lead) + 4] == [*lead, "ESA acc", "majority", "balanced", "reading"]
        assert columns.index("held-out reading") < columns.index("masked MAE") < columns.index("model")



def test_a_learning_rate_changed_while_paused_says_from_which_step():
    controls = [{"action": "paused", "after_step": 15},
                {"action": "changed", "from_step": 16, "progress": 1.25, "settings": {"lr": 8e-4}}]
    assert studio.changed_text(8e-4, "lr", controls) == "0.0008 from step 16"
    assert studio.changed_text(8e-4, "mask_ratio", controls) == "0.0008"  # lr was what changed
    assert studio.changed_text(4e-4, "lr", None) == "0.0004"
    assert studio.changed_text(4e-4, "lr", [{"action": "changed", "settings": "junk"}]) == "0.0004"


# --- item 6: full or read-only checkpoints, CLI edge values -----------------------------------
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"),
                                         (errno.EACCES, "read-only"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_folder_says_what_and_where_and_leaves_nothing(rois, result, monkeypatch,
                                                                           isolated_env, code, words):
    save(result, rois, "earlier")

    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))
    name = reserve_run_name("late")
    with monkeypatch.context() as patch, pytest.raises(RunSaveError) as info:
        patch.setattr(runs, "_write_file", refuse)
        save(result, rois, name)
    message = str(info.value)
    assert words in message and str(isolated_env["checkpoints"]) in message and "'late'" in message
    assert sorted(p.name for p in isolated_env["checkpoints"].iterdir()) == ["earlier", "late"]
    assert [d.name for d in scan_runs()[1] if d.reserved] == ["late"]  # still ours, nothing half-written
    assert save(result, rois, name).name == "late"  # room again: the same result saves
    assert sorted(r.name for r in list_runs()) == ["earlier", "late"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_checkpoints_folder_refuses_the_reservation_in_words(isolated_env):
    folder = isolated_env["checkpoints"]
    folder.chmod(0o555)
    try:
        with pytest.raises(RunSaveError, match="read-only"):
            studio.free_run_name("ro")
    finally:
        folder.chmod(0o755)


cli = run_cli  # `python -m bharateo ...` in this process (tests/support/cli.py)


CLI_EDGES = {"--patch-size": ("0", "--patch-size: Patch size (px) must be between 1"),
             "--heads": ("0", "--heads: Heads must be between 1"),
             "--weight-decay": ("nan", "--weight-decay: Weight decay must be a number from 0 to 1 (got nan)"),
             "--patch-loss-weight": ("inf", "Patch-loss weight must be a finite number"),
             "--n-chips": ("0", "--n-chips: Chips must be a whole number from 16 to 4,096 (got 0)")}


def test_cli_edge_values_give_plain_messages_and_exit_2(isolated_env):
    for flag, (value, words) in CLI_EDGES.items():
        res = cli("train", "--run", "edge", flag, value, "--epochs", "1")
        assert res.returncode == 2 and "Traceback" not in res.stderr, (flag, res.stderr)
        assert words in res.stderr, (flag, res.stderr)
    assert not any(isolated_env["checkpoints"].iterdir())  # nothing reserved or half-written


def test_the_cli_and_the_app_share_the_model_and_training_checks():
    """The messages above come from RunConfig.validate, which config_from_knobs also calls."""
    knobs = {**studio.knobs_from_config(PRESETS["notebook default"]), "heads": 6, "embed_dim": 64}
    with pytest.raises(ConfigError, match="divisible"):
        studio.config_from_knobs(knobs, [], ChipConfig())
    with pytest.raises(ConfigError, match="divisible"):
        replace(RunConfig(), model=replace(RunConfig().model, embed_dim=64, heads=6)).validate()


def test_cli_save_problems_and_damaged_runs_are_plain(isolated_env, rois, result, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    res = cli("train", "--run", "x", "--epochs", "1", env={"BHARATEO_CHECKPOINT_DIR": str(blocked / "ck")})
    assert res.returncode == 2 and "Traceback" not in res.stderr and "could not be saved in" in res.stderr
    save(result, rois, "taken")
    res = cli("train", "--run", "taken", "--epochs", "1")
    assert res.returncode == 2 and "already exists" in res.stderr  # before training, not after
    _malicious_pt(runs.run_dir("taken") / "model.pt")
    res = cli("evaluate", "taken")
    assert res.returncode == 2 and "damaged" in res.stderr and "weights_only" not in res.stderr
    edit_json(runs.run_dir("taken"), "config.json", _set("model", "embed_dim", "64"))
    res = cli("evaluate", "taken")
    assert res.returncode == 2 and "whole number" in res.stderr and "Traceback" not in res.stderr


# --- issue 12: a run folder written before variants, sources and devices existed -------------
def test_an_old_format_run_folder_loads_as_the_notebook_model_on_palette_rgb_and_cpu(rois, result):
    path = save(result, rois, "old-format")

    def old_format(d):  # config.json as the lab wrote it before issue 12: none of these keys
        del d["model"]["arch"], d["chips"]["source"], d["train"]["device"], d["train"]["precision"]
        return d

    edit_json(path, "config.json", old_format)
    raw = json.loads((path / "config.json").read_text())
    assert "arch" not in raw["model"] and "source" not in raw["chips"]
    assert not {"device", "precision"} & set(raw["train"])
    run = load_run("old-format")
    config = RunConfig.from_dict(run.config)
    assert (config.model.arch, config.chips.source) == ("notebook", "worldcover")
    assert (config.train.device, config.train.precision) == ("cpu", "fp32")
    assert config == CONFIG  # the defaults are what the run was trained with
    model = load_model(run)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 result.model.state_dict().values()))
