"""What the model learned: reconstructions, confusion matrices, per-class scores, mask-ratio curves.

All evaluation uses seeded masks so the same run, chips and ratio always give the same numbers:
one loop, `masked_batches`, draws them (on a CPU generator, so every device masks the same
patches) and runs the model on its own device under the run's precision; every function here and
train.masked_metrics are built on it and return CPU tensors / numpy arrays.
No-data patches (IGNORE_INDEX, the no-data rule in bharateo/data/chips.py) are left out of every
metric here: masked MAE, accuracy, the confusion matrix, the per-class report and error, the curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from bharateo.data.chips import ChipSet, tokens_for
from bharateo.models.device import autocast, model_device
from bharateo.errors import ConfigError
from bharateo.data.patches import unpatchify
from bharateo.models.notebook import TinyRGBMAE, check_mask_ratio, random_patch_mask
from bharateo.data.reflectance import composite, composite_bands, denormalise, stretch_limits
from bharateo.data.worldcover import CLASS_NAMES, IGNORE_INDEX, NODATA_ID, NUM_CLASSES

EVAL_MASK_SEED = 0  # the masks of Reconstruct, Evaluate and `python -m bharateo evaluate`
CURVE_RATIOS = tuple(round(r, 2) for r in np.arange(0.1, 0.91, 0.1))


def check_compatible(model: TinyRGBMAE, chips: ChipSet) -> None:
    """ConfigError, in words, when a run can't read these chips."""
    cfg = model.config
    problems = []
    if cfg.img_size != chips.chip_size:
        problems.append(f"it was trained on {cfg.img_size} px chips, these are {chips.chip_size} px")
    if cfg.patch_size != chips.patch_size:
        problems.append(f"its patches are {cfg.patch_size} px, these chips use {chips.patch_size} px")
    if cfg.in_chans != chips.channels:
        problems.append(f"it reads {cfg.in_chans} channels, these chips have {chips.channels}")
    if problems:
        raise ConfigError("This run doesn't match the current chips: " + "; ".join(problems) +
                          ". Rebuild the chips with the run's settings, or pick another run.")


def masked_batches(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float, seed: int,
                   batch_size: int = 128, indices: Sequence[int] | None = None,
                   precision: str = "fp32",
                   masks: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """The one seeded-mask evaluation loop: for each batch of `batch_size` chips (all of them,
    or `indices` in that order), yields (tokens B x N x T, targets B x N int64, mask B x N bool,
    pred B x N x T, logits B x N x K), all on the model's device, in eval mode, without grad.

    Masks come from one CPU torch.Generator seeded with `seed`, drawn batch after batch, so the
    same chips, ratio and seed give the same masks on every device. The forward pass runs under
    `autocast(device, precision)`. The model's train/eval mode is restored afterwards.
    `masks`: masks drawn before (len(order) x N bool, in the order of `indices`), used instead of
    drawing: e.g. one chip's mask from a whole evaluation (predict's), which a fresh draw for that
    chip alone would not give (the draw depends on the chip's place in its batch).
    Raises ConfigError for a mask ratio outside (0, 1) or an unknown precision.
    """
    check_mask_ratio(mask_ratio)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    order = np.arange(len(chips)) if indices is None else np.asarray(indices, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = slice(start, start + batch_size) if indices is None else order[start:start + batch_size]
            tokens, targets = tokens_for(model, chips, idx), chips.patch_targets(idx)
            mask = (random_patch_mask(len(tokens), tokens.shape[1], mask_ratio, generator)
                    if masks is None else masks[start:start + batch_size].to(torch.bool))
            tokens, targets, mask = tokens.to(device), targets.to(device), mask.to(device)
            with torch.no_grad(), autocast(device, precision):
                pred, logits = model(tokens, mask)
            yield tokens, targets, mask, pred.float(), logits.float()
    finally:
        model.train(was_training)


def predict(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float, seed: int = EVAL_MASK_SEED,
            batch_size: int = 128, precision: str = "fp32"):
    """-> (pixel predictions K x N x T, patch logits K x N x C, mask K x N), seeded masks, on the
    CPU. Raises ConfigError when the run can't read these chips or the mask ratio is not in (0, 1)."""
    check_compatible(model, chips)
    preds, logits, masks = [], [], []
    for _, _, mask, p, lg in masked_batches(model, chips, mask_ratio, seed, batch_size,
                                            precision=precision):
        preds.append(p.cpu()), logits.append(lg.cpu()), masks.append(mask.cpu())
    return torch.cat(preds), torch.cat(logits), torch.cat(masks)


def patch_predictions(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float,
                      seed: int = EVAL_MASK_SEED, precision: str = "fp32"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """-> (predicted class K x N int64, mask K x N bool) for every patch of every chip, under the
    very masks `evaluate` draws with the same ratio and seed (predict), so the patches listed by
    confusion_cell are exactly the ones its confusion matrix counts. Raises ConfigError as predict."""
    _, logits, mask = predict(model, chips, mask_ratio, seed, precision=precision)
    return logits.argmax(-1).numpy().astype(np.int64), mask.numpy()


def confusion_cell(targets: np.ndarray, predictions: np.ndarray, target: int,
                   predicted: int | None = None) -> np.ndarray:
    """The patches behind one confusion-matrix cell: M x 2 int64 rows (chip, patch), chip by chip
    and patch by patch (row-major within the chip's G x G grid).

    `targets`, `predictions`: K x N class ids (chips.patch_targets(), patch_predictions); no-data
    targets (IGNORE_INDEX) never match. `predicted` None: the class's misses (target `target`,
    predicted any other class), i.e. its row of the matrix less the diagonal.
    Raises ConfigError for a class id outside 0..NUM_CLASSES-1 or mismatched shapes.
    """
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape or targets.ndim != 2:
        raise ConfigError(f"Targets {targets.shape} and predictions {predictions.shape} must both "
                          "be chips x patches.")
    for name, k in (("target", target), ("predicted", predicted)):
        if k is not None and not (isinstance(k, (int, np.integer)) and 0 <= k < NUM_CLASSES):
            raise ConfigError(f"The {name} class must be a class number from 0 to "
                              f"{NUM_CLASSES - 1}, not {k!r}.")
    hit = targets == target
    hit &= (predictions != target) if predicted is None else (predictions == predicted)
    return np.argwhere(hit).astype(np.int64)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
    """C x C counts, rows = target class, columns = predicted class. Targets outside 0..C-1
    (IGNORE_INDEX: no-data patches) are left out."""
    targets, predictions = targets.astype(np.int64).ravel(), predictions.astype(np.int64).ravel()
    valid = (targets >= 0) & (targets < num_classes)
    keys = targets[valid] * num_classes + predictions[valid]
    return np.bincount(keys, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows with no targets stay zero)."""
    sums = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, sums, out=np.zeros(confusion.shape, float), where=sums > 0)


def classification_report(confusion: np.ndarray) -> dict:
    """Per-class precision / recall / F1 / support and overall accuracy from a confusion matrix.

    Undefined scores are None, never 0 (one rule for the app, the CLI and the JSON): precision of
    a class never predicted, recall of a class with no target patches, F1 when either is None.
    """
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    rows = []
    for i in range(len(tp)):
        p = float(tp[i] / predicted[i]) if predicted[i] else None
        r = float(tp[i] / support[i]) if support[i] else None
        f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
        rows.append({"class": CLASS_NAMES[i], "precision": p, "recall": r, "f1": f1,
                     "support": int(support[i])})
    return {"accuracy": float(tp.sum() / max(confusion.sum(), 1)), "per_class": rows}


# --- quality beside its baseline --------------------------------------------------------------
# A patch accuracy alone reads well on imbalanced land (a São Tomé chip set is ~85 % tree
# patches): every accuracy the lab shows comes with the majority baseline (always answering the
# most common class, on the same patches) and with balanced accuracy, the mean per-class recall
# over the classes present. Balanced accuracy rather than macro-F1 because its floor is known
# exactly: a model that answers one class everywhere scores 1 / (classes present), whatever the
# mix, while macro-F1 needs every class's precision, undefined for a class never predicted (the
# lab leaves undefined scores undefined, classification_report). Brodersen et al., "The balanced
# accuracy and its posterior distribution", ICPR 2010.
MARGIN_FLOOR = 0.02  # two percentage points: below this a gain is not worth a sentence
MARGIN_SE = 2.0  # standard errors of a share measured on n chips


def class_support(targets) -> np.ndarray:
    """Target patches per class: any-shape int array/tensor of patch labels -> int64 array of
    NUM_CLASSES counts. No-data patches (IGNORE_INDEX, any value outside 0..C-1) are left out."""
    t = np.asarray(targets).astype(np.int64).ravel()
    t = t[(t >= 0) & (t < NUM_CLASSES)]
    return np.bincount(t, minlength=NUM_CLASSES)[:NUM_CLASSES]


def majority_baseline(support) -> tuple[str | None, float | None]:
    """(most common class's name, its share of the scored patches): the accuracy of always
    answering that class on these patches. (None, None) when there are no scored patches."""
    support = np.asarray(support)
    total = int(support.sum())
    if not total:
        return None, None
    k = int(support.argmax())
    return CLASS_NAMES[k], float(support[k] / total)


def balanced_accuracy(confusion) -> float | None:
    """Mean per-class recall over the classes with target patches (rows of the C x C confusion
    with a non-zero sum); None when no class has any. A model answering one class everywhere
    scores exactly 1 / (classes present)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    present = support > 0
    if not present.any():
        return None
    return float((np.diag(confusion)[present] / support[present]).mean())


def baseline_margin(share: float, chips: int) -> float:
    """How far above a baseline share a score must be before the lab says the model learned:
    MARGIN_SE (2) standard errors of a share `share` measured on `chips` chips, sqrt(s (1 - s) /
    chips), never under MARGIN_FLOOR (2 points), and never over half the room above the
    baseline, (1 - share) / 2 (on chips that are 97 % tree, a model that gets 99 % right has
    removed most of the baseline's mistakes; two standard errors over few chips would be more
    than all the room there is). Chips, not patches, count as independent samples: a chip's
    16-64 patches are neighbours and mostly the same class, so counting them apart would make a
    one-chip fluke look significant."""
    share = min(max(float(share), 0.0), 1.0)
    se = MARGIN_SE * math.sqrt(share * (1 - share) / max(int(chips), 1))
    return min(max(MARGIN_FLOOR, se), (1 - share) / 2)


def quality(confusion, chips: int) -> dict:
    """An accuracy with its baselines and what it may be read as, from a C x C confusion (rows =
    target, no-data already left out) over `chips` chips:

    accuracy, majority_class, majority_accuracy (always answering it), answered_class and
    answered_share (the class the model names most, its share of the answers),
    balanced_accuracy, its floor balanced_floor = 1 / classes present (what answering one class
    everywhere scores), margin (baseline_margin of the majority share), and verdict:
      "majority"  balanced accuracy within the margin of its floor: the model (nearly) always
                  answers one class (usually the majority class);
      "no_gain"   it tells some classes apart, but its accuracy is not above the majority
                  baseline by more than the margin;
      "learned"   both above their baselines by more than the margin;
      "empty"     no scored patches.
    Readings never say a model learned, fits or carries over unless the verdict is "learned"."""
    confusion = np.asarray(confusion)
    total = int(confusion.sum())
    name, share = majority_baseline(confusion.sum(axis=1))
    if not total:
        return {"accuracy": None, "majority_class": None, "majority_accuracy": None,
                "balanced_accuracy": None, "balanced_floor": None, "margin": None,
                "verdict": "empty"}
    accuracy = float(np.trace(confusion) / total)
    balanced = balanced_accuracy(confusion)
    floor = 1.0 / int((confusion.sum(axis=1) > 0).sum())
    margin = baseline_margin(share, chips)
    predicted = confusion.sum(axis=0)
    return {"accuracy": accuracy, "majority_class": name, "majority_accuracy": share,
            "answered_class": CLASS_NAMES[int(predicted.argmax())],
            "answered_share": float(predicted.max() / total),
            "balanced_accuracy": balanced, "balanced_floor": floor, "margin": margin,
            "verdict": verdict(accuracy, share, balanced, floor, margin)}


def verdict(accuracy, majority, balanced, floor, margin) -> str:
    """quality()'s verdict from its numbers (so a saved run's metrics.json is judged by the same
    rule): "majority", "no_gain", "learned", or "unknown" when a number is missing (NaN or None:
    a run saved before baselines existed, or a diverged one)."""
    numbers = (accuracy, majority, balanced, floor, margin)
    if any(v is None or not isinstance(v, (int, float)) or v != v for v in numbers):
        return "unknown"
    if balanced <= floor + margin:
        return "majority"
    if accuracy <= majority + margin:
        return "no_gain"
    return "learned"


def quality_of(result: dict) -> dict:
    """quality() of a stored evaluation (its confusion and chip count; a result without a chip
    count counts its patches); the same for results stored before baselines were kept (they are
    recomputed from the confusion)."""
    confusion = np.asarray(result["confusion"])
    chips = result.get("chips")
    return quality(confusion, chips if isinstance(chips, int) and chips > 0 else
                   max(int(confusion.sum()), 1))


TRY_NEXT = ("train longer (more epochs), or turn on class weights ('effective') so the rare "
            "classes count as much as the common one")


def try_next(weighting: str | None = None) -> str:
    """What to try when a model answers the majority class: TRY_NEXT, or, for a run that already
    had class weights (`weighting` other than None or "off"), more epochs and stronger weights
    (a run's train.class_weighting: off, effective or inverse)."""
    if weighting in (None, "off"):
        return TRY_NEXT
    stronger = ", or stronger class weights ('inverse')" if weighting == "effective" else ""
    return (f"train longer (more epochs){stronger}; this run already weighted the classes "
            f"('{weighting}')")


def quality_reading(q: dict, where: str = "these chips", weighting: str | None = None) -> str:
    """One or two sentences on a quality() (or experiment.split_quality) result on `where`, which
    only say the model learned when the verdict is "learned"; otherwise they say plainly that it
    answers the majority class (or no better than it) and what to try (try_next: `weighting` is
    the run's class weighting, so a run that had class weights is not told to turn them on)."""
    t = lambda v: score_text(v, 2)  # noqa: E731
    v = q.get("verdict")
    if v in (None, "unknown", "empty"):
        return (f"On {where} patch accuracy is {t(q.get('accuracy'))}; no baseline was recorded "
                "to compare it with.")
    name, acc, maj = q["majority_class"], q["accuracy"], q["majority_accuracy"]
    bal, floor, margin = q["balanced_accuracy"], q["balanced_floor"], q["margin"]
    margin_words = (f"{100 * margin:.1f} points (two standard errors over these chips, at least "
                    "2 points, at most half the room above the baseline)")
    answered = q.get("answered_class", name)
    if v == "majority":
        what = (f"answer '{name}'" if answered == name else
                f"answer one class, '{answered}' ({q['answered_share']:.0%} of its answers)")
        return (f"On {where} the model does little more than {what}: accuracy {t(acc)} "
                f"against {t(maj)} for always answering '{name}', and balanced accuracy {t(bal)} "
                f"is within {margin_words} of {t(floor)}, what one class everywhere scores. It "
                f"has not learned to tell the classes apart yet: {try_next(weighting)}.")
    if v == "no_gain":
        return (f"On {where} the model tells some classes apart (balanced accuracy {t(bal)}, one "
                f"class everywhere would score {t(floor)}), but its accuracy {t(acc)} is not above "
                f"always answering '{name}' ({t(maj)}) by more than {margin_words}: it gets no "
                f"more patches right than that guess. Try: {try_next(weighting)}.")
    return (f"On {where} accuracy {t(acc)} beats always answering '{name}' ({t(maj)}) by "
            f"{100 * (acc - maj):.1f} points, more than the {margin_words}, and balanced accuracy is {t(bal)} "
            f"(one class everywhere: {t(floor)}).")


def score_text(value, digits: int = 3) -> str:
    """A score for reading: '—' when undefined (None or NaN), else `digits` decimals."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def evaluate(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float = 0.75,
             seed: int = EVAL_MASK_SEED, precision: str = "fp32", progress=None) -> dict:
    """Confusion matrix, per-class scores, masked MAE and per-class masked MAE, as plain JSON,
    with the accuracy's baselines (quality(): majority_class, majority_accuracy,
    balanced_accuracy, balanced_floor, margin, verdict).

    The masks are masked_batches' (seeded, drawn MASK_BATCH chips at a time); the model runs in
    one pass over the chips (masked_scores). Raises ConfigError when the run can't read these
    chips or the mask ratio is not in (0, 1). `progress(done, total)`: see masked_scores."""
    (scores,) = masked_scores(model, chips, (mask_ratio,), seed, precision, per_class=True,
                              progress=progress)
    return scores.evaluation()


def class_mae(result: dict) -> list[float | None]:
    """An evaluation's per-class masked MAE (one per class, CLASS_NAMES order), None for a class
    with no target patches: a few of its pixels inside other classes' patches are no score of
    the class, and beside 'support 0' a number reads as one (the walkthrough saw cropland 0.322
    with 0 patches). The same rule on read for results stored before it."""
    return [None if row["support"] == 0 else mae
            for row, mae in zip(result["per_class"], result["per_class_mae"])]


def class_table(result: dict):
    """Per class: precision, recall, F1, support (patches) and masked reconstruction MAE.

    Undefined values are left empty instead of shown as 0: recall and masked MAE for a class with
    no target patches (class_mae), precision for a class never predicted. -> a pandas DataFrame
    (pandas is imported here, not with the module: a training run never needs it, and it costs
    about 0.2 CPU-s of start-up, docs/speed.md).
    """
    import pandas as pd

    confusion = np.asarray(result["confusion"])
    predicted, mae = confusion.sum(axis=0), class_mae(result)
    rows = []
    for i, row in enumerate(result["per_class"]):
        # results stored before undefined scores became None held 0 there: same rule on read
        precision = row["precision"] if predicted[i] else None
        recall = row["recall"] if row["support"] else None
        f1 = row["f1"] if precision is not None and recall is not None else None
        rows.append({"class": row["class"], "precision": precision, "recall": recall, "F1": f1,
                     "support": row["support"], "predicted": int(predicted[i]),
                     "masked MAE": mae[i]})
    return pd.DataFrame(rows)


def _pixel_labels_in_token_order(chips: ChipSet) -> np.ndarray:
    k, g, p = len(chips), chips.grid_size, chips.patch_size
    return np.ascontiguousarray(
        chips.labels.reshape(k, g, p, g, p).transpose(0, 1, 3, 2, 4)).reshape(k, g * g, p * p)


def mask_ratio_curve(model: TinyRGBMAE, chips: ChipSet, ratios=CURVE_RATIOS,
                     seed: int = EVAL_MASK_SEED, precision: str = "fp32",
                     progress=None) -> list[dict]:
    """[{ratio, masked_mae, patch_acc, majority_acc, balanced_acc}] for each ratio (see
    MaskedScores.curve_row), same seeded masks per ratio (no-data patches left out). The chips' tokens are made once for every ratio (masked_scores).
    `progress(done, total)`: see masked_scores."""
    return [s.curve_row() for s in masked_scores(model, chips, ratios, seed, precision,
                                                  progress=progress)]


# --- the one pass behind the curve and the evaluation ----------------------------------------
MASK_BATCH = 128  # chips per mask draw: masked_batches' batch, so every path draws the same masks
TOKENS_PER_PASS = 384 * 64  # tokens per forward pass: the notebook's 384 chips of 64 tokens in
# one pass measured fastest on 2 cores (bench/looking.py; 128 chips per pass cost ~1.6x the CPU)
ATTENTION_FLOATS = 64 * 2 ** 20  # at most this many attention weights (B x H x N x N) per pass


def seeded_masks(count: int, num_patches: int, mask_ratio: float, seed: int,
                 batch_size: int = MASK_BATCH) -> torch.Tensor:
    """count x num_patches bool (True = hidden): the masks masked_batches draws for `count` chips
    (one CPU generator seeded with `seed`, random_patch_mask `batch_size` chips at a time)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([random_patch_mask(min(batch_size, count - s), num_patches, mask_ratio,
                                        generator) for s in range(0, count, batch_size)])


def pass_size(num_patches: int, heads: int) -> int:
    """Chips per forward pass in masked_scores: TOKENS_PER_PASS tokens, fewer when the attention
    weights of a pass (chips x heads x N x N floats) would pass ATTENTION_FLOATS; at least 1."""
    return max(1, min(TOKENS_PER_PASS // num_patches,
                      ATTENTION_FLOATS // max(1, heads * num_patches ** 2)))


@dataclass
class MaskedScores:
    """Sums over all chips at one mask ratio, from which the curve row and the evaluation are
    read (float64 sums: the order of a sum over 10^7 pixel errors then barely matters)."""

    mask_ratio: float
    chips: int
    confusion: np.ndarray  # K x K int64, rows = target class (no-data patches left out)
    error_sum: float  # sum |pred - token| over hidden land-cover tokens' values
    error_count: int  # how many values that sum has
    ignored_patches: int  # no-data patches (IGNORE_INDEX)
    class_error_sum: np.ndarray | None = None  # K: sum over hidden pixels of each class of the
    class_error_count: np.ndarray | None = None  # K   pixel's mean |error| over channels

    def curve_row(self) -> dict:
        """{ratio, masked_mae, patch_acc, majority_acc, balanced_acc} (mask_ratio_curve's row; NaN
        MAE: nothing hidden scored). majority_acc (always answering the chips' most common class)
        is the same at every ratio; balanced_acc is balanced_accuracy at this ratio."""
        valid = int(self.confusion.sum())
        _, majority = majority_baseline(self.confusion.sum(axis=1))
        return {"ratio": float(self.mask_ratio),
                "masked_mae": self.error_sum / self.error_count if self.error_count else float("nan"),
                "patch_acc": float(np.trace(self.confusion) / valid) if valid else float("nan"),
                "majority_acc": majority,
                "balanced_acc": balanced_accuracy(self.confusion)}

    def evaluation(self) -> dict:
        """evaluate()'s JSON (needs per_class=True)."""
        per_class_mae = [float(s / c) if c else None
                         for s, c in zip(self.class_error_sum, self.class_error_count)]
        report = classification_report(self.confusion)
        q = quality(self.confusion, self.chips)
        return {
            "mask_ratio": self.mask_ratio,
            "chips": self.chips,
            "confusion": self.confusion.tolist(),
            **report,
            **{k: q[k] for k in ("majority_class", "majority_accuracy", "balanced_accuracy",
                                 "balanced_floor", "margin", "verdict")},
            "masked_mae": self.error_sum / self.error_count if self.error_count else None,
            "per_class_mae": class_mae({"per_class": report["per_class"],
                                        "per_class_mae": per_class_mae}),
            "ignored_patches": self.ignored_patches,
        }


def _heads_outputs(model, tokens: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor):
    """(pixel predictions of the `scored` tokens M x T, class logits B x N x K), float32. A
    variant with `features(tokens, mask)` (what both heads read) runs its pixel head on the
    scored tokens only; any other runs its whole forward."""
    if callable(getattr(model, "features", None)):
        z = model.features(tokens, mask)
        return model.pixel_head(z[scored]).float(), model.patch_head(z).float()
    pred, logits = model(tokens, mask)
    return pred[scored].float(), logits.float()


def masked_scores(model: TinyRGBMAE, chips: ChipSet, ratios=CURVE_RATIOS,
                  seed: int = EVAL_MASK_SEED, precision: str = "fp32", per_class: bool = False,
                  progress=None) -> list[MaskedScores]:
    """The model on every chip at each mask ratio, under the seeded masks of masked_batches
    (seeded_masks): one MaskedScores per ratio, in order.

    The chips' tokens and targets are made once for all ratios; the model runs in eval mode under
    torch.inference_mode and `autocast(device, precision)`, pass_size chips per forward pass.
    `per_class`: also the per-class pixel error sums evaluate() reports. `progress(done,
    total)` is called after every pass (total = ratios x passes). Raises ConfigError when the
    run can't read these chips, a ratio is not in (0, 1) or the precision is unknown.
    """
    check_compatible(model, chips)
    for ratio in ratios:
        check_mask_ratio(ratio)
    device = model_device(model)
    k, n = len(chips), chips.grid_size ** 2
    tokens = tokens_for(model, chips)  # K x N x T, once for every ratio
    targets = chips.patch_targets()  # K x N
    valid = targets != IGNORE_INDEX
    c, p2 = chips.channels, chips.patch_size ** 2
    pixel_class = torch.from_numpy(_pixel_labels_in_token_order(chips)) if per_class else None
    size = pass_size(n, getattr(model.config, "heads", 1))
    total, done = len(ratios) * -(-k // size), 0
    out = []
    was_training = model.training
    model.eval()
    try:
        for ratio in ratios:
            mask = seeded_masks(k, n, ratio, seed)
            confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
            err_sum, err_count = 0.0, 0
            cls_sum, cls_count = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES, np.int64)
            for s in range(0, k, size):
                t, m, v = tokens[s:s + size], mask[s:s + size], valid[s:s + size]
                scored = m & v
                with torch.inference_mode(), autocast(device, precision):
                    pred, logits = _heads_outputs(model, t.to(device), m.to(device),
                                                  scored.to(device))
                pred, logits = pred.cpu(), logits.cpu()
                confusion += confusion_matrix(targets[s:s + size].numpy(),
                                              logits.argmax(-1).numpy())
                err = (pred - t[scored]).abs()  # M x T
                err_sum += float(err.double().sum())
                err_count += err.numel()
                if per_class:
                    pixel_err = err.reshape(-1, c, p2).mean(dim=1).double()  # M x p*p
                    classes = pixel_class[s:s + size][scored]  # M x p*p
                    inside = (classes >= 0) & (classes < NUM_CLASSES)
                    cls_sum += np.bincount(classes[inside].numpy(), pixel_err[inside].numpy(),
                                           minlength=NUM_CLASSES)[:NUM_CLASSES]
                    cls_count += np.bincount(classes[inside].numpy(),
                                             minlength=NUM_CLASSES)[:NUM_CLASSES]
                done += 1
                if progress is not None:
                    progress(done, total)
            out.append(MaskedScores(float(ratio), k, confusion, err_sum, err_count,
                                    int((~valid).sum()), cls_sum if per_class else None,
                                    cls_count if per_class else None))
    finally:
        model.train(was_training)
    return out


@dataclass
class ChipReconstruction:
    """The notebook's six panels for one chip (H x W x C images, C = the chips' channels, in
    [0, 1] unless noted; palette-RGB chips give H x W x 3)."""

    target: np.ndarray
    masked_input: np.ndarray  # masked patches greyed out
    predicted: np.ndarray
    composite: np.ndarray  # visible truth + predicted masked patches
    abs_error: np.ndarray  # H x W mean |error| over channels
    patch_prediction: np.ndarray  # G x G class ids
    patch_target: np.ndarray  # G x G class ids, IGNORE_INDEX for no-data patches
    mask: np.ndarray  # G x G bool
    masked_mae: float | None  # over hidden land-cover patches (None: all hidden ones are no-data)
    patch_acc: float | None  # over land-cover patches (no-data patches left out)
    # reflectance chips: the first four panels in false colour (B08 B04 B03), keys target,
    # masked_input, predicted, composite; the fields above are then true colour (B04 B03 B02)
    false_colour: dict | None = None
    # patch_acc beside its baselines on this chip's patches (quality(): majority_accuracy,
    # balanced_accuracy, ...); None only for reconstructions made before baselines existed
    quality: dict | None = None


def _colour_panels(target: np.ndarray, predicted: np.ndarray, bands, which: str,
                   valid: np.ndarray, pixel_mask: np.ndarray) -> dict:
    """C x H x W reflectance of a chip and its prediction -> the four picture panels in `which`
    colour, both stretched with the target's 2-98 % limits so they compare."""
    idx = list(composite_bands(bands, which))
    limits = stretch_limits(target[idx], valid)
    t = composite(target, bands, which, valid, limits)
    pr = composite(predicted, bands, which, None, limits)
    masked_input, mixed = t.copy(), t.copy()
    masked_input[pixel_mask] = MASK_GREY_VALUE
    mixed[pixel_mask] = pr[pixel_mask]
    return {"target": t, "masked_input": masked_input, "predicted": pr, "composite": mixed}


MASK_GREY_VALUE = np.float32(0.94)  # hidden patches in the masked-input panel: light grey
MASK_GREY = np.full(3, MASK_GREY_VALUE)  # the same grey as a palette-RGB colour


def reconstruct_chip(model: TinyRGBMAE, chips: ChipSet, index: int, mask_ratio: float,
                     seed: int = EVAL_MASK_SEED, precision: str = "fp32",
                     mask: np.ndarray | None = None) -> ChipReconstruction:
    """Mask chip `index` at `mask_ratio` (seeded: the first mask `seed` draws) and reconstruct it.
    `mask`: the chip's N (or G x G) bool mask to use instead, e.g. its mask in a whole evaluation
    (patch_predictions), so the picture shows what that evaluation scored.
    Raises ConfigError when the run can't read these chips or the mask ratio is not in (0, 1)."""
    check_compatible(model, chips)
    g, p, c = chips.grid_size, chips.patch_size, chips.channels
    given = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool).reshape(1, g * g))
    (batch,) = masked_batches(model, chips, mask_ratio, seed, indices=[index], precision=precision,
                              masks=given)
    tokens, _, mask, pred_tokens, logits = (t.cpu() for t in batch)
    grid_mask = mask.reshape(g, g).numpy()
    pixel_mask = np.kron(grid_mask, np.ones((p, p), dtype=bool))
    false_colour = None
    if chips.band_stats is None:  # palette RGB: the values are the picture
        target = unpatchify(tokens, c, p)[0].permute(1, 2, 0).numpy()
        predicted = unpatchify(pred_tokens, c, p)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        abs_error = np.abs(target - predicted).mean(axis=2)
    else:  # reflectance: pictures in reflectance, error in normalised units (the loss's)
        values, guess = unpatchify(tokens, c, p)[0].numpy(), unpatchify(pred_tokens, c, p)[0].numpy()
        abs_error = np.abs(values - guess).mean(axis=0)
        stats = model.band_stats or chips.band_stats
        pictures = {which: _colour_panels(denormalise(values, stats), denormalise(guess, stats),
                                          chips.bands, which, chips.labels[index] != NODATA_ID,
                                          pixel_mask)
                    for which in ("true", "false") if composite_bands(chips.bands, which)}
        target, predicted = pictures["true"]["target"], pictures["true"]["predicted"]
        false_colour = pictures.get("false")
    masked_input, composite_img = target.copy(), target.copy()
    masked_input[pixel_mask] = MASK_GREY_VALUE  # every channel, whatever the bands
    composite_img[pixel_mask] = predicted[pixel_mask]
    patch_prediction = logits.argmax(-1).reshape(g, g).numpy()
    patch_target = chips.patch_labels[index]
    valid = torch.from_numpy(patch_target.reshape(1, -1) != IGNORE_INDEX)
    scored = mask & valid
    return ChipReconstruction(
        target=target, masked_input=masked_input, predicted=predicted, composite=composite_img,
        abs_error=abs_error, patch_prediction=patch_prediction,
        patch_target=patch_target, mask=grid_mask, false_colour=false_colour,
        masked_mae=(float((pred_tokens[scored] - tokens[scored]).abs().mean()) if scored.any()
                    else None),
        patch_acc=(float((patch_prediction == patch_target)[patch_target != IGNORE_INDEX].mean())
                   if valid.any() else None),
        quality=quality(confusion_matrix(patch_target, patch_prediction), 1))
