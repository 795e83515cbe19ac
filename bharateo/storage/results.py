"""Results computed once per model + chips and stored beside a saved run: the evaluation, the
mask-ratio curve and the embedding map (the pages read them; the training worker and the
background filler, bharateo/jobs/looks.py, write them).

A result is one JSON file beside the run (runs.write_run_file), named by its kind, a
fingerprint of the chips and a hash of its parameters, and holding the model's weight digest,
so a run retrained under the same name, or other chips, never get someone else's numbers. A
small in-process memo makes a rerun cost nothing. Nothing here calls Streamlit (the training
worker imports it).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bharateo.data.chips import ChipSet
from bharateo.errors import BharatEOError
from bharateo.storage.runs import SavedRun, read_run_file, write_run_file

RESULT_FORMAT = 1
MEMORY_ENTRIES = 64

_lock = threading.Lock()
_memory: OrderedDict[tuple, object] = OrderedDict()
_chip_fps: dict[int, tuple[weakref.ref, str]] = {}
_model_digests: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# --- identities ------------------------------------------------------------------------------
def chips_fingerprint(chips: ChipSet) -> str:
    """32 hex digits naming exactly these chips (pixels, where they came from, chip/patch size).

    Memoised per ChipSet object, so asking again on every rerun costs nothing.
    """
    key = id(chips)
    with _lock:
        hit = _chip_fps.get(key)
        if hit is not None and hit[0]() is chips:
            return hit[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([chips.chip_size, chips.patch_size, chips.channels,
                         list(chips.roi_names), len(chips)]).encode())
    for array in (chips.labels, chips.roi_index, chips.origins):
        h.update(np.ascontiguousarray(array).tobytes())
    if chips.pixels is not None:  # a source with its own values (not palette RGB): they count too
        h.update(json.dumps(list(chips.bands)).encode())
        h.update(np.ascontiguousarray(chips.pixels).tobytes())
    fingerprint = h.hexdigest()
    with _lock:
        _chip_fps[key] = (weakref.ref(chips, lambda _ref, k=key: _chip_fps.pop(k, None)), fingerprint)
    return fingerprint


def model_digest(model) -> str:
    """32 hex digits naming the model's weights (memoised per model object).

    A model is only handed to the pages once training has finished, so its weights no longer
    change; a saved run and the same model still in memory have the same digest.
    """
    with _lock:
        hit = _model_digests.get(model)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    with _lock:
        _model_digests[model] = digest
    return digest


# --- results computed once, stored beside the run --------------------------------------------
@dataclass
class StoredResult:
    value: object
    source: str  # "memory" | "file" | "computed"
    filename: str | None  # the file beside the run holding it (None: no saved run, or unwritable)


def result_filename(kind: str, chips_fp: str, params: dict) -> str:
    params_hash = hashlib.blake2b(json.dumps(params, sort_keys=True).encode(),
                                  digest_size=3).hexdigest()
    return f"{kind}_{chips_fp[:12]}_{params_hash}.json"


def clear_memory() -> None:
    """Forget in-process results (files beside runs stay)."""
    with _lock:
        _memory.clear()


def _remember(key: tuple, value) -> None:
    with _lock:
        _memory[key] = value
        _memory.move_to_end(key)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)


def memory_key(kind: str, digest: str, chips_fp: str, params: dict) -> tuple:
    """The in-process memo's key of one result (the same names the file's record holds)."""
    return (kind, digest, chips_fp, json.dumps(params, sort_keys=True))


def record(kind: str, digest: str, chips_fp: str, params: dict) -> dict:
    """The fields a stored file must hold to be this result (RESULT_FORMAT, kind, weights, chips,
    params); the file adds the result and when it was computed."""
    return {"format": RESULT_FORMAT, "kind": kind, "model_digest": digest,
            "chips_fingerprint": chips_fp, "params": params}


def save(kind: str, digest: str, chips_fp: str, params: dict, value, run: SavedRun | None,
         chips_count: int, roi_names) -> str | None:
    """Keep `value` in the memo and, when `run` is given, in its file beside the run -> the file
    name (None: no saved run, or it could not be written, e.g. read-only checkpoints)."""
    _remember(memory_key(kind, digest, chips_fp, params), value)
    if run is None:
        return None
    filename = result_filename(kind, chips_fp, params)
    try:
        write_run_file(run, filename, {**record(kind, digest, chips_fp, params), "chips": chips_count,
                                       "roi_names": list(roi_names),
                                       "computed_at": dt.datetime.now(dt.timezone.utc)
                                       .isoformat(timespec="seconds"), "result": value})
        return filename
    except (OSError, BharatEOError):  # read-only checkpoints: still show the numbers
        return None


def lookup(kind: str, model, chips: ChipSet, params: dict,
           run: SavedRun | None = None) -> StoredResult | None:
    """The stored result of `kind` for this model's weights, these chips and params, from the
    memo or the file beside `run`, or None when it has not been computed (nothing is computed
    here: a page calls this on every rerun). A memo hit whose file is missing (a run saved
    after the result was computed) is written there."""
    chips_fp, digest = chips_fingerprint(chips), model_digest(model)
    key = memory_key(kind, digest, chips_fp, params)
    filename = result_filename(kind, chips_fp, params) if run is not None else None
    with _lock:
        value = _memory.get(key)
        if value is not None:
            _memory.move_to_end(key)
    if value is not None:
        if run is not None and not (run.path / filename).exists():
            filename = save(kind, digest, chips_fp, params, value, run, len(chips), chips.roi_names)
        return StoredResult(value, "memory", filename)
    if run is not None:
        stored = read_run_file(run, filename)
        if isinstance(stored, dict) and all(stored.get(k) == v for k, v in
                                            record(kind, digest, chips_fp, params).items()) \
                and valid_result(kind, stored.get("result")):
            _remember(key, stored["result"])
            return StoredResult(stored["result"], "file", filename)
    return None


def stored_result(kind: str, model, chips: ChipSet, params: dict, compute: Callable[[], object],
                  run: SavedRun | None = None) -> StoredResult:
    """`compute()` once per (model weights, chips, params); stored beside `run` when given.

    A stored file is used only if it names the same weights, chips and params, so a run that was
    retrained under the same name, or other chips, never get someone else's numbers.
    """
    found = lookup(kind, model, chips, params, run)
    if found is not None:
        return found
    value = compute()
    filename = save(kind, model_digest(model), chips_fingerprint(chips), params, value, run,
                    len(chips), chips.roi_names)
    return StoredResult(value, "computed", filename)


def valid_result(kind: str, value) -> bool:
    """A stored result read back from disk has the shape the pages draw (else it is recomputed):
    schema.StoredEvaluation, schema.RatioCurve (a curve stored before majority baselines is
    recomputed) or schema.EmbeddingMap, by `kind`."""
    from bharateo.config.schema import EmbeddingMap, RatioCurve, StoredEvaluation
    from bharateo.untrusted import typed

    shape = {"evaluation": StoredEvaluation, "ratio_curve": RatioCurve,
             "embedding_map": EmbeddingMap}.get(kind)
    if shape is None:
        return False
    try:
        typed(shape, value, kind)
    except BharatEOError:
        return False
    return True
