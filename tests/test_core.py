"""Core engine: chips, model, training, runs, token accounting, CLI."""
import contextlib
import importlib.util
import io
import json
import runpy
import sys
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from bharateo.data.chips import ChipConfig, build_chip_sets, patch_mode_labels
from bharateo.errors import (ChipError, CheckpointMismatchError, ConfigError, RunNameError,
                             RunNotFoundError)
from bharateo.data.patches import patchify
from bharateo.models.notebook import ModelConfig, TinyRGBMAE, num_masked, random_patch_mask
from bharateo.training.experiment import RunConfig, run_experiment
from bharateo.data.roi import Roi, RoiSpec, load_roi
from bharateo.storage.runs import (delete_run, list_runs, load_model, load_run, rename_run, run_dir,
                           save_run)
from bharateo.training.tokens import token_accounting
from bharateo.training.loop import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from tests.support.fixture_tiles import synthetic_native
from tests.support.cli import run_cli
from tests.support.models import TINY_MODEL
from tests.support.paths import REPO

BASELINE = REPO.parent / "shared" / "bench" / "seed_baseline.py"


@pytest.fixture(scope="module")
def notebook():
    """The notebook's own code (the shared baseline script), imported as a module."""
    spec = importlib.util.spec_from_file_location("seed_baseline", BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rois():
    """Three 512 px synthetic ROIs in memory (urban, arid, cropland)."""
    return [Roi(RoiSpec(name, 0.0, 0.0, 512), synthetic_native(512, 512, seed=i, class_weights=kind))
            for i, (name, kind) in enumerate([("a", "urban"), ("b", "arid"), ("c", "cropland")])]


def brute_force_mode(labels, p):
    k, s, _ = labels.shape
    g = s // p
    out = np.zeros((k, g, g), dtype=np.int64)
    for i in range(k):
        for r in range(g):
            for c in range(g):
                out[i, r, c] = np.bincount(labels[i, r * p:(r + 1) * p, c * p:(c + 1) * p].ravel(),
                                           minlength=8).argmax()
    return out


def test_patch_mode_matches_brute_force_including_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, size=(6, 32, 32)).astype(np.uint8)
    # exact ties: a patch half class 5 / half class 2 -> lowest id (2) wins
    labels[0, :16, :16] = 5
    labels[0, :8, :16] = 2
    # three-way tie with 7 present
    labels[1, :16, :16] = np.repeat(np.array([7, 3, 7, 3], dtype=np.uint8), 64).reshape(16, 16)
    # a pure patch of the last class
    labels[2, 16:, 16:] = 7
    got = patch_mode_labels(labels, 16)
    assert got[0, 0, 0] == 2 and got[1, 0, 0] == 3 and got[2, 1, 1] == 7
    np.testing.assert_array_equal(got, brute_force_mode(labels, 16))
    np.testing.assert_array_equal(patch_mode_labels(labels, 8), brute_force_mode(labels, 8))
    # widths that aren't a multiple of 4 take the one-pixel-at-a-time path
    odd = rng.integers(0, 2, size=(4, 30, 30)).astype(np.uint8)
    for p in (6, 10):
        np.testing.assert_array_equal(patch_mode_labels(odd, p), brute_force_mode(odd, p))


def test_chips_are_exactly_the_notebooks(notebook, rois):
    natives = [r.native for r in rois]
    reference = notebook.WorldCoverChipDataset(natives, 48)
    ours, held = build_chip_sets(rois, ChipConfig(n_chips=48))
    assert held is None
    np.testing.assert_array_equal(ours.labels, np.stack([s[1] for s in reference.samples]))
    np.testing.assert_array_equal(ours.patch_labels, np.stack([s[2] for s in reference.samples]))
    x = torch.from_numpy(np.stack([s[0] for s in reference.samples]))
    assert torch.equal(ours.tokens(), notebook.patchify(x))
    assert ours.chips_per_roi() == {"a": 16, "b": 16, "c": 16}
    assert all(len(np.unique(l)) >= 2 for l in ours.labels)


def test_chip_sampling_is_seeded(rois):
    a, _ = build_chip_sets(rois, ChipConfig(n_chips=24, seed=1))
    b, _ = build_chip_sets(rois, ChipConfig(n_chips=24, seed=1))
    c, _ = build_chip_sets(rois, ChipConfig(n_chips=24, seed=2))
    np.testing.assert_array_equal(a.origins, b.origins)
    assert not np.array_equal(a.origins, c.origins)


@pytest.mark.parametrize("block", [None, "north", "south", "east", "west"])
def test_heldout_pixels_never_in_training_chips(rois, block):
    train_set, held = build_chip_sets(rois, ChipConfig(n_chips=60, chip_size=64, holdout_roi="b",
                                                       holdout_block=block, n_holdout_chips=20))
    assert len(held) == 20 and set(held.roi_index) == {1}
    covered = np.zeros((512, 512), bool)
    for (r, c) in held.origins:
        covered[r:r + 64, c:c + 64] = True
    for k in np.flatnonzero(train_set.roi_index == 1):
        r, c = train_set.origins[k]
        assert not covered[r:r + 64, c:c + 64].any()
    if block is None:
        assert 1 not in set(train_set.roi_index)


def test_chip_errors(rois):
    with pytest.raises(ChipError, match="doesn't fit"):
        build_chip_sets(rois, ChipConfig(n_chips=8, chip_size=512, patch_size=16))
    flat = [Roi(RoiSpec("flat", 0, 0, 256), np.full((256, 256), 40, np.uint8))]
    with pytest.raises(ChipError, match="min classes"):
        build_chip_sets(flat, ChipConfig(n_chips=4, chip_size=64))
    with pytest.raises(ChipError, match="No region called"):
        build_chip_sets(rois, ChipConfig(n_chips=4, holdout_roi="nowhere"))
    with pytest.raises(ChipError):
        build_chip_sets([], ChipConfig())


@pytest.mark.parametrize("ratio,expected", [(0.0, 1), (0.01, 1), (0.5, 32), (0.75, 48), (0.99, 63), (1.0, 63)])
def test_mask_counts(ratio, expected):
    assert num_masked(64, ratio) == expected
    mask = random_patch_mask(5, 64, ratio, torch.Generator().manual_seed(3))
    assert mask.sum(1).tolist() == [expected] * 5
    again = random_patch_mask(5, 64, ratio, torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)


def test_model_matches_notebook_module(notebook):
    torch.manual_seed(0)
    ref = notebook.TinyRGBMAE()
    ours = TinyRGBMAE(ModelConfig())
    ours.load_state_dict(ref.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == 802_184
    x = torch.rand(4, 3, 128, 128)
    labels = torch.randint(0, 8, (4, 64))
    mask = random_patch_mask(4, 64, 0.75)
    pred, logits = ref(x, mask)
    ref_loss = (notebook.reconstruction_loss(pred, x, mask)
                + 0.2 * torch.nn.functional.cross_entropy(logits.reshape(-1, 8), labels.reshape(-1)))
    ref_loss.backward()
    out = ours.training_losses(patchify(x, 16), labels, mask, 0.2)
    out["loss"].backward()
    assert torch.allclose(out["loss"], ref_loss, atol=1e-6)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    with torch.no_grad():
        p2, l2 = ours(patchify(x, 16), mask)
    assert torch.allclose(p2, pred.detach(), atol=1e-5) and torch.allclose(l2, logits.detach(), atol=1e-5)


def test_model_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        TinyRGBMAE(ModelConfig(embed_dim=100, heads=3))
    with pytest.raises(ConfigError):
        TrainConfig(mask_ratio=1.0).validate()
    with pytest.raises(ConfigError):
        TrainConfig(mask_ratio=0.0).validate()


def _small():
    return TINY_MODEL


def _events(rois, epochs=3, **kw):
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=48, chip_size=64))
    model = make_model(replace_img(_small(), 64), 0)
    return model, list(train(model, chips, TrainConfig(epochs=epochs, lr=2e-3, **kw)))


def replace_img(config, size):
    from dataclasses import replace
    return replace(config, img_size=size)


def test_training_lowers_loss_and_is_deterministic(rois):
    m1, ev1 = _events(rois)
    m2, ev2 = _events(rois)
    end = ev1[-1]
    assert isinstance(end, TrainingEnd) and end.reason == "finished" and len(end.history) == 3
    assert end.history[-1]["loss"] < end.history[0]["loss"] * 0.8
    steps = [e for e in ev1 if isinstance(e, StepMetrics)]
    assert len(steps) == 3 * 3 and steps[0].chips_per_s > 0 and steps[-1].lr < steps[0].lr
    assert [e["loss"] for e in ev1[-1].history] == [e["loss"] for e in ev2[-1].history]
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_stop_between_steps_keeps_history(rois):
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=48, chip_size=64))
    model = make_model(replace_img(_small(), 64), 0)
    stop = threading.Event()
    events = []
    for event in train(model, chips, TrainConfig(epochs=5), stop=stop):
        events.append(event)
        if isinstance(event, StepMetrics) and event.epoch == 2 and event.step == 1:
            stop.set()
    end = events[-1]
    assert end.reason == "stopped" and end.epochs_done == 1 and len(end.history) == 1


def test_nan_loss_stops_with_reason_and_keeps_good_weights(rois):
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=48, chip_size=64))
    model = make_model(replace_img(_small(), 64), 0)
    end = list(train(model, chips, TrainConfig(epochs=3, lr=1e4)))[-1]
    assert end.reason == "diverged" and "learning rate" in end.message
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_run_round_trip_and_management(rois, tmp_path):
    config = RunConfig(rois=tuple(r.spec for r in rois),
                       chips=ChipConfig(n_chips=24, chip_size=64, holdout_roi="c", n_holdout_chips=8),
                       model=_small(), train=TrainConfig(epochs=1))
    result = run_experiment(config, rois=rois, name="first")
    run = load_run("first")
    assert RunConfig.from_dict(run.config) == config
    assert run.metrics["epochs_done"] == 1 and "heldout_rec_mae" in run.metrics
    assert len(run.history) == 1 and run.config["data"][0]["name"] == "a"
    model = load_model(run)
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    # a name taken at save time: saved under the next free name, the first run untouched
    assert save_run("first", model, {}, [], {}).name == "first-2"
    assert load_run("first").config == run.config
    delete_run("first-2")
    rename_run("first", "second")
    assert [r.name for r in list_runs()] == ["second"]
    with pytest.raises(CheckpointMismatchError, match="embed_dim"):
        load_model(load_run("second"), expected=ModelConfig(img_size=64))
    delete_run("second")
    assert list_runs() == []
    with pytest.raises(RunNotFoundError):
        load_run("second")
    assert not list(Path(run.path).parent.glob(".*tmp"))


def test_loading_weights_of_another_shape_names_the_tensor(tmp_path):
    small = TinyRGBMAE(_small())
    run_path = save_run("small", small, RunConfig(model=_small()).to_dict(), [], {})
    big_run = load_run("small")
    big_run.config["model"] = ModelConfig().to_dict()  # pretend the config says 128-dim
    with pytest.raises(CheckpointMismatchError, match=r"mask_token is \(1, 1, 32\) in the checkpoint but \(1, 1, 128\)"):
        load_model(big_run)
    assert (run_path / "model.pt").exists()


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "..", ".hidden", "x" * 65, "semi;colon", "/abs"])
def test_bad_run_names_rejected(name):
    with pytest.raises(RunNameError):
        run_dir(name)


def test_token_accounting_matches_notebook():
    a = token_accounting(384, 20, 0.75, 3, 128, 16)
    assert (a.total_tokens, a.visible_tokens, a.masked_tokens, a.masked_pixel_targets) == \
        (491_520, 122_880, 368_640, 94_371_840)
    assert a.tokens_per_chip == 64 and a.token_dim == 768
    v0 = token_accounting(1_000_000, 100, 0.75, 10)
    assert (v0.total_tokens, v0.visible_tokens, v0.masked_tokens) == (6_400_000_000, 1_600_000_000, 4_800_000_000)
    assert v0.token_dim == 2560 and v0.masked_pixel_targets == 1_228_800_000_000
    b = token_accounting(10, 2, 0.5, 4, 64, 8)
    assert b.tokens_per_chip == 64 and b.masked_tokens == 10 * 2 * 32 and b.token_dim == 256
    with pytest.raises(ConfigError):
        token_accounting(10, 2, 1.0)


cli = run_cli  # `python -m bharateo ...` in this process (tests/support/cli.py)


def test_cli_end_to_end(worldcover_dir, isolated_env):
    # `python -m bharateo` runs bharateo/__main__.py: run it as such (a new interpreter would
    # spend 1.7 CPU-s importing torch again), then the commands through run_cli
    with mock.patch.object(sys, "argv", ["bharateo", "--help"]), \
            contextlib.redirect_stdout(io.StringIO()) as shown, pytest.raises(SystemExit) as entry:
        runpy.run_module("bharateo", run_name="__main__")
    assert entry.value.code == 0 and "prefetch" in shown.getvalue()
    out = cli("tokens").stdout
    assert "491,520" in out and "94,371,840" in out and "6,400,000,000" in out
    res = cli("prefetch", "--lon", "77.23", "--lat", "28.61", "--size", "512", "--name", "delhi")
    assert res.returncode == 0 and "delhi" in res.stdout
    assert len(list(Path(isolated_env["data"]).glob("*.npz"))) == 1
    info = json.loads(cli("inspect", "--lon", "77.23", "--lat", "28.61", "--size", "512", "--json").stdout)
    direct = load_roi(RoiSpec("x", 77.23, 28.61, 512))
    assert info["tiles"] == ["N27E075"] and info["synthetic_fixture"] is True
    assert {int(k): v for k, v in info["native_counts"].items()} == \
        dict(zip(*[a.tolist() for a in np.unique(direct.native, return_counts=True)]))
    res = cli("train", "--run", "cli-run", "--preset", "quick demo", "--n-chips", "24",
              "--epochs", "1", "--holdout-roi", "mathura_belt", "--n-holdout-chips", "8", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "epoch 01" in res.stdout and (Path(isolated_env["checkpoints"]) / "cli-run" / "model.pt").exists()
    res = cli("evaluate", "cli-run", "--json")
    result = json.loads(res.stdout)
    assert sum(map(sum, result["train"]["confusion"])) == 24 * 64
    assert sum(map(sum, result["heldout"]["confusion"])) == 8 * 64
    bad = cli("train", "--run", "../escape", "--epochs", "1")
    assert bad.returncode == 2 and "can't be a run name" in bad.stderr
    sea = cli("inspect", "--lon", "76.5", "--lat", "29.7", "--size", "512")
    assert sea.returncode == 2 and "sea" in sea.stderr and "Traceback" not in sea.stderr
