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
from typing import Annotated, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from bharateo.config.schema import Number
from bharateo.data.chips import ChipSet
from bharateo.data.worldcover import NUM_CLASSES
from bharateo.errors import BharatEOError
from bharateo.storage.runs import SavedRun, read_run_file, write_run_file
from bharateo.untrusted import typed

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
    StoredEvaluation, RatioCurve (a curve stored before majority baselines is recomputed) or
    EmbeddingMap, by `kind`."""
    shape = {"evaluation": StoredEvaluation, "ratio_curve": RatioCurve,
             "embedding_map": EmbeddingMap}.get(kind)
    if shape is None:
        return False
    try:
        typed(shape, value, kind)
    except BharatEOError:
        return False
    return True


# --- typed shapes of the stored results (read back with bharateo.untrusted.typed) ---------------
# Strict and open as config.schema's run files: unknown keys are kept, known ones checked.
_OPEN = ConfigDict(strict=True, extra="allow")


class ClassRow(BaseModel):
    model_config = _OPEN
    class_: str = Field(alias="class")
    support: NonNegativeInt
    precision: Number | None = None
    recall: Number | None = None
    f1: Number | None = None


class StoredEvaluation(BaseModel):
    """A stored evaluation (evaluate.evaluate's value): K x K non-negative integer confusion,
    K per-class rows, K per-class masked MAEs (or null), accuracy and mask ratio."""

    model_config = _OPEN
    confusion: list[list[NonNegativeInt]]
    per_class: list[ClassRow]
    per_class_mae: list[Number | None]
    accuracy: Number
    mask_ratio: Number
    masked_mae: Number | None = None

    @model_validator(mode="after")
    def _k_classes(self):
        k = NUM_CLASSES
        if len(self.confusion) != k or any(len(r) != k for r in self.confusion):
            raise ValueError(f"the confusion matrix is not {k} x {k}")
        if len(self.per_class) != k or len(self.per_class_mae) != k:
            raise ValueError(f"there are not {k} per-class rows")
        return self


class RatioRow(BaseModel):
    """One row of a stored mask-ratio curve (majority_acc null: no land-cover patch to score)."""

    model_config = _OPEN
    ratio: Number
    masked_mae: Number
    patch_acc: Number
    majority_acc: Number | None  # required: a curve stored before baselines is recomputed
    balanced_acc: Number | None = None


RatioCurve = Annotated[list[RatioRow], Field(min_length=1)]


class EmbeddingMap(BaseModel):
    """A stored embedding map (inspect_model.embedding_map): K chips x N tokens as five columns of
    K*N values (x, y numbers; chip, token, label whole numbers with chip < K, token < N), each
    chip's nearest chips (< K) and their similarities, the two explained-variance ratios, and
    K*N patch vectors of one length (what "chips like this one" ranks by; a map stored before
    them is computed again)."""

    model_config = _OPEN
    chips: PositiveInt
    tokens_per_chip: PositiveInt
    x: list[Number]
    y: list[Number]
    chip: list[NonNegativeInt]
    token: list[NonNegativeInt]
    label: list[int]
    neighbours: list[list[NonNegativeInt]]
    similarity: list[list[Number | None]]
    explained: Annotated[list[Number], Field(min_length=2, max_length=2)]
    patch_vectors: list[Annotated[list[Number], Field(min_length=1)]]

    @model_validator(mode="after")
    def _shapes(self):
        k, n = self.chips, self.tokens_per_chip
        if any(len(c) != k * n for c in (self.x, self.y, self.chip, self.token, self.label,
                                          self.patch_vectors)):
            raise ValueError(f"a column does not hold chips x tokens_per_chip = {k * n} values")
        if any(c >= k for c in self.chip) or any(t >= n for t in self.token):
            raise ValueError("a chip or token index is out of range")
        if len(self.neighbours) != k or len(self.similarity) != k or \
                any(j >= k for r in self.neighbours for j in r):
            raise ValueError(f"the nearest chips are not {k} lists of chip indices")
        if len({len(v) for v in self.patch_vectors}) > 1:
            raise ValueError("the patch vectors are not all of one length")
        return self
