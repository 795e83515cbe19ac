"""Looking at a trained model without waiting: the results the Reconstruct, Evaluate and Inside
pages read (the mask-ratio curve, the evaluations at the run's mask ratio, the token-embedding
map) are computed off the page's script thread and stored beside the run (bharateo/storage/results.py),
in the files the pages read.

- The training worker computes them as the last step of a run (`compute_records`, sent as one
  StoredLooks event before the weights); the job stores them beside the saved run
  (`store_records`), so the first visit to a freshly trained run reads them back at once.
- Runs that lack them (older runs, other chips, a model never saved) are filled in by one
  background thread of the server (`ready_or_fill`): a page asks, gets the stored result or a
  Filling with its progress, draws what it can and polls until it is ready. A thread, not a
  process: the passes are big batched torch calls that release the GIL, it needs no second
  torch import (~2 CPU-s on a laptop) and it reads the session's own model and chips; the
  thread runs at a lower priority (FILL_NICE) so the server's own threads come first
  (bench/looking.py measures what it costs the server's thread).

What each page stores is declared once here (curve_look, evaluation_look, embedding_look); the
computations themselves are science (bharateo/training/evaluate.py, bharateo/training/inspect_model.py). Nothing
here calls Streamlit.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from bharateo.training import evaluate as ev
from bharateo.training import inspect_model as im
from bharateo.storage import results as stored
from bharateo.storage.results import StoredResult
from bharateo.data.chips import ChipSet
from bharateo.errors import BharatEOError
from bharateo.storage.runs import SavedRun

log = logging.getLogger(__name__)
FILL_NICE = 5  # added to the filling thread's niceness: page scripts come first
KEPT_TASKS = 32  # finished tasks remembered (their errors are shown, not retried on every rerun)


# --- what the pages store ------------------------------------------------------------------------
@dataclass
class Look:
    """One stored result a page reads: its kind and params (the file's key, with the model's
    digest and the chips' fingerprint), the chips and `compute(model, progress)` -> the value
    (`progress(done, total)` after each forward pass)."""

    kind: str
    params: dict
    chips: ChipSet
    compute: Callable = field(repr=False)


def precision_param(precision: str) -> dict:
    """A stored result's precision key: none for fp32, so results stored before precision
    policies existed (all fp32) keep their file names and are read back, not recomputed."""
    return {} if precision == "fp32" else {"precision": precision}


def curve_look(chips: ChipSet, precision: str = "fp32") -> Look:
    """Reconstruct's curve: evaluate.mask_ratio_curve at CURVE_RATIOS under `precision`."""
    params = {"ratios": list(ev.CURVE_RATIOS), "seed": ev.EVAL_MASK_SEED,
              **precision_param(precision)}
    return Look("ratio_curve", params, chips,
                lambda model, progress=None: ev.mask_ratio_curve(
                    model, chips, ev.CURVE_RATIOS, ev.EVAL_MASK_SEED, precision=precision,
                    progress=progress))


def evaluation_look(chips: ChipSet, mask_ratio: float, precision: str = "fp32") -> Look:
    """Evaluate's scores: evaluate.evaluate at `mask_ratio` (the run's) under `precision`."""
    params = {"mask_ratio": round(float(mask_ratio), 4), "seed": ev.EVAL_MASK_SEED,
              **precision_param(precision)}
    return Look("evaluation", params, chips,
                lambda model, progress=None: ev.evaluate(
                    model, chips, params["mask_ratio"], ev.EVAL_MASK_SEED, precision=precision,
                    progress=progress))


def embedding_look(chips: ChipSet) -> Look:
    """Inside's token-embedding map (inspect_model.embedding_map)."""
    params = {"neighbours": im.NEIGHBOURS, "projection": "pca", "similarity": "centred cosine",
              "patch_components": im.PATCH_COMPONENTS}  # maps stored before lack patch vectors
    return Look("embedding_map", params, chips,
                lambda model, progress=None: im.embedding_map(model, chips, im.NEIGHBOURS))


def run_looks(train: ChipSet, held: ChipSet | None, mask_ratio: float,
              precision: str = "fp32") -> list[Look]:
    """Everything the pages read for a run on its own chips: the curve and the evaluation on the
    training and the held-out chips, and the embedding map of each (cheapest first)."""
    splits = [train] + ([held] if held is not None and len(held) else [])
    return ([evaluation_look(c, mask_ratio, precision) for c in splits]
            + [curve_look(c, precision) for c in splits]
            + [embedding_look(c) for c in splits])


# --- the training worker's last step -------------------------------------------------------------
@dataclass
class StoredLooks:
    """A training worker's event before its weights: the stored results of run_looks for the
    trained weights, as the records stored.save writes (kind, model_digest, chips_fingerprint,
    params, result, chips, roi_names)."""

    records: list[dict]


class Stopped(Exception):
    """compute_records was asked to stop."""


def compute_records(model, looks: list[Look], stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Each look's value for `model` -> records for store_records. `stop()` is asked after every
    forward pass: when it says True, the looks computed so far are returned."""
    digest, records = stored.model_digest(model), []

    def progress(done, total):
        if stop():
            raise Stopped

    for look in looks:
        try:
            value = look.compute(model, progress)
        except Stopped:
            break
        records.append({"kind": look.kind, "model_digest": digest,
                        "chips_fingerprint": stored.chips_fingerprint(look.chips),
                        "params": look.params, "chips": len(look.chips),
                        "roi_names": list(look.chips.roi_names), "result": value})
    return records


def store_records(run: SavedRun | None, records: list[dict]) -> list[str]:
    """Keep the worker's records in the memo and beside `run` -> the files written."""
    written = []
    for r in records:
        if not stored.valid_result(r.get("kind"), r.get("result")):
            continue
        name = stored.save(r["kind"], r["model_digest"], r["chips_fingerprint"], r["params"],
                           r["result"], run, r["chips"], r["roi_names"])
        written += [name] if name else []
    return written


# --- filling in what a page asks for, off its script thread ----------------------------------------
@dataclass
class Filling:
    """A result being computed in the background: `progress` 0-1, `error` (words) if it failed,
    `result` once done."""

    key: tuple
    kind: str
    progress: float = 0.0
    error: str | None = None
    result: StoredResult | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    _job: tuple | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.done.is_set()


_lock = threading.Lock()
_tasks: dict[tuple, Filling] = {}
_queue: "queue.Queue[Filling]" = queue.Queue()
_thread: threading.Thread | None = None


def ready_or_fill(look: Look, model, run: SavedRun | None = None) -> StoredResult | Filling:
    """The stored result of `look` for `model` (memo or file), else the Filling that computes it
    in the background thread (started here once; later calls get the same Filling). Never
    computes on the caller's thread: a page draws a Filling as a note and polls."""
    found = stored.lookup(look.kind, model, look.chips, look.params, run)
    if found is not None:
        return found
    key = stored.memory_key(look.kind, stored.model_digest(model),
                            stored.chips_fingerprint(look.chips), look.params)
    with _lock:
        task = _tasks.get(key)
        if task is not None and (task.error or not task.ready):
            return task  # running, queued, or failed (the page shows the error)
        task = Filling(key, look.kind, _job=(look, model, run))
        _tasks[key] = task
        _prune()
        _queue.put(task)
        _start_thread()
    return task


def wait(task: Filling, timeout: float | None = None) -> bool:
    """Block until `task` is done (tests, benchmarks) -> whether it is."""
    return task.done.wait(timeout)


def wait_all(timeout: float | None = None) -> bool:
    """Block until every result asked for so far is done (tests, benchmarks) -> whether any was
    still being filled in when called."""
    with _lock:
        pending = [t for t in _tasks.values() if not t.ready]
    for task in pending:
        task.done.wait(timeout)
    return bool(pending)


def _prune() -> None:
    done = [k for k, t in _tasks.items() if t.ready]
    for k in done[:max(0, len(_tasks) - KEPT_TASKS)]:
        del _tasks[k]


def _start_thread() -> None:
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_fill_forever, name="bharateo-looks", daemon=True)
        _thread.start()


def _lower_this_thread() -> None:
    try:  # Linux: a thread's niceness is its own (the pool threads torch starts from it inherit it)
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + FILL_NICE)
    except (AttributeError, OSError):
        pass


def _fill_forever() -> None:
    _lower_this_thread()
    while True:
        task = _queue.get()
        look, model, run = task._job

        def progress(done, total, task=task):
            task.progress = done / max(total, 1)

        try:
            found = stored.lookup(look.kind, model, look.chips, look.params, run)
            if found is None:  # (the training worker may have stored it meanwhile)
                value = look.compute(model, progress)
                name = stored.save(look.kind, stored.model_digest(model),
                                   stored.chips_fingerprint(look.chips), look.params, value, run,
                                   len(look.chips), look.chips.roi_names)
                found = StoredResult(value, "computed", name)
            task.result, task.progress = found, 1.0
        except BharatEOError as exc:
            task.error = str(exc)
        except Exception as exc:  # the page shows it as a note; the server keeps going
            log.exception("filling in %s failed", look.kind)
            task.error = f"Computing this failed unexpectedly: {exc!r}"
        finally:
            task._job = None  # the model and chips are no longer held
            task.done.set()
