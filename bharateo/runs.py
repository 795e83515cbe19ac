"""Saved runs: `checkpoints/<run-name>/` with model.pt, config.json, history.json, metrics.json.

A name is reserved when training starts: its folder is created atomically (mkdir) with a
`.reserved` marker holding a token, so two trainings can never pick the same name. The run is
written into a temporary folder and renamed onto its (emptied) reserved folder, so a crash never
leaves half a run and a name taken meanwhile is never overwritten: the run is saved under the
next free name instead. Every file read back is checked (one schema check per file); a damaged
run is listed with its reason and can be renamed or deleted, but not used. Run names are checked
before any path is built.
"""
from __future__ import annotations

import datetime as dt
import errno
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bharateo.errors import (BharatEOError, CheckpointMismatchError, ConfigError, RunDamagedError, RunNameError,
                             RunNotFoundError, RunSaveError)
from bharateo.architectures import build_model
from bharateo.device import cpu_state_dict, resolve_device
from bharateo.model import ModelConfig, TinyRGBMAE
from bharateo.schema import is_int, is_number, json_bytes

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


RESERVED = ".reserved"  # marker of a name reserved by a training that has not saved yet
MAX_NAME_TRIES = 10_000


class ReservedName(str):
    """A run name reserved by reserve_run_name; `token` proves the reservation is ours."""

    token: str | None = None


def suffixed_name(name: str, k: int) -> str:
    """name-k, with `name` shortened so the result still fits the 64-character limit."""
    suffix = f"-{k}"
    return name[:64 - len(suffix)] + suffix


def _save_error(exc: OSError, name: str, where: Path) -> RunSaveError:
    """A plain message for a failed write: what is wrong, where, what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "the folder is read-only (permission denied)"
    elif exc.errno == errno.ENOENT:
        what = "the folder is missing"
    else:
        what = exc.strerror or str(exc)
    return RunSaveError(f"Run '{name}' could not be saved in {where}: {what}. Free some space or "
                        "make that folder writable (or set BHARATEO_CHECKPOINT_DIR to another "
                        "folder), then try again.")


def _write_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file `path` and fsync it (OSError on a full or read-only disk)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_into(folder: Path, filename: str, data: bytes) -> None:
    """Replace folder/filename atomically; never creates `folder` (FileNotFoundError if gone)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / filename)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _marker(path: Path) -> dict | None:
    try:
        marker = json.loads((path / RESERVED).read_text())
        return marker if isinstance(marker, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def reserve_run_name(name: str, root: Path | None = None, exact: bool = False) -> ReservedName:
    """Reserve `name` for a training that starts now: its folder is created atomically (mkdir)
    with a `.reserved` marker. Taken names give name-2, name-3, ... (cut to fit 64 characters),
    or RunNameError with `exact`. RunSaveError when the checkpoints folder can't be written."""
    base = validate_run_name(name)
    root = root or checkpoint_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _save_error(exc, base, root) from exc
    for k in range(1, MAX_NAME_TRIES):
        candidate = base if k == 1 else suffixed_name(base, k)
        path = run_dir(candidate, root)
        try:
            path.mkdir()
        except FileExistsError:
            if exact:
                raise RunNameError(f"A run called '{base}' already exists. Pick another name.") from None
            continue
        except OSError as exc:
            raise _save_error(exc, candidate, root) from exc
        reserved = ReservedName(candidate)
        reserved.token = secrets.token_hex(8)
        marker = {"token": reserved.token, "pid": os.getpid(),
                  "reserved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            _write_into(path, RESERVED, json.dumps(marker).encode())
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise _save_error(exc, candidate, root) from exc
        return reserved
    raise RunNameError(f"No free run name like '{base}' is left; pick another name.")


def release_run_name(name: str, root: Path | None = None) -> None:
    """Give back a reservation that was never saved into (a failed or cancelled training).
    Does nothing for a plain name, a saved run, or a reservation that isn't ours."""
    token = getattr(name, "token", None)
    try:
        path = run_dir(name, root)
        if token and (_marker(path) or {}).get("token") == token and not (path / "config.json").exists():
            (path / RESERVED).unlink()
            path.rmdir()
    except (OSError, BharatEOError):
        pass


def _claim(final: Path, token: str | None) -> Path:
    """An empty folder to rename the finished run onto: our own reservation (marker removed), the
    name itself if still free, else the next free name (a collision found at save)."""
    if token and (_marker(final) or {}).get("token") == token and not (final / "config.json").exists():
        if not any(p.name != RESERVED for p in final.iterdir()):  # only our marker in it
            (final / RESERVED).unlink()
            return final
        # something else was left in our reservation: keep the marker (so the folder stays listed
        # as a reservation that can be deleted, not as a damaged run) and save under a free name
    try:
        final.mkdir()
        return final
    except FileExistsError:
        pass
    free = reserve_run_name(final.name, final.parent)
    (run_dir(free, final.parent) / RESERVED).unlink()
    return run_dir(free, final.parent)


def save_run(name: str, model: TinyRGBMAE, config: dict, history: list[dict], metrics: dict,
             root: Path | None = None, overwrite: bool = False) -> Path:
    """Write a complete run folder atomically and return it. `config` holds every setting.

    The run goes into its reservation (see reserve_run_name) or, if the name is free, under that
    name; a name taken by another run meanwhile gives the next free name (compare the returned
    folder's name). Non-finite metrics are written as null. RunSaveError (what, where) when the
    disk is full or read-only; nothing half-written is left behind.
    """
    token = getattr(name, "token", None)
    final = run_dir(name, root)
    where = final.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=where, prefix=f".{final.name}.", suffix=".tmp"))
    except OSError as exc:
        raise _save_error(exc, final.name, where) from exc
    claimed = None
    try:
        weights = io.BytesIO()
        torch.save(cpu_state_dict(model), weights)
        saved_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        for filename, data in (("model.pt", weights.getvalue()),
                               ("config.json", json_bytes({**config, "saved_at": saved_at})),
                               ("history.json", json_bytes(history)),
                               ("metrics.json", json_bytes(metrics))):
            _write_file(tmp / filename, data)
        if overwrite and final.exists():
            aside = final.with_name(f".{final.name}.old")
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            final = claimed = _claim(final, token)
            os.rename(tmp, final)  # onto an empty folder of ours: atomic
    except OSError as exc:
        _clean_up(tmp, claimed)
        raise _save_error(exc, final.name, where) from exc
    except BaseException:
        _clean_up(tmp, claimed)
        raise
    return final


def _clean_up(tmp: Path | None, claimed: Path | None) -> None:
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if claimed is not None:
        try:
            claimed.rmdir()  # only if still empty: never a run
        except OSError:
            pass


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


@dataclass
class DamagedRun:
    """A run folder that can't be used: `reason` says why. It can be renamed or deleted."""

    name: str
    path: Path
    reason: str
    reserved: bool = False  # a name reserved by a training that has not saved (yet)
    training: bool = False  # reserved by a training whose process is alive: it is training now


def _read_json(path: Path, filename: str):
    try:
        return json.loads((path / filename).read_text())
    except FileNotFoundError:
        raise RunDamagedError(f"{filename} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDamagedError(f"{filename} can't be read ({exc.__class__.__name__})") from None
    except ValueError:
        raise RunDamagedError(f"{filename} is not valid JSON") from None


def _number_or_none(value) -> bool:
    return value is None or is_number(value)


def check_config(config) -> None:
    """config.json: an object whose settings rebuild a valid RunConfig (types and bounds checked,
    see RunConfig.from_dict), with `saved_at` and `status` as text. RunDamagedError if not."""
    from bharateo.pipeline import RunConfig

    if not isinstance(config, dict):
        raise RunDamagedError(f"config.json holds a JSON {type(config).__name__}, not an object")
    for key in ("saved_at", "status"):
        if key in config and not isinstance(config[key], str):
            raise RunDamagedError(f"config.json: '{key}' should be text, not {config[key]!r}")
    try:
        RunConfig.from_dict(config)
        run_band_stats(config, config["model"].get("in_chans", 3))  # reflectance runs
    except ConfigError as exc:
        raise RunDamagedError(f"config.json: {exc}") from None


def run_band_stats(config: dict, channels: int):
    """The per-band statistics a reflectance run was trained with (config.json "band_stats",
    checked) or None for a palette-RGB run. ConfigError when they are damaged or their band count
    is not the model's input channels."""
    from bharateo.reflectance import BandStats

    if config.get("band_stats") is None:
        if (config.get("chips") or {}).get("source", "worldcover") != "worldcover":
            raise ConfigError("a run on Sentinel-2 pixels has no band statistics ('band_stats'), "
                              "so its pixels can't be normalised as in training")
        return None
    stats = BandStats.from_dict(config["band_stats"])
    if len(stats.bands) != channels:
        raise ConfigError(f"the band statistics cover {len(stats.bands)} bands but the model "
                          f"reads {channels} channels")
    return stats


# scores an epoch may lack (runs saved before held-out regions or baselines existed)
OPTIONAL_HISTORY = ("heldout_rec_mae", "heldout_esa_acc", "esa_balanced", "majority_acc",
                    "heldout_esa_balanced", "heldout_majority_acc")


def check_history(history) -> None:
    """history.json: a list of per-epoch objects with numbers (or null) for every metric (the
    OPTIONAL_HISTORY ones only where present)."""
    if not isinstance(history, list):
        raise RunDamagedError(f"history.json holds a JSON {type(history).__name__}, not a list")
    for i, row in enumerate(history, 1):
        if not isinstance(row, dict) or not is_int(row.get("epoch")):
            raise RunDamagedError(f"history.json: entry {i} is not an epoch record")
        for key in ("loss", "rec", "esa", "rec_mae", "esa_acc", *OPTIONAL_HISTORY):
            if (key in row or key not in OPTIONAL_HISTORY) and not _number_or_none(row.get(key)):
                raise RunDamagedError(f"history.json: epoch {row['epoch']} has {key} = {row.get(key)!r}, "
                                      "not a number")


def check_metrics(metrics) -> None:
    """metrics.json: an object; end_reason/end_message/precision/precision_reason text,
    <split>_majority_class short text or null, every score a number or null."""
    if not isinstance(metrics, dict):
        raise RunDamagedError(f"metrics.json holds a JSON {type(metrics).__name__}, not an object")
    for key, value in metrics.items():
        ok = (isinstance(value, str) if key in ("end_reason", "end_message", "precision",
                                                "precision_reason") else
              value is None or (isinstance(value, str) and len(value) <= 64)
              if key.endswith("_majority_class") else
              value is None or is_int(value) if key in ("epochs_done", "parameters") else
              _number_or_none(value) if key.startswith(("train_", "heldout_")) else True)
        if not ok:
            raise RunDamagedError(f"metrics.json: '{key}' = {value!r} is not "
                                  + ("text" if key.startswith(("end_", "precision")) else "a number"))


def load_run(name: str, root: Path | None = None) -> SavedRun:
    """Run `name`, every file checked. RunNotFoundError if there is none; RunDamagedError (a
    RunNotFoundError) naming the file and value when a file is missing or malformed."""
    path = run_dir(name, root)
    if not path.is_dir() or not ((path / "config.json").exists() or (path / RESERVED).exists()):
        raise RunNotFoundError(f"There is no saved run called '{name}'.")
    try:
        if not (path / "config.json").exists() and (path / RESERVED).exists():
            raise RunDamagedError("it is reserved by a training that has not saved yet")
        config, history, metrics = (_read_json(path, f) for f in ("config.json", "history.json",
                                                                   "metrics.json"))
        check_config(config)
        check_history(history)
        check_metrics(metrics)
        if not (path / "model.pt").is_file():
            raise RunDamagedError("model.pt is missing")
    except RunDamagedError as exc:
        raise RunDamagedError(f"Run '{name}' can't be used: {str(exc).rstrip('.')}. Delete it (or rename it to keep "
                              "its files) and train again.") from None
    return SavedRun(name, path, config, history, metrics)


def load_model(run: SavedRun, expected: ModelConfig | None = None,
               device: str = "cpu") -> TinyRGBMAE:
    """The run's weights in a model of the run's shape (torch.load with weights_only=True), in
    eval mode on `device` (a name in device.DEVICES; the weights are mapped there, whatever
    device the run trained on). ConfigError when this machine lacks that device.

    With `expected`, a run of another shape raises CheckpointMismatchError naming the mismatch.
    A model.pt that is damaged, not a plain state_dict, or refused by weights_only (a malicious
    pickle) raises RunDamagedError in words (never torch's advice to turn the check off).
    """
    try:
        config = run.model_config.validate()
    except (TypeError, KeyError, ConfigError) as exc:
        raise RunDamagedError(f"Run '{run.name}' has an unusable model config ({exc}).") from None
    if expected is not None and expected != config:
        diffs = [f"{k}: run has {v}, expected {getattr(expected, k)}"
                 for k, v in config.to_dict().items() if getattr(expected, k) != v]
        raise CheckpointMismatchError(f"Run '{run.name}' has another model shape ({'; '.join(diffs)}).")
    target = resolve_device(device)
    model = build_model(config)
    try:
        with warnings.catch_warnings():  # torch's notes about odd pickles are not for a teacher
            warnings.simplefilter("ignore")
            state = torch.load(run.path / "model.pt", map_location=target, weights_only=True)
    except Exception as exc:  # truncated, not a zip, a pickled object: torch's text is not for us
        raise RunDamagedError(unreadable_weights_message(run.name)) from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise RunDamagedError(unreadable_weights_message(run.name))
    load_weights(model, state, run.name)
    try:
        model.band_stats = run_band_stats(run.config, config.in_chans)
    except ConfigError as exc:
        raise RunDamagedError(f"Run '{run.name}' can't be used: config.json: {exc}.") from None
    model.to(target).eval()
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


def _pid_alive(pid) -> bool:
    if not is_int(pid) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def scan_runs(root: Path | None = None) -> tuple[list[SavedRun], list[DamagedRun]]:
    """(usable runs newest first, damaged or reserved run folders by name). Never raises for
    what is inside a run folder: each damaged one comes back with its reason."""
    root = root or checkpoint_root()
    runs, damaged = [], []
    try:
        paths = sorted(p for p in root.iterdir() if RUN_NAME_RE.match(p.name) and ".." not in p.name)
    except OSError:
        return [], []
    for path in paths:
        if not path.is_dir():
            continue
        if not (path / "config.json").exists() and (marker := _marker(path)) is not None:
            when = str(marker.get("reserved_at", "?"))[:19].replace("T", " ")
            alive = _pid_alive(marker.get("pid"))
            damaged.append(DamagedRun(path.name, path, (
                f"reserved at {when} UTC by a training that has not saved yet" if alive else
                f"reserved at {when} UTC by a training that ended without saving"), reserved=True,
                training=alive))
            continue
        try:
            runs.append(load_run(path.name, root))
        except BharatEOError as exc:
            reason = str(exc).removeprefix(f"Run '{path.name}' can't be used: ")
            damaged.append(DamagedRun(path.name, path, reason.split(". Delete it")[0]))
    runs.sort(key=lambda r: r.config.get("saved_at", ""), reverse=True)
    return runs, damaged


def list_runs(root: Path | None = None) -> list[SavedRun]:
    """Every usable saved run, newest first (damaged ones: see scan_runs)."""
    return scan_runs(root)[0]


def _refuse_a_live_reservation(path: Path, name: str, what: str) -> None:
    """RunNameError for the folder of a training still running (its marker's process is alive):
    moving or deleting it under the training would make its save go elsewhere, confusingly."""
    marker = _marker(path)
    if marker is not None and not (path / "config.json").exists() and _pid_alive(marker.get("pid")):
        raise RunNameError(f"'{name}' is reserved by a training that is still running, so it can't "
                           f"be {what} now. Stop that training first (or wait for it to save).")


def rename_run(old: str, new: str, root: Path | None = None) -> Path:
    """Rename a run folder (a damaged one too). The new name is taken atomically (mkdir), so a
    name reserved meanwhile is never overwritten."""
    src = run_dir(old, root)
    if not src.is_dir():
        raise RunNotFoundError(f"There is no saved run called '{old}'.")
    _refuse_a_live_reservation(src, old, "renamed")
    dst = run_dir(new, root)
    try:
        dst.mkdir()
    except FileExistsError:
        raise RunNameError(f"A run called '{new}' already exists. Pick another name.") from None
    except OSError as exc:
        raise _save_error(exc, new, dst.parent) from exc
    try:
        os.rename(src, dst)  # onto the empty folder just made
    except OSError as exc:
        _clean_up(None, dst)
        raise _save_error(exc, new, dst.parent) from exc
    return dst


def delete_run(name: str, root: Path | None = None) -> None:
    """Delete a run folder, damaged or not."""
    path = run_dir(name, root)
    if not path.is_dir():
        raise RunNotFoundError(f"There is no saved run called '{name}'.")
    _refuse_a_live_reservation(path, name, "deleted")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise RunSaveError(f"Run '{name}' could not be deleted from {path.parent}: "
                           f"{exc.strerror or exc}.") from exc


def write_run_file(run: SavedRun, filename: str, obj) -> None:
    """Store an extra JSON result (e.g. an evaluation) beside a run, atomically. A run deleted
    meanwhile is never recreated: RunNotFoundError instead."""
    if not re.match(r"^[a-z0-9_-]+\.json$", filename):
        raise RunNameError(f"Bad result file name {filename!r}.")
    if not (run.path / "config.json").is_file():
        raise RunNotFoundError(f"Run '{run.name}' is no longer saved.")
    try:
        _write_into(run.path, filename, json_bytes(obj))
    except FileNotFoundError:  # the folder went between the check and the write
        raise RunNotFoundError(f"Run '{run.name}' is no longer saved.") from None


def read_run_file(run: SavedRun, filename: str):
    path = run.path / filename
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
