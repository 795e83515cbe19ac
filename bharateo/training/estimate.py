"""How long a training will take, before it starts: a speed model of one training worker
(FLOPs per chip of the model variant, a per-step overhead) calibrated on this server's measured
speed (its saved runs' chips/s, or a spare worker's start-up timing), the check against a
server's time budget, and the time left of a training under way. Pure arithmetic: no Streamlit,
no jobs (the Train page composes its caption from these, bharateo/app/train.py).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import replace

from bharateo.config.schema import is_number
from bharateo.models.notebook import ModelConfig
from bharateo.models.registry import model_class
from bharateo.training.experiment import RunConfig

# One training worker thread (bharateo.jobs.worker leaves the other core to the server) on the 2-core
# AMD EPYC this lab was measured on: the encoder's matmuls ran at ~60-75 GFLOP/s, and PyTorch's
# per-op overhead added ~4 ms + ~3 ms per layer to every step. Saved runs' measured chips/s
# rescale these for the machine at hand (speed_factor).
FLOPS_PER_S = 70e9
STEP_OVERHEAD_S = (0.004, 0.003)  # per step: fixed, per layer
EVAL_COST = 1 / 3  # a forward pass (held-out metrics) vs a training step, per chip


def chip_flops(model: ModelConfig, mask_ratio: float) -> float:
    """Training FLOPs for one chip of the variant `model.arch` (its flops_per_chip: the notebook
    model's encoder runs over all N tokens, the mae variant's over the visible ones only)."""
    return model_class(model.arch).flops_per_chip(model, mask_ratio)


def epoch_seconds(config: RunConfig, factor: float) -> tuple[float, float]:
    """(training s, held-out evaluation s) of one epoch at `factor` x the reference speed."""
    flops = chip_flops(config.model, config.train.mask_ratio) / (FLOPS_PER_S * factor)
    steps = math.ceil(config.chips.n_chips / config.train.batch_size)
    layers = model_class(config.model.arch).layer_count(config.model)
    overhead = (STEP_OVERHEAD_S[0] + STEP_OVERHEAD_S[1] * layers) / factor
    held = config.chips.n_holdout_chips if config.chips.holdout_roi else 0
    return steps * overhead + config.chips.n_chips * flops, held * flops * EVAL_COST


def estimate_training_seconds(config: RunConfig, factor: float = 1.0) -> float:
    """Seconds a training of `config` should take in a worker (chips x epochs x model size, plus
    held-out evaluation each epoch and at the end), at `factor` x the reference machine's speed."""
    train_s, eval_s = epoch_seconds(config, factor)
    return config.train.epochs * (train_s + eval_s) + eval_s


UNCALIBRATED = ("this lab's reference machine (2-core AMD EPYC, one training core): uncalibrated, "
                "nothing has been timed on this server yet, so on a busy or slower machine it can "
                "take several times longer")


def calibration_factor(calibration) -> float | None:
    """This machine's speed / the reference's from a worker's start-up Calibration
    (bharateo.jobs.worker.calibrate): its measured chips/s over what epoch_seconds predicts for
    one step of its config at factor 1; None without a usable one."""
    try:
        config = RunConfig.from_dict(calibration.config)
        batch = config.train.batch_size
        one_step = replace(config, chips=replace(config.chips, n_chips=batch, holdout_roi=None))
        train_s, _ = epoch_seconds(one_step, 1.0)
        ratio = float(calibration.chips_per_s) * train_s / batch
    except Exception:  # no calibration, or one this version can't read
        return None
    return min(max(ratio, 0.05), 20.0) if math.isfinite(ratio) and ratio > 0 else None


def speed_factor(runs, newest: int = 5, calibration=None) -> tuple[float, str]:
    """(this machine's speed / the reference's, where that comes from), from the measured epoch
    chips/s of the `newest` saved runs that have them (median); without any, from `calibration`
    (a spare worker's start-up timing, bharateo.jobs.worker.measured_calibration); else
    (1.0, UNCALIBRATED). Runs with unreadable or damaged fields are skipped."""
    ratios = []
    for run in runs:
        try:
            config = RunConfig.from_dict(run.config)
            measured = statistics.median(float(e["chips_per_s"]) for e in run.history)
            train_s, _ = epoch_seconds(config, 1.0)
            ratio = measured * train_s / config.chips.n_chips
        except Exception:  # a damaged or old run says nothing about this machine's speed
            continue
        if math.isfinite(ratio) and ratio > 0:
            ratios.append(ratio)
        if len(ratios) == newest:
            break
    if not ratios:
        factor = calibration_factor(calibration) if calibration is not None else None
        if factor is None:
            return 1.0, UNCALIBRATED
        return factor, (f"this server's speed, timed over {calibration.steps} training steps of "
                        "the notebook's model at start-up (no run saved yet)")
    factor = min(max(statistics.median(ratios), 0.05), 20.0)
    return factor, f"the speed measured in the last {len(ratios)} saved run(s) on this server"


def format_duration(seconds: float) -> str:
    """45 s, 12 min, 3.4 h."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def budget_advice(config: RunConfig, factor: float, budget: float) -> str | None:
    """None if the estimate fits `budget` s; else what is over and what to reduce so it fits."""
    estimate = estimate_training_seconds(config, factor)
    if estimate <= budget:
        return None
    train_s, eval_s = epoch_seconds(config, factor)
    epochs = int((budget - eval_s) // (train_s + eval_s))
    chips = int(config.chips.n_chips * budget / estimate) // 16 * 16
    fits = [f"at most {epochs} epochs" if epochs >= 1 else None,
            f"about {chips} chips" if chips >= 16 else None]
    fits = " or ".join(f for f in fits if f) or "a smaller model"
    return (f"This training would take about {format_duration(estimate)} (an estimate), over this "
            f"server's limit of {format_duration(budget)} per training (BHARATEO_MAX_TRAINING_S). "
            f"Reduce the epochs, chips, embed dim or depth: with these settings {fits} would fit.")


def eta_seconds(steps: list[dict], epochs: int, window: int = 20) -> float | None:
    """Seconds left, from the pace of the last `window` steps (the first ones are slower)."""
    if len(steps) < 3:
        return None
    recent = steps[-min(window, len(steps) - 1) - 1:]
    per_step = (recent[-1]["elapsed"] - recent[0]["elapsed"]) / (len(recent) - 1)
    return max(steps[-1]["steps_per_epoch"] * epochs - len(steps), 0) * per_step


def run_chips_per_s(run) -> float | None:
    """Training speed of a saved run (storage.runs.SavedRun, read: its `history`): the median
    of its epochs' chips/s (None if unknown)."""
    speeds = [e.get("chips_per_s") for e in run.history]
    speeds = [float(v) for v in speeds if is_number(v) and math.isfinite(v) and v > 0]
    return statistics.median(speeds) if speeds else None
