"""What the model learned: reconstructions, confusion matrices, per-class scores, mask-ratio curves.

All evaluation uses seeded masks so the same run, chips and ratio always give the same numbers:
one loop, `masked_batches`, draws them (on a CPU generator, so every device masks the same
patches) and runs the model on its own device under the run's precision; every function here and
train.masked_metrics are built on it and return CPU tensors / numpy arrays.
No-data patches (IGNORE_INDEX, the no-data rule in bharateo/chips.py) are left out of every
metric here: masked MAE, accuracy, the confusion matrix, the per-class report and error, the curve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from bharateo.chips import ChipSet, tokens_for
from bharateo.device import autocast, model_device
from bharateo.errors import ConfigError
from bharateo.model import TinyRGBMAE, check_mask_ratio, random_patch_mask, unpatchify
from bharateo.reflectance import composite, composite_bands, denormalise, stretch_limits
from bharateo.worldcover import CLASS_NAMES, IGNORE_INDEX, NODATA_ID, NUM_CLASSES

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
                   precision: str = "fp32") -> Iterator[tuple[torch.Tensor, ...]]:
    """The one seeded-mask evaluation loop: for each batch of `batch_size` chips (all of them,
    or `indices` in that order), yields (tokens B x N x T, targets B x N int64, mask B x N bool,
    pred B x N x T, logits B x N x K), all on the model's device, in eval mode, without grad.

    Masks come from one CPU torch.Generator seeded with `seed`, drawn batch after batch, so the
    same chips, ratio and seed give the same masks on every device. The forward pass runs under
    `autocast(device, precision)`. The model's train/eval mode is restored afterwards.
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
            mask = random_patch_mask(len(tokens), tokens.shape[1], mask_ratio, generator)
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


def score_text(value, digits: int = 3) -> str:
    """A score for reading: '—' when undefined (None or NaN), else `digits` decimals."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def evaluate(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float = 0.75,
             seed: int = EVAL_MASK_SEED, precision: str = "fp32") -> dict:
    """Confusion matrix, per-class scores, masked MAE and per-class masked MAE, as plain JSON."""
    preds, logits, mask = predict(model, chips, mask_ratio, seed, precision=precision)
    targets = chips.patch_targets()
    confusion = confusion_matrix(targets.numpy(), logits.argmax(-1).numpy())
    tokens = tokens_for(model, chips)
    valid = targets != IGNORE_INDEX
    scored = mask & valid
    err = (preds - tokens).abs()  # K x N x T
    p2, c = chips.patch_size ** 2, chips.channels
    pixel_err = err.reshape(*err.shape[:2], c, p2).mean(dim=2)  # K x N x p*p, mean over channels
    pixel_class = torch.from_numpy(_pixel_labels_in_token_order(chips))  # K x N x p*p
    masked_pixels = scored[..., None].expand_as(pixel_class)
    per_class_mae = []
    for k in range(NUM_CLASSES):
        sel = masked_pixels & (pixel_class == k)
        per_class_mae.append(float(pixel_err[sel].mean()) if sel.any() else None)
    report = classification_report(confusion)
    return {
        "mask_ratio": mask_ratio,
        "chips": len(chips),
        "confusion": confusion.tolist(),
        **report,
        "masked_mae": float(err[scored].mean()) if scored.any() else None,
        "per_class_mae": class_mae({"per_class": report["per_class"], "per_class_mae": per_class_mae}),
        "ignored_patches": int((~valid).sum()),
    }


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
                     seed: int = EVAL_MASK_SEED, precision: str = "fp32") -> list[dict]:
    """[{ratio, masked_mae, patch_acc}] for each ratio, same seeded masks per ratio (no-data
    patches left out)."""
    rows = []
    targets = chips.patch_targets()
    tokens = tokens_for(model, chips)
    valid = targets != IGNORE_INDEX
    for ratio in ratios:
        preds, logits, mask = predict(model, chips, ratio, seed, precision=precision)
        scored = mask & valid
        rows.append({"ratio": float(ratio),
                     "masked_mae": float((preds[scored] - tokens[scored]).abs().mean()),
                     "patch_acc": float((logits.argmax(-1)[valid] == targets[valid]).float().mean())})
    return rows


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
                     seed: int = EVAL_MASK_SEED, precision: str = "fp32") -> ChipReconstruction:
    """Mask chip `index` at `mask_ratio` (seeded: the first mask `seed` draws) and reconstruct it.
    Raises ConfigError when the run can't read these chips or the mask ratio is not in (0, 1)."""
    check_compatible(model, chips)
    g, p, c = chips.grid_size, chips.patch_size, chips.channels
    (batch,) = masked_batches(model, chips, mask_ratio, seed, indices=[index], precision=precision)
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
        stats = getattr(model, "band_stats", None) or chips.band_stats
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
                   if valid.any() else None))
