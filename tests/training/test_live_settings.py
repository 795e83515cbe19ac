"""Settings changed while a training is paused (train.train's `changes`, train.changed_config):
the loop goes on with them from the next step, in the optimiser and in the mask draws."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bharateo.training import loop as tr
from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.errors import ConfigError
from bharateo.data.roi import Roi, RoiSpec
from bharateo.training.loop import SettingsChanged, StepMetrics, TrainConfig, changed_config, make_model
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import tiny_model_config

ROIS = [Roi(RoiSpec(n, 0.0, 0.0, 256), synthetic_native(256, 256, seed=i, class_weights=k))
        for i, (n, k) in enumerate([("a", "urban"), ("b", "cropland")])]
MODEL = tiny_model_config(img_size=64)


def test_a_change_before_a_step_trains_with_it_from_that_step(monkeypatch):
    """lr and mask ratio changed after step 2 of 3 in epoch 1 (cosine over 2 epochs): step 3
    runs with the new rate in every param group and masks at the new ratio; epoch 2 follows the
    cosine schedule from the new base rate."""
    chips, _ = build_chip_sets(ROIS, ChipConfig(n_chips=12, chip_size=64))
    config = TrainConfig(epochs=2, batch_size=4, lr=4e-4, mask_ratio=0.75, cosine=True)
    optimisers, ratios = [], []
    adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: optimisers.append(adamw(*a, **k))
                        or optimisers[-1])
    draw = tr.random_patch_mask
    monkeypatch.setattr(tr, "random_patch_mask",
                        lambda b, n, ratio, g=None: ratios.append(ratio) or draw(b, n, ratio, g))
    asked = []
    changes = {"lr": 2e-3, "mask_ratio": 0.5, "weight_decay": 0.1}

    def changed():  # asked before every step: the change comes before the third
        asked.append(len(asked) + 1)
        return dict(changes) if len(asked) == 3 else {}

    events = tr.train(make_model(MODEL, 0), chips, config, changes=changed)
    seen = []
    for event in events:
        seen.append(event)
        if isinstance(event, SettingsChanged):
            (opt,) = optimisers
            assert all(g["lr"] == 2e-3 and g["weight_decay"] == 0.1 for g in opt.param_groups)
    changed = [e for e in seen if isinstance(e, SettingsChanged)]
    assert len(changed) == 1 and changed[0].global_step == 2 and changed[0].changes == changes
    assert changed[0].lr == 2e-3 and changed[0].progress == pytest.approx(2 / 3)
    steps = [e for e in seen if isinstance(e, StepMetrics)]
    assert [s.lr for s in steps[:3]] == [4e-4, 4e-4, 2e-3]  # the step after the change uses it
    assert ratios[:3] == [0.75, 0.75, 0.5] and set(ratios[3:6]) == {0.5}
    # epoch 2: the cosine factor of one epoch done out of two, on the new base rate
    assert steps[3].lr == pytest.approx(2e-3 * (1 + math.cos(math.pi / 2)) / 2)


def test_without_changes_the_loop_is_unchanged():
    chips, _ = build_chip_sets(ROIS, ChipConfig(n_chips=8, chip_size=64))
    config = TrainConfig(epochs=1, batch_size=4)
    plain = [e for e in tr.train(make_model(MODEL, 0), chips, config) if isinstance(e, StepMetrics)]
    asked = [e for e in tr.train(make_model(MODEL, 0), chips, config, changes=lambda: {})
             if isinstance(e, StepMetrics)]
    assert [s.loss for s in plain] == [s.loss for s in asked]


@pytest.mark.parametrize("changes, words", [
    ({"embed_dim": 64}, "changes the model's shape"),
    ({"depth": 2}, "changes the model's shape"),
    ({"epochs": 5}, "fixed once a training has started"),
    ({"batch_size": 8}, "fixed once a training has started"),
    ({"colour": 1}, "no training setting 'colour'"),
    ({"lr": -1.0}, "(?i)learning rate must be"),
    ({"mask_ratio": 1.0}, "(?i)mask ratio"),
])
def test_a_setting_that_cannot_change_while_paused_is_refused_in_words(changes, words):
    with pytest.raises(ConfigError, match=words) as info:
        changed_config(TrainConfig(), changes)
    if "fixed" in words or "shape" in words:
        assert "learning rate, weight decay, mask ratio, patch-loss weight" in str(info.value)


def test_live_settings_are_declared_once():
    assert tr.live_settings() == {"lr": "learning rate", "weight_decay": "weight decay",
                                  "mask_ratio": "mask ratio",
                                  "patch_loss_weight": "patch-loss weight"}
    assert changed_config(TrainConfig(), {"patch_loss_weight": 0.0}) == \
        replace(TrainConfig(), patch_loss_weight=0.0)
