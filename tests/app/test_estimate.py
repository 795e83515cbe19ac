"""The training-time estimate shown before Train, its calibration from saved runs, and the
refusal of settings over the server's budget (BHARATEO_MAX_TRAINING_S)."""
from types import SimpleNamespace

from bharateo.data.chips import ChipConfig
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import PRESETS, RunConfig
from bharateo.app.train import training_estimate
from bharateo.training.estimate import budget_advice, estimate_training_seconds, speed_factor
from bharateo.training.loop import TrainConfig

HUGE = RunConfig(chips=ChipConfig(n_chips=4096), model=ModelConfig(embed_dim=256, depth=8, heads=8),
                 train=TrainConfig(epochs=500))  # the UI's maximum: about 20 h on 2 cores


def saved(config: RunConfig, chips_per_s: float):
    return SimpleNamespace(config=config.to_dict(), history=[{"chips_per_s": chips_per_s}] * 3)


def test_estimate_grows_with_chips_epochs_and_model_size():
    nb = PRESETS["notebook default"]
    base = estimate_training_seconds(nb)
    assert estimate_training_seconds(PRESETS["quick demo"]) < base < estimate_training_seconds(HUGE)
    twice = RunConfig(chips=nb.chips, model=nb.model, train=TrainConfig(epochs=2 * nb.train.epochs))
    assert 1.9 < estimate_training_seconds(twice) / base < 2.1
    assert estimate_training_seconds(HUGE) > 10 * 3600


def test_speed_is_calibrated_from_saved_runs_and_damaged_ones_are_skipped():
    nb = PRESETS["notebook default"]
    assert speed_factor([])[0] == 1.0
    reference = nb.chips.n_chips / (estimate_training_seconds(nb) / nb.train.epochs)
    damaged = [SimpleNamespace(config=["not", "a", "dict"], history=[]),
               SimpleNamespace(config=nb.to_dict(), history=[{"chips_per_s": "fast"}])]
    factor, basis = speed_factor([*damaged, saved(nb, 2 * reference)])
    assert 1.8 < factor < 2.2 and "1 saved run" in basis
    assert 0.45 < estimate_training_seconds(nb, factor) / estimate_training_seconds(nb) < 0.55


def test_over_budget_is_refused_saying_what_to_reduce_and_what_fits():
    message = budget_advice(HUGE, 1.0, 3600)
    assert "BHARATEO_MAX_TRAINING_S" in message and "Reduce the epochs" in message
    epochs = int(message.split("at most ")[1].split(" epochs")[0])
    fitting = RunConfig(chips=HUGE.chips, model=HUGE.model, train=TrainConfig(epochs=epochs))
    assert 1 <= epochs < 500 and budget_advice(fitting, 1.0, 3600) is None
    assert budget_advice(PRESETS["notebook default"], 1.0, 3600) is None
    caption, refusal = training_estimate(PRESETS["notebook default"], [], None)
    assert "an estimate" in caption and refusal is None


# --- before any saved run: the spare worker's start-up timing, or said to be uncalibrated -------
def one_step_reference_chips_per_s(config: RunConfig) -> float:
    """Chips/s of one training step of `config` at the reference speed (factor 1)."""
    from dataclasses import replace

    from bharateo.training.estimate import epoch_seconds

    batch = config.train.batch_size
    step = replace(config, chips=replace(config.chips, n_chips=batch))
    return batch / epoch_seconds(step, 1.0)[0]


def test_without_saved_runs_the_estimate_uses_the_start_up_calibration_or_says_uncalibrated():
    """A teacher saw 'about 2 s' and waited 17 s on a busy machine: the first estimate was the
    reference machine's. It now uses the spare worker's timing, or says plainly it has none."""
    from bharateo.jobs.worker import Calibration

    nb = RunConfig()
    factor, basis = speed_factor([])
    assert factor == 1.0 and "uncalibrated" in basis and "several times longer" in basis
    slow = Calibration(0.25 * one_step_reference_chips_per_s(nb), 3, nb.to_dict())
    factor, basis = speed_factor([], calibration=slow)
    assert 0.24 < factor < 0.26 and "timed over 3 training steps" in basis
    assert 3.9 < estimate_training_seconds(nb, factor) / estimate_training_seconds(nb) < 4.1
    reference = nb.chips.n_chips / (estimate_training_seconds(nb) / nb.train.epochs)
    factor, basis = speed_factor([saved(nb, 2 * reference)], calibration=slow)  # a run wins
    assert 1.8 < factor < 2.2 and "saved run" in basis
    for useless in (Calibration(None, 0, {}), Calibration(5.0, 3, {"not": "a config"})):
        assert speed_factor([], calibration=useless) == speed_factor([])


def test_the_train_pages_estimate_names_its_basis(monkeypatch):
    from bharateo.jobs import worker
    from bharateo.jobs.worker import Calibration

    nb = PRESETS["notebook default"]
    monkeypatch.setattr(worker, "_calibration", None)
    caption, _ = training_estimate(nb, [], None)
    assert "uncalibrated" in caption
    monkeypatch.setattr(worker, "_calibration", Calibration(
        0.5 * one_step_reference_chips_per_s(RunConfig()), 3, RunConfig().to_dict()))
    caption, _ = training_estimate(nb, [], None)
    assert "timed over 3 training steps" in caption and "uncalibrated" not in caption


def test_calibration_gives_way_to_a_job_at_once():
    from bharateo.jobs.worker import calibrate

    assert calibrate(job_waiting=lambda: True).chips_per_s is None
