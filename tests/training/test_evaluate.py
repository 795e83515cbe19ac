"""Core evaluation (bharateo.training.evaluate) and the page computations built on it (bharateo.app.results).

Most tests read the tiny trained run (the session fixture `trained`, tests/conftest.py;
tests/support/runs.py says what it is)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bharateo.training import evaluate as ev
from bharateo.app import figures, pictures, results
from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.errors import ConfigError
from bharateo.models.notebook import num_masked, random_patch_mask
from bharateo.app.pictures import magma
from bharateo.app.state import CurrentModel
from bharateo.training.experiment import RunConfig
from bharateo.training.loop import TrainConfig
from bharateo.data.worldcover import CLASS_NAMES, NUM_CLASSES
from tests.support.runs import TINY_CONFIG, result_dict, save_tiny_run

# --- confusion matrix, normalisation, scores ---------------------------------------------------
def test_confusion_counts_sum_to_chips_times_patches(trained):
    chips = trained.result.train_chips
    res = ev.evaluate(trained.result.model, chips, 0.75)
    confusion = np.array(res["confusion"])
    assert confusion.shape == (NUM_CLASSES, NUM_CLASSES)
    assert confusion.sum() == len(chips) * 64 == res["chips"] * 64
    # rows are targets: row sums are the patch-label counts of each class
    np.testing.assert_array_equal(confusion.sum(axis=1), chips.patch_class_counts())
    assert res["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    shares = ev.row_normalised(confusion)
    np.testing.assert_allclose(shares.sum(axis=1), [1, 0, 1])
    np.testing.assert_allclose(shares[2], [0.25, 0.25, 0.5])


def test_row_normalised_on_a_real_evaluation(trained):
    res = ev.evaluate(trained.result.model, trained.result.heldout_chips, 0.75)
    shares = results.normalised_confusion(res)
    support = np.array(res["confusion"]).sum(axis=1)
    np.testing.assert_allclose(shares.sum(axis=1)[support > 0], 1.0)
    assert np.all(shares.sum(axis=1)[support == 0] == 0)


def test_precision_recall_f1_against_a_hand_computed_case():
    # targets / predictions over three classes:
    #   class 0: 4 targets, 3 right, 1 called class 1
    #   class 1: 2 targets, 1 right, 1 called class 2
    #   class 2: 4 targets, 2 right, 2 called class 0
    targets = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 0])
    confusion = ev.confusion_matrix(targets, preds, num_classes=3)
    np.testing.assert_array_equal(confusion, [[3, 1, 0], [0, 1, 1], [2, 0, 2]])
    report = ev.classification_report(confusion)
    assert report["accuracy"] == pytest.approx(6 / 10)
    # precision = right / predicted as that class: 3/5, 1/2, 2/3; recall = right / targets
    expected = [(3 / 5, 3 / 4, 4), (1 / 2, 1 / 2, 2), (2 / 3, 2 / 4, 4)]
    for row, (p, r, n) in zip(report["per_class"], expected):
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(2 * p * r / (p + r))
        assert row["support"] == n


def test_class_table_leaves_undefined_scores_empty():
    # class 1 is never predicted (no precision); class 2 never a target (no recall)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    confusion[0, 0], confusion[1, 0], confusion[0, 2] = 5, 3, 2
    res = {"confusion": confusion.tolist(), **ev.classification_report(confusion),
           "per_class_mae": [0.1] * NUM_CLASSES}
    table = results.class_table(res).set_index("class")
    assert table.loc[CLASS_NAMES[0], "precision"] == pytest.approx(5 / 8)
    assert table.loc[CLASS_NAMES[0], "recall"] == pytest.approx(5 / 7)
    assert table.loc[CLASS_NAMES[1], "recall"] == 0 and np.isnan(table.loc[CLASS_NAMES[1], "precision"])
    assert np.isnan(table.loc[CLASS_NAMES[2], "recall"]) and table.loc[CLASS_NAMES[2], "precision"] == 0
    assert table["support"].tolist()[:3] == [7, 3, 0]
    assert table["predicted"].tolist()[:3] == [8, 0, 2]


def test_per_class_mae_matches_a_direct_computation(trained):
    chips, model = trained.result.heldout_chips, trained.result.model
    res = ev.evaluate(model, chips, 0.5)
    preds, _logits, mask = ev.predict(model, chips, 0.5)
    tokens = chips.tokens()
    # cropland (id 1) pixels inside hidden patches, error averaged over RGB
    p = chips.patch_size
    errs = []
    for k in range(len(chips)):
        for n in np.flatnonzero(mask[k].numpy()):
            r, c = divmod(n, chips.grid_size)
            labels = chips.labels[k, r * p:(r + 1) * p, c * p:(c + 1) * p].ravel()
            err = (preds[k, n] - tokens[k, n]).abs().reshape(3, p * p).mean(0).numpy()
            errs.append(err[labels == 1])
    assert res["per_class_mae"][1] == pytest.approx(float(np.concatenate(errs).mean()), rel=1e-5)


# --- one chip's reconstruction ------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.75, 0.95])
def test_reconstruct_chip_panels_and_mask_counts(trained, ratio):
    chips, model = trained.result.train_chips, trained.result.model
    rec = ev.reconstruct_chip(model, chips, 5, ratio, seed=3)
    s, g = chips.chip_size, chips.grid_size
    for image in (rec.target, rec.masked_input, rec.predicted, rec.composite):
        assert image.shape == (s, s, 3)
    assert rec.abs_error.shape == (s, s)
    assert rec.patch_prediction.shape == rec.patch_target.shape == rec.mask.shape == (g, g)
    assert rec.mask.sum() == num_masked(64, ratio)
    pixel_mask = np.kron(rec.mask, np.ones((16, 16), bool))
    np.testing.assert_array_equal(rec.target, chips.rgb(5))
    assert np.all(rec.masked_input[pixel_mask] == ev.MASK_GREY)
    np.testing.assert_array_equal(rec.masked_input[~pixel_mask], rec.target[~pixel_mask])
    np.testing.assert_array_equal(rec.composite[pixel_mask], rec.predicted[pixel_mask])
    np.testing.assert_array_equal(rec.composite[~pixel_mask], rec.target[~pixel_mask])
    np.testing.assert_array_equal(rec.patch_target, chips.patch_labels[5])
    assert rec.patch_acc == pytest.approx((rec.patch_prediction == rec.patch_target).mean())
    # the chip's masked MAE is the error over hidden pixels (model output before clamping)
    assert rec.masked_mae == pytest.approx(float(rec.abs_error[pixel_mask].mean()), abs=0.02)


def test_reconstruct_chip_is_seeded(trained):
    chips, model = trained.result.train_chips, trained.result.model
    a = ev.reconstruct_chip(model, chips, 0, 0.5, seed=1)
    b = ev.reconstruct_chip(model, chips, 0, 0.5, seed=1)
    c = ev.reconstruct_chip(model, chips, 0, 0.5, seed=2)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.masked_mae == b.masked_mae
    assert not np.array_equal(a.mask, c.mask)


def test_incompatible_chips_raise_config_error_in_words(trained):
    small, _ = build_chip_sets(trained.rois, ChipConfig(n_chips=4, chip_size=64))
    with pytest.raises(ConfigError, match="trained on 128 px chips, these are 64 px"):
        ev.check_compatible(trained.result.model, small)
    with pytest.raises(ConfigError):
        ev.reconstruct_chip(trained.result.model, small, 0, 0.5)


def test_panels_are_crisp_upscales_and_error_panel_scores_hidden_patches_only(trained):
    chips, model = trained.result.train_chips, trained.result.model
    rec = ev.reconstruct_chip(model, chips, 2, 0.5, seed=0)
    panels = pictures.reconstruction_panels(rec, 0.5, 2)
    assert len(panels) == 7
    assert [p.title.split(" (")[0] for p in panels][:4] == [
        "target RGB · chip 2", "50% masked input", pictures.PASTED, pictures.RAW]
    assert [row[-1].title for row in pictures.picture_rows(panels, raw=False)] == [panels[2].title]
    assert pictures.picture_rows(panels, raw=True) == [panels[:4]]
    for panel in panels:
        assert panel.image.shape == (pictures.PANEL_SIDE, pictures.PANEL_SIDE, 3)
        assert panel.image.dtype == np.uint8
    target = panels[0].image
    np.testing.assert_array_equal(target[::2, ::2], target[1::2, 1::2])  # nearest 2x, no blur
    error = panels[4].image
    pixel_mask = np.kron(rec.mask, np.ones((32, 32), bool))
    assert np.all(error[~pixel_mask] == (pictures.UNSCORED_GREY * 255 + 0.5).astype(np.uint8))
    # a hidden pixel's colour is magma of its error
    r, c = np.argwhere(pixel_mask)[0]
    np.testing.assert_array_equal(error[r, c], magma(rec.abs_error[r // 2, c // 2][None, None])[0, 0])
    assert error[pixel_mask].std() > 0  # real errors, not a flat fill


# --- mask-ratio curve --------------------------------------------------------------------------
def test_mask_ratio_curve_nested_masks_and_trained_model_gets_worse_when_more_is_hidden(trained):
    rows = ev.mask_ratio_curve(trained.result.model, trained.result.train_chips)
    assert [r["ratio"] for r in rows] == list(ev.CURVE_RATIOS)
    assert rows[-1]["masked_mae"] >= rows[0]["masked_mae"]
    # same seed: the patches hidden at 0.1 are among those hidden at 0.9
    low = random_patch_mask(4, 64, 0.1, torch.Generator().manual_seed(0))
    high = random_patch_mask(4, 64, 0.9, torch.Generator().manual_seed(0))
    assert bool((low & ~high).sum() == 0)


def test_figures_mark_the_current_ratio_and_keep_class_order():
    rows = [{"ratio": r, "masked_mae": 0.1 + r / 10, "patch_acc": 0.9 - r / 10} for r in ev.CURVE_RATIOS]
    fig = figures.mask_ratio_curve(rows, 0.35, 0.75)
    assert [t.name for t in fig.data] == ["masked MAE", "patch accuracy"]
    assert sorted(s.x0 for s in fig.layout.shapes) == [0.35, 0.75]
    counts = np.arange(64).reshape(8, 8)
    fig = figures.confusion_heatmap(counts, ev.row_normalised(counts), normalised=True)
    assert list(fig.data[0].x) == list(fig.data[0].y) == CLASS_NAMES
    np.testing.assert_allclose(np.array(fig.data[0].z).sum(axis=1), 1.0)
    assert fig.data[0].text[0][0] == ""  # zero cells stay blank, as in the notebook


def test_the_curves_now_label_never_sits_on_its_trained_at_label():
    """A teacher saw "now 75%" drawn over "trained at 75%": one label when the ratios are the
    same; else each label on the far side of its own line, one at the top, one at the bottom."""
    rows = [{"ratio": r, "masked_mae": 0.1 + r / 10, "patch_acc": 0.9 - r / 10} for r in ev.CURVE_RATIOS]
    same = figures.mask_ratio_curve(rows, 0.75, 0.75).layout.annotations
    assert [a.text for a in same] == ["now 75% = trained at"]
    for now, trained in ((0.6, 0.75), (0.8, 0.75), (0.3, 0.9)):
        notes = {a.text.split(" ")[0]: a for a in figures.mask_ratio_curve(rows, now, trained).layout.annotations}
        assert set(notes) == {"now", "trained"}
        assert notes["now"].yanchor != notes["trained"].yanchor  # one at the top, one at the bottom
        # each label away from the other ratio's line: the lower ratio's label to its left
        assert (notes["now"].xanchor == "right") == (now < trained)
        assert (notes["trained"].xanchor == "left") == (now < trained)
    # and "now" sits above the data: accuracy near 100% ran through it (both axes leave room)
    fig = figures.mask_ratio_curve([{**r, "patch_acc": 0.97} for r in rows], 0.75, 0.75)
    assert fig.layout.yaxis2.range[1] >= 1.15 and max(fig.layout.yaxis2.tickvals) == 1
    assert fig.layout.yaxis.range[1] >= 1.2 * max(r["masked_mae"] for r in rows) - 1e-9


def test_titles_sit_clear_of_the_toolbar_and_class_names_are_never_cut():
    """Plotly's toolbar covered titles ("collap▢sed class pixels") and wetland_mangrove was cut at
    the bottom: every title sits in its own row above the plot, under a top margin left for the
    toolbars, and class-name axes grow their margin to fit slanted labels."""
    rows = [{"ratio": r, "masked_mae": 0.1, "patch_acc": 0.9} for r in ev.CURVE_RATIOS]
    counts = np.arange(64).reshape(8, 8)
    series = [{"label": "run", "patch_loss_weight": 1.0, "epochs": [{"epoch": 1, "loss": 1.0, "rec": 0.5, "esa": 0.5,
                                          "rec_mae": 0.2, "esa_acc": 0.5}], "steps": []}]
    made = {
        "class bars": figures.class_bar_chart([1] * 8, "collapsed class pixels"),
        "class shares": figures.class_share_chart({"training": [1] * 8, "held-out": [2] * 8}),
        "per-class MAE": figures.per_class_mae_chart({"training": [0.1] * 8}),
        "confusion": figures.confusion_heatmap(counts, ev.row_normalised(counts), title="c"),
        "curve": figures.mask_ratio_curve(rows, 0.6, 0.75),
        "chips per region": figures.chips_per_roi_chart({"a": 3}, {"a": 1}),
        "variance": figures.token_variance_heatmap(np.zeros((4, 4))),
        "loss": figures.loss_figure(series), "accuracy": figures.accuracy_figure(series),
    }
    for name, fig in made.items():
        title = fig.layout.title
        assert (title.yref, title.y, title.yanchor) == ("paper", 1, "bottom"), name
        assert fig.layout.margin.t >= 60, name  # the toolbars' row above the title stays free
    for name in ("class bars", "class shares", "per-class MAE", "confusion"):
        axis = made[name].layout.xaxis
        assert axis.automargin is True and axis.tickangle == figures.CLASS_TICK_ANGLE, name


# --- results computed once and stored beside the run --------------------------------------------
def test_evaluation_is_stored_beside_the_run_and_reused(trained, monkeypatch):
    run = save_tiny_run(trained, "stored")
    model, chips = trained.result.model, trained.result.train_chips
    calls = []
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    results.clear_memory()
    first = results.evaluation(model, chips, 0.75, run)
    assert first.source == "computed" and len(calls) == 1
    path = run.path / first.filename
    assert path.exists() and results.chips_fingerprint(chips)[:12] in first.filename
    stored = json.loads(path.read_text())
    assert stored["result"]["confusion"] == first.value["confusion"]

    assert results.evaluation(model, chips, 0.75, run).source == "memory"
    results.clear_memory()
    again = results.evaluation(model, chips, 0.75, run)
    assert again.source == "file" and len(calls) == 1 and again.value == first.value

    # other chips or another mask ratio: another file; other weights: recomputed, not reused
    held = results.evaluation(model, trained.result.heldout_chips, 0.75, run)
    assert held.filename != first.filename and len(calls) == 2
    assert results.evaluation(model, chips, 0.5, run).filename != first.filename
    results.clear_memory()
    stored["model_digest"] = "0" * 32
    path.write_text(json.dumps(stored))
    assert results.evaluation(model, chips, 0.75, run).source == "computed"


@pytest.mark.parametrize("damage", [
    lambda r: {**r, "confusion": "not a matrix"},
    lambda r: {**r, "confusion": r["confusion"][:3]},
    lambda r: {**r, "per_class": [{**row, "support": "many"} for row in r["per_class"]]},
    lambda r: {**r, "accuracy": None},
    lambda r: [r]])
def test_a_damaged_stored_result_is_recomputed_not_drawn(trained, damage):
    run = save_tiny_run(trained, "stored")
    model, chips = trained.result.model, trained.result.train_chips
    results.clear_memory()
    first = results.evaluation(model, chips, 0.75, run)
    path = run.path / first.filename
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "result": damage(stored["result"])}))  # header intact
    results.clear_memory()
    again = results.evaluation(model, chips, 0.75, run)
    assert again.source == "computed" and again.value == first.value
    assert json.loads(path.read_text())["result"] == first.value  # rewritten


def test_fingerprints_follow_content_not_identity(trained):
    chips = trained.result.train_chips
    same = replace(chips, labels=chips.labels.copy())
    assert results.chips_fingerprint(same) == results.chips_fingerprint(chips)
    other = replace(chips, labels=chips.labels.copy())
    other.labels[0, 0, 0] = (other.labels[0, 0, 0] + 1) % NUM_CLASSES
    assert results.chips_fingerprint(other) != results.chips_fingerprint(chips)
    model = trained.result.model
    twin = type(model)(model.config)
    twin.load_state_dict(model.state_dict())
    assert results.model_digest(twin) == results.model_digest(model)
    assert results.model_digest(type(model)(model.config)) != results.model_digest(model)


def test_chips_for_run_rebuilds_the_training_chips(trained, worldcover_dir):
    _, train, held = results.chips_for_run(trained.config)
    assert results.chips_fingerprint(train) == results.chips_fingerprint(trained.result.train_chips)
    assert results.chips_fingerprint(held) == results.chips_fingerprint(trained.result.heldout_chips)
    assert results.chip_differences(trained.config, train, held) == []
    assert results.held_out_by_run(trained.config, held)
    other = replace(trained.config, chips=replace(trained.config.chips, holdout_roi=None, n_chips=8))
    diffs = results.chip_differences(other, train, held)
    assert any("trained on 8 chips" in d for d in diffs)
    assert any("held out no region" in d for d in diffs)
    assert not results.held_out_by_run(other, held)


# --- the plain-language reading ------------------------------------------------------------------
def test_gap_reading_names_memorisation_with_the_numbers():
    support = [200, 500, 100, 200, 0, 0, 0, 0]
    train = result_dict(0.90, [180, 450, 90, 180, 0, 0, 0, 0], support, mae=0.05)
    held = result_dict(0.71, [150, 400, 50, 110, 0, 0, 0, 0], support, mae=0.08)
    text = results.gap_reading(train, held, "mathura_belt")
    assert "drops from 0.90 on training chips to 0.71" in text and "memorised" in text
    assert "'mathura_belt'" in text and "0.050" in text and "0.080" in text and "+60%" in text
    assert "'grass_shrub': recall 0.90 → 0.50" in text  # the biggest of the recall drops


def test_gap_reading_other_cases():
    support = [100, 700, 100, 100, 0, 0, 0, 0]
    good = result_dict(0.85, [80, 650, 60, 60, 0, 0, 0, 0], support)
    assert "about the same" in results.gap_reading(good, good, "x")
    easy = results.gap_reading(good, result_dict(0.95, [95, 700, 90, 65, 0, 0, 0, 0], support), "x")
    assert "higher on" in easy and "easier" in easy and "would already score 70%" in easy
    assert easy.count("always answering") == 1  # said once, not twice
    lazy = results.gap_reading(good, result_dict(0.70, [0, 700, 0, 0, 0, 0, 0, 0], support), "x")
    assert "does little more than answer 'cropland'" in lazy and "carries over" not in lazy.replace("does not carry over", "")
    assert "hold out a region" in results.gap_reading(good, None)
    assert results.gap_reading(good, good, "x", held_out_by_run=False).startswith("Careful")


def test_describe_model_counts_the_epochs_that_ran():
    config = RunConfig(train=TrainConfig(epochs=20))
    entry = CurrentModel(None, "run 'x'", config, "x")
    assert "× 20 epochs" in results.describe_model(entry)  # nothing known: the planned epochs
    assert "× 6 epochs" in results.describe_model(replace(entry, epochs_done=6))  # stopped early


def test_a_small_share_in_the_confusion_matrix_never_reads_zero():
    """6 of 10,017 tree patches predicted water read '0%' in the row-normalised matrix."""
    import numpy as np
    from bharateo.app.figures import confusion_heatmap, share_text

    counts = np.zeros((8, 8), dtype=np.int64)
    counts[0, 0], counts[0, 5], counts[1, 1] = 10_011, 6, 40
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    text = confusion_heatmap(counts, shares, normalised=True).data[0].text
    assert text[0][5] == "<1%" and text[0][0] == ">99%" and text[1][1] == "100%"
    assert text[2][2] == ""  # no patches: blank
    assert [share_text(s) for s in (0.0, 0.004, 0.005, 0.25, 0.994, 0.995, 1.0)] == [
        "0%", "<1%", "<1%", "25%", "99%", ">99%", "100%"]


def test_a_class_with_no_target_patches_has_no_per_class_error(trained):
    """Masked MAE per class is None for a class with no target patches (its few pixels inside
    other classes' patches are no score of it), in evaluate()'s JSON (the CLI's) and in
    class_table for results stored before the rule, which held a number there."""
    res = ev.evaluate(trained.result.model, trained.result.heldout_chips, 0.5)
    support = [r["support"] for r in res["per_class"]]
    assert 0 in support and any(support)
    assert [m is None for m in res["per_class_mae"]] == [n == 0 for n in support]
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    confusion[0, 0], confusion[1, 0], confusion[0, 2] = 5, 3, 2  # class 2: predicted, no target
    stored = {"confusion": confusion.tolist(), **ev.classification_report(confusion),
              "per_class_mae": [0.322] * NUM_CLASSES}  # as saved before: a number for every class
    table = ev.class_table(stored).set_index("class")
    assert table["masked MAE"].isna().tolist() == [s == 0 for s in table["support"]]
    assert table.loc[CLASS_NAMES[0], "masked MAE"] == pytest.approx(0.322)
    assert ev.class_mae(stored)[2] is None and ev.class_mae(stored)[1] == pytest.approx(0.322)


# --- issue 22: every accuracy beside its baselines ---------------------------------------------
def test_every_evaluation_and_curve_row_carries_its_baselines(trained):
    result = ev.evaluate(trained.result.model, trained.result.train_chips)
    support = np.asarray(result["confusion"]).sum(axis=1)
    assert result["majority_accuracy"] == pytest.approx(support.max() / support.sum())
    assert result["balanced_accuracy"] == pytest.approx(ev.balanced_accuracy(result["confusion"]))
    assert result["verdict"] in ("majority", "no_gain", "learned")
    rows = ev.mask_ratio_curve(trained.result.model, trained.result.train_chips, ratios=(0.5,))
    assert rows[0]["majority_acc"] == pytest.approx(result["majority_accuracy"])
    assert 0 <= rows[0]["balanced_acc"] <= 1
    rec = ev.reconstruct_chip(trained.result.model, trained.result.train_chips, 0, 0.75)
    assert rec.quality["majority_accuracy"] is not None and rec.quality["accuracy"] == \
        pytest.approx(rec.patch_acc)


def test_confusion_cell_lists_exactly_the_patches_its_matrix_counts(trained):
    """Every cell (target A, predicted B) of Evaluate's matrix lists exactly as many patches as
    the cell counts, each with that target and prediction; a class's misses are its row less
    the diagonal; the reconstruction of a listed chip uses that evaluation's mask."""
    model, chips = trained.result.model, trained.result.train_chips
    ratio = TINY_CONFIG.train.mask_ratio
    result = ev.evaluate(model, chips, ratio)
    predictions, masks = ev.patch_predictions(model, chips, ratio)
    targets = chips.patch_targets().numpy()
    confusion = np.asarray(result["confusion"])
    assert confusion.sum() > 0 and (confusion - np.diag(np.diag(confusion))).sum() > 0
    for a in range(NUM_CLASSES):
        for b in range(NUM_CLASSES):
            cell = ev.confusion_cell(targets, predictions, a, b)
            assert len(cell) == confusion[a, b]
            assert all(targets[k, n] == a and predictions[k, n] == b for k, n in cell)
        misses = ev.confusion_cell(targets, predictions, a)
        assert len(misses) == confusion[a].sum() - confusion[a, a]
        assert all(predictions[k, n] != a for k, n in misses)
    # the listed chip's picture is masked as that evaluation masked it (not a fresh draw)
    k = int(np.argwhere(masks.any(axis=1))[-1, 0])
    rec = ev.reconstruct_chip(model, chips, k, ratio, mask=masks[k])
    assert np.array_equal(rec.mask.ravel(), masks[k])
    assert np.array_equal(rec.patch_prediction.ravel(), predictions[k])


def test_confusion_cell_refuses_bad_classes_in_words():
    t = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(ConfigError, match="class number from 0"):
        ev.confusion_cell(t, t, NUM_CLASSES, 0)
    with pytest.raises(ConfigError, match="chips x patches"):
        ev.confusion_cell(t, t[:1], 0, 0)
