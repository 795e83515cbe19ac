"""Saved runs: `checkpoints/<run-name>/` with model.pt, config.json, history.json, metrics.json.

A run is written into a temporary folder and renamed into place, so a crash never leaves half a
run; single files are replaced atomically. Run names are checked before any path is built.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bharateo.errors import CheckpointMismatchError, RunNameError, RunNotFoundError
from bharateo.model import ModelConfig, TinyRGBMAE
from bharateo.roi import atomic_write_bytes

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUN_FILES = ("model.pt", "config.json", "history.json", "metrics.json")


def checkpoint_root() -> Path:
    default = Path(__file__).resolve().parents[1] / "checkpoints"
    return Path(os.environ.get("BHARATEO_CHECKPOINT_DIR", default))


def validate_run_name(name: str) -> str:
    """Letters, digits, '.', '_' and '-' only, 1-64 characters, not starting with '.' or '-'."""
    name = (name or "").strip()
    if not RUN_NAME_RE.match(name) or ".." in name:
        raise RunNameError(
            f"'{name}' can't be a run name. Use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. mask075_lr4e-4).")
    return name


def run_dir(name: str, root: Path | None = None) -> Path:
    """The folder of run `name`, guaranteed to be directly inside the checkpoints folder."""
    root = (root or checkpoint_root()).resolve()
    path = (root / validate_run_name(name)).resolve()
    if path.parent != root:
        raise RunNameError(f"'{name}' would point outside the checkpoints folder.")
    return path


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2, allow_nan=False, default=float).encode()


def save_run(name: str, model: TinyRGBMAE, config: dict, history: list[dict], metrics: dict,
             root: Path | None = None, overwrite: bool = False) -> Path:
    """Write a complete run folder atomically. `config` holds every setting (JSON-able)."""
    final = run_dir(name, root)
    if final.exists() and not overwrite:
        raise RunNameError(f"A run called '{name}' already exists. Pick another name.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        torch.save(model.state_dict(), tmp / "model.pt")
        saved_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        (tmp / "config.json").write_bytes(_json_bytes({**config, "saved_at": saved_at}))
        (tmp / "history.json").write_bytes(_json_bytes(history))
        (tmp / "metrics.json").write_bytes(_json_bytes(metrics))
        if final.exists():
            aside = final.with_name(f".{final.name}.old")
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass
class SavedRun:
    name: str
    path: Path
    config: dict
    history: list[dict]
    metrics: dict

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.config["model"])


def load_run(name: str, root: Path | None = None) -> SavedRun:
    path = run_dir(name, root)
    if not (path / "config.json").exists():
        raise RunNotFoundError(f"There is no saved run called '{name}'.")
    read = lambda f: json.loads((path / f).read_text())  # noqa: E731
    try:
        return SavedRun(name, path, read("config.json"), read("history.json"), read("metrics.json"))
    except (OSError, ValueError) as exc:
        raise RunNotFoundError(f"Run '{name}' is damaged ({exc}); delete it and train again.") from exc


def load_model(run: SavedRun, expected: ModelConfig | None = None) -> TinyRGBMAE:
    """The run's weights in a model of the run's shape (torch.load with weights_only=True).

    With `expected`, a run of another shape raises CheckpointMismatchError naming the mismatch.
    """
    config = run.model_config
    if expected is not None and expected != config:
        diffs = [f"{k}: run has {v}, expected {getattr(expected, k)}"
                 for k, v in config.to_dict().items() if getattr(expected, k) != v]
        raise CheckpointMismatchError(f"Run '{run.name}' has another model shape ({'; '.join(diffs)}).")
    model = TinyRGBMAE(config)
    try:
        state = torch.load(run.path / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a zip, a pickled object: torch's text is not for us
        raise RunNotFoundError(unreadable_weights_message(run.name)) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunNotFoundError(unreadable_weights_message(run.name))
    load_weights(model, state, run.name)
    model.eval()
    return model


def unreadable_weights_message(name: str) -> str:
    """The one message (app and CLI) for a model.pt that is not a plain state_dict: truncated,
    damaged, or a pickled object (never unpickled: torch.load runs with weights_only=True)."""
    return (f"Run '{name}' can't be loaded: its model.pt is not a readable set of weights (the "
            "file is truncated or damaged, or holds a pickled object, which is never run). Delete "
            "the run and train it again, or pick another run.")


def load_weights(model: TinyRGBMAE, state: dict, label: str) -> None:
    """load_state_dict with a message that names the first mismatched tensor."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointMismatchError(
                f"Weights '{label}' don't fit this model: {key} is {tuple(value.shape)} in the "
                f"checkpoint but {tuple(own[key].shape)} in the model. Use a model with the "
                "checkpoint's embed dim / depth / heads / chip size.")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"Weights '{label}' don't fit this model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]} (a different depth?).")
    model.load_state_dict(state)


def list_runs(root: Path | None = None) -> list[SavedRun]:
    """Every readable saved run, newest first. Damaged folders are skipped."""
    root = root or checkpoint_root()
    runs = []
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and RUN_NAME_RE.match(path.name) and (path / "config.json").exists():
                try:
                    runs.append(load_run(path.name, root))
                except Exception:
                    continue
    return sorted(runs, key=lambda r: r.config.get("saved_at", ""), reverse=True)


def rename_run(old: str, new: str, root: Path | None = None) -> Path:
    src, dst = run_dir(old, root), run_dir(new, root)
    if not src.exists():
        raise RunNotFoundError(f"There is no saved run called '{old}'.")
    if dst.exists():
        raise RunNameError(f"A run called '{new}' already exists. Pick another name.")
    os.replace(src, dst)
    return dst


def delete_run(name: str, root: Path | None = None) -> None:
    path = run_dir(name, root)
    if not path.exists():
        raise RunNotFoundError(f"There is no saved run called '{name}'.")
    shutil.rmtree(path)


def write_run_file(run: SavedRun, filename: str, obj) -> None:
    """Store an extra JSON result (e.g. an evaluation) beside a run, atomically."""
    if not re.match(r"^[a-z0-9_-]+\.json$", filename):
        raise RunNameError(f"Bad result file name {filename!r}.")
    atomic_write_bytes(run.path / filename, _json_bytes(obj))


def read_run_file(run: SavedRun, filename: str):
    path = run.path / filename
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
