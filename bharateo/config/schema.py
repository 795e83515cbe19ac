"""Checks for values read from disk or typed by a user: field types and bounds of the config
dataclasses, and JSON that never holds NaN/inf.

A saved run's files are checked with these before anything is built from them, so a damaged
file gives one plain sentence (ConfigError) instead of a TypeError deep in torch, and a number
like embed_dim 1e6 is refused before a model is allocated.
"""
from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np

from bharateo.errors import ConfigError

_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
          "str | None": "text or empty", "int | None": "a whole number or empty",
          "float | None": "a number or empty"}


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _fits(value, kind: str) -> bool:
    if value is None:
        return kind.endswith("| None")
    base = kind.split(" | ")[0]
    return {"int": is_int, "float": is_number, "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str)}.get(base, lambda v: True)(value)


def check_types(obj, what: str) -> None:
    """Raise ConfigError naming the first field of dataclass `obj` whose value has the wrong type
    (a whole-number field holding 64.0 or "64", a bool holding 1, ...). `what`: e.g. "model"."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind in _KINDS and not _fits(value, kind):
            raise ConfigError(f"The {what} setting '{f.name}' must be {_KINDS[kind]}, not "
                              f"{value!r} ({type(value).__name__}).")


def check_range(name: str, value, low, high, what: str = "") -> None:
    """ConfigError unless low <= value <= high (and finite). Units belong in `name`."""
    if not (is_number(value) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{what}{name} must be between {low:g} and {high:g} (got {value!r}).")


def finite_or_none(obj):
    """`obj` with every NaN/inf float (Python, numpy, 0-d tensor) replaced by None, recursively
    through dicts, lists and tuples; numpy scalars become plain Python numbers."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if is_int(obj):
        return int(obj)
    if isinstance(obj, (float, np.floating)) or (hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_bytes(obj) -> bytes:
    """Strict JSON (allow_nan=False) of `obj` after finite_or_none: non-finite metrics are null."""
    return json.dumps(finite_or_none(obj), indent=2, allow_nan=False, default=float).encode()


def number_text(value, digits: int = 3) -> str:
    """A score for reading: '—' for None, NaN, inf or anything that is not a number."""
    if not is_number(value) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


# --- typed shapes of the JSON files the lab reads back (read with bharateo.untrusted) ----------
# Strict: a whole number never comes from 64.0, "64" or true; a number never from text. Unknown
# keys are kept (older and newer runs add fields), only the known ones are checked. The shapes
# of the results stored beside a run (an evaluation, a mask-ratio curve, an embedding map) are
# in bharateo/storage/results.py, which knows the class count.
from pydantic import BaseModel, ConfigDict, model_validator  # noqa: E402

Number = float  # under strict=True a float field takes 3 or 3.5, never true or "3"
_OPEN = ConfigDict(strict=True, extra="allow")

MAX_RUN_JSON_BYTES = 32 * 2**20  # config/history/metrics.json: history holds ~330 B per epoch,
# so 100 000 epochs (train.MAX_EPOCHS, the CLI's limit) fit
MAX_RUN_JSON_VALUES = 2_000_000  # 100 000 epochs x ~12 values; bounds json.loads' objects
MAX_RESULT_JSON_BYTES = 64 * 2**20  # a stored result beside a run (an embedding map: ~100 B/token)


class RunConfigFile(BaseModel):
    """config.json's sections (their values are checked by training.experiment.RunConfig.from_dict,
    registered with storage.runs; band_stats by data.reflectance.BandStats.from_dict)."""

    model_config = _OPEN
    rois: list[dict]
    chips: dict
    model: dict
    train: dict
    saved_at: str | None = None
    status: str | None = None
    band_stats: dict | None = None


class HistoryRow(BaseModel):
    """One epoch of history.json: its number and a number (or null) for every metric."""

    model_config = _OPEN
    epoch: int
    loss: Number | None = None
    rec: Number | None = None
    esa: Number | None = None
    rec_mae: Number | None = None
    esa_acc: Number | None = None
    # written only where they apply: held-out scores and baselines
    heldout_rec_mae: Number | None = None
    heldout_esa_acc: Number | None = None
    esa_balanced: Number | None = None
    majority_acc: Number | None = None
    heldout_esa_balanced: Number | None = None
    heldout_majority_acc: Number | None = None


class RunMetrics(BaseModel):
    """metrics.json: end_* and precision* are text, epochs_done/parameters whole numbers, every
    train_*/heldout_* score a number or null (other keys are kept as they are)."""

    model_config = _OPEN
    end_reason: str | None = None
    end_message: str | None = None
    precision: str | None = None
    precision_reason: str | None = None
    epochs_done: int | None = None
    parameters: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _scores(cls, value):
        if isinstance(value, dict):
            for key, v in value.items():
                if isinstance(key, str) and key.endswith("_majority_class"):  # a class's name
                    if not (v is None or (isinstance(v, str) and len(v) <= 64)):
                        raise ValueError(f"'{key}' = {v!r:.40} is not a class name")
                elif isinstance(key, str) and key.startswith(("train_", "heldout_")) and \
                        not (v is None or is_number(v)):
                    raise ValueError(f"'{key}' = {v!r:.40} is not a number")
        return value


class Reservation(BaseModel):
    """A run name's .reserved marker (runs.reserve_run_name)."""

    model_config = ConfigDict(extra="allow")  # lax: a marker is ours and only advisory
    token: str | None = None
    pid: int | None = None
