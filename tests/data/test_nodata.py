"""No-data is not a land-cover class (issue 10 section 1), and hopeless chip requests fail fast.

The rule under test is written once, in the docstring of bharateo/data/chips.py. Real-pixel tests
read the ESA WorldCover 2021 v200 tile N00E006 (Sao Tome and Principe, the Gabon coast and open
sea) from ../shared/data/worldcover, or the project's bundled copy under data/sample.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from bharateo.data import chips as chips_module
from bharateo.training import evaluate as ev
from bharateo.app import chips as app_chips, figures, pictures, regions, results
from bharateo.data.chips import (MAX_CHIP_NODATA_FRACTION, ChipConfig, ChipSet, build_chip_sets,
                            patch_mode_labels)
from bharateo.errors import ChipError
from bharateo.models.notebook import ModelConfig, TinyRGBMAE, random_patch_mask
from bharateo.app.pictures import labels_image
from bharateo.training.experiment import RunConfig
from bharateo.data.roi import Roi, RoiSpec, load_roi
from bharateo.training.loop import TrainConfig, TrainingEnd, make_model, masked_metrics, train
from bharateo.data.worldcover import (CLASS_NAMES, CLASS_TO_ID, IGNORE_INDEX, NODATA_ID, NUM_CLASSES, DataSource,
                                 collapse_worldcover, tile_filename)
from tests.support.models import TINY_MODEL
from tests.support.paths import APP, REPO

TILE = tile_filename("N00E006")
REAL_DIR = next((d for d in (REPO.parent / "shared" / "data" / "worldcover", REPO / "data" / "sample")
                 if (d / TILE).exists()), None)
needs_tile = pytest.mark.skipif(REAL_DIR is None, reason=f"the real tile {TILE} is not here")
RARE_OTHER = CLASS_TO_ID["rare_other"]
# The regions: a coast whose land is all sea water and no-data, the NW coast of Sao Tome,
# and inland Sao Tome (no no-data).
COAST = RoiSpec("gabon_sea", 6.98, 0.45, 2048)
SAO_TOME_NW = RoiSpec("sao_tome_nw", 6.45, 0.48, 4096)
SAO_TOME = RoiSpec("sao_tome_inland", 6.60, 0.25, 2048)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """name -> Roi read from the real tile through the ordinary reader (cache in a temp dir)."""
    if REAL_DIR is None:
        pytest.skip(f"the real tile {TILE} is not here")
    source = DataSource("folder", str(REAL_DIR))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BHARATEO_DATA_DIR", str(tmp_path_factory.mktemp("real-data")))
        return {spec.name: load_roi(spec, source) for spec in (COAST, SAO_TOME_NW, SAO_TOME)}


def nodata_share(labels: np.ndarray) -> np.ndarray:
    return (labels == NODATA_ID).reshape(len(labels), -1).mean(axis=1)


def brute_force_patch_labels(labels: np.ndarray, p: int) -> np.ndarray:
    """The no-data rule, one patch at a time: >= half no-data -> IGNORE, else the most frequent
    land-cover class among its valid pixels (ties: lowest id)."""
    k, s, _ = labels.shape
    g = s // p
    out = np.zeros((k, g, g), dtype=np.int64)
    for i in range(k):
        for r in range(g):
            for c in range(g):
                block = labels[i, r * p:(r + 1) * p, c * p:(c + 1) * p].ravel()
                land = block[block != NODATA_ID]
                out[i, r, c] = (IGNORE_INDEX if 2 * (p * p - len(land)) >= p * p
                                else np.bincount(land, minlength=NUM_CLASSES).argmax())
    return out


def check_chips_follow_the_rule(chips: ChipSet, min_classes: int) -> None:
    assert (nodata_share(chips.labels) <= MAX_CHIP_NODATA_FRACTION).all()
    for chip in chips.labels:  # min classes counts land-cover classes only
        assert len(set(np.unique(chip).tolist()) - {NODATA_ID}) >= min_classes
    assert set(np.unique(chips.labels).tolist()) <= set(range(NUM_CLASSES)) | {NODATA_ID}
    np.testing.assert_array_equal(chips.patch_labels,
                                  brute_force_patch_labels(chips.labels, chips.patch_size))


# --- the collapse and the patch labels --------------------------------------------------------
def test_code_zero_collapses_to_nodata_and_classes_stay():
    native = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], dtype=np.uint8)
    collapsed = collapse_worldcover(native)
    assert collapsed[0] == NODATA_ID and NODATA_ID >= NUM_CLASSES
    assert collapsed[1:].tolist() == [0, 2, 2, 1, 3, 4, 7, 5, 6, 6, 7]


def test_patch_labels_with_nodata_match_the_rule_and_the_fast_path_elsewhere():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, NUM_CLASSES, size=(6, 32, 32)).astype(np.uint8)
    labels[1, :16, :8] = NODATA_ID  # patch (0, 0) exactly half no-data -> IGNORE
    labels[1, :16, 16:23] = NODATA_ID  # patch (0, 1) 7/16 no-data -> a land class
    labels[2, 16:, 16:] = NODATA_ID  # all no-data -> IGNORE
    labels[3, 0, 0] = NODATA_ID
    labels[4, :16, :16] = np.where(np.arange(16) < 6, NODATA_ID, 5)[None, :]  # 6 cols sea, rest water
    labels[4, :16, :16][:, 6:11] = 2  # 5 columns grass vs 5 columns water: tie -> grass (lowest id)
    got = patch_mode_labels(labels, 16)
    np.testing.assert_array_equal(got, brute_force_patch_labels(labels, 16))
    assert got[1, 0, 0] == IGNORE_INDEX and got[1, 0, 1] >= 0 and got[2, 1, 1] == IGNORE_INDEX
    assert got[4, 0, 0] == 2
    # chips without no-data keep the packed path's labels bit for bit
    np.testing.assert_array_equal(got[[0, 5]], patch_mode_labels(labels[[0, 5]], 16))


def test_min_classes_never_counts_nodata():
    native = np.full((3, 16, 16), 80, dtype=np.uint8)  # permanent water
    native[0, :4] = 0  # water + no-data: one land-cover class
    native[1, :4] = 40  # water + cropland: two
    native[2, :4], native[2, 4:6] = 0, 50  # water + no-data + built-up: two
    assert chips_module._distinct_classes(collapse_worldcover(native)).tolist() == [1, 2, 2]


# --- on the real tile --------------------------------------------------------------------------
@needs_tile
def test_sea_chips_are_not_built_on_the_gabon_coast(real):
    """Issue: at 6.98E 0.45N mostly-sea chips passed min classes 2 because no-data counted."""
    with pytest.raises(ChipError) as info:
        build_chip_sets([real[COAST.name]], ChipConfig(n_chips=16, min_classes=2))
    message = str(info.value)
    # water is its only class: no-data is not counted as a second one
    assert "holds only 1 land-cover class" in message and "min classes" in message


@needs_tile
def test_real_coast_chips_follow_the_nodata_rule(real):
    """Issue: at 6.45E 0.48N (4096 px) every rare_other patch label was mostly no-data."""
    roi = real[SAO_TOME_NW.name]
    assert (roi.native == 0).mean() > 0.05  # the region does reach the sea
    chips, _ = build_chip_sets([roi], ChipConfig(n_chips=384, min_classes=2))
    s, p, g = chips.chip_size, chips.patch_size, chips.grid_size
    native = np.stack([roi.native[r:r + s, c:c + s] for r, c in chips.origins])  # source pixels
    assert ((native == 0).reshape(len(chips), -1).mean(axis=1) <= MAX_CHIP_NODATA_FRACTION).all()
    np.testing.assert_array_equal(chips.labels, collapse_worldcover(native))
    check_chips_follow_the_rule(chips, 2)
    blocks = native.reshape(len(chips), g, p, g, p).transpose(0, 1, 3, 2, 4)
    nodata_per_patch = (blocks == 0).reshape(len(chips), g, g, -1).mean(-1)
    labels = chips.patch_labels
    assert (nodata_per_patch[labels == IGNORE_INDEX] >= 0.5).all()
    assert (nodata_per_patch[labels >= 0] < 0.5).all()
    assert not (nodata_per_patch[labels == RARE_OTHER] >= 0.5).any()
    assert chips.rejected_nodata > 0  # the rule did reject chips here


@needs_tile
def test_real_sea_chips_at_min_classes_one_keep_nodata_out_of_the_labels(real):
    chips, _ = build_chip_sets([real[COAST.name]], ChipConfig(n_chips=384, min_classes=1))
    check_chips_follow_the_rule(chips, 1)
    assert (chips.patch_labels != RARE_OTHER).all()  # sea is water or no data, never rare_other
    assert chips.ignored_patches() > 0 and (nodata_share(chips.labels) > 0).any()
    assert chips.patch_class_counts().sum() == chips.patch_labels.size - chips.ignored_patches()


@needs_tile
def test_hopeless_request_fails_fast_with_advice(real, monkeypatch):
    """Issue: 4096 chips at min classes 4 on a coast showed a frozen bar for ~3 minutes."""
    drawn = []
    collapse = chips_module.collapse_worldcover

    def counting(native):
        drawn.append(len(native))
        assert sum(drawn) < 50_000, "still drawing: the request was not stopped early"
        return collapse(native)

    monkeypatch.setattr(chips_module, "collapse_worldcover", counting)
    with pytest.raises(ChipError) as info:
        build_chip_sets([real[COAST.name]], ChipConfig(n_chips=4096, min_classes=4))
    budget = 4096 * chips_module.ATTEMPTS_PER_CHIP
    assert info.value.attempts == sum(drawn) < budget / 100
    message = str(info.value)
    # the coast holds only water: no chip can have 4 classes, and the message says so
    for advice in ("holds only 1 land-cover class", "at least 4", "Lower 'min classes' to 1"):
        assert advice in message


def test_a_request_no_chip_can_meet_though_the_region_has_the_classes_stops_early():
    """Four 512 px stripes of four classes: the region holds 4 classes, but a 128 px chip spans
    at most 2 stripes, so min classes 3 is hopeless; it stops early and says what to change."""
    from types import SimpleNamespace

    native = np.repeat(np.array([10, 40, 50, 80], np.uint8), 512)[:, None].repeat(2048, axis=1)
    roi = SimpleNamespace(spec=SimpleNamespace(name="stripes"), native=native)
    with pytest.raises(ChipError) as info:
        build_chip_sets([roi], ChipConfig(n_chips=64, min_classes=3))
    message = str(info.value)
    assert info.value.attempts < 64 * chips_module.ATTEMPTS_PER_CHIP
    for advice in ("Stopped early", "none of", "had at least 3 land-cover classes",
                   "fewer chips", "lower 'min classes'"):
        assert advice in message
    assert "no-data" not in message and "less sea" not in message  # no sea in this region


@needs_tile
def test_feasible_real_requests_still_succeed_and_report_progress(real):
    reports = []
    chips, held = build_chip_sets([real[SAO_TOME.name], real[SAO_TOME_NW.name]],
                                  ChipConfig(n_chips=64, min_classes=3, holdout_roi=SAO_TOME_NW.name,
                                             n_holdout_chips=16),
                                  progress=lambda done, total: reports.append((done, total)))
    assert len(chips) == 64 and len(held) == 16
    assert reports[-1] == (80, 80) and all(t == 80 for _, t in reports)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_fail_fast_never_changes_a_request_that_succeeds(monkeypatch):
    """A hard but possible request (about 1 draw in 225 passes, 400 allowed per chip) is built,
    and its chips are exactly the ones built with fail-fast switched off."""
    native = np.full((1024, 1024), 40, dtype=np.uint8)
    native[500, 500] = 50  # one built-up pixel: a 64 px chip has two classes only around it
    rois = [Roi(RoiSpec("one_dot", 0.0, 0.0, 1024), native)]
    config = ChipConfig(n_chips=20, chip_size=64)
    judged, check = [], chips_module._fail_if_hopeless
    monkeypatch.setattr(chips_module, "_fail_if_hopeless",
                        lambda *args: judged.append(args[3]) or check(*args))
    chips, _ = build_chip_sets(rois, config)
    assert max(judged) >= chips_module.FAIL_FAST_MIN_ATTEMPTS  # the rate was judged, and passed
    monkeypatch.setattr(chips_module, "FAIL_FAST_MIN_ATTEMPTS", 10 ** 12)
    reference, _ = build_chip_sets(rois, config)
    np.testing.assert_array_equal(chips.origins, reference.origins)
    np.testing.assert_array_equal(chips.labels, reference.labels)


# --- losses and metrics leave IGNORE patches out ------------------------------------------------
def small_batch():
    torch.manual_seed(0)
    model = TinyRGBMAE(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2))
    tokens = torch.rand(3, 16, 3 * 64)
    labels = torch.randint(0, NUM_CLASSES, (3, 16))
    labels[0, :5] = IGNORE_INDEX
    labels[2, 7] = IGNORE_INDEX
    mask = random_patch_mask(3, 16, 0.5, torch.Generator().manual_seed(1))
    assert (mask & (labels == IGNORE_INDEX)).any() and (~mask & (labels == IGNORE_INDEX)).any()
    return model, tokens, labels, mask


def test_training_losses_leave_ignore_patches_out():
    model, tokens, labels, mask = small_batch()
    out = model.training_losses(tokens, labels, mask, 0.2)
    pred, logits = model(tokens, mask)  # the full forward: pixel head on every token
    valid = labels != IGNORE_INDEX
    scored = mask & valid
    rec = F.smooth_l1_loss(pred[scored], tokens[scored], beta=0.1)
    esa = F.cross_entropy(logits[valid], labels[valid])
    torch.testing.assert_close(out["rec"], rec)
    torch.testing.assert_close(out["esa"], esa)
    torch.testing.assert_close(out["loss"], rec + 0.2 * esa)
    torch.testing.assert_close(out["rec_mae"], (pred[scored] - tokens[scored]).abs().mean())
    torch.testing.assert_close(out["esa_acc"],
                               (logits[valid].argmax(-1) == labels[valid]).float().mean())
    # what an IGNORE patch's pixels hold as targets can't change any loss
    other = tokens.clone()
    hidden_ignored = mask & ~valid
    other[hidden_ignored] = 1.0 - other[hidden_ignored]
    again = model.training_losses(other, labels, mask, 0.2)
    torch.testing.assert_close(again["rec"], out["rec"])
    # a batch that is all no-data scores nothing, and doesn't turn NaN
    empty = model.training_losses(tokens, torch.full_like(labels, IGNORE_INDEX), mask, 0.2)
    assert all(torch.isfinite(v).all() for v in empty.values()) and empty["loss"].item() == 0.0
    empty["loss"].backward()


def test_confusion_matrix_and_report_leave_ignore_out():
    targets = np.array([0, 0, 1, IGNORE_INDEX, 2, IGNORE_INDEX, 7])
    predictions = np.array([0, 1, 1, 7, 2, 0, 7])
    confusion = ev.confusion_matrix(targets, predictions)
    assert confusion.sum() == 5 and confusion[:, 7].sum() == 1 and confusion[:, 0].sum() == 1
    report = ev.classification_report(confusion)
    assert report["accuracy"] == 4 / 5
    assert sum(row["support"] for row in report["per_class"]) == 5


def nodata_chipset(seed: int = 0) -> ChipSet:
    """8 synthetic 32 px chips of 8 px patches, some patches all or half no-data."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=(8, 32, 32)).astype(np.uint8)
    labels[0, :8, :8] = NODATA_ID
    labels[1, :, :8] = NODATA_ID
    labels[2, 8:16, 8:12] = NODATA_ID
    labels[3, 24:, 24:27] = NODATA_ID  # 3/8 of a patch: a land label
    return ChipSet(labels, patch_mode_labels(labels, 8), np.zeros(8, np.int64),
                   np.zeros((8, 2), np.int64), ["synthetic"], 32, 8)


def test_every_metric_leaves_ignore_patches_out():
    chips = nodata_chipset()
    assert chips.ignored_patches() == 1 + 4 + 1
    torch.manual_seed(0)
    model = TinyRGBMAE(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2))
    result = ev.evaluate(model, chips, 0.5)
    preds, logits, mask = ev.predict(model, chips, 0.5)
    targets = chips.patch_targets()
    valid = targets != IGNORE_INDEX
    scored = mask & valid
    tokens = chips.tokens()
    assert np.asarray(result["confusion"]).sum() == int(valid.sum()) == 8 * 16 - 6
    assert result["ignored_patches"] == 6
    assert result["accuracy"] == pytest.approx(
        float((logits.argmax(-1)[valid] == targets[valid]).float().mean()))
    assert result["masked_mae"] == pytest.approx(float((preds[scored] - tokens[scored]).abs().mean()))
    # per-class error: hidden pixels of that class in scored patches only
    err = (preds - tokens).abs().reshape(8, 16, 3, 64).mean(2)
    pixel_class = torch.from_numpy(chips.labels.reshape(8, 4, 8, 4, 8).transpose(0, 1, 3, 2, 4)
                                   .reshape(8, 16, 64))
    for k in range(3):
        sel = scored[..., None] & (pixel_class == k)
        assert result["per_class_mae"][k] == pytest.approx(float(err[sel].mean()))
    curve = ev.mask_ratio_curve(model, chips, ratios=(0.5,))
    assert curve[0]["patch_acc"] == pytest.approx(result["accuracy"])
    assert curve[0]["masked_mae"] == pytest.approx(result["masked_mae"])
    mae, acc = masked_metrics(model, chips, 0.5, ev.EVAL_MASK_SEED)
    assert acc == pytest.approx(result["accuracy"]) and mae == pytest.approx(result["masked_mae"])
    rec = ev.reconstruct_chip(model, chips, 1, 0.5)
    target = chips.patch_labels[1].ravel()
    assert rec.patch_acc == pytest.approx(float((rec.patch_prediction.ravel() == target)[target >= 0]
                                                .mean()))


# --- pictures, legends, counts and words --------------------------------------------------------
def test_pictures_and_words_show_nodata_as_nodata():
    chips = nodata_chipset()
    black = np.zeros(3, np.uint8)
    assert (labels_image(chips.labels[1])[:, :8] == black).all()
    assert (labels_image(chips.patch_labels[1])[:, 0] == black).all()  # IGNORE patch labels
    assert not (labels_image(chips.patch_labels[1])[:, 1:] == black).all(-1).any()
    picture = pictures.chip_picture(chips, 1, "patch", display_px=32)
    assert (picture[:, :8] == black).all()
    assert "no data" in pictures.legend_html([0, 1, NODATA_ID]) and "no data" not in pictures.legend_html()
    assert "no data" in pictures.legend_html(nodata=True)
    assert "rare_other" not in pictures.legend_html([0, IGNORE_INDEX])
    assert app_chips.token_label(chips, 1, 0) == IGNORE_INDEX
    assert "no data (left out of losses and metrics)" in pictures.class_swatch_html(IGNORE_INDEX)
    text = app_chips.token_mix_text(chips, 1, 0)
    assert "no data 64" in text and "left out of losses and metrics" in text
    assert "no data 24" in app_chips.token_mix_text(chips, 3, 15)
    assert "land-cover class" in app_chips.token_mix_text(chips, 3, 15)
    view = app_chips.token_view(chips, 1)
    assert "no data" in app_chips.shape_journey(chips, 1, view, 16, "test")
    assert chips.patch_class_counts().sum() == 8 * 16 - chips.ignored_patches()


def test_region_counts_and_summary_list_nodata_apart():
    native = np.full((64, 64), 40, dtype=np.uint8)
    native[:, :16] = 0
    roi = Roi(RoiSpec("coast", 6.9, 0.4, 64), native, {"tiles": [{"tile": "N00E006"}]})
    counts = regions.collapsed_counts(roi)
    assert counts.sum() == 64 * 48 and counts[RARE_OTHER] == 0
    assert "25.0% of the region" in regions.roi_summary(roi)
    assert regions.nodata_pixels(roi) == 64 * 16
    legend = pictures.share_legend_html(counts, regions.nodata_pixels(roi))
    assert "no data 25.0%" in legend and "cropland 75.0%" in legend
    table = regions.native_counts_table(roi)
    assert table.loc[table.code == 0, "collapsed to"].item() == "no data (never a class)"
    bars = figures.class_bar_chart(counts, "pixels", nodata=regions.nodata_pixels(roi)).data[0]
    assert list(bars.x)[-1] == "no data" and list(bars.y) == counts.tolist() + [64 * 16]
    assert list(bars.marker.color)[-1] == "#000000"
    assert list(figures.class_bar_chart(counts, "pixels").data[0].x) == CLASS_NAMES


@needs_tile
def test_cli_never_counts_nodata_as_a_class(monkeypatch, capsys):
    from bharateo.cli import main

    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(REAL_DIR))
    where = ["--lon", str(COAST.lon), "--lat", str(COAST.lat), "--size", str(COAST.size)]
    assert main(["prefetch", *where, "--name", "sea"]) == 0
    assert "sea: 2048x2048 px, 1 land-cover class, 26.6% no data" in capsys.readouterr().out
    assert main(["inspect", *where]) == 0
    assert "no data (never a class)" in capsys.readouterr().out


def test_patch_balance_chart_lists_nodata_patches_apart():
    chips = nodata_chipset()
    fig = figures.class_share_chart({"training": chips.patch_class_counts(), "held-out": [1] * 8},
                                    nodata={"training": chips.ignored_patches(), "held-out": 0})
    train_bars, held_bars = fig.data
    assert list(train_bars.x) == CLASS_NAMES + ["no data"] == list(held_bars.x)
    assert train_bars.customdata[-1] == 6 and held_bars.customdata[-1] == 0
    assert sum(train_bars.y) == pytest.approx(100)


# --- a short training on real Sao Tome chips, then Evaluate and Reconstruct ---------------------
REAL_RUN = RunConfig(
    rois=(SAO_TOME, COAST),
    chips=ChipConfig(n_chips=256, min_classes=1, holdout_roi=SAO_TOME.name, holdout_block="south",
                     n_holdout_chips=16),
    model=TINY_MODEL,
    train=TrainConfig(epochs=2, lr=2e-3))


@pytest.fixture(scope="module")
def real_run(real):
    """REAL_RUN trained on the real Sao Tome + Gabon-sea chips: (model, chips, held, history)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chips, held = build_chip_sets([real[SAO_TOME.name], real[COAST.name]], REAL_RUN.chips)
        model = make_model(REAL_RUN.model, seed=0)
        events = list(train(model, chips, REAL_RUN.train, heldout=held))
    finally:
        torch.set_num_threads(threads)
    return model, chips, held, events[-1]


@needs_tile
def test_short_training_on_real_chips_then_evaluate_and_reconstruct(real_run):
    model, chips, held, end = real_run
    assert chips.ignored_patches() > 0  # sea chips with no-data patches are in training
    assert isinstance(end, TrainingEnd) and end.reason == "finished" and len(end.history) == 2
    assert all(np.isfinite(row["loss"]) and row["heldout_esa_acc"] is not None
               for row in end.history)
    result = ev.evaluate(model, chips, 0.75)
    assert np.asarray(result["confusion"]).sum() == chips.patch_labels.size - chips.ignored_patches()
    assert result["ignored_patches"] == chips.ignored_patches()
    assert results.class_table_display(result).shape[0] == NUM_CLASSES
    assert results.gap_reading(result, ev.evaluate(model, held, 0.75), SAO_TOME.name)
    index = first_chip_with_ignored_patch(chips)
    rec = ev.reconstruct_chip(model, chips, index, 0.5)
    panels = pictures.reconstruction_panels(rec, 0.5, index)
    target_panel = panels[-1].image
    g = chips.grid_size
    side = target_panel.shape[0] // g
    r, c = divmod(int(np.flatnonzero(rec.patch_target.ravel() == IGNORE_INDEX)[0]), g)
    centre = target_panel[r * side + side // 2, c * side + side // 2]
    assert (centre == 0).all()  # the IGNORE patch is drawn black, not as a class
    curve = ev.mask_ratio_curve(model, chips, ratios=(0.25, 0.75))
    assert all(np.isfinite(row["masked_mae"]) and 0 <= row["patch_acc"] <= 1 for row in curve)


def first_chip_with_ignored_patch(chips: ChipSet) -> int:
    return int(np.flatnonzero((chips.patch_labels == IGNORE_INDEX).reshape(len(chips), -1)
                              .any(axis=1))[0])


@pytest.mark.app  # drives a page (AppTest): the app tier, not the quick one
@needs_tile
def test_evaluate_and_reconstruct_pages_on_the_real_run(real_run):
    from tests.support.pages import open_page

    model, chips, held, _ = real_run
    from bharateo.app.state import CurrentModel

    entry = CurrentModel(model, "real Sao Tome run (trained here)", REAL_RUN)
    state = dict(model=entry, train_chips=chips, heldout_chips=held)
    at = open_page("pages/evaluate.py", **state)
    ignored = chips.ignored_patches()
    patches = [m for m in at.metric if m.label == "Patches"]
    assert patches[0].value == f"{len(chips) * 64 - ignored:,}"
    assert f"less {ignored:,} no-data patches" in patches[0].proto.help
    index = first_chip_with_ignored_patch(chips)
    at = open_page("pages/reconstruct.py", **state)
    at.number_input(key="recon_chip_train").set_value(index).run()  # as a user picks a chip
    here = int((chips.patch_labels[index] == IGNORE_INDEX).sum())
    assert any(f"{here} no-data patch" in c.value and "left out of losses and metrics" in c.value
               for c in at.caption)
    assert any("no data" in m.value for m in at.markdown if "<span" in m.value)


# --- the Chips page --------------------------------------------------------------------------------
def open_chips_page(rois):
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.session_state["rois"] = rois
    at.switch_page("pages/chips.py").run()
    assert not at.exception
    return at


@pytest.mark.app  # drives a page (AppTest): the app tier, not the quick one
@needs_tile
def test_chips_page_on_a_sea_region(real):
    at = open_chips_page([real[COAST.name]])
    at.number_input(key="cfg_n").set_value(4096)
    at.slider(key="cfg_min").set_value(4)
    at.button(key="build_chips").click().run()
    assert not at.exception
    error = at.error[0].value
    assert "No chips were built" in error and "holds only 1 land-cover class" in error
    assert at.session_state["train_chips"] is None

    at.number_input(key="cfg_n").set_value(384)
    at.slider(key="cfg_min").set_value(1)
    at.button(key="build_chips").click().run()
    assert not at.exception
    chips = at.session_state["train_chips"]
    assert "were drawn again because more than 10% of their pixels were no data" \
        in at.success[0].value
    assert any("no data" in m.value for m in at.markdown if "<span" in m.value)
    assert any(f"{chips.ignored_patches():,} of the training chips" in c.value for c in at.caption)
    flat = (chips.patch_labels == IGNORE_INDEX).reshape(len(chips), -1)
    index = int(np.flatnonzero(flat.any(axis=1))[0])
    at.number_input(key="detail_chip").set_value(index).run()
    at.slider(key="detail_token").set_value(int(np.flatnonzero(flat[index])[0])).run()
    assert not at.exception
    assert any("Patch label:" in m.value and "no data (left out of losses and metrics)" in m.value
               for m in at.markdown)
