"""Background training jobs: queue order, slots, sessions that go away.

The watchdog, time-budget, session and queue tests give their jobs a FakeClock
(tests/support/clock.py) and move it on themselves: they wait on events (a job's state, the
worker's events, the job's thread ending), never on the wall clock."""
import os
import signal
import threading
from dataclasses import asdict, replace

import pytest
import torch

from bharateo.errors import ConfigError
from bharateo.jobs import service as jobs
from bharateo.data.chips import ChipConfig
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import RunConfig
from bharateo.data.roi import Roi, RoiSpec
from bharateo.storage.runs import load_run
from bharateo.training.loop import TrainConfig
from bharateo.jobs.worker import worker_threads
from tests.support.fixture_tiles import synthetic_native
from tests.support.clock import FakeClock
from tests.support.waiting import HANG_GUARD_S, join, wait_until

ROIS = [Roi(RoiSpec(n, 0.0, 0.0, 256), synthetic_native(256, 256, seed=i, class_weights=k))
        for i, (n, k) in enumerate([("a", "urban"), ("b", "cropland")])]


def config(epochs=1):
    return RunConfig(rois=tuple(r.spec for r in ROIS), chips=ChipConfig(n_chips=16, chip_size=64),
                     model=ModelConfig(embed_dim=32, depth=1, heads=2),
                     train=TrainConfig(epochs=epochs))


def done(*started):
    return lambda: all(job.done for job in started)


def test_jobs_run_one_at_a_time_in_arrival_order(monkeypatch):
    """On a clock that never moves: a queued job gets its slot when the one before it leaves
    (an event), not by looking again after some time."""
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    queue, clock, slots = jobs.TrainingQueue(), FakeClock(), []
    given = queue.wait_for_slot

    def wait_for_slot(job, cancelled, clock):  # the order in which slots are handed out
        got = given(job, cancelled, clock)
        slots.append(job.run_name)
        return got

    monkeypatch.setattr(queue, "wait_for_slot", wait_for_slot)
    started = [jobs.TrainingJob(config(), ROIS, f"q{i}", queue=queue, clock=clock).start()
               for i in range(3)]
    assert [queue.position(j) for j in started[1:]] in ([1, 2], [2, 3])
    for job in started:
        join(job)
    assert [j.status for j in started] == ["finished"] * 3
    assert slots == ["q0", "q1", "q2"]
    assert queue.running() == 0 and all(queue.position(j) is None for j in started)


def test_two_slots_run_two_jobs_at_once(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "2")
    queue, clock = jobs.TrainingQueue(), FakeClock()
    a = jobs.TrainingJob(config(epochs=500), ROIS, "a", queue=queue, clock=clock).start()
    b = jobs.TrainingJob(config(epochs=500), ROIS, "b", queue=queue, clock=clock).start()
    wait_until(lambda: a.status == b.status == "running", "both jobs running")
    assert queue.running() == 2
    a.stop(), b.stop()
    join(a), join(b)
    assert a.status == b.status == "stopped"


def test_a_job_let_in_moves_the_line_so_the_next_takes_a_free_slot_without_the_clock(monkeypatch):
    """Two slots, two jobs in line, the second asking first: when the first is let in, the
    second must look again at once. It waited for the clock (which stands still here) and ran
    only when the first had finished: test_two_slots_run_two_jobs_at_once hung under load."""
    import threading

    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "2")
    queue, clock = jobs.TrainingQueue(), FakeClock()
    first, second = object(), object()
    queue.enqueue(first)
    queue.enqueue(second)
    let_in = []
    waiter = threading.Thread(target=lambda: let_in.append(
        queue.wait_for_slot(second, lambda: False, clock)))
    waiter.start()
    wait_until(lambda: clock.waits >= 1, "the second job waiting in line")
    assert queue.wait_for_slot(first, lambda: False, clock)
    join(waiter, "the second job's wait for a slot")
    assert let_in == [True] and queue.running() == 2


def test_closed_session_frees_its_slot_and_keeps_its_run(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "none")  # the clock moves: no budget
    monkeypatch.setattr(jobs, "SESSION_GRACE_S", 0.0)
    queue, clock = jobs.TrainingQueue(), FakeClock()
    alive = {"first": True}
    first = jobs.TrainingJob(config(epochs=500), ROIS, "closing", lambda: alive["first"],
                             queue=queue, clock=clock).start()
    wait_until(lambda: len(first.snapshot()["steps"]) > 3, "a few steps")
    waiting = jobs.TrainingJob(config(), ROIS, "next", queue=queue, clock=clock).start()
    gone = jobs.TrainingJob(config(), ROIS, "gone-while-queued", lambda: False, queue=queue,
                            clock=clock).start()
    alive["first"] = False  # the browser tab closed
    clock.advance_until(done(first, waiting, gone), what="every job ended")
    for job in (first, waiting, gone):
        join(job)
    assert first.status == "stopped" and load_run("closing").metrics["end_reason"] == "stopped"
    assert waiting.status == "finished"
    assert gone.status == "cancelled" and queue.running() == 0


def test_a_job_trains_in_a_worker_process_exactly_what_the_core_trains():
    from bharateo.training.experiment import run_experiment

    job = jobs.TrainingJob(config(epochs=2), ROIS, "in-worker", queue=jobs.TrainingQueue()).start()
    join(job)
    assert job.status == "finished"
    assert job.worker.process.pid != os.getpid() and job.worker.process.returncode == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads())  # the worker leaves a core to the server
    try:
        core = run_experiment(config(epochs=2), rois=ROIS)
    finally:
        torch.set_num_threads(threads)
    learned = ("loss", "rec", "esa", "rec_mae", "esa_acc", "lr")
    assert [[e[k] for k in learned] for e in job.end.history] == \
        [[e[k] for k in learned] for e in core.history]
    for name, tensor in core.model.state_dict().items():
        assert torch.equal(job.model.state_dict()[name], tensor), name
    assert load_run("in-worker").metrics["train_loss"] == core.metrics["train_loss"]


def test_a_worker_that_dies_fails_the_job_with_a_message():
    job = jobs.TrainingJob(config(epochs=500), ROIS, "killed", queue=jobs.TrainingQueue(),
                           clock=FakeClock()).start()
    wait_until(lambda: len(job.snapshot()["steps"]) > 2, "a few steps")
    job.worker.process.terminate()  # SIGKILL reads as the OOM killer's (test_a_worker_out_of_memory...)
    join(job)
    assert job.status == "failed" and "ended unexpectedly (exit code -15)" in job.error


def test_bad_settings_fail_with_the_message(monkeypatch):
    queue = jobs.TrainingQueue()
    bad = RunConfig(rois=tuple(r.spec for r in ROIS), chips=ChipConfig(n_chips=8, chip_size=512))
    job = jobs.TrainingJob(bad, ROIS, "bad", queue=queue).start()
    join(job)
    assert job.status == "failed" and "doesn't fit" in job.error and queue.running() == 0


@pytest.mark.parametrize("value,expected", [("3", 3), ("0", None), ("many", None)])
def test_max_trainings_from_env(monkeypatch, value, expected):
    """A bad value is refused (bharateo/config/environment.py), never replaced by 1."""
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", value)
    if expected is None:
        with pytest.raises(ConfigError, match=f"BHARATEO_MAX_TRAININGS='{value}'"):
            jobs.max_trainings()
    else:
        assert jobs.max_trainings() == expected


def freeze(job):
    """SIGSTOP the job's worker once it is training (as the fault-injection probe did)."""
    wait_until(lambda: len(job.snapshot()["steps"]) > 2, "a few steps")
    os.kill(job.worker.process.pid, signal.SIGSTOP)


def let_time_pass(clock, seconds, step=1.0):
    """Move `clock` on by `seconds`, one `step` at a time, each after its waiters went round
    (the job's watchdog looked at every step)."""
    for _ in range(int(seconds / step)):
        before = clock.waits
        clock.advance(step)
        wait_until(lambda: clock.waits > before, "the job's watchdog looking at the clock")


def thaw_and_end(job):
    """Test cleanup: never leave a stopped worker behind."""
    if job.worker is not None and job.worker.process.poll() is None:
        job.worker.process.kill()


def test_a_frozen_worker_is_killed_and_the_next_job_gets_the_slot(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    monkeypatch.setenv("BHARATEO_STALL_S", "3")
    queue, clock = jobs.TrainingQueue(), FakeClock()
    frozen = jobs.TrainingJob(config(epochs=500), ROIS, "frozen", queue=queue, clock=clock).start()
    waiting = jobs.TrainingJob(config(), ROIS, "next-in-line", queue=queue, clock=clock).start()
    try:
        freeze(frozen)
        monkeypatch.setenv("BHARATEO_STALL_S", "120")  # the next job is read when it starts
        clock.advance_until(lambda: frozen.done, what="the frozen job ended")
        join(frozen)
        join(waiting)
        assert frozen.status == "failed" and "no progress for 3 s" in frozen.error
        assert frozen.worker.process.returncode == -signal.SIGKILL  # SIGTERM can't end a stopped one
        assert waiting.status == "finished" and load_run("next-in-line").history
        assert queue.running() == 0 and queue.jobs() == []
    finally:
        thaw_and_end(frozen)


@pytest.mark.parametrize("how", ["stop", "browser closed"])
def test_stop_or_a_closed_browser_ends_a_frozen_worker(monkeypatch, how):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(jobs, "SESSION_GRACE_S", 0.0)
    queue, alive, clock = jobs.TrainingQueue(), {"tab": True}, FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "frozen", lambda: alive["tab"],
                           queue=queue, clock=clock).start()
    try:
        freeze(job)
        if how == "stop":
            job.stop()
        else:
            alive["tab"] = False
        clock.advance_until(lambda: job.done, what="the frozen job ended")
        join(job)
        assert job.status == "failed" and "didn't answer Stop" in job.error
        assert job.worker.process.returncode == -signal.SIGKILL and queue.running() == 0
    finally:
        thaw_and_end(job)


def test_events_sent_before_stop_are_no_answer_to_it(monkeypatch):
    """A busy server reads a backlog of step events after it asked a frozen worker to stop:
    they were sent before the Stop, so they don't count as its answer and the worker is still
    killed after the grace time (it used to wait for the 120 s stall limit; seen on a loaded CI
    machine as a frozen worker still 'running' after 90 s)."""
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    monkeypatch.setenv("BHARATEO_STALL_S", "600")  # only the Stop rule may end it in time
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 1.0)
    clock = FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "backlog", queue=jobs.TrainingQueue(),
                           clock=clock)
    relay, held, go_on = job._relay, threading.Event(), threading.Event()
    go_on.set()

    def busy_relay(event):  # a server too busy to keep up with the worker's events
        held.set()
        go_on.wait(HANG_GUARD_S)
        return relay(event)

    monkeypatch.setattr(job, "_relay", busy_relay)
    job.start()
    try:
        wait_until(lambda: len(job.snapshot()["steps"]) > 2, "a few steps")
        held.clear(), go_on.clear()
        wait_until(held.is_set, "the job relaying an event")
        wait_until(lambda: job.worker.pending() >= 8, "a backlog of events sent already")
        os.kill(job.worker.process.pid, signal.SIGSTOP)
        job.stop()
        wait_until(lambda: job.snapshot()["stopping"], "the job saying 'stopping'")
        go_on.set()  # the backlog is read after the Stop was asked
        clock.advance_until(lambda: job.done, what="the frozen job ended")
        join(job)
        assert job.status == "failed" and "didn't answer Stop" in job.error, (job.status, job.error)
    finally:
        thaw_and_end(job)


def test_the_servers_time_budget_stops_a_training_and_saves_it_saying_why(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "2")
    clock = FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "budget", queue=jobs.TrainingQueue(),
                           clock=clock).start()
    wait_until(lambda: len(job.snapshot()["steps"]) > 1, "a few steps")
    assert job.status == "running"  # the clock stands still: no budget spent yet
    clock.advance_until(lambda: job.done, what="the job ended")
    join(job)
    run = load_run("budget")
    assert job.status == "stopped" and "time budget of 2 s" in job.end.message
    assert run.metrics["end_reason"] == "stopped" and "BHARATEO_MAX_TRAINING_S" in run.config["stop_reason"]
    assert len(run.history) < 500


def test_any_job_can_be_cancelled_from_the_queue_listing(monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    queue, clock = jobs.TrainingQueue(), FakeClock()
    first = jobs.TrainingJob(config(epochs=500), ROIS, "first", queue=queue, clock=clock).start()
    second = jobs.TrainingJob(config(epochs=500), ROIS, "second", queue=queue, clock=clock).start()
    wait_until(lambda: first.status == "running", "the first job running")
    rows = jobs.jobs_listing(queue)
    assert [(r["run_name"], r["status"], r["position"]) for r in rows] == \
        [("first", "running", None), ("second", "queued", 1)]
    rows[1]["job"].stop("cancelled from another session")  # it leaves the queue at once
    join(second)
    assert second.status == "cancelled" and "another session" in second.error
    rows[0]["job"].stop("cancelled from another session")
    join(first)
    assert first.status == "stopped", first.error
    assert "another session" in first.end.message
    assert jobs.jobs_listing(queue) == []


@pytest.mark.parametrize("value,expected", [(None, 1800.0), ("600", 600.0), ("0", ConfigError),
                                            ("x", ConfigError), ("inf", ConfigError),
                                            ("None", None)])
def test_max_training_seconds_from_env(monkeypatch, value, expected):
    """A bad value is refused (bharateo/config/environment.py), never replaced by 30 min."""
    if value is None:
        monkeypatch.delenv("BHARATEO_MAX_TRAINING_S", raising=False)
    else:
        monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", value)
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=f"BHARATEO_MAX_TRAINING_S='{value}'"):
            jobs.max_training_seconds()
    else:
        assert jobs.max_training_seconds() == expected


def test_the_worker_trains_at_a_lower_priority_and_leaves_a_core_to_the_server(monkeypatch):
    from bharateo.jobs import worker

    monkeypatch.delenv("BHARATEO_WORKER_NICE")  # the default (tests/conftest.py sets 0 for speed)
    monkeypatch.setattr(worker, "take_worker", worker.start_worker)  # not a spare started at 0
    job = jobs.TrainingJob(config(epochs=500), ROIS, "nice", queue=jobs.TrainingQueue()).start()
    try:
        wait_until(lambda: len(job.snapshot()["steps"]) > 2, "a few steps")
        server = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, job.worker.process.pid) == min(19, server + 10)
    finally:
        job.stop()
        join(job)
    monkeypatch.delenv("BHARATEO_WORKER_THREADS", raising=False)
    for cores, threads in [({0}, 1), ({0, 1}, 1), (set(range(8)), 7)]:
        monkeypatch.setattr(worker.os, "sched_getaffinity", lambda _pid, c=cores: c)
        assert worker.worker_threads() == threads
    monkeypatch.setenv("BHARATEO_WORKER_THREADS", "2")
    assert worker.worker_threads() == 2


def test_a_worker_frozen_before_it_reads_its_job_is_killed_too(monkeypatch):
    """The job (megabytes of chips) fills the pipe to a frozen worker: writing it must not block
    the watchdog."""
    import pickle

    from bharateo.jobs import worker
    from bharateo.data.chips import build_chip_sets

    monkeypatch.setenv("BHARATEO_STALL_S", "3")
    big = RunConfig(rois=tuple(r.spec for r in ROIS), chips=ChipConfig(n_chips=256, chip_size=64),
                    model=ModelConfig(embed_dim=32, depth=1, heads=2), train=TrainConfig(epochs=1))
    assert len(pickle.dumps(build_chip_sets(ROIS, big.chips))) > 1 << 20  # far over a pipe's 64 KiB
    worker.keep_spare_worker()
    assert worker.spare_worker_ready(HANG_GUARD_S)
    spare = worker._spare
    os.kill(spare.pid, signal.SIGSTOP)
    queue, clock = jobs.TrainingQueue(), FakeClock()
    job = jobs.TrainingJob(big, ROIS, "frozen-early", queue=queue, clock=clock).start()
    try:
        clock.advance_until(lambda: job.done, what="the frozen job ended")
        join(job)
        assert job.worker.process is spare
        assert job.status == "failed" and "no progress for 3 s" in job.error
        assert spare.returncode == -signal.SIGKILL and queue.running() == 0
    finally:
        if spare.poll() is None:
            spare.kill()


def test_a_worker_that_is_only_slow_still_using_cpu_is_not_killed(monkeypatch):
    """A loaded machine starves the low-priority worker: no events for a while, but its CPU time
    grows (faked here, with the worker paused for 3 stall times); it must be left to finish."""
    from bharateo.jobs import worker

    monkeypatch.setenv("BHARATEO_STALL_S", "2")
    ticks = iter(range(10**6))
    monkeypatch.setattr(worker.WorkerRun, "cpu_seconds", lambda self: float(next(ticks)))
    clock = FakeClock()
    job = jobs.TrainingJob(config(epochs=200), ROIS, "slow", queue=jobs.TrainingQueue(),
                           clock=clock).start()
    try:
        wait_until(lambda: len(job.snapshot()["steps"]) > 0, "a first step")
        os.kill(job.worker.process.pid, signal.SIGSTOP)
        let_time_pass(clock, 3 * 2, step=0.5)  # three stall times, no event, CPU time growing
        assert not job.done, job.error
        os.kill(job.worker.process.pid, signal.SIGCONT)
        join(job)
        assert job.status == "finished", job.error
    finally:
        thaw_and_end(job)


# --- pause, resume, step ---------------------------------------------------------------------
def paused_after(job, steps_before):
    """Wait for the job to be paused with its chart at least `steps_before` steps long."""
    wait_until(lambda: job.snapshot()["paused"] and len(job.snapshot()["steps"]) >= steps_before,
               f"paused after at least {steps_before} steps")
    return job.snapshot()


def test_pause_then_step_advances_exactly_one_step_and_the_run_says_so(monkeypatch):
    monkeypatch.setenv("BHARATEO_STALL_S", "3")  # a paused worker is waiting, not stalled
    clock = FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "stepped", queue=jobs.TrainingQueue(),
                           clock=clock).start()
    wait_until(lambda: len(job.snapshot()["steps"]) > 2, "a few steps")
    job.pause()
    snap = paused_after(job, 3)
    n = len(snap["steps"])
    assert [s["global_step"] for s in snap["steps"]] == list(range(1, n + 1))
    assert snap["controls"][-1]["action"] == "paused" and snap["controls"][-1]["after_step"] == n
    let_time_pass(clock, 7)  # over two stall periods: the watchdog must leave a paused worker alone
    assert len(job.snapshot()["steps"]) == n and job.status == "running"
    for k in (1, 2):
        job.step()
        wait_until(lambda: job.snapshot()["controls"][-1]["action"] == "paused", "paused again")
        snap = paused_after(job, n + k)
        assert len(snap["steps"]) == n + k  # exactly one optimiser step per Step
        assert snap["controls"][-2:] == [
            {"action": "step", "after_step": n + k - 1, "time": snap["controls"][-2]["time"]},
            {"action": "paused", "after_step": n + k, "by": "step",
             "time": snap["controls"][-1]["time"]}]
    job.resume()
    wait_until(lambda: len(job.snapshot()["steps"]) > n + 4, "training on")
    assert not job.snapshot()["paused"]
    job.stop()
    join(job)
    assert job.status == "stopped"
    saved = load_run("stepped").config["controls"]
    assert [c["action"] for c in saved] == ["pause", "paused", "step", "paused", "step", "paused",
                                            "resume"]
    assert [c["after_step"] for c in saved][1:6] == [n, n, n + 1, n + 1, n + 2]


def test_a_paused_training_whose_browser_closed_is_saved_as_stopped(monkeypatch):
    monkeypatch.setattr(jobs, "SESSION_GRACE_S", 0.0)
    alive, clock = {"yes": True}, FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "paused-gone", lambda: alive["yes"],
                           queue=jobs.TrainingQueue(), clock=clock).start()
    wait_until(lambda: len(job.snapshot()["steps"]) > 1, "a few steps")
    job.pause()
    snap = paused_after(job, 2)
    alive["yes"] = False  # the tab closed while paused
    clock.advance_until(lambda: job.done, what="the paused job ended")
    join(job)
    assert job.status == "stopped"
    run = load_run("paused-gone")
    assert run.metrics["end_reason"] == "stopped"
    assert "browser session closed" in run.config["stop_reason"]
    assert len(job.snapshot()["steps"]) == len(snap["steps"])  # no step after the pause


def test_a_paused_worker_that_does_not_answer_stop_is_killed_and_says_stopping_meanwhile(monkeypatch):
    """A paused worker is waiting, not stuck, but once Stop is asked it must answer: a frozen
    paused worker used to keep its slot for ever; until it is ended the job says 'stopping'."""
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 600.0)
    queue, clock = jobs.TrainingQueue(), FakeClock()
    job = jobs.TrainingJob(config(epochs=500), ROIS, "paused-frozen", queue=queue,
                           clock=clock).start()
    try:
        wait_until(lambda: len(job.snapshot()["steps"]) > 1, "a few steps")
        job.pause()
        last = paused_after(job, 2)["steps"][-1]  # 16 chips, batch 16: one step an epoch
        assert jobs.job_state_text(job.snapshot()) == \
            f"paused at step {last['global_step']} (epoch {last['global_step']}/500)"
        os.kill(job.worker.process.pid, signal.SIGSTOP)
        job.stop()
        assert jobs.job_state_text(job.snapshot()) == "stopping after the current step"
        assert [r["state"] for r in jobs.jobs_listing(queue)] == ["stopping after the current step"]
        let_time_pass(clock, 3)  # the grace is 600 s: still waiting for its answer
        assert not job.done and job.snapshot()["stopping"]
        monkeypatch.setattr(jobs, "STOP_GRACE_S", 1.0)
        clock.advance_until(lambda: job.done, what="the frozen job ended")
        join(job)
        assert job.status == "failed" and "didn't answer Stop" in job.error
        assert job.worker.process.returncode == -signal.SIGKILL and queue.running() == 0
    finally:
        thaw_and_end(job)


def test_pause_step_and_resume_leave_the_training_bit_identical():
    """TrainingControl pauses the consumer of train.train, never the loop itself: a run paused,
    stepped by steps and an epoch, then resumed ends with the same weights and losses."""
    import queue as q
    import threading

    from bharateo.data.chips import build_chip_sets
    from bharateo.training.experiment import run_experiment
    from bharateo.training.loop import EpochMetrics, StepMetrics, TrainedWeights, TrainingEnd, TrainingPaused
    from bharateo.jobs.worker import TrainingControl, send_training

    cfg = config(epochs=2)
    cfg = replace(cfg, train=replace(cfg.train, batch_size=4))  # 4 steps an epoch
    chips, held = build_chip_sets(ROIS, cfg.chips)
    events, control = q.Queue(), TrainingControl()
    control.command("pause")  # paused after the very first step
    thread = threading.Thread(target=send_training, args=(cfg, chips, held, control, events.put))
    thread.start()

    def until(kind):
        seen = []
        while True:
            event = events.get(timeout=HANG_GUARD_S)
            seen.append(event)
            if isinstance(event, kind):
                return seen

    seen = until(TrainingPaused)
    assert [type(e) for e in seen] == [StepMetrics, TrainingPaused] and seen[1].global_step == 1
    control.command("step")
    seen = until(TrainingPaused)
    assert [type(e) for e in seen] == [StepMetrics, TrainingPaused] and seen[0].global_step == 2
    control.command("epoch")  # the rest of epoch 1
    seen = until(TrainingPaused)
    assert [type(e) for e in seen] == [StepMetrics, StepMetrics, EpochMetrics, TrainingPaused]
    assert seen[-1].global_step == 4 and seen[-2].epoch == 1
    assert seen[-1].by == "epoch" and seen[-1].commands == 3
    control.command("resume")
    rest = until(TrainedWeights)
    join(thread)
    end = next(e for e in rest if isinstance(e, TrainingEnd))
    core = run_experiment(cfg, rois=ROIS)
    learned = ("loss", "rec", "esa", "rec_mae", "esa_acc", "lr")
    assert [[e[k] for k in learned] for e in end.history] == \
        [[e[k] for k in learned] for e in core.history]
    weights = rest[-1].state_dict()
    assert all(torch.equal(weights[k], v) for k, v in core.model.state_dict().items())
    assert control.paused_s > 0


def test_time_paused_is_not_training_time():
    """Epoch chips/s and elapsed leave out the pauses (the ETA and the speed calibration)."""
    from bharateo.training.loop import EpochMetrics, StepMetrics, TrainingEnd
    from bharateo.jobs.worker import TrainingControl

    control = TrainingControl()
    step = StepMetrics(1, 1, 2, 1, 1.0, 1.0, 1.0, 0.1, 0.5, 4e-4, chips_per_s=8.0, elapsed=1.0)
    assert control.adjust(step, 16) is step  # never paused: the same event
    control.paused_s, control._paused_in = 3.0, {1: 3.0}  # 3 s paused inside epoch 1
    epoch = EpochMetrics(1, 1.0, 1.0, 1.0, 0.1, 0.5, 4e-4, chips_per_s=16 / 5.0, elapsed=5.0)
    fixed = control.adjust(epoch, 16)
    assert fixed.chips_per_s == pytest.approx(16 / 2.0) and fixed.elapsed == pytest.approx(2.0)
    assert control.adjust(replace(step, elapsed=6.0), 16).elapsed == pytest.approx(3.0)
    end = control.adjust(TrainingEnd("finished", "", 1, [asdict(epoch)]), 16)
    assert end.history[0]["chips_per_s"] == pytest.approx(8.0)
    assert end.history[0]["elapsed"] == pytest.approx(2.0)


def test_the_worker_sends_typed_events_from_the_pipelines_one_loop():
    import pickle

    from bharateo.jobs.looks import StoredLooks
    from bharateo.jobs.worker import TrainingFailed, send_training
    from bharateo.data.chips import build_chip_sets
    from bharateo.training.experiment import run_experiment
    from bharateo.training.loop import EpochMetrics, StepMetrics, TrainedWeights, TrainingEnd

    run = config(epochs=2)
    train_chips, heldout = build_chip_sets(ROIS, run.chips)
    sent = []
    send_training(run, train_chips, heldout, None, lambda e: sent.append(pickle.loads(pickle.dumps(e))))
    kinds = [type(e) for e in sent]
    # the run's end, the looks the pages read (computed by the worker as its last step), the weights
    assert kinds[-3:] == [TrainingEnd, StoredLooks, TrainedWeights]
    assert StepMetrics in kinds and EpochMetrics in kinds
    assert all(not isinstance(e, tuple) for e in sent)  # no untyped tuples on the wire
    core = run_experiment(run, rois=ROIS)  # the CLI's path: the same loop, the same numbers
    assert [e.loss for e in sent if isinstance(e, StepMetrics)] == [s.loss for s in core.steps]
    weights = sent[-1]
    assert weights.metrics == core.metrics
    for name, tensor in core.model.state_dict().items():
        assert torch.equal(weights.state_dict()[name], tensor), name

    failed = []  # a bad setting reaches the page as a typed failure with the core's message
    bad = RunConfig(rois=run.rois, chips=run.chips, model=run.model,
                    train=TrainConfig(epochs=1, device="tpu"))
    send_training(bad, train_chips, heldout, None, failed.append)
    assert len(failed) == 1 and isinstance(failed[0], TrainingFailed)
    assert "Unknown device 'tpu'" in failed[0].message


def test_the_spare_worker_times_this_machine_then_trains_as_before(isolated_env, monkeypatch):
    """The idle spare times a few steps at start-up (the first estimate's calibration), and its
    event stream stays in step: the job that takes it trains and finishes as always."""
    from bharateo.jobs import worker

    monkeypatch.setattr(worker, "_calibration", None)  # as at start-up: nothing timed yet
    old = worker.take_worker()  # any spare an earlier test left
    old.kill()
    old.wait()
    worker.keep_spare_worker()
    spare = worker._spare
    assert spare.calibration_reader is not None and worker.spare_worker_ready(HANG_GUARD_S)
    measured = worker.measured_calibration()
    assert measured is not None and measured.chips_per_s > 0
    assert measured.steps == worker.CALIBRATION_STEPS and measured.config["train"]["batch_size"]
    job = jobs.TrainingJob(config(), ROIS, "after-calibration", queue=jobs.TrainingQueue()).start()
    join(job)
    assert job.worker.process is spare and job.status == "finished", job.error
    worker.keep_spare_worker()  # the next spare: measured already, so it doesn't time again
    assert getattr(worker._spare, "calibration_reader", None) is None


def test_a_paused_run_resumed_with_a_new_learning_rate_trains_with_it_and_logs_it(monkeypatch):
    """Pause, change the learning rate and mask ratio, Step: that step runs at the new rate (the
    optimiser's, as StepMetrics reports it), the change is logged with its step in config.json
    and the run is saved with the settings as they ended. A shape-changing setting is refused
    while paused, and any change while running, in words."""
    from bharateo.errors import ConfigError

    cfg = config(epochs=500)
    cfg = replace(cfg, train=replace(cfg.train, cosine=False))  # the new rate, unscheduled
    job = jobs.TrainingJob(cfg, ROIS, "changed", queue=jobs.TrainingQueue(),
                           clock=FakeClock()).start()  # time stands still: no watchdog fires
    wait_until(lambda: len(job.snapshot()["steps"]) > 1, "a few steps")
    with pytest.raises(ConfigError, match="only while the training is paused"):
        job.change_settings({"lr": 1e-3})
    job.pause()
    n = len(paused_after(job, 2)["steps"])
    with pytest.raises(ConfigError, match="changes the model's shape"):
        job.change_settings({"embed_dim": 64})
    with pytest.raises(ConfigError, match="(?i)learning rate must be"):
        job.change_settings({"lr": -1.0})
    assert job.change_settings({"lr": 2e-3}) == {"lr": 2e-3}
    assert job.change_settings({"mask_ratio": 0.5}) == {"lr": 2e-3, "mask_ratio": 0.5}
    assert job.snapshot()["steps"][-1]["lr"] == 4e-4  # nothing trained with it yet
    job.step()
    wait_until(lambda: job.snapshot()["controls"][-1]["action"] == "paused"
               and len(job.snapshot()["steps"]) == n + 1, "paused after one more step")
    snap = job.snapshot()
    assert [s["lr"] for s in snap["steps"][n - 1:]] == [4e-4, 2e-3]
    changed = [c for c in snap["controls"] if c["action"] == "changed"]
    assert changed == [{"action": "changed", "from_step": n + 1, "progress": changed[0]["progress"],
                        "settings": {"lr": 2e-3, "mask_ratio": 0.5}, "lr": 2e-3,
                        "time": changed[0]["time"]}]
    assert snap["pending_changes"] == {} and snap["config"].train.lr == 2e-3
    job.stop()
    join(job)
    saved = load_run("changed").config
    assert saved["train"]["lr"] == 2e-3 and saved["train"]["mask_ratio"] == 0.5
    assert [c for c in saved["controls"] if c["action"] == "changed"] == changed


# --- issue 20.4: a worker killed by memory says so ----------------------------------------------
def _worker_running(code: str):
    """take_worker's stand-in: a process running `code` (the real worker's imports at hand)."""
    import subprocess
    import sys

    from bharateo.jobs import worker

    path = os.pathsep.join(p for p in (str(worker.PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    return lambda: subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})


OOM_WORKERS = {
    # the kernel's OOM killer: SIGKILL once the job (its chips) is being read
    "sigkill": "import os, signal, sys; sys.stdin.buffer.read(1); os.kill(os.getpid(), signal.SIGKILL)",
    # a MemoryError in the training loop: the real worker, its loop raising it
    "training": "import bharateo.training.experiment as p\n"
                "def boom(*a, **k):\n    raise MemoryError\n"
                "p.experiment_events = boom\n"
                "from bharateo.jobs import worker\nworker.run_one_job()",
    # a MemoryError while the job is unpickled: nothing can be sent, the exit code says it
    "reading the job": "import pickle\n"
                       "def boom(*a, **k):\n    raise MemoryError\n"
                       "pickle.load = boom\n"
                       "from bharateo.jobs import worker\nworker.run_one_job()",
}


@pytest.mark.parametrize("how", list(OOM_WORKERS))
def test_a_worker_out_of_memory_says_so(monkeypatch, how):
    """It said "ended unexpectedly (exit code 0)", not a word about memory."""
    from bharateo.jobs import worker

    monkeypatch.setattr(worker, "take_worker", _worker_running(OOM_WORKERS[how]))
    job = jobs.TrainingJob(config(), ROIS, f"oom-{how.split()[0]}", queue=jobs.TrainingQueue()).start()
    join(job)
    assert job.status == "failed", job.status
    assert "ran out of memory: reduce chips, chip size or model size" in job.error, job.error
    assert "ended unexpectedly" not in job.error


def test_cutting_chips_out_of_memory_in_the_server_says_so(monkeypatch):
    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(jobs, "build_chip_sets", boom)
    job = jobs.TrainingJob(config(), ROIS, "oom-chips", queue=jobs.TrainingQueue()).start()
    join(job)
    assert job.status == "failed" and "ran out of memory: reduce chips" in job.error
