"""The Train page's worker process: each training in a process of its own (started by
bharateo/app/jobs.py), so the app trains at the CLI's speed.

The same loop in a thread of the Streamlit server runs 15-25 % slower (bench/app_overhead.py); in
the main thread of a separate process it doesn't. A worker is `python -m bharateo.app.worker`: it
imports torch and bharateo, writes "ready", waits on stdin for one pickled job (config, train
chips, held-out chips), trains in its main thread through the pipeline's one experiment loop
(pipeline.experiment_events, as `python -m bharateo train` does) and writes its typed events,
pickled, to its stdout: every StepMetrics, EpochMetrics and TrainingEnd, then TrainedWeights (the
weights and final metrics), or a TrainingFailed. Each goes as (time.monotonic() when sent, event):
one clock for every process of a machine, so the app tells an event sent before it asked to stop
(still in the pipe or its queue) from an answer. Lines on stdin after the job control it between
steps: "stop"; "pause"; "resume"; "step" (one more optimiser step, then pause) and "epoch" (to
the end of the current epoch, then pause). Pausing is done here, in the consumer of the loop: not
pulling its next event is a pause, so the training itself stays bit-identical; each pause is
announced with a TrainingPaused event. stdin closing (the app went away) stops it, paused or not.

One worker is kept started and idle, so a Train click doesn't wait ~3 s for torch to import.
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

import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bharateo.errors import BharatEOError  # torch and the training code: imported where used,
# so the server's first page doesn't wait for them and a worker imports them at low priority

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
_spare_lock = threading.Lock()
_spare: subprocess.Popen | None = None
READY = "ready"
WORKER_NICE = 10  # added to the worker's niceness (BHARATEO_WORKER_NICE): the server comes first
_GONE = ("gone",)  # the reader's last event: the worker closed its output (it ended)
_NO_MEMORY = ("no memory",)  # the reader's last event: an event too large to read into memory
OUT_OF_MEMORY_EXIT = 3  # a worker's exit code after a MemoryError it could not report


def out_of_memory_message(how: str, likely: bool = False) -> str:
    """The message of a training that ran out of memory (limits.OUT_OF_MEMORY), and `how` it
    was found out (`likely`: a guess, e.g. from a SIGKILL nobody here sent)."""
    from bharateo.limits import OUT_OF_MEMORY

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
    try:
        return max(1, int(os.environ["BHARATEO_WORKER_THREADS"]))
    except (KeyError, ValueError):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) - 1)


def lower_priority() -> None:
    """In a worker: leave the server a core and the first claim on the CPU."""
    try:
        nice = max(0, int(os.environ.get("BHARATEO_WORKER_NICE", WORKER_NICE)))
    except ValueError:
        nice = WORKER_NICE
    try:
        os.nice(nice)
    except OSError:  # not allowed here: train at the same priority
        pass
    import torch

    torch.set_num_threads(worker_threads())


def start_worker() -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "bharateo.app.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})


def keep_spare_worker() -> None:
    """Start an idle worker unless one is already waiting. Cheap to call often."""
    global _spare
    with _spare_lock:
        if _spare is None or _spare.poll() is not None:
            _spare = start_worker()


def spare_worker_ready(timeout: float) -> bool:
    """Wait up to `timeout` s for the idle worker to have finished importing (POSIX only)."""
    with _spare_lock:
        spare = _spare
    return spare is not None and bool(select.select([spare.stdout], [], [], timeout)[0])


def take_worker() -> subprocess.Popen:
    """The idle worker (or a new one if there is none)."""
    global _spare
    with _spare_lock:
        worker, _spare = _spare, None
    return worker if worker is not None and worker.poll() is None else start_worker()


class WorkerRun:
    """The app's side of one training in a worker: send the job, read its events (in a thread
    of their own, so a frozen worker never blocks the caller), ask it to stop, or kill it."""

    def __init__(self, config, train_chips, heldout):
        self.process = take_worker()
        self.stopping = self._sent = False
        self._lock = threading.Lock()  # commands are written only after the whole job
        self._pending: list[str] = []  # commands given before the job was written
        self._events: queue.Queue = queue.Queue()  # (time.monotonic() when sent, event)
        self.sent_at = time.monotonic()  # when the worker sent next_event's last event
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
        try:
            while True:
                sent_at, event = pickle.load(self.process.stdout)
                if event != READY:
                    self._events.put((float(sent_at), event))
        except MemoryError:  # an event (the weights) too large for the server's memory
            self._events.put((time.monotonic(), _NO_MEMORY))
        except Exception:  # end of file, a closed pipe or a torn pickle: the worker has gone
            self._events.put((time.monotonic(), _GONE))

    def stop(self) -> None:
        """Ask the worker to stop after its current step (once)."""
        with self._lock:
            if self.stopping:
                return
            self.stopping = True
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

    def next_event(self, timeout: float):
        """The worker's next event (StepMetrics, EpochMetrics, TrainingEnd, then TrainedWeights),
        or None if none came within `timeout` s. A TrainingFailed and a worker that died are
        raised as BharatEOError. `sent_at` says when the worker sent it (time.monotonic()): a busy
        caller may read events long after they were sent, and those sent before a Stop are no
        answer to it."""
        try:
            self.sent_at, event = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
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


def run_one_job() -> None:
    """The worker's main: say ready, read one job, train, send events (see module docstring)."""
    import torch._dynamo  # noqa: F401  torch.optim imports it on first use (~1.4 s): do it while idle

    events = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the event stream

    def send(obj) -> None:
        pickle.dump((time.monotonic(), obj), events, protocol=pickle.HIGHEST_PROTOCOL)
        events.flush()

    jobs_in = sys.stdin.buffer
    try:
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

    def command(self, name: str) -> None:
        """Apply one command (unknown text is ignored: the app is the only writer)."""
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

    def after(self, event, send) -> None:
        """Called after each event of train.train; blocks while paused (see the class)."""
        from bharateo.train import EpochMetrics, StepMetrics, TrainingPaused

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
        from bharateo.train import EpochMetrics, StepMetrics, TrainingEnd

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
    """Train in this (main) thread through pipeline.experiment_events, sending every event (the
    last one TrainedWeights), or a TrainingFailed with the error's message. `control`: a
    TrainingControl (or a plain threading.Event that only stops, or None)."""
    from bharateo.pipeline import experiment_events

    if not isinstance(control, TrainingControl):
        stop, control = control, TrainingControl()
        control.stop = stop if stop is not None else control.stop
    try:
        for event in experiment_events(config, train_chips, heldout, control.stop):
            event = control.adjust(event, len(train_chips))
            send(event)
            control.after(event, send)
    except BharatEOError as exc:
        send(TrainingFailed(str(exc)))
    except MemoryError:
        send(TrainingFailed(out_of_memory_message("MemoryError")))
    except Exception as exc:  # shown to the user as an unexpected failure
        send(TrainingFailed(f"Training failed unexpectedly: {exc!r}"))


if __name__ == "__main__":
    lower_priority()  # before torch is imported: that takes seconds of CPU too
    run_one_job()
    sys.stderr.flush()
    os._exit(0)  # not a normal exit: wait_for_stop may still hold stdin's lock
