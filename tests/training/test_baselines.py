"""Issue 22 items 1-2: every accuracy beside its majority baseline and balanced accuracy; a
model that answers the majority class is never read as learning; the class-weighting setting
(a class-weighted patch loss, Cui et al. 2019) is a knob, a flag and a config key and changes
the loss as documented."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bharateo import cli
from bharateo.training import evaluate as ev
from bharateo.app import results
from bharateo.errors import ConfigError
from bharateo.models.notebook import scored_losses
from bharateo.app.knobs import knob_settings
from bharateo.training.experiment import RunConfig, split_quality
from bharateo.storage.runs import load_run
from bharateo.config.settings import settings_of
from bharateo.training.loop import EFFECTIVE_BETA, TrainConfig, class_weights
from bharateo.data.worldcover import IGNORE_INDEX, NUM_CLASSES

TINY = ["--embed-dim", "32", "--depth", "1", "--heads", "2"]
# words a reading may only use about a split the model has learned
CLAIMS = ("carries over", "fits what", "learned land", "beats always")


def majority_only(support) -> np.ndarray:
    """The confusion of a model that answers class 0 for every patch."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    confusion[:, 0] = support
    return confusion


def as_result(confusion, chips=40, mae=0.1) -> dict:
    return {"confusion": np.asarray(confusion).tolist(), "chips": chips, "masked_mae": mae,
            "per_class_mae": [mae] * NUM_CLASSES, **ev.classification_report(np.asarray(confusion))}


# --- the science: baseline, balanced accuracy, verdict --------------------------------------------
def test_majority_baseline_and_balanced_accuracy_on_a_known_mix():
    targets = np.array([0] * 80 + [5] * 15 + [3] * 5 + [IGNORE_INDEX] * 50)
    support = ev.class_support(targets)
    assert support.sum() == 100  # no-data left out
    assert ev.majority_baseline(support) == ("tree", 0.80)
    predictions = np.array([0] * 80 + [5] * 10 + [0] * 5 + [0] * 5 + [0] * 50)
    confusion = ev.confusion_matrix(targets, predictions)
    # recalls: tree 1.0, water 10/15, built_up 0 -> mean over the three classes present
    assert ev.balanced_accuracy(confusion) == pytest.approx((1 + 10 / 15 + 0) / 3)
    assert ev.balanced_accuracy(majority_only(support)) == pytest.approx(1 / 3)
    assert ev.balanced_accuracy(np.zeros((NUM_CLASSES, NUM_CLASSES))) is None


def test_margin_is_two_standard_errors_over_chips_and_at_least_two_points():
    assert ev.baseline_margin(0.8, 100) == pytest.approx(2 * (0.8 * 0.2 / 100) ** 0.5)
    assert ev.baseline_margin(0.8, 100_000) == ev.MARGIN_FLOOR
    assert ev.baseline_margin(0.8, 10) > ev.baseline_margin(0.8, 100)
    assert ev.baseline_margin(0.97, 10) == pytest.approx(0.015)  # half the room above 0.97
    assert ev.baseline_margin(1.0, 10) == 0.0


@pytest.mark.parametrize("support", [[800, 0, 0, 0, 0, 150, 0, 50], [960, 10, 10, 10, 0, 10, 0, 0],
                                     [500, 500, 0, 0, 0, 0, 0, 0]])
def test_a_majority_only_model_is_never_read_as_learning(support):
    confusion = majority_only(support)
    q = ev.quality(confusion, chips=40)
    assert q["verdict"] == "majority"
    assert q["accuracy"] == pytest.approx(q["majority_accuracy"])
    text = ev.quality_reading(q, "these chips")
    assert "little more than answer 'tree'" in text and "class weights" in text
    assert not any(claim in text for claim in CLAIMS), text
    result = as_result(confusion)
    for held in (None, result):
        reading = results.gap_reading(result, held, "principe")
        assert "little more than answer 'tree'" in reading
        assert not any(claim in reading for claim in CLAIMS), reading
    # a model that learned on training chips and answers the majority class on the held-out ones
    learned = np.diag(support)
    reading = results.gap_reading(as_result(learned), result, "principe")
    assert "does not carry over" in reading and "little more than answer 'tree'" in reading
    assert "learned carries over" not in reading


def test_a_model_within_the_margin_of_the_baseline_makes_no_claim():
    support = np.array([850, 0, 0, 0, 0, 150, 0, 0])
    confusion = majority_only(support)
    confusion[5] = [30, 0, 0, 0, 0, 120, 0, 0]  # water found, accuracy 0.97 vs 0.85: learned
    assert ev.quality(confusion, 40)["verdict"] == "learned"
    confusion = majority_only(support)
    confusion[0] = [780, 0, 0, 0, 0, 70, 0, 0]  # finds water, loses tree: 0.86 vs 0.85
    confusion[5] = [30, 0, 0, 0, 0, 120, 0, 0]
    q = ev.quality(confusion, 40)
    assert q["accuracy"] - q["majority_accuracy"] < q["margin"]
    assert q["verdict"] == "no_gain"
    text = ev.quality_reading(q)
    assert "not above always answering 'tree'" in text and "Try:" in text
    assert not any(claim in text for claim in CLAIMS), text
    # a run that already weighted the classes is not told to turn the weights on
    for weighting in ("effective", "inverse"):
        for text in (ev.quality_reading(q, weighting=weighting),
                     results.gap_reading(as_result(confusion), None, weighting=weighting)):
            assert "turn on class weights" not in text
            assert f"already weighted the classes ('{weighting}')" in text
    assert "turn on class weights" in ev.quality_reading(q, weighting="off")


# --- the imbalance setting ------------------------------------------------------------------------
def test_class_weights_follow_the_documented_formulas():
    support = np.array([900, 0, 0, 0, 0, 100, 0, 0])
    assert class_weights(support, "off") is None
    inverse = class_weights(support, "inverse")
    assert inverse[1] == 0 and inverse.sum().item() == pytest.approx(2.0)  # sum = classes present
    assert inverse[5] / inverse[0] == pytest.approx(9.0)  # 1 / n
    effective = class_weights(support, "effective")
    e = (1 - EFFECTIVE_BETA ** support[[0, 5]]) / (1 - EFFECTIVE_BETA)  # effective numbers
    assert effective[5] / effective[0] == pytest.approx(e[0] / e[1], rel=1e-5)
    assert 1 < effective[5] / effective[0] < 9  # between no weighting and inverse frequency


def test_the_weighted_patch_loss_on_a_known_class_mix():
    torch.manual_seed(0)
    b, n, t, f, k = 2, 8, 12, 6, NUM_CLASSES
    tokens, features = torch.rand(b, n, t), torch.randn(b, n, f)
    labels = torch.tensor([[0, 0, 0, 0, 0, 0, 5, IGNORE_INDEX]] * b)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, :3] = True
    pixel_head, patch_head = torch.nn.Linear(f, t), torch.nn.Linear(f, k)
    plain = scored_losses(tokens, labels, mask, features, pixel_head, patch_head, 0.2)
    support = ev.class_support(labels)
    weights = class_weights(support, "inverse")
    weighted = scored_losses(tokens, labels, mask, features, pixel_head, patch_head, 0.2, weights)
    valid = labels != IGNORE_INDEX
    ce = F.cross_entropy(patch_head(features)[valid], labels[valid], reduction="none")
    w = weights[labels[valid]]
    assert weighted["esa"].item() == pytest.approx((w * ce).sum().item() / w.sum().item(), rel=1e-5)
    assert plain["esa"].item() == pytest.approx(ce.mean().item(), rel=1e-5)
    # the one water patch weighs as much as the six tree patches together
    assert w[labels[valid] == 5].sum().item() == pytest.approx(w[labels[valid] == 0].sum().item())
    assert weighted["rec"].item() == plain["rec"].item()  # the pixel loss is not weighted
    assert weighted["esa_acc"].item() == plain["esa_acc"].item()
    assert int(plain["confusion"].sum()) == int(valid.sum())


def test_class_weighting_is_a_knob_a_flag_and_a_config_key_off_by_default():
    setting = {s.name: s for s in settings_of(TrainConfig)}["class_weighting"]
    assert setting.default == "off" and knob_settings()["class_weighting"].widget == "selectbox" \
        and setting.flag
    assert "class_weighting" in knob_settings()
    assert cli.build_parser().parse_args(
        ["train", "--run", "x", "--class-weighting", "effective"]).class_weighting == "effective"
    config = RunConfig(train=TrainConfig(class_weighting="inverse"))
    assert config.to_dict()["train"]["class_weighting"] == "inverse"
    old = config.to_dict()
    del old["train"]["class_weighting"]  # a run saved before the setting existed
    assert RunConfig.from_dict(old).train.class_weighting == "off"
    with pytest.raises(ConfigError, match="Class weights must be one of"):
        RunConfig.from_dict({**old, "train": {**old["train"], "class_weighting": "both"}})


# --- CLI output and metrics.json ------------------------------------------------------------------
def test_cli_train_and_evaluate_print_the_baselines_and_metrics_json_keeps_them(
        worldcover_dir, capsys):
    assert cli.main(["train", "--run", "cw", *TINY, "--n-chips", "16", "--epochs", "1",
                     "--holdout-roi", "mathura_belt", "--n-holdout-chips", "8",
                     "--class-weighting", "effective", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "(majority 0." in out and "balanced 0." in out
    assert "always answering" in out
    run = load_run("cw")
    assert run.config["train"]["class_weighting"] == "effective"
    m = run.metrics
    for split in ("train", "heldout"):
        for key in ("majority_acc", "balanced_acc", "balanced_floor", "margin"):
            assert isinstance(m[f"{split}_{key}"], float), (split, key)
        assert isinstance(m[f"{split}_majority_class"], str)
        assert split_quality(m, split)["verdict"] in ("majority", "no_gain", "learned")
    assert all(e["majority_acc"] is not None and e["heldout_majority_acc"] is not None
               for e in run.history)
    assert cli.main(["evaluate", "cw"]) == 0
    out = capsys.readouterr().out
    assert out.count("majority baseline 0.") == 2 and out.count("balanced accuracy 0.") >= 2
    assert cli.main(["evaluate", "cw", "--json"]) == 0
    for res in json.loads(capsys.readouterr().out).values():
        assert {"majority_accuracy", "balanced_accuracy", "verdict"} <= set(res)


def test_old_metrics_without_baselines_read_as_unknown_not_learned():
    q = split_quality({"train_esa_acc": 0.9}, "train")
    assert q["verdict"] == "unknown"
    assert "no baseline" in ev.quality_reading(q)


def test_a_history_with_a_baseline_that_is_not_a_number_is_damaged(tmp_path):
    from bharateo.storage.runs import RunDamagedError, check_history

    row = {"epoch": 1, "loss": 1.0, "rec": 0.5, "esa": 0.5, "rec_mae": 0.1, "esa_acc": 0.8}
    check_history([row])  # saved before baselines: fine
    check_history([{**row, "majority_acc": 0.8, "esa_balanced": None}])
    with pytest.raises(RunDamagedError, match="majority_acc"):
        check_history([{**row, "majority_acc": "0.8"}])


def test_the_saved_run_picker_shows_held_out_accuracy_beside_both_baselines():
    from types import SimpleNamespace

    metrics = {"epochs_done": 8, "heldout_esa_acc": 0.78, "heldout_majority_acc": 0.78,
               "heldout_balanced_acc": 0.2}
    label = results._run_label(SimpleNamespace(name="r", config={}, metrics=metrics))
    assert label.endswith("held-out acc 0.78 (majority 0.78, balanced 0.20)"), label
    old = results._run_label(SimpleNamespace(name="r", config={}, metrics={"heldout_esa_acc": 0.5}))
    assert old.endswith("held-out acc 0.50")  # a run saved before baselines: no empty brackets
