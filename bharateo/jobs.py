"""Background training for the app: one thread per job, a first-come-first-served queue per server.

Streamlit APIs are not thread-safe, so a job never touches Streamlit: its thread writes progress
into the job (under a lock) and pages poll `snapshot()`. At most BHARATEO_MAX_TRAININGS jobs run at
once on a server; the rest wait in order. A job whose browser session has gone stops, is saved,
and frees its slot.

Each training runs in a worker process of its own (bharateo.worker): in a server thread the same
loop runs 15-25 % slower. The job's thread feeds it the chips, relays its events and saves the run.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict

from bharateo.chips import build_chip_sets
from bharateo.errors import BharatEOError
from bharateo.pipeline import ExperimentResult, RunConfig, renamed, save_experiment
from bharateo.runs import release_run_name
from bharateo.train import EpochMetrics, StepMetrics, TrainingEnd, make_model
from bharateo.worker import WorkerRun, keep_spare_worker, state_dict_from_bytes

log = logging.getLogger(__name__)
SESSION_GRACE_S = 30.0  # a session gone this long counts as closed


def max_trainings() -> int:
    try:
        return max(1, int(os.environ.get("BHARATEO_MAX_TRAININGS", "1")))
    except ValueError:
        return 1


class TrainingQueue:
    """Slots for trainings on this server, handed out in arrival order."""

    def __init__(self):
        self._cond = threading.Condition()
        self._waiting: list = []
        self._running: list = []

    def enqueue(self, job) -> None:
        """Take a place in line (at click time, so arrival order is click order)."""
        with self._cond:
            self._waiting.append(job)

    def wait_for_slot(self, job, cancelled) -> bool:
        """Block until `job` (enqueued) may run (True) or `cancelled()` says give up (False)."""
        with self._cond:
            while True:
                if cancelled():
                    return False
                if self._waiting[0] is job and len(self._running) < max_trainings():
                    self._waiting.remove(job)
                    self._running.append(job)
                    self._cond.notify_all()
                    return True
                self._cond.wait(timeout=0.25)

    def leave(self, job) -> None:
        """Give back the job's place in line or its slot."""
        with self._cond:
            for line in (self._waiting, self._running):
                if job in line:
                    line.remove(job)
            self._cond.notify_all()

    def position(self, job) -> int | None:
        """1 = next to run; None when not waiting."""
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def running(self) -> int:
        with self._cond:
            return len(self._running)


QUEUE = TrainingQueue()


def streamlit_session_alive():
    """A callable telling whether the current browser session is still connected (always True
    outside a real Streamlit server, e.g. in AppTest)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None or not Runtime.exists():
            return lambda: True
        runtime, session_id = Runtime.instance(), ctx.session_id
        return lambda: runtime.is_active_session(session_id)
    except Exception:  # streamlit internals moved: never stop a job on a guess
        return lambda: True


class TrainingJob:
    """One training run: a background thread that waits for a slot, then relays a worker
    process's events and saves the run. Read it with snapshot(); stop it with stop()."""

    def __init__(self, config: RunConfig, rois, run_name: str, session_alive=lambda: True,
                 queue: TrainingQueue = QUEUE):
        self.config, self.rois, self.run_name = config, rois, run_name
        self.queue, self._session_alive = queue, session_alive
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
        self.worker: WorkerRun | None = None
        self.train_chips = self.heldout_chips = None
        self.created = time.time()
        self.started_at: float | None = None
        self._gone_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"train-{run_name}", daemon=True)

    def start(self) -> "TrainingJob":
        self.queue.enqueue(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout=None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "diverged", "failed", "cancelled")

    def _session_gone(self) -> bool:
        if self._session_alive():
            self._gone_since = None
            return False
        self._gone_since = self._gone_since or time.monotonic()
        return time.monotonic() - self._gone_since > SESSION_GRACE_S

    def _cancelled(self) -> bool:
        return self._stop.is_set() or self._session_gone()

    def _run(self) -> None:
        try:
            self.train_chips, self.heldout_chips = build_chip_sets(self.rois, self.config.chips)
            self.model = make_model(self.config.model, self.config.train.seed)
            if not self.queue.wait_for_slot(self, self._cancelled):
                self._set(status="cancelled", error="Cancelled before it started.")
                return
            self._set(status="running", started_at=time.time())
            self._train()
        except BharatEOError as exc:
            self._set(status="failed", error=str(exc))
        except Exception as exc:  # keep the app alive; the page shows the message
            log.exception("training job %s failed", self.run_name)
            self._set(status="failed", error=f"Training failed unexpectedly: {exc!r}")
        finally:
            release_run_name(self.run_name)  # a reservation never saved into (no-op once saved)
            self.queue.leave(self)
            keep_spare_worker()  # for the next Train click, now that this one's CPU is free

    def _train(self) -> None:
        last_check, metrics = time.monotonic(), None
        self.worker = run = WorkerRun(self.config, self.train_chips, self.heldout_chips)
        for event in run.events():
            if time.monotonic() - last_check > 2.0:
                last_check = time.monotonic()
                if self._session_gone():
                    self._stop.set()
            if self._stop.is_set():
                run.stop()
            with self._lock:
                if isinstance(event, StepMetrics):
                    self.steps.append({**asdict(event), "progress": event.progress})
                elif isinstance(event, EpochMetrics):
                    self.epochs.append(asdict(event))
                elif isinstance(event, TrainingEnd):
                    self.end = event
                else:  # ("weights", state_dict bytes, final metrics)
                    self.model.load_state_dict(state_dict_from_bytes(event[1]))
                    metrics = event[2]
        result = ExperimentResult(self.model, self.end.history, self.end, metrics,
                                  self.train_chips, self.heldout_chips)
        self.unsaved = result  # until saved: a failed save can be retried (studio.save_job_again)
        path = save_experiment(self.run_name, self.config, result, self.rois,
                               extra={"status": self.end.reason})
        self._set(status=self.end.reason, saved_path=path, unsaved=None, **renamed(self.run_name, path))

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
                    "started_at": self.started_at, "config": self.config}
