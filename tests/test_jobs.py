"""Background training jobs: queue order, slots, sessions that go away."""
import os
import time

import pytest
import torch

from bharateo import jobs
from bharateo.chips import ChipConfig
from bharateo.model import ModelConfig
from bharateo.pipeline import RunConfig
from bharateo.roi import Roi, RoiSpec
from bharateo.runs import load_run
from bharateo.train import TrainConfig
from tests.fixture_tiles import synthetic_native

ROIS = [Roi(RoiSpec(n, 0.0, 0.0, 256), synthetic_native(256, 256, seed=i, class_weights=k))
        for i, (n, k) in enumerate([("a", "urban"), ("b", "cropland")])]


def config(epochs=1):
    return RunConfig(rois=tuple(r.spec for r in ROIS), chips=ChipConfig(n_chips=16, chip_size=64),
                     model=ModelConfig(embed_dim=32, depth=1, heads=2),
                     train=TrainConfig(epochs=epochs))


def wait_until(condition, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_jobs_run_one_at_a_time_in_arrival_order(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    queue = jobs.TrainingQueue()
    started = [jobs.TrainingJob(config(), ROIS, f"q{i}", queue=queue).start() for i in range(3)]
    assert [queue.position(j) for j in started[1:]] in ([1, 2], [2, 3])
    for job in started:
        job.join(60)
    assert [j.status for j in started] == ["finished"] * 3
    assert [j.started_at for j in started] == sorted(j.started_at for j in started)
    assert queue.running() == 0 and all(queue.position(j) is None for j in started)


def test_two_slots_run_two_jobs_at_once(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "2")
    queue = jobs.TrainingQueue()
    a = jobs.TrainingJob(config(epochs=500), ROIS, "a", queue=queue).start()
    b = jobs.TrainingJob(config(epochs=500), ROIS, "b", queue=queue).start()
    wait_until(lambda: a.status == b.status == "running")
    assert queue.running() == 2
    a.stop(), b.stop()
    a.join(60), b.join(60)
    assert a.status == b.status == "stopped"


def test_closed_session_frees_its_slot_and_keeps_its_run(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    monkeypatch.setattr(jobs, "SESSION_GRACE_S", 0.0)
    queue = jobs.TrainingQueue()
    alive = {"first": True}
    first = jobs.TrainingJob(config(epochs=500), ROIS, "closing", lambda: alive["first"],
                             queue=queue).start()
    wait_until(lambda: len(first.snapshot()["steps"]) > 3)
    waiting = jobs.TrainingJob(config(), ROIS, "next", queue=queue).start()
    gone = jobs.TrainingJob(config(), ROIS, "gone-while-queued", lambda: False, queue=queue).start()
    alive["first"] = False  # the browser tab closed
    for job in (first, waiting, gone):
        job.join(60)
    assert first.status == "stopped" and load_run("closing").metrics["end_reason"] == "stopped"
    assert waiting.status == "finished"
    assert gone.status == "cancelled" and queue.running() == 0


def test_a_job_trains_in_a_worker_process_exactly_what_the_core_trains():
    from bharateo.pipeline import run_experiment

    job = jobs.TrainingJob(config(epochs=2), ROIS, "in-worker", queue=jobs.TrainingQueue()).start()
    job.join(120)
    assert job.status == "finished"
    assert job.worker.process.pid != os.getpid() and job.worker.process.returncode == 0
    core = run_experiment(config(epochs=2), rois=ROIS)
    learned = ("loss", "rec", "esa", "rec_mae", "esa_acc", "lr")
    assert [[e[k] for k in learned] for e in job.end.history] == \
        [[e[k] for k in learned] for e in core.history]
    for name, tensor in core.model.state_dict().items():
        assert torch.equal(job.model.state_dict()[name], tensor), name
    assert load_run("in-worker").metrics["train_loss"] == core.metrics["train_loss"]


def test_a_worker_that_dies_fails_the_job_with_a_message():
    job = jobs.TrainingJob(config(epochs=500), ROIS, "killed", queue=jobs.TrainingQueue()).start()
    wait_until(lambda: len(job.snapshot()["steps"]) > 2)
    job.worker.process.kill()
    job.join(60)
    assert job.status == "failed" and "ended unexpectedly" in job.error


def test_bad_settings_fail_with_the_message(monkeypatch):
    queue = jobs.TrainingQueue()
    bad = RunConfig(rois=tuple(r.spec for r in ROIS), chips=ChipConfig(n_chips=8, chip_size=512))
    job = jobs.TrainingJob(bad, ROIS, "bad", queue=queue).start()
    job.join(30)
    assert job.status == "failed" and "doesn't fit" in job.error and queue.running() == 0


@pytest.mark.parametrize("value,expected", [("3", 3), ("0", 1), ("many", 1)])
def test_max_trainings_from_env(monkeypatch, value, expected):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", value)
    assert jobs.max_trainings() == expected
