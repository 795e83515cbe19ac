"""The Train page's worker process: each training in a process of its own (started by
bharateo/jobs/service.py), so the app trains at the CLI's speed.

The same loop in a thread of the Streamlit server runs 15-25 % slower (bench/app_overhead.py); in
the main thread of a separate process it doesn't. A worker is `python -m bharateo.jobs.worker`: it
imports torch and bharateo, writes "ready", waits on stdin for one pickled job (config, train
chips, held-out chips), trains in its main thread through the one experiment loop
(experiment.experiment_events, as `python -m bharateo train` does) and writes its typed events,
pickled, to its stdout: every StepMetrics, EpochMetrics and TrainingEnd, then TrainedWeights (the
weights and final metrics), or a TrainingFailed. Each goes as (time.monotonic() when sent, event):
one clock for every process of a machine, so the app tells an event sent before it asked to stop
(still in the pipe or its queue) from an answer. Lines on stdin after the job control it between
steps: "stop"; "pause"; "resume"; "step" (one more optimiser step, then pause) and "epoch" (to
the end of the current epoch, then pause); "set <JSON object>" (live settings changed while
paused, e.g. {"lr": 0.001}: the loop reads them before its next step, train.train's `changes`).
Pausing is done here, in the consumer of the loop: not
pulling its next event is a pause, so the training itself stays bit-identical; each pause is
announced with a TrainingPaused event. stdin closing (the app went away) stops it, paused or not.

One worker is kept started and idle, so a Train click doesn't wait ~3 s for torch to import.
While idle after importing, that spare worker times CALIBRATION_STEPS training steps of the
notebook's default run on random class ids (calibrate) and sends a Calibration before "ready":
the Train page's first estimate, before any run is saved, is this machine's speed under its
load at the time (measured_calibration), not the reference machine's.
A worker runs at a lower priority (nice WORKER_NICE, BHARATEO_WORKER_NICE overrides) on one core fewer than the machine has
(BHARATEO_WORKER_THREADS overrides), so the Streamlit server keeps answering while it trains.
The app reads the worker's events in a thread of their own, so a frozen worker can't block the
app: WorkerRun.next_event() times out, and WorkerRun.kill() ends the worker (SIGTERM, then
SIGKILL after a grace, which also ends a worker stopped with SIGSTOP).

A worker out of memory says so ("ran out of memory: reduce chips, chip size or model size",
out_of_memory_message), never "ended unexpectedly": a MemoryError in training is its failure
message; one it can't even send ends it with exit code OUT_OF_MEMORY_EXIT; a worker ended by a
SIGKILL the app didn't send is the kernel's out-of-memory killer's doing; a result too large for
the server to read back is the server's.
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bharateo.config import environment
from bharateo.errors import BharatEOError  # torch and the training code: imported where used,
# so the server's first page doesn't wait for them and a worker imports them at low priority
from bharateo.jobs.clock import SYSTEM_CLOCK, Clock

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
_spare_lock = threading.Lock()
_spare: subprocess.Popen | None = None
READY = "ready"
WORKER_NICE = environment.WORKER_NICE.default  # 10 added to a worker's niceness: the server first
_GONE = ("gone",)  # the reader's last event: the worker closed its output (it ended)
_NO_MEMORY = ("no memory",)  # the reader's last event: an event too large to read into memory
OUT_OF_MEMORY_EXIT = 3  # a worker's exit code after a MemoryError it could not report


def out_of_memory_message(how: str, likely: bool = False) -> str:
    """The message of a training that ran out of memory (limits.OUT_OF_MEMORY), and `how` it
    was found out (`likely`: a guess, e.g. from a SIGKILL nobody here sent)."""
    from bharateo.jobs.limits import OUT_OF_MEMORY

    return (f"The training process {'most likely ' if likely else ''}{OUT_OF_MEMORY} ({how}; "
            "its weights could not be saved). "
            "The Train page's memory estimate is only an estimate: leave room for what else the "
            "machine runs.")


@dataclass
class TrainingFailed:
    """The worker's last event when training raised: the message the page shows."""

    message: str


def worker_threads() -> int:
    """Torch threads for a worker: BHARATEO_WORKER_THREADS, else the cores this process may use
    minus one (one is left to the server), at least 1."""
    if (threads := environment.WORKER_THREADS.get()) is not None:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


def lower_priority() -> None:
    """In a worker: leave the server a core and the first claim on the CPU."""
    try:
        os.nice(environment.WORKER_NICE.get())
    except OSError:  # not allowed here: train at the same priority
        pass
    import torch

    torch.set_num_threads(worker_threads())


def start_worker(calibrate: bool = False) -> subprocess.Popen:
    """A new worker process. `calibrate`: it times a few training steps first and sends a
    Calibration before "ready", which a thread of ours reads (`calibration_reader`, joined by
    WorkerRun before it reads the worker's events)."""
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "bharateo.jobs.worker"] + (["--calibrate"] if calibrate else [])
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": path})
    if calibrate:
        process.calibration_reader = threading.Thread(
            target=_read_calibration, args=(process,), name=f"calibration-{process.pid}",
            daemon=True)
        process.calibration_reader.start()
    return process


# --- start-up calibration of the training speed ----------------------------------------------
CALIBRATION_STEPS = 3  # timed steps, after one warm-up step (the first allocates and is slower)
_calibration = None  # the newest Calibration with a speed: measured_calibration()
_calibration_done = threading.Event()  # set once a calibrating worker has answered (or died)


@dataclass(frozen=True)
class Calibration:
    """A worker's measured training speed at start-up: the median `chips_per_s` of `steps` timed
    steps of `config` (RunConfig.to_dict(): the notebook's default run) in the worker's own
    threads and priority, under the machine's load at the time; chips_per_s None when a job came
    first and the timing was cut short."""

    chips_per_s: float | None
    steps: int
    config: dict


def _read_calibration(process: subprocess.Popen) -> None:
    """In the app: read a calibrating worker's first message (its Calibration) off its stdout,
    before anything else reads it, and keep it when it holds a speed."""
    global _calibration
    try:
        _, message = pickle.load(process.stdout)
        if isinstance(message, Calibration) and message.chips_per_s:
            _calibration = message
    except Exception:  # the worker died or was killed before it measured: nothing to keep
        pass
    finally:
        _calibration_done.set()


def measured_calibration(wait_s: float = 0.0):
    """The newest Calibration a spare worker measured on this machine (waiting up to `wait_s` s
    for a first one), or None when none has been measured yet."""
    if _calibration is None and wait_s > 0:
        _calibration_done.wait(wait_s)
    return _calibration


def calibrate(job_waiting=lambda: False, steps: int = CALIBRATION_STEPS) -> Calibration:
    """In a worker: time `steps` training steps (after one warm-up) of the notebook's default run
    (RunConfig(): its model, batch size and mask ratio) through train.train, on random class ids
    (timing only: nothing is saved or shown). Stops early, with chips_per_s None, once
    `job_waiting()` is true, so a Train click never waits for it. -> Calibration."""
    if job_waiting():
        return Calibration(None, 0, {})
    import statistics

    import numpy as np

    from bharateo.data.chips import ChipSet
    from bharateo.training.experiment import RunConfig
    from bharateo.training.loop import StepMetrics, make_model, train

    config = RunConfig()
    size, patch, batch = config.chips.chip_size, config.chips.patch_size, config.train.batch_size
    n = batch * (steps + 1)
    rng = np.random.default_rng(0)
    grid = size // patch
    chips = ChipSet(labels=rng.integers(0, 8, (n, size, size), dtype=np.uint8),
                    patch_labels=rng.integers(0, 8, (n, grid, grid)).astype(np.int64),
                    roi_index=np.zeros(n, dtype=np.int64), origins=np.zeros((n, 2), dtype=np.int64),
                    roi_names=["calibration"], chip_size=size, patch_size=patch)
    stop = threading.Event()
    speeds = []
    for event in train(make_model(config.model, 0), chips, replace(config.train, epochs=1),
                       stop=stop):
        if job_waiting():
            stop.set()
        if isinstance(event, StepMetrics) and event.global_step > 1:
            speeds.append(event.chips_per_s)
        if len(speeds) == steps or stop.is_set():
            break
    measured = statistics.median(speeds) if len(speeds) == steps else None
    return Calibration(measured, len(speeds), config.to_dict())


def keep_spare_worker() -> None:
    """Start an idle worker unless one is already waiting. Cheap to call often. Until one has
    measured this machine's speed (measured_calibration), the spare calibrates first."""
    global _spare
    with _spare_lock:
        if _spare is None or _spare.poll() is not None:  # timed once: saved runs take over
            _spare = start_worker(calibrate=_calibration is None)


def spare_worker_ready(timeout: float) -> bool:
    """Wait up to `timeout` s for the idle worker to have finished importing (and calibrating:
    its Calibration read, "ready" right behind it) (POSIX only)."""
    with _spare_lock:
        spare = _spare
    if spare is None:
        return False
    reader = getattr(spare, "calibration_reader", None)
    if reader is not None:  # it reads ahead from the pipe: select can't see "ready" any more
        reader.join(timeout)
        return not reader.is_alive() and spare.poll() is None
    return bool(select.select([spare.stdout], [], [], timeout)[0])


def take_worker() -> subprocess.Popen:
    """The idle worker (or a new one if there is none)."""
    global _spare
    with _spare_lock:
        worker, _spare = _spare, None
    return worker if worker is not None and worker.poll() is None else start_worker()


class WorkerRun:
    """The app's side of one training in a worker: send the job, read its events (in a thread
    of their own, so a frozen worker never blocks the caller), ask it to stop, or kill it.

    Whether the worker has answered a Stop (`answered_stop`) is decided by the machine's
    monotonic clock, which the worker stamps its events with: an event sent before the Stop was
    asked (still in the pipe, or read late by a busy server) is no answer."""

    def __init__(self, config, train_chips, heldout):
        self.process = take_worker()
        self.stopping = self._sent = False
        self._lock = threading.Lock()  # commands are written only after the whole job
        self._pending: list[str] = []  # commands given before the job was written
        self._arrived = threading.Condition()  # notified with each event put into _events
        self._events: collections.deque = collections.deque()  # (time.monotonic() when sent, event)
        self.sent_at = time.monotonic()  # when the worker sent next_event's last event
        self.stop_asked_at: float | None = None  # time.monotonic() when stop() was first called
        self.answered_stop = False  # an event sent after stop() was called has been read
        self._woken = False  # wake() was called: next_event returns at once
        # the job (megabytes of chips) is written by a thread too: a frozen worker would block
        # the write once the pipe is full, and the caller's watchdog must keep running
        threading.Thread(target=self._send_job, args=((config, train_chips, heldout),),
                         name=f"worker-in-{self.process.pid}", daemon=True).start()
        threading.Thread(target=self._read, name=f"worker-{self.process.pid}", daemon=True).start()

    def _send_job(self, job) -> None:
        try:
            pickle.dump(job, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
        except (OSError, ValueError):  # the worker died or was killed: next_event says so
            return
        with self._lock:
            self._sent = True
            for command in self._pending:
                self._write(command)
            if self.stopping:
                self._write_stop()

    def _read(self) -> None:
        reader = getattr(self.process, "calibration_reader", None)
        if reader is not None:  # its Calibration comes first and is read there: wait for it
            reader.join()
        try:
            while True:
                sent_at, event = pickle.load(self.process.stdout)
                if event != READY and not isinstance(event, Calibration):
                    self._put(float(sent_at), event)
        except MemoryError:  # an event (the weights) too large for the server's memory
            self._put(time.monotonic(), _NO_MEMORY)
        except Exception:  # end of file, a closed pipe or a torn pickle: the worker has gone
            self._put(time.monotonic(), _GONE)

    def _put(self, sent_at: float, event) -> None:
        with self._arrived:
            self._events.append((sent_at, event))
            self._arrived.notify_all()

    def wake(self) -> None:
        """Make a waiting (or the next) next_event return now, with None if no event is there
        (the caller has something else to look at: a Stop)."""
        with self._arrived:
            self._woken = True
            self._arrived.notify_all()

    def pending(self) -> int:
        """Events read from the worker that next_event has not returned yet."""
        with self._arrived:
            return len(self._events)

    def stop(self) -> None:
        """Ask the worker to stop after its current step (once)."""
        with self._lock:
            if self.stopping:
                return
            self.stop_asked_at, self.stopping = time.monotonic(), True
            if self._sent:
                self._write_stop()

    def _write_stop(self) -> None:
        self._write("stop")

    def _write(self, command: str) -> None:
        try:
            os.write(self.process.stdin.fileno(), f"{command}\n".encode())
        except (OSError, ValueError):  # it has finished already
            pass

    def control(self, command: str) -> None:
        """Send "pause", "resume", "step" or "epoch" (see the module docstring); ignored once
        stopping. Commands before the job is written wait for it, in order."""
        if command not in COMMANDS or command == "stop":
            raise ValueError(f"unknown worker command {command!r}")
        with self._lock:
            if self.stopping:
                return
            if self._sent:
                self._write(command)
            else:
                self._pending.append(command)

    def change(self, settings: dict) -> None:
        """Send live settings (name -> number, checked by the caller with loop.changed_config)
        for the training to go on with from its next step; ignored once stopping."""
        line = SET + json.dumps(settings, allow_nan=False)
        with self._lock:
            if self.stopping:
                return
            if self._sent:
                self._write(line)
            else:
                self._pending.append(line)

    def next_event(self, timeout: float, clock: Clock = SYSTEM_CLOCK):
        """The worker's next event (StepMetrics, EpochMetrics, TrainingEnd, then TrainedWeights),
        or None if none came within `timeout` s of `clock`. A TrainingFailed and a worker that
        died are raised as BharatEOError. `sent_at` says when the worker sent it
        (time.monotonic()): a busy caller may read events long after they were sent, and those
        sent before a Stop are no answer to it (`answered_stop` turns true with the first that
        was sent after)."""
        with self._arrived:
            if not clock.wait(self._arrived, lambda: bool(self._events) or self._woken, timeout) \
                    or not self._events:
                self._woken = False
                return None
            self.sent_at, event = self._events.popleft()
        if self.stop_asked_at is not None and self.sent_at >= self.stop_asked_at:
            self.answered_stop = True
        if event is _NO_MEMORY or event == _NO_MEMORY:
            self.kill()
            raise BharatEOError(out_of_memory_message("the server could not read its results "
                                                      "into memory"))
        if event is _GONE or event == _GONE:
            code = self.process.wait()
            if code == -signal.SIGKILL:  # not ours: kill() callers raise their own message
                raise BharatEOError(out_of_memory_message(
                    "it was ended by SIGKILL, the signal the kernel's out-of-memory killer "
                    "sends", likely=True))
            if code == OUT_OF_MEMORY_EXIT:
                raise BharatEOError(out_of_memory_message("MemoryError"))
            raise BharatEOError(f"The training process ended unexpectedly (exit code {code}).")
        if isinstance(event, TrainingFailed):
            raise BharatEOError(event.message)
        return event

    def cpu_seconds(self) -> float | None:
        """CPU time the worker has used so far (Linux /proc; None where it can't be read). A
        worker that is slow because the machine is busy still uses CPU; a frozen one doesn't."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def kill(self, grace: float = 3.0) -> None:
        """End the worker now: SIGTERM, then SIGKILL if it is still there after `grace` s
        (a worker frozen with SIGSTOP only reacts to SIGKILL)."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """Stop the worker (politely, then by force after 10 s) and close its pipes."""
        self.stop()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def run_one_job(calibrating: bool = False) -> None:
    """The worker's main: (when `calibrating`, time a few steps and send a Calibration), say
    ready, read one job, train, send events (see module docstring)."""
    import torch._dynamo  # noqa: F401  torch.optim imports it on first use (~1.4 s): do it while idle

    events = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the event stream

    def send(obj) -> None:
        pickle.dump((time.monotonic(), obj), events, protocol=pickle.HIGHEST_PROTOCOL)
        events.flush()

    jobs_in = sys.stdin.buffer
    try:
        if calibrating:  # by the module's own name: run as __main__, the app could not unpickle
            from bharateo.jobs import worker as module  # a Calibration of __main__'s

            try:
                measured = module.calibrate(lambda: bool(select.select([jobs_in], [], [], 0)[0]))
            except Exception:  # a timing that fails must not cost the training: no speed
                measured = module.Calibration(None, 0, {})
            send(measured)
        send(READY)
        config, train_chips, heldout = pickle.load(jobs_in)
    except (BrokenPipeError, EOFError):  # the app closed before this worker got a job
        return
    except MemoryError:  # the job's chips don't fit: say so by the exit code (WorkerRun)
        os._exit(OUT_OF_MEMORY_EXIT)
    control = TrainingControl()

    def read_commands():
        for line in iter(jobs_in.readline, b""):
            control.command(line.decode(errors="replace").strip())
        control.command("stop")  # end of file: the app has gone

    threading.Thread(target=read_commands, daemon=True).start()
    try:
        send_training(config, train_chips, heldout, control, send)
    except BrokenPipeError:  # the app has gone
        pass
    except MemoryError:  # even its TrainingFailed could not be sent: say so by the exit code
        os._exit(OUT_OF_MEMORY_EXIT)


COMMANDS = ("stop", "pause", "resume", "step", "epoch")
SET = "set "  # a line "set {...}": settings changed while paused
MAX_SET_CHARS = 4096  # a longer "set" line is not the app's: ignored


class TrainingControl:
    """Stop / pause / resume / step for a consumer of train.train, driven from another thread.

    The consumer calls `after(event, send)` after handling each event: it returns at once unless
    the training is paused, in which case it sends one TrainingPaused and waits for the next
    command. "step" lets exactly one more StepMetrics through, "epoch" lets training run to the
    next EpochMetrics; both pause again after it. `stop` is the Event train.train checks.
    Time spent paused is not training time: `adjust` takes it out of the events' `elapsed` and
    the epochs' chips/s (the ETA and the Train page's speed calibration read them).
    """

    def __init__(self):
        self.stop = threading.Event()
        self._cond = threading.Condition()
        self._paused = False
        self._until: str | None = None  # "step" | "epoch": run to the next such event, then pause
        self._by = "pause"
        self._last_step = None  # the last StepMetrics: where a pause after an epoch's end is
        self.paused_s = 0.0  # seconds paused so far
        self.commands = 0  # pause/resume/step commands received
        self._paused_in: dict[int, float] = {}  # epoch -> seconds paused inside its timing
        self._paused_by_end_of: dict[int, float] = {}  # epoch -> paused_s when it ended
        self._changes: dict = {}  # settings changed while paused, not yet read by the loop

    def command(self, name: str) -> None:
        """Apply one command (unknown text is ignored: the app is the only writer). "set {...}"
        keeps the settings for take_changes (a later value of a setting replaces an earlier)."""
        if name.startswith(SET):
            try:
                settings = json.loads(name[len(SET):]) if len(name) <= MAX_SET_CHARS else None
            except ValueError:
                settings = None
            if isinstance(settings, dict) and all(isinstance(k, str) for k in settings):
                with self._cond:
                    self._changes.update(settings)
            return
        with self._cond:
            self.commands += name in COMMANDS[1:]
            if name == "stop":
                self.stop.set()
            elif name == "pause":
                self._paused, self._until, self._by = True, None, "pause"
            elif name == "resume":
                self._paused, self._until = False, None
            elif name in ("step", "epoch"):
                self._paused, self._until, self._by = False, name, name
            self._cond.notify_all()

    def take_changes(self) -> dict:
        """The settings changed since the last call (train.train asks before every step), then
        forgotten: {} when none."""
        with self._cond:
            changes, self._changes = self._changes, {}
        return changes

    def after(self, event, send) -> None:
        """Called after each event of train.train; blocks while paused (see the class)."""
        from bharateo.training.loop import EpochMetrics, StepMetrics, TrainingPaused

        if not isinstance(event, (StepMetrics, EpochMetrics)):
            return
        with self._cond:
            self._last_step = event if isinstance(event, StepMetrics) else self._last_step
            if self._until == ("step" if isinstance(event, StepMetrics) else "epoch"):
                self._paused, self._until = True, None
            if not self._paused or self.stop.is_set():
                return
            last = self._last_step
            send(TrainingPaused(last.global_step if last else 0, last.epoch if last else 0,
                                last.step if last else 0, self._by, self.commands))
            began = time.perf_counter()
            while self._paused and not self.stop.is_set():
                self._cond.wait()
            waited = time.perf_counter() - began
            self.paused_s += waited
            if isinstance(event, StepMetrics):  # train() times its epoch across this pause
                self._paused_in[event.epoch] = self._paused_in.get(event.epoch, 0.0) + waited

    def adjust(self, event, n_chips: int):
        """`event` with the time spent paused taken out (the same object when nothing was)."""
        from bharateo.training.loop import EpochMetrics, StepMetrics, TrainingEnd

        if isinstance(event, EpochMetrics):
            self._paused_by_end_of[event.epoch] = self.paused_s
        if not self.paused_s:
            return event
        if isinstance(event, StepMetrics):
            return replace(event, elapsed=event.elapsed - self.paused_s)
        if isinstance(event, EpochMetrics):
            return replace(event, **self._unpaused(asdict(event), n_chips))
        if isinstance(event, TrainingEnd):
            return replace(event, history=[{**row, **self._unpaused(row, n_chips)}
                                           for row in event.history])
        return event

    def _unpaused(self, row: dict, n_chips: int) -> dict:
        epoch = row["epoch"]
        inside = self._paused_in.get(epoch, 0.0)
        wall = n_chips / row["chips_per_s"] if row["chips_per_s"] else 0.0
        return {"elapsed": row["elapsed"] - self._paused_by_end_of.get(epoch, self.paused_s),
                "chips_per_s": n_chips / (wall - inside) if inside and wall > inside
                else row["chips_per_s"]}


def send_training(config, train_chips, heldout, control, send) -> None:
    """Train in this (main) thread through experiment.experiment_events, sending every event (the
    last one TrainedWeights), or a TrainingFailed with the error's message. `control`: a
    TrainingControl (or a plain threading.Event that only stops, or None)."""
    from bharateo.training.experiment import experiment_events
    from bharateo.training.loop import SettingsChanged, TrainedWeights, changed_config

    if not isinstance(control, TrainingControl):
        stop, control = control, TrainingControl()
        control.stop = stop if stop is not None else control.stop
    try:
        for event in experiment_events(config, train_chips, heldout, control.stop,
                                       changes=control.take_changes):
            event = control.adjust(event, len(train_chips))
            if isinstance(event, SettingsChanged):  # the looks are keyed by the run's final
                config = replace(config, train=changed_config(config.train, event.changes))  # ratio
            if isinstance(event, TrainedWeights):  # the run's last step: what the pages read
                send_looks(config, train_chips, heldout, event, control.stop, send)
            send(event)
            control.after(event, send)
    except BharatEOError as exc:
        send(TrainingFailed(str(exc)))
    except MemoryError:
        send(TrainingFailed(out_of_memory_message("MemoryError")))
    except Exception as exc:  # shown to the user as an unexpected failure
        send(TrainingFailed(f"Training failed unexpectedly: {exc!r}"))


def send_looks(config, train_chips, heldout, weights, stop, send) -> None:
    """Before the weights: the curve, the evaluations and the embedding maps of the trained model
    on its chips (bharateo/jobs/looks.py), as one StoredLooks event the job stores beside the run,
    so Reconstruct, Evaluate and Inside read them at once. Skipped after a Stop; a Stop during
    it sends what was computed. A failure here never costs the run: the pages fill in the rest."""
    if stop.is_set():
        return
    from bharateo.jobs import looks
    from bharateo.training.loop import make_model

    try:
        model = make_model(config.model, config.train.seed)
        model.load_state_dict(weights.state_dict())
        model.band_stats = train_chips.band_stats  # as the job's own copy of the model
        records = looks.compute_records(
            model, looks.run_looks(train_chips, heldout, config.train.mask_ratio,
                                   config.train.precision), stop.is_set)
    except Exception as exc:  # noqa: BLE001  (the run is saved all the same)
        print(f"the run's stored results were not computed: {exc!r}", file=sys.stderr)
        return
    send(looks.StoredLooks(records))


if __name__ == "__main__":
    lower_priority()  # before torch is imported: that takes seconds of CPU too
    run_one_job(calibrating="--calibrate" in sys.argv[1:])
    sys.stderr.flush()
    os._exit(0)  # not a normal exit: wait_for_stop may still hold stdin's lock
