"""The Train page's training jobs: one thread per job, a first-come-first-served queue per server.

Streamlit APIs are not thread-safe, so a job never touches Streamlit (this package imports none):
its thread writes progress into the job (under a lock) and pages poll `snapshot()`. At most
BHARATEO_MAX_TRAININGS jobs run at once on a server; the rest wait in order. A job whose browser
session has gone (the app passes `session_alive`, a callable) stops, is saved, and frees its slot.

Every decision on time below reads the job's clock (bharateo/jobs/clock.py; the machine's unless
a test gives its own), and every wait of the job's thread goes through it.

Each training runs in a worker process of its own (bharateo.jobs.worker): in a server thread the same
loop runs 15-25 % slower. The job's thread feeds it the chips, relays its events and saves the run.

No slot is held forever: a worker that sends nothing and uses no CPU for BHARATEO_STALL_S seconds
(default 120; a step of the largest model takes a few seconds), or sends nothing for
BUSY_STALL_FACTOR times that while busy, is killed and its job fails with a message (a worker that
is only slow because the machine is loaded still uses CPU, so it is left alone); a worker that
doesn't answer Stop (or a closed browser) within STOP_GRACE_S of idle CPU is killed; a training
that reaches the server's budget BHARATEO_MAX_TRAINING_S (unset: 30 min, bharateo/jobs/limits.py) stops as if Stop was
pressed and is saved, saying why. Any job can be cancelled with stop(reason) (see jobs_listing).

A running job can be paused, resumed and stepped (pause(), resume(), step("step" | "epoch")):
the worker stops pulling the training loop's next event (bharateo.jobs.worker.TrainingControl), so the
chart stays and nothing about the training changes. A paused worker is waiting, not stalled: the
watchdog leaves it alone; a closed browser or Stop still ends it, saved like any stopped run. A
paused training keeps its slot, so its pause counts toward BHARATEO_MAX_TRAINING_S. Every
control and pause is logged (`controls`, saved in config.json), so a run's record says how it
was stepped. While paused, the live settings (learning rate, weight decay, mask ratio, patch-loss
weight: train.live_settings) can be changed (change_settings); the training goes on with them
from its next step, each change is logged with that step ("changed"), and the run is saved
with the settings as they ended.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, replace

from bharateo.jobs import looks
from bharateo.jobs.clock import SYSTEM_CLOCK, Clock
from bharateo.jobs.looks import StoredLooks
from bharateo.jobs.worker import WorkerRun, keep_spare_worker
from bharateo.data.chips import build_chip_sets
from bharateo.config import environment
from bharateo.errors import BharatEOError, ConfigError
from bharateo.jobs.limits import max_training_seconds  # noqa: F401  (30 min unset; docs/limits.md)
from bharateo.training.experiment import ExperimentResult, RunConfig, renamed, save_experiment
from bharateo.storage.runs import load_run, release_run_name
from bharateo.data.sources import DEFAULT_SOURCE, pixel_source
from bharateo.training.loop import (EpochMetrics, SettingsChanged, StepMetrics, TrainedWeights,
                            TrainingEnd, TrainingPaused, changed_config, make_model)
from bharateo.words import plural

log = logging.getLogger(__name__)
SESSION_GRACE_S = 30.0  # a session gone this long counts as closed
STOP_GRACE_S = 15.0  # a worker that sends nothing and uses no CPU this long after Stop is killed
BUSY_STALL_FACTOR = 10  # a worker busy this many stall times without sending anything is stalled too
POLL_S = 0.5  # how often a job looks at Stop, its session, the watchdog and the budget
SLOT_POLL_S = 0.25  # how often a queued job looks at Stop and its session
SESSION_CHECK_S = 2.0  # how often a running job asks whether its browser session is alive


def max_trainings() -> int:
    """BHARATEO_MAX_TRAININGS: trainings run at once (1); bharateo/config/environment.py."""
    return environment.MAX_TRAININGS.get()


def stall_seconds() -> float:
    """BHARATEO_STALL_S: seconds without any progress from a worker before it is killed (120)."""
    return environment.STALL_S.get()




class TrainingQueue:
    """Slots for trainings on this server, handed out in arrival order."""

    def __init__(self):
        self._cond = threading.Condition()
        self._waiting: list = []
        self._running: list = []
        # counts every change of the line or the slots (enqueue, a job let in, leave, wake): a
        # waiter looks again when it moves. A job let in moves the line too: the next in line
        # may take a second slot at once (it waited for a clock that may stand still before)
        self._changes = 0

    def _changed(self) -> None:
        self._changes += 1
        self._cond.notify_all()

    def enqueue(self, job) -> None:
        """Take a place in line (at click time, so arrival order is click order)."""
        with self._cond:
            self._waiting.append(job)
            self._changed()

    def wait_for_slot(self, job, cancelled, clock: Clock = SYSTEM_CLOCK) -> bool:
        """Block until `job` (enqueued) may run (True) or `cancelled()` says give up (False).
        Looks again when the queue changes, when wake() is called, and every SLOT_POLL_S s of
        `clock` (`cancelled` may depend on time: a browser session's grace)."""
        with self._cond:
            while True:
                if cancelled():
                    return False
                if self._waiting[0] is job and len(self._running) < max_trainings():
                    self._waiting.remove(job)
                    self._running.append(job)
                    self._changed()
                    return True
                seen = self._changes
                clock.wait(self._cond, lambda: self._changes != seen, SLOT_POLL_S)

    def wake(self) -> None:
        """Make every wait_for_slot look again now (e.g. a queued job was stopped)."""
        with self._cond:
            self._changed()

    def leave(self, job) -> None:
        """Give back the job's place in line or its slot."""
        with self._cond:
            for line in (self._waiting, self._running):
                if job in line:
                    line.remove(job)
            self._changed()

    def position(self, job) -> int | None:
        """1 = next to run; None when not waiting."""
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def jobs(self) -> list:
        """Every job holding a slot, then every job waiting, in queue order."""
        with self._cond:
            return [*self._running, *self._waiting]


QUEUE = TrainingQueue()


class TrainingJob:
    """One training run: a background thread that waits for a slot, then relays a worker
    process's events and saves the run. Read it with snapshot(); stop it with stop().
    `session_alive()`: whether the browser session that started it is still there (the app's
    answer; a session gone SESSION_GRACE_S stops the job); `clock`: the time every watchdog
    reads (bharateo/jobs/clock.py)."""

    def __init__(self, config: RunConfig, rois, run_name: str, session_alive=lambda: True,
                 queue: TrainingQueue = QUEUE, clock: Clock = SYSTEM_CLOCK):
        self.config, self.rois, self.run_name = config, rois, run_name
        self.queue, self._session_alive, self.clock = queue, session_alive, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.status = "queued"  # queued | running | finished | stopped | diverged | failed | cancelled
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.end: TrainingEnd | None = None
        self.error: str | None = None
        self.saved_path = None
        self.unsaved = None  # the trained result while it is not saved
        self.requested_name = None  # set when the run was saved under another name
        self.model = None
        self.stored_looks: list[dict] | None = None  # the worker's StoredLooks, until saved
        self.adopted = False  # its model was made the session's current model (adopt_finished_job)
        self.worker: WorkerRun | None = None
        self.train_chips = self.heldout_chips = None
        self.created = clock.wall()
        self.started_at: float | None = None
        self.stop_reason: str | None = None  # why it was stopped, if not by its own session
        self.paused = False  # the worker is waiting (a TrainingPaused came, no command since)
        self.control_state = "running"  # running | pausing | paused | stepping
        self.controls: list[dict] = []  # pause/resume/step commands and pauses, in order
        self.pending_changes: dict = {}  # settings changed while paused, not yet trained with
        self._early: list[str] = []  # commands given before the worker started
        self._commands_sent = 0
        self._gone_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"train-{run_name}", daemon=True)

    def start(self) -> "TrainingJob":
        self.queue.enqueue(self)
        self._thread.start()
        return self

    def stop(self, reason: str | None = None) -> None:
        """Stop after the current step (a queued job leaves the queue); `reason` (e.g. "cancelled
        from another session") is shown and saved with the run."""
        if reason and not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self.queue.wake()  # a queued job leaves the queue now
        with self._lock:
            worker = self.worker
        if worker is not None:  # a running one tells its worker now (else _train does)
            worker.wake()

    def pause(self) -> None:
        """Pause after the current optimiser step (the chart stays; Resume or Step go on)."""
        self._command("pause", "pausing")

    def resume(self) -> None:
        self._command("resume", "running")

    def step(self, unit: str = "step") -> None:
        """One more optimiser step ("step") or the rest of the current epoch ("epoch"), then
        pause again."""
        if unit not in ("step", "epoch"):
            raise ValueError(f"step unit must be 'step' or 'epoch', not {unit!r}")
        self._command(unit, "stepping")

    def change_settings(self, values: dict) -> dict:
        """Change live settings (name -> value) of this paused training: it goes on with them from
        its next optimiser step (Resume or Step). -> the settings still waiting for that step.
        Raises ConfigError, in words, when the training is not paused, or for a setting that
        can't change while paused or a value out of its range (loop.changed_config)."""
        with self._lock:
            if self.done or self._stop.is_set() or not self.paused or self.worker is None:
                raise ConfigError("Settings change only while the training is paused: press "
                                  "Pause, change them, then Resume or Step.")
            changed_config(self.config.train, {**self.pending_changes, **values})  # or raises
            self.pending_changes = {**self.pending_changes, **values}
            self.worker.change(dict(values))
            return dict(self.pending_changes)

    def _command(self, command: str, state: str) -> None:
        with self._lock:
            if self.done or self._stop.is_set():
                return
            self.paused, self.control_state = False, state
            self._commands_sent += 1
            self.controls.append({"action": command, "after_step": self._global_step(),
                                  "time": round(self.clock.wall() - self.created, 3)})
            if self.worker is None:
                self._early.append(command)
            else:  # under the lock: two clicks reach the worker in the order they were made
                self.worker.control(command)

    def _global_step(self) -> int:
        return self.steps[-1]["global_step"] if self.steps else 0

    def join(self, timeout=None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the job's thread is still at work (queued, training or saving)."""
        return self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "diverged", "failed", "cancelled")

    def _session_gone(self) -> bool:
        if self._session_alive():
            self._gone_since = None
            return False
        now = self.clock.now()
        self._gone_since = now if self._gone_since is None else self._gone_since
        return now - self._gone_since > SESSION_GRACE_S

    def _cancelled(self) -> bool:
        return self._stop.is_set() or self._session_gone()

    def _run(self) -> None:
        try:
            self.train_chips, self.heldout_chips = build_chip_sets(self.rois, self.config.chips)
            self.model = make_model(self.config.model, self.config.train.seed)
            self.model.band_stats = self.train_chips.band_stats  # reflectance: its normalisation
            if not self.queue.wait_for_slot(self, self._cancelled, self.clock):
                why = f" ({self.stop_reason})" if self.stop_reason else ""
                self._set(status="cancelled", error=f"Cancelled before it started{why}.")
                return
            self._set(status="running", started_at=self.clock.wall())
            self._train()
        except BharatEOError as exc:
            self._set(status="failed", error=str(exc))
        except MemoryError:  # cutting the chips in the server, before any training
            from bharateo.jobs.limits import OUT_OF_MEMORY

            self._set(status="failed", error=f"The server {OUT_OF_MEMORY} while cutting this "
                                             "training's chips; nothing was trained.")
        except Exception as exc:  # keep the app alive; the page shows the message
            log.exception("training job %s failed", self.run_name)
            self._set(status="failed", error=f"Training failed unexpectedly: {exc!r}")
        finally:
            release_run_name(self.run_name)  # a reservation never saved into (no-op once saved)
            self.queue.leave(self)
            keep_spare_worker()  # for the next Train click, now that this one's CPU is free

    def _train(self) -> None:
        metrics, budget, stall = None, max_training_seconds(), stall_seconds()
        run = WorkerRun(self.config, self.train_chips, self.heldout_chips)
        with self._lock:
            self.worker, early, self._early = run, self._early, []
        if self._stop.is_set():  # stop() came before the worker: look at it at once
            run.wake()
        for command in early:
            run.control(command)
        clock = self.clock
        try:
            now = last_check = last_event = last_progress = clock.now()
            started, stop_asked, cpu = now, None, run.cpu_seconds()
            while True:
                event = run.next_event(POLL_S, clock)
                now, was = clock.now(), cpu
                cpu = run.cpu_seconds()
                waiting = self.paused and not self._stop.is_set()  # asked to stop, it must answer
                if event is not None or cpu != was or waiting:  # busy counts (a loaded
                    last_progress = now  # machine); a paused worker waits for us, it isn't stuck
                if event is not None or waiting:
                    last_event = now
                    if event is not None and self._relay(event):
                        metrics = event.metrics
                        break
                if now - last_check > SESSION_CHECK_S:
                    last_check = now
                    if self._session_gone():
                        self.stop("the browser session closed")
                if budget is not None and now - started > budget and not self._stop.is_set():
                    self.stop(f"the server's time budget of {budget:g} s per training "
                              "(BHARATEO_MAX_TRAINING_S) ran out")
                if self._stop.is_set():
                    run.stop()  # once; an answer is an event the worker sent after it
                    stop_asked = clock.now() if stop_asked is None else stop_asked
                if (stop_asked is not None and not run.answered_stop
                        and now - max(stop_asked, last_progress) > STOP_GRACE_S):
                    run.kill()
                    raise BharatEOError(
                        f"The training process didn't answer Stop within {STOP_GRACE_S:g} s, so it "
                        "was ended and the slot freed; its weights could not be saved.")
                if now - last_progress > stall or now - last_event > BUSY_STALL_FACTOR * stall:
                    run.kill()
                    raise BharatEOError(
                        f"The training process made no progress for {stall:g} s (it hung or was "
                        "frozen), so it was ended and the slot freed; its weights could not be "
                        "saved. Train again; if it happens again, try fewer chips or a smaller model.")
        finally:
            run.close()
        end = self.end
        if end.reason == "stopped" and self.stop_reason:
            end = replace(end, message=f"Stopped during epoch {end.epochs_done + 1}: "
                                       f"{self.stop_reason}.")
            self._set(end=end)
        result = ExperimentResult(self.model, end.history, end, metrics,
                                  self.train_chips, self.heldout_chips)
        self.unsaved = result  # until saved: a failed save can be retried (studio.save_job_again)
        extra = {"status": end.reason, **({"stop_reason": self.stop_reason}
                                          if end.reason == "stopped" and self.stop_reason else {}),
                 **({"controls": list(self.controls)} if self.controls else {})}
        path = save_experiment(self.run_name, self.config, result, self.rois, extra=extra)
        store_looks(path, self.stored_looks)
        self._set(status=end.reason, saved_path=path, unsaved=None, **renamed(self.run_name, path))

    def _relay(self, event) -> bool:
        """Record one worker event; True for the last one (the weights, loaded into the model)."""
        with self._lock:
            if isinstance(event, StepMetrics):
                self.steps.append({**asdict(event), "progress": event.progress})
            elif isinstance(event, EpochMetrics):
                self.epochs.append(asdict(event))
            elif isinstance(event, TrainingEnd):
                self.end = event
            elif isinstance(event, TrainingPaused):
                self.controls.append({"action": "paused", "after_step": event.global_step,
                                      "by": event.by, "time": round(self.clock.wall() - self.created, 3)})
                if event.commands == self._commands_sent:  # else a newer command is on its way
                    self.paused, self.control_state = True, "paused"
            elif isinstance(event, StoredLooks):  # stored beside the run once it is saved
                self.stored_looks = event.records
            elif isinstance(event, SettingsChanged):  # the run goes on (and is saved) with them
                self.config = replace(self.config,
                                      train=changed_config(self.config.train, event.changes))
                self.pending_changes = {k: v for k, v in self.pending_changes.items()
                                        if v != event.changes.get(k)}
                self.controls.append({"action": "changed", "from_step": event.global_step + 1,
                                      "progress": event.progress,
                                      "settings": dict(event.changes), "lr": event.lr,
                                      "time": round(self.clock.wall() - self.created, 3)})
            elif isinstance(event, TrainedWeights):
                self.model.load_state_dict(event.state_dict())
                return True
        return False

    def _set(self, **values) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self, k, v)

    def snapshot(self) -> dict:
        """A consistent copy of the job's progress for drawing."""
        with self._lock:
            return {"status": self.status, "steps": list(self.steps), "epochs": list(self.epochs),
                    "end": self.end, "error": self.error, "saved_path": self.saved_path,
                    "queue_position": self.queue.position(self), "run_name": self.run_name,
                    "started_at": self.started_at, "config": self.config,
                    "stop_reason": self.stop_reason, "paused": self.paused,
                    "control_state": self.control_state, "controls": list(self.controls),
                    "pending_changes": dict(self.pending_changes),
                    "stopping": self._stop.is_set() and not self.done}  # Stop asked, not ended


def store_looks(path, records) -> None:
    """The worker's StoredLooks records, written beside the run saved at `path` (and kept in the
    server's memo), so the pages read them on the first visit. Never fails the run."""
    if not records:
        return
    try:
        looks.store_records(load_run(path.name, root=path.parent), records)
    except Exception:  # noqa: BLE001  (the pages fill in whatever is missing)
        log.exception("storing the results of run %s failed", path.name)


def job_state_text(snap: dict) -> str:
    """A job's state in words, from TrainingJob.snapshot(): 'queued, number 2', 'running, epoch
    2/20, step 37', 'pausing after step 37 (epoch 2/20)', 'paused at step 37 (epoch 2/20)',
    'stepping on from step 37 (...)', 'stopping after the current step', or how it ended
    ('finished', 'stopped', 'failed', ...). Steps are optimiser steps counted over all epochs."""
    status = snap["status"]
    if status == "queued":
        return f"queued, number {snap['queue_position'] or 1}"
    if status != "running":
        return status
    if snap.get("stopping"):
        return "stopping after the current step"
    last, state = (snap["steps"] or [None])[-1], snap.get("control_state", "running")
    if last is None:
        return {"paused": "paused before the first step"}.get(state, f"{state}, before the first step")
    step, epoch = last["global_step"], f"epoch {last['epoch']}/{snap['config'].train.epochs}"
    return {"paused": f"paused at step {step} ({epoch})",
            "pausing": f"pausing after step {step} ({epoch})",
            "stepping": f"stepping on from step {step} ({epoch})"}.get(
        state, f"running, {epoch}, step {step}")


def job_chips_text(config: RunConfig) -> str:
    """The chips a training cuts from its own config: '384 train + 64 held-out (from
    mathura_belt) chips of 128 px from delhi_ncr, shekhawati, mathura_belt'."""
    c = config.chips
    held = (f" + {c.n_holdout_chips:,} held-out (from {c.holdout_roi}"
            + (f", {c.holdout_block} half" if c.holdout_block else "") + ")"
            if c.holdout_roi else "")
    source = "" if c.source == DEFAULT_SOURCE else f", {pixel_source(c.source).label}"
    return (f"{c.n_chips:,} train{held} chips of {c.chip_size} px from "
            f"{', '.join(r.name for r in config.rois)}{source}")


def job_settings_text(config: RunConfig) -> str:
    """A training's settings from its own config, for a caption: '20 epochs · mask ratio 0.75 ·
    learning rate 0.0004 · batch 16 · notebook model: embed dim 128, depth 3, heads 4 · fp32 on
    cpu' (the precision as configured: auto is resolved when training starts)."""
    t, m = config.train, config.model
    return (f"{plural(t.epochs, 'epoch')} · mask ratio {t.mask_ratio:g} · learning rate {t.lr:g} · "
            f"batch {t.batch_size} · {m.arch} model: embed dim {m.embed_dim}, depth {m.depth}, "
            f"heads {m.heads} · {t.precision} on {t.device}")


def jobs_listing(queue: TrainingQueue = QUEUE) -> list[dict]:
    """The server's trainings for the queue table: running ones first, then waiting ones in order;
    each {"job", "run_name", "status", "position" (None when running), "epoch", "epochs",
    "state" (job_state_text: a paused job says so)}."""
    rows = []
    for job in queue.jobs():
        snap = job.snapshot()
        rows.append({"job": job, "run_name": job.run_name, "status": snap["status"],
                     "position": snap["queue_position"], "epochs": job.config.train.epochs,
                     "epoch": snap["steps"][-1]["epoch"] if snap["steps"] else 0,
                     "state": job_state_text(snap)})
    return rows
