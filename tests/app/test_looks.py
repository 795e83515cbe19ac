"""Looking never waits on the page (issue 20.2, issue 23.2): the curve, the evaluations and the
embedding map are computed by the training worker as the run's last step and stored beside the
run; a run without them is filled in off the page while the page draws; the one-pass
computation gives the numbers the per-ratio loop gave."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bharateo.training import evaluate as ev
from bharateo.training import inspect_model as im
from bharateo.app import results
from bharateo.jobs import service as jobs
from bharateo.jobs import looks
from bharateo.app.state import CurrentModel
from bharateo.data.chips import ChipConfig, tokens_for
from bharateo.training.experiment import RunConfig
from bharateo.storage.runs import load_model, load_run
from bharateo.data.worldcover import IGNORE_INDEX, NUM_CLASSES
from tests.app.test_jobs import ROIS
from tests.app.test_jobs import config as job_config
from tests.support.pages import filled, open_page
from tests.support.runs import save_tiny_run


# --- the one pass equals the per-ratio loop it replaced ------------------------------------------
def loop_curve(model, chips, ratios, seed=ev.EVAL_MASK_SEED):
    """The curve as it was computed before the one pass: predict() per ratio, tokens each time."""
    rows, targets, tokens = [], chips.patch_targets(), tokens_for(model, chips)
    valid = targets != IGNORE_INDEX
    for ratio in ratios:
        preds, logits, mask = ev.predict(model, chips, ratio, seed)
        scored = mask & valid
        rows.append({"ratio": float(ratio),
                     "masked_mae": float((preds[scored] - tokens[scored]).abs().mean()),
                     "patch_acc": float((logits.argmax(-1)[valid] == targets[valid]).float().mean())})
    return rows


def loop_evaluation(model, chips, ratio, seed=ev.EVAL_MASK_SEED):
    """evaluate() as it was: whole-forward predictions of every chip, then the sums."""
    preds, logits, mask = ev.predict(model, chips, ratio, seed)
    targets, tokens = chips.patch_targets(), tokens_for(model, chips)
    confusion = ev.confusion_matrix(targets.numpy(), logits.argmax(-1).numpy())
    scored = mask & (targets != IGNORE_INDEX)
    err = (preds - tokens).abs()
    pixel_err = err.reshape(*err.shape[:2], chips.channels, -1).mean(dim=2)
    pixel_class = torch.from_numpy(ev._pixel_labels_in_token_order(chips))
    masked = scored[..., None].expand_as(pixel_class)
    per_class = [float(pixel_err[masked & (pixel_class == k)].mean())
                 if (masked & (pixel_class == k)).any() else None for k in range(NUM_CLASSES)]
    return confusion, float(err[scored].mean()), per_class


@pytest.mark.parametrize("pass_tokens", [ev.TOKENS_PER_PASS, 5 * 64])  # one pass; passes of 5 chips
def test_the_one_pass_gives_the_per_ratio_loops_numbers(trained, monkeypatch, pass_tokens):
    monkeypatch.setattr(ev, "TOKENS_PER_PASS", pass_tokens)  # masks never depend on the pass size
    model = trained.result.model
    for chips in (trained.result.train_chips, trained.result.heldout_chips):
        new, old = ev.mask_ratio_curve(model, chips), loop_curve(model, chips, ev.CURVE_RATIOS)
        for a, b in zip(new, old, strict=True):
            assert a["ratio"] == b["ratio"]
            assert a["masked_mae"] == pytest.approx(b["masked_mae"], rel=1e-5)
            assert a["patch_acc"] == pytest.approx(b["patch_acc"], abs=1e-6)
        result = ev.evaluate(model, chips, 0.6)
        confusion, mae, per_class = loop_evaluation(model, chips, 0.6)
        assert np.array_equal(result["confusion"], confusion)
        assert result["masked_mae"] == pytest.approx(mae, rel=1e-5)
        for k, (a, b) in enumerate(zip(result["per_class_mae"], per_class)):
            if result["per_class"][k]["support"]:
                assert a == pytest.approx(b, rel=1e-5)


def test_the_masks_are_the_evaluation_loops_masks(trained):
    chips = trained.result.train_chips
    loop = torch.cat([m for _, _, m, _, _ in ev.masked_batches(trained.result.model, chips, 0.3,
                                                               7, batch_size=ev.MASK_BATCH)])
    assert torch.equal(ev.seeded_masks(len(chips), chips.grid_size ** 2, 0.3, 7), loop)


# --- the training worker stores them as the run's last step --------------------------------------
def held_out_config():
    base = job_config(epochs=2)
    return RunConfig(rois=base.rois, chips=ChipConfig(n_chips=16, chip_size=64, holdout_roi="b",
                                                       n_holdout_chips=8),
                     model=base.model, train=base.train)


def fail(*args, **kwargs):
    raise AssertionError("the page computed a result it should have read back")


def test_the_worker_stores_what_the_pages_read_and_they_read_it_without_computing(monkeypatch):
    job = jobs.TrainingJob(held_out_config(), ROIS, "looked-at", queue=jobs.TrainingQueue()).start()
    job.join(180)
    assert job.status == "finished", job.error
    run = load_run("looked-at")
    names = sorted(p.name.split("_")[0] for p in run.path.glob("*_*.json"))
    assert names == ["embedding", "embedding", "evaluation", "evaluation", "ratio", "ratio"]

    # a fresh server (nothing in memory) with the saved run: every look comes from its files
    results.clear_memory()
    for name in ("mask_ratio_curve", "evaluate", "masked_scores"):
        monkeypatch.setattr(ev, name, fail)
    monkeypatch.setattr(im, "embedding_map", fail)
    model = CurrentModel(load_model(run), "saved run 'looked-at'",
                         RunConfig.from_dict(run.config), run.name, 2)
    session = dict(model=model, train_chips=job.train_chips, heldout_chips=job.heldout_chips)
    at = open_page("pages/reconstruct.py", fill=False, **session)
    assert [c for c in at.get("plotly_chart") if c.key == "recon_curve"]
    assert not any("Filling in" in i.value for i in at.info)
    assert any("stored beside run 'looked-at'" in c.value for c in at.caption)
    at.radio(key="recon_split").set_value("held").run()
    assert not at.exception and [c for c in at.get("plotly_chart") if c.key == "recon_curve"]

    at = open_page("pages/evaluate.py", fill=False, **session)
    assert len([m for m in at.metric if m.label == "Patch accuracy"]) == 2
    assert any("read back from" in c.value for c in at.caption)

    at = open_page("pages/inside.py", fill=False, **session)
    assert [c for c in at.get("plotly_chart") if c.key == "inside_map"]


# --- a run without them: the page draws at once and fills them in off the page -----------------
def test_a_page_visited_before_the_curve_is_ready_draws_the_panels_and_a_note(trained, monkeypatch):
    save_tiny_run(trained, "not-yet")
    results.clear_memory()
    release = __import__("threading").Event()
    real = ev.mask_ratio_curve

    def held_back(*args, **kwargs):  # the background computation waits until the test lets it
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "mask_ratio_curve", held_back)
    session = dict(model=CurrentModel(trained.result.model, "run 'not-yet'", trained.config,
                                      "not-yet"),
                   train_chips=trained.result.train_chips, heldout_chips=trained.result.heldout_chips)
    at = open_page("pages/reconstruct.py", fill=False, **session)
    assert len([i for i in at.image if i.captions and "masked input" in i.captions[0]]) == 1
    assert any("Filling in the mask-ratio curve" in i.value for i in at.info)
    assert not [c for c in at.get("plotly_chart") if c.key == "recon_curve"]
    at.slider(key="recon_mask_ratio").set_value(0.3).run()  # the slider answers meanwhile
    assert any("30% masked input" in (i.captions or [""])[0] for i in at.image)
    release.set()
    filled(at)
    assert [c for c in at.get("plotly_chart") if c.key == "recon_curve"]
    assert not any("Filling in" in i.value for i in at.info)
    assert list(load_run("not-yet").path.glob("ratio_curve_*.json"))


@pytest.fixture
def forget_failures():
    """A failure is remembered per server (not retried on every rerun): forget it afterwards."""
    yield
    looks.wait_all(60)
    looks._tasks.clear()


def test_a_failed_background_computation_is_a_note_not_a_traceback(trained, monkeypatch,
                                                                   forget_failures):
    results.clear_memory()

    def broken(*args, **kwargs):
        raise ev.ConfigError("These chips can't be measured.")

    monkeypatch.setattr(ev, "evaluate", broken)
    session = dict(model=CurrentModel(trained.result.model, "run (trained here)", trained.config),
                   train_chips=trained.result.train_chips, heldout_chips=None)
    at = open_page("pages/evaluate.py", **session)
    assert not at.exception
    assert any("can't be measured" in e.value for e in at.error)
