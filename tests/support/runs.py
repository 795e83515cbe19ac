"""Runs the tests share: the tiny trained run the evaluation and page tests read (`TINY_CONFIG`,
trained once per session by the `trained` fixture in tests/conftest.py), a freshly initialised
run saved like a real one (`save_untrained_run`), and hand-made evaluation results
(`result_dict`).

The tiny run: 64 chips of 128 px from 512 px fixture ROIs, a 32-dim one-layer model, 30 epochs at
mask ratio 0.25. Trained at a low ratio, it reliably paints hidden patches back better when more
of the chip is visible, which the mask-ratio curve test needs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from bharateo.data.chips import ChipConfig
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec
from bharateo.data.worldcover import NUM_CLASSES
from bharateo.storage.runs import load_run, save_run
from bharateo.training import evaluate as ev
from bharateo.training.experiment import (ExperimentResult, RunConfig, load_rois, make_model,
                                          run_experiment, save_experiment)
from bharateo.training.loop import TrainConfig
from tests.support.models import TINY_MODEL

TINY_ROIS = tuple(RoiSpec(r.name, r.lon, r.lat, 512) for r in NOTEBOOK_ROIS)
TINY_CONFIG = RunConfig(
    rois=TINY_ROIS,
    chips=ChipConfig(n_chips=64, chip_size=128, holdout_roi="mathura_belt", n_holdout_chips=16),
    model=TINY_MODEL,
    train=TrainConfig(epochs=30, lr=3e-3, mask_ratio=0.25))

# the same regions, 16 chips, one epoch: what save_untrained_run records
SMALL_CONFIG = RunConfig(rois=TINY_ROIS, chips=ChipConfig(n_chips=16), model=TINY_MODEL,
                         train=TrainConfig(epochs=1))


@dataclass
class TinyRun:
    config: RunConfig
    rois: list
    result: ExperimentResult


def train_tiny_run(worldcover_folder: Path, data_folder: Path) -> TinyRun:
    """TINY_CONFIG trained on the fixture tiles in `worldcover_folder` (not saved).

    Torch runs on one thread meanwhile: on two shared cores, two OpenMP threads fighting other
    processes made this 10x slower (45 s instead of 4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BHARATEO_WORLDCOVER_DIR", str(worldcover_folder))
            mp.setenv("BHARATEO_DATA_DIR", str(data_folder))
            rois = load_rois(TINY_CONFIG.rois)
            result = run_experiment(TINY_CONFIG, rois)
    finally:
        torch.set_num_threads(threads)
    assert result.end.reason == "finished"
    return TinyRun(TINY_CONFIG, rois, result)


def save_tiny_run(tiny: TinyRun, name: str):
    """Save the trained tiny run under the current BHARATEO_CHECKPOINT_DIR -> SavedRun."""
    save_experiment(name, tiny.config, tiny.result, tiny.rois)
    return load_run(name)


def model_entry(tiny: TinyRun, run_name: str | None):
    """What the Train page / state.use_saved_run put in st.session_state.model."""
    from bharateo.app.state import CurrentModel

    return CurrentModel(tiny.result.model, f"run '{run_name}' (trained here)", tiny.config, run_name)


def save_untrained_run(name: str, epochs_done: int = 1):
    """A run of SMALL_CONFIG with freshly initialised weights (seeded), saved like a real one."""
    model = make_model(SMALL_CONFIG.model, SMALL_CONFIG.train.seed)
    save_run(name, model, SMALL_CONFIG.to_dict(), [{"epoch": 1}] * epochs_done,
             {"epochs_done": epochs_done, "end_reason": "finished"})
    return load_run(name)


def result_dict(accuracy, confusion_diag, support, mae=0.1, recalls=None):
    """An evaluation result (as evaluate returns it) whose class k has `support[k]` patches,
    `confusion_diag[k]` of them right (the rest called class k+1); checks its accuracy."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    for k, (right, n) in enumerate(zip(confusion_diag, support)):
        confusion[k, k] = right
        confusion[k, (k + 1) % NUM_CLASSES] = n - right
    report = ev.classification_report(confusion)
    assert report["accuracy"] == pytest.approx(accuracy, abs=0.01)
    return {"confusion": confusion.tolist(), **report, "masked_mae": mae,
            "per_class_mae": [mae] * NUM_CLASSES}
