"""The Train page's worker process: each training in a process of its own (started by
bharateo/app/jobs.py), so the app trains at the CLI's speed.

The same loop in a thread of the Streamlit server runs 15-25 % slower (bench/app_overhead.py); in
the main thread of a separate process it doesn't. A worker is `python -m bharateo.app.worker`: it
imports torch and bharateo, writes "ready", waits on stdin for one pickled job (config, train
chips, held-out chips), trains in its main thread through the pipeline's one experiment loop
(pipeline.experiment_events, as `python -m bharateo train` does) and writes its typed events,
pickled, to its stdout: every StepMetrics, EpochMetrics and TrainingEnd, then TrainedWeights (the
weights and final metrics), or a TrainingFailed. A line on stdin after the job asks it to stop
between steps; stdin closing (the app went away) does the same.

One worker is kept started and idle, so a Train click doesn't wait ~3 s for torch to import.
A worker runs at a lower priority (nice WORKER_NICE, BHARATEO_WORKER_NICE overrides) on one core fewer than the machine has
(BHARATEO_WORKER_THREADS overrides), so the Streamlit server keeps answering while it trains.
The app reads the worker's events in a thread of their own, so a frozen worker can't block the
app: WorkerRun.next_event() times out, and WorkerRun.kill() ends the worker (SIGTERM, then
SIGKILL after a grace, which also ends a worker stopped with SIGSTOP).
"""
from __future__ import annotations

import os
import pickle
import queue
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bharateo.errors import BharatEOError  # torch and the training code: imported where used,
# so the server's first page doesn't wait for them and a worker imports them at low priority

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
_spare_lock = threading.Lock()
_spare: subprocess.Popen | None = None
READY = "ready"
WORKER_NICE = 10  # added to the worker's niceness (BHARATEO_WORKER_NICE): the server comes first
_GONE = ("gone",)  # the reader's last event: the worker closed its output (it ended)


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
        self._lock = threading.Lock()  # "stop" is written only after the whole job
        self._events: queue.Queue = queue.Queue()
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
            if self.stopping:
                self._write_stop()

    def _read(self) -> None:
        try:
            while True:
                event = pickle.load(self.process.stdout)
                if event != READY:
                    self._events.put(event)
        except Exception:  # end of file, a closed pipe or a torn pickle: the worker has gone
            self._events.put(_GONE)

    def stop(self) -> None:
        """Ask the worker to stop after its current step (once)."""
        with self._lock:
            if self.stopping:
                return
            self.stopping = True
            if self._sent:
                self._write_stop()

    def _write_stop(self) -> None:
        try:
            os.write(self.process.stdin.fileno(), b"stop\n")
        except (OSError, ValueError):  # it has finished already
            pass

    def next_event(self, timeout: float):
        """The worker's next event (StepMetrics, EpochMetrics, TrainingEnd, then TrainedWeights),
        or None if none came within `timeout` s. A TrainingFailed and a worker that died are
        raised as BharatEOError."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is _GONE or event == _GONE:
            code = self.process.wait()
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
        pickle.dump(obj, events, protocol=pickle.HIGHEST_PROTOCOL)
        events.flush()

    jobs_in = sys.stdin.buffer
    try:
        send(READY)
        config, train_chips, heldout = pickle.load(jobs_in)
    except (BrokenPipeError, EOFError):  # the app closed before this worker got a job
        return
    stop = threading.Event()

    def wait_for_stop():
        jobs_in.readline()  # "stop", or end of file when the app has gone
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    try:
        send_training(config, train_chips, heldout, stop, send)
    except BrokenPipeError:  # the app has gone
        pass


def send_training(config, train_chips, heldout, stop, send) -> None:
    """Train in this (main) thread through pipeline.experiment_events, sending every event (the
    last one TrainedWeights), or a TrainingFailed with the error's message."""
    from bharateo.pipeline import experiment_events

    try:
        for event in experiment_events(config, train_chips, heldout, stop):
            send(event)
    except BharatEOError as exc:
        send(TrainingFailed(str(exc)))
    except Exception as exc:  # shown to the user as an unexpected failure
        send(TrainingFailed(f"Training failed unexpectedly: {exc!r}"))


if __name__ == "__main__":
    lower_priority()  # before torch is imported: that takes seconds of CPU too
    run_one_job()
    sys.stderr.flush()
    os._exit(0)  # not a normal exit: wait_for_stop may still hold stdin's lock
