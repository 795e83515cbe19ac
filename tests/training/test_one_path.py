"""One path for one thing (issue 12, item 6, science side): one mask-ratio check, one seeded-mask
evaluation loop, one held-out mask seed, one default ROI name rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bharateo import cli
from bharateo.training import evaluate as ev
from bharateo.data.chips import ChipSet, patch_mode_labels
from bharateo.errors import ConfigError
from bharateo.models.notebook import ModelConfig, check_mask_ratio
from bharateo.training.experiment import RunConfig, final_metrics
from bharateo.data.roi import default_roi_name
from bharateo.training.tokens import token_accounting
from bharateo.training.loop import (HELDOUT_MASK_SEED, EpochMetrics, TrainConfig, TrainingEnd, make_model,
                            masked_metrics, train)
from bharateo.data.worldcover import IGNORE_INDEX, NODATA_ID


def tiny_chips(n: int = 20, seed: int = 0) -> ChipSet:
    """n 32 px chips of 8 px patches, one patch of chip 1 all no-data (IGNORE_INDEX)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(n, 32, 32)).astype(np.uint8)
    labels[1, :8, :8] = NODATA_ID
    return ChipSet(labels, patch_mode_labels(labels, 8), np.zeros(n, np.int64),
                   np.zeros((n, 2), np.int64), ["synthetic"], 32, 8)


@pytest.fixture(scope="module")
def model():
    return make_model(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2), 0)


BAD_RATIOS = [0.0, 1.0, -0.1, 1.5, math.nan, math.inf]


@pytest.mark.parametrize("ratio", BAD_RATIOS)
def test_every_mask_ratio_goes_through_the_one_check(model, ratio):
    with pytest.raises(ConfigError) as expected:
        check_mask_ratio(ratio)
    message = str(expected.value)
    assert message.startswith("Mask ratio must be strictly between 0 and 1")
    chips = tiny_chips(2)
    for call in (lambda: TrainConfig(mask_ratio=ratio).validate(),
                 lambda: ev.predict(model, chips, ratio),
                 lambda: ev.reconstruct_chip(model, chips, 0, ratio),
                 lambda: ev.mask_ratio_curve(model, chips, [ratio]),
                 lambda: masked_metrics(model, chips, ratio, 0),
                 lambda: token_accounting(10, 1, ratio)):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == message  # the same words wherever the ratio is checked


@pytest.mark.parametrize("ratio", ["0.5", None, True])
def test_a_mask_ratio_that_is_not_a_number_is_refused_in_words(ratio):
    with pytest.raises(ConfigError, match="Mask ratio must be strictly between 0 and 1"):
        check_mask_ratio(ratio)


def test_masked_metrics_and_predict_see_the_same_masks_and_outputs(model):
    chips = tiny_chips()
    mae, acc = masked_metrics(model, chips, 0.6, seed=7, batch_size=8)
    preds, logits, mask = ev.predict(model, chips, 0.6, seed=7, batch_size=8)
    targets, tokens = chips.patch_targets(), chips.tokens()
    valid = targets != IGNORE_INDEX
    scored = mask & valid
    assert not bool(valid.all())  # the no-data patch is really left out
    assert mae == pytest.approx(float((preds[scored] - tokens[scored]).abs().mean()), rel=1e-6)
    assert acc == pytest.approx(float((logits.argmax(-1)[valid] == targets[valid]).float().mean()))
    # one chip reconstructed alone gets the first mask its seed draws, as predict's first chip
    rec = ev.reconstruct_chip(model, chips, 0, 0.6, seed=7)
    assert np.array_equal(rec.mask.ravel(), mask[0].numpy())
    model.train()  # the loop restores the mode it found, training or eval

    masked_metrics(model, chips, 0.6, seed=7)
    assert model.training
    model.eval()
    ev.predict(model, chips, 0.6)
    assert not model.training


def test_held_out_metrics_use_the_held_out_mask_seed():
    chips, heldout = tiny_chips(), tiny_chips(8, seed=3)
    config = RunConfig(model=ModelConfig(embed_dim=16, depth=1, heads=2),
                       train=TrainConfig(epochs=1, batch_size=8))
    net = make_model(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2), 0)
    events = list(train(net, chips, config.train, heldout))
    epoch = next(e for e in events if isinstance(e, EpochMetrics))
    expected = masked_metrics(net, heldout, config.train.mask_ratio, HELDOUT_MASK_SEED)
    assert (epoch.heldout_rec_mae, epoch.heldout_esa_acc) == expected
    end = events[-1]
    assert isinstance(end, TrainingEnd)
    metrics = final_metrics(net, config, end, chips, heldout)
    assert (metrics["heldout_rec_mae"], metrics["heldout_esa_acc"]) == expected
    other = masked_metrics(net, heldout, config.train.mask_ratio, HELDOUT_MASK_SEED + 1)
    assert other != expected  # the seed matters, so the equality above is not an accident


@pytest.mark.parametrize("lon, lat, name", [
    (77.23, 28.61, "roi_77.2300E_28.6100N"),
    (-11.5, -24.8, "roi_11.5000W_24.8000S"),
    (-73.98765, 40.7, "roi_73.9877W_40.7000N"),
    (151.2093, -33.8688, "roi_151.2093E_33.8688S"),
    (-0.00001, 0.0, "roi_0.0000E_0.0000N"),
])
def test_one_default_region_name_rule_for_every_hemisphere(lon, lat, name):
    assert default_roi_name(lon, lat) == name
    args = cli.build_parser().parse_args(["inspect", f"--lon={lon}", f"--lat={lat}"])
    assert cli._roi_specs(args)[0].name == name  # the CLI names it as the app does
