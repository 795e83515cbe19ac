"""Saved runs: `checkpoints/<run-name>/` with model.pt, config.json, history.json, metrics.json.

A name is reserved when training starts: its folder is created atomically (mkdir) with a
`.reserved` marker holding a token, so two trainings can never pick the same name. The run is
written into a temporary folder and renamed onto its (emptied) reserved folder, so a crash never
leaves half a run and a name taken meanwhile is never overwritten: the run is saved under the
next free name instead. Every file read back is checked (one schema check per file); a damaged
run is listed with its reason and can be renamed or deleted, but not used. Run names are checked
before any path is built.

Changes to the runs are serialised (bharateo/storage/runfolder.py: one lock on the checkpoints folder),
so a rename and a delete of one run at the same moment give one outcome, told truly to both
callers. Reservations and temporary folders record their owner by PID and process start time;
clean_leftovers removes what a killed process left. Files are read from a run folder without
following links.
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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bharateo.files import atomic_write_bytes, write_new_file
from bharateo.errors import (BharatEOError, CheckpointMismatchError, ConfigError, RunDamagedError, RunNameError,
                             RunNotFoundError, RunSaveError)
from bharateo.data.reflectance import BandStats
from bharateo.models.registry import build_model
from bharateo.models.device import cpu_state_dict, resolve_device
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.storage.runfolder import (RunFileError, linked_files, make_temp_dir, open_run_file, owner_tag,
                                owner, reservation_alive, runs_locked)
from bharateo.storage.runfolder import RESERVED, checkpoint_root, clean_checkpoints as clean_leftovers  # noqa: F401
from bharateo.storage.runfolder import read_marker as _marker
from bharateo.config.schema import (MAX_RESULT_JSON_BYTES, MAX_RUN_JSON_BYTES, MAX_RUN_JSON_VALUES,
                             HistoryRow,
                             RunConfigFile, RunMetrics, json_bytes)
from bharateo.untrusted import read_json, typed

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUN_FILES = ("model.pt", "config.json", "history.json", "metrics.json")


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


_write_file = write_new_file  # a new file of a run being assembled (files.write_new_file)


def _write_into(folder: Path, filename: str, data: bytes) -> None:
    """Replace folder/filename atomically (files.atomic_write_bytes, its temp file named with
    this process for clean_leftovers); never creates `folder` (FileNotFoundError if gone)."""
    atomic_write_bytes(folder / filename, data, make_folder=False, owner=owner_tag())


def reserve_run_name(name: str, root: Path | None = None, exact: bool = False) -> ReservedName:
    """Reserve `name` for a training that starts now: its folder is created atomically (mkdir)
    with a `.reserved` marker. Taken names give name-2, name-3, ... (cut to fit 64 characters),
    or RunNameError with `exact`. RunSaveError when the checkpoints folder can't be written."""
    base = validate_run_name(name)
    root = root or checkpoint_root()
    try:
        with runs_locked(root):
            return _reserve(base, root, exact)
    except OSError as exc:  # the folder can't be created or locked
        raise _save_error(exc, base, root) from exc


def _reserve(base: str, root: Path, exact: bool) -> ReservedName:
    """reserve_run_name under the runs lock."""
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
        marker = {"token": reserved.token, **owner(),  # pid and process start: see runfolder
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
        with runs_locked(path.parent):
            if (token and (_marker(path) or {}).get("token") == token
                    and not (path / "config.json").exists()):
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
    free = _reserve(final.name, final.parent, exact=False)
    (run_dir(free, final.parent) / RESERVED).unlink()
    return run_dir(free, final.parent)


def save_run(name: str, model: TinyRGBMAE, config: dict, history: list[dict], metrics: dict,
             root: Path | None = None, overwrite: bool = False) -> Path:
    """Write a complete run folder atomically and return it. `config` holds every setting;
    the model's input normalisation (`model.band_stats`, reflectance runs) is written into
    config.json as "band_stats" (replacing any given there), read back by SavedRun.band_stats.

    The run goes into its reservation (see reserve_run_name) or, if the name is free, under that
    name; a name taken by another run meanwhile gives the next free name (compare the returned
    folder's name). Non-finite metrics are written as null. RunSaveError (what, where) when the
    disk is full or read-only; nothing half-written is left behind. The files are written into a
    hidden temporary folder named with this process (removed by clean_leftovers if it is killed);
    only the final rename holds the runs lock.
    """
    token = getattr(name, "token", None)
    final = run_dir(name, root)
    where = final.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(where, "save_run")
    except OSError as exc:
        raise _save_error(exc, final.name, where) from exc
    claimed = None
    try:
        weights = io.BytesIO()
        torch.save(cpu_state_dict(model), weights)
        saved_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if (stats := model.band_stats) is not None:
            config = {**config, "band_stats": stats.to_dict()}
        for filename, data in (("model.pt", weights.getvalue()),
                               ("config.json", json_bytes({**config, "saved_at": saved_at})),
                               ("history.json", json_bytes(history)),
                               ("metrics.json", json_bytes(metrics))):
            _write_file(tmp / filename, data)
        with runs_locked(where):
            if overwrite and final.exists():
                aside = make_temp_dir(where, "replaced")
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

    @property
    def band_stats(self) -> BandStats | None:
        """The per-band normalisation the run was trained with (config.json "band_stats", read
        back typed and checked), or None for a palette-RGB run. ConfigError when damaged."""
        return run_band_stats(self.config, self.config["model"].get("in_chans", 3))


@dataclass
class DamagedRun:
    """A run folder that can't be used: `reason` says why. It can be renamed or deleted."""

    name: str
    path: Path
    reason: str
    reserved: bool = False  # a name reserved by a training that has not saved (yet)
    training: bool = False  # reserved by a training whose process is alive: it is training now


def _read_json(path: Path, filename: str):
    """The JSON value of a run file: at most MAX_RUN_JSON_BYTES, never a link, depth-checked
    (untrusted.read_json). RunDamagedError naming the file and the problem."""
    try:
        return read_json(path / filename, filename, MAX_RUN_JSON_BYTES, error=RunDamagedError,
                         max_values=MAX_RUN_JSON_VALUES)
    except FileNotFoundError:
        raise RunDamagedError(f"{filename} is missing") from None


# config.json's settings are rebuilt by the layer that owns the run's config: it registers its
# check here when imported (bharateo.training.experiment: RunConfig.from_dict, which checks every
# setting's type and range), so a run whose settings are damaged is listed as damaged without
# storage importing training. Storage itself checks the file's typed shape and the band stats.
_settings_checks: list[Callable[[dict], object]] = []


def register_settings_check(check: Callable[[dict], object]) -> None:
    """Have check_config call `check(config)` on every config.json read back (after its typed
    shape is checked); `check` raises ConfigError naming a setting it refuses. Registering the
    same check again changes nothing."""
    if check not in _settings_checks:
        _settings_checks.append(check)


def check_config(config) -> None:
    """config.json: an object whose sections are typed (schema.RunConfigFile), whose settings
    pass the registered checks (RunConfig.from_dict: types and bounds, see
    register_settings_check) and whose band statistics fit the model (run_band_stats).
    RunDamagedError if not; RuntimeError when no check is registered (nothing imported
    bharateo.training.experiment: a settings check is never skipped silently)."""
    typed(RunConfigFile, config, "config.json", RunDamagedError)
    if not _settings_checks:  # a caller's mistake, never a run's: say it loudly, accept nothing
        raise RuntimeError("no settings check is registered: import bharateo.training.experiment "
                           "before reading saved runs")
    try:
        for check in _settings_checks:
            check(config)
        run_band_stats(config, config["model"].get("in_chans", 3))  # reflectance runs
    except ConfigError as exc:
        raise RunDamagedError(f"config.json: {exc}") from None


def run_band_stats(config: dict, channels: int):
    """The per-band statistics a reflectance run was trained with (config.json "band_stats",
    checked) or None for a palette-RGB run. ConfigError when they are damaged or their band count
    is not the model's input channels. Runs saved before issue 24 wrote the same key (then
    from the chips rather than the model), so they read back alike."""
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



def check_history(history) -> None:
    """history.json: a list of per-epoch records with numbers (or null) for every metric
    (schema.HistoryRow). RunDamagedError naming the entry and value if not."""
    typed(list[HistoryRow], history, "history.json", RunDamagedError)


def check_metrics(metrics) -> None:
    """metrics.json: end_reason/end_message/precision/precision_reason text, every score a number
    or null (schema.RunMetrics). RunDamagedError naming the key if not."""
    typed(RunMetrics, metrics, "metrics.json", RunDamagedError)


def load_run(name: str, root: Path | None = None) -> SavedRun:
    """Run `name`, every file checked. RunNotFoundError if there is none; RunDamagedError (a
    RunNotFoundError) naming the file and value when a file is missing or malformed."""
    path = run_dir(name, root)
    if not path.is_dir() or not ((path / "config.json").exists() or (path / RESERVED).exists()):
        raise RunNotFoundError(f"There is no saved run called '{name}'.")
    try:
        if not (path / "config.json").exists() and (path / RESERVED).exists():
            raise RunDamagedError("it is reserved by a training that has not saved yet")
        if links := linked_files(path, RUN_FILES):  # never read through: see runfolder
            raise RunDamagedError(f"{', '.join(links)} {'is' if len(links) == 1 else 'are'} a link "
                                  "or not a plain file (a run folder's files must be its own)")
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
    check_weights_size(run.path / "model.pt", config, run.name)
    model = build_model(config)
    try:
        with warnings.catch_warnings():  # torch's notes about odd pickles are not for a teacher
            warnings.simplefilter("ignore")
            with open_run_file(run.path, "model.pt") as f:  # a link is refused, never followed
                state = torch.load(f, map_location=target, weights_only=True)
    except RunFileError as exc:
        raise RunDamagedError(f"Run '{run.name}' can't be loaded: {exc.strerror}. Delete the run "
                              "and train it again, or pick another run.") from None
    except Exception as exc:  # truncated, not a zip, a pickled object: torch's text is not for us
        raise RunDamagedError(unreadable_weights_message(run.name)) from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise RunDamagedError(unreadable_weights_message(run.name))
    load_weights(model, state, run.name)
    try:
        model.band_stats = run.band_stats
    except ConfigError as exc:
        raise RunDamagedError(f"Run '{run.name}' can't be used: config.json: {exc}.") from None
    model.to(target).eval()
    return model


WEIGHT_BYTES = 8  # per parameter: float64, the widest dtype a state_dict of this lab could hold
WEIGHTS_SLACK_BYTES = 2**20  # the archive's pickle, byte order and version records (~2 KB)
WEIGHTS_MAX_MEMBERS = 4096  # a state_dict of the largest allowed model has a few hundred tensors


def weights_limit(config: ModelConfig) -> int:
    """The most bytes a model.pt of `config`'s shape may hold once inflated: WEIGHT_BYTES per
    parameter (architectures.model_class(...).parameter_count) plus WEIGHTS_SLACK_BYTES."""
    from bharateo.models.registry import model_class

    return model_class(config.arch).parameter_count(config) * WEIGHT_BYTES + WEIGHTS_SLACK_BYTES


def check_weights_size(path: Path, config: ModelConfig, name: str) -> None:
    """Refuse a model.pt larger than its config allows before torch.load spends memory on it: the
    file's own size and, for a zip archive (torch.save's format), the declared inflated size of
    each member (zipfile infolist file_size) and their count. RunDamagedError in words."""
    import zipfile

    limit = weights_limit(config)

    def too_big(what: str) -> RunDamagedError:
        return RunDamagedError(
            f"Run '{name}' can't be loaded: its model.pt {what}, more than the "
            f"{limit / 2**20:.1f} MB weights of its model shape can take (config.json), so it is "
            "not this run's weights. Delete the run and train it again, or pick another run.")
    try:
        size = path.stat().st_size
        if size > limit:
            raise too_big(f"is {size / 2**20:.1f} MB")
        if not zipfile.is_zipfile(path):
            return  # torch.load refuses it in words (unreadable_weights_message)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        raise RunDamagedError(unreadable_weights_message(name)) from None
    if len(members) > WEIGHTS_MAX_MEMBERS:
        raise too_big(f"holds {len(members)} files")
    inflated = sum(m.file_size for m in members)
    if inflated > limit or any(m.file_size < 0 for m in members):
        raise too_big(f"inflates to {inflated / 2**20:.1f} MB")


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
            alive = reservation_alive(marker)  # PID and process start time
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
    if marker is not None and not (path / "config.json").exists() and reservation_alive(marker):
        raise RunNameError(f"'{name}' is reserved by a training that is still running, so it can't "
                           f"be {what} now. Stop that training first (or wait for it to save).")


def rename_run(old: str, new: str, root: Path | None = None) -> Path:
    """Rename a run folder (a damaged one too). The new name is taken atomically (mkdir), so a
    name reserved meanwhile is never overwritten. Holds the runs lock: a delete or another rename
    of the same run at the same moment happens wholly before or after (RunNotFoundError then)."""
    src = run_dir(old, root)
    dst = run_dir(new, root)
    try:
        with runs_locked(src.parent):
            return _rename(src, dst, old, new)
    except OSError as exc:  # the folder can't be locked
        raise _save_error(exc, new, dst.parent) from exc


def _rename(src: Path, dst: Path, old: str, new: str) -> Path:
    if not src.is_dir():
        raise RunNotFoundError(f"There is no saved run called '{old}' (renamed or deleted meanwhile?).")
    _refuse_a_live_reservation(src, old, "renamed")
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
    """Delete a run folder, damaged or not. Under the runs lock the folder is renamed to a hidden
    temporary name (atomic: the name is gone at once, and a rename at the same moment happens
    wholly before or after), then removed; what a killed delete leaves is cleaned later."""
    path = run_dir(name, root)
    try:
        with runs_locked(path.parent):
            if not path.is_dir():
                raise RunNotFoundError(f"There is no saved run called '{name}' (renamed or deleted "
                                       "meanwhile?).")
            _refuse_a_live_reservation(path, name, "deleted")
            aside = make_temp_dir(path.parent, "deleted")
            try:
                os.replace(path, aside)  # onto the empty folder just made
            except OSError:
                aside.rmdir()
                raise
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as exc:
        raise RunSaveError(f"Run '{name}' could not be deleted from {path.parent}: "
                           f"{exc.strerror or exc}.") from exc


def write_run_file(run: SavedRun, filename: str, obj) -> None:
    """Store an extra JSON result (e.g. an evaluation) beside a run, atomically. A run deleted
    meanwhile is never recreated: RunNotFoundError instead."""
    if not re.match(r"^[a-z0-9_-]+\.json$", filename):
        raise RunNameError(f"Bad result file name {filename!r}.")
    data = json_bytes(obj)
    try:
        with runs_locked(run.path.parent):  # never into a run being renamed or deleted
            if run.path.is_symlink() or not (run.path / "config.json").is_file():
                raise RunNotFoundError(f"Run '{run.name}' is no longer saved.")
            _write_into(run.path, filename, data)
    except FileNotFoundError:  # the folder went between the check and the write
        raise RunNotFoundError(f"Run '{run.name}' is no longer saved.") from None
    except OSError as exc:
        raise _save_error(exc, run.name, run.path) from exc


def read_run_file(run: SavedRun, filename: str):
    """A stored result beside a run (write_run_file's), bounded (MAX_RESULT_JSON_BYTES, depth,
    never a link); None when it is missing, too big, too deep or not JSON (it is computed again)."""
    try:
        return read_json(run.path / filename, filename, MAX_RESULT_JSON_BYTES)
    except (OSError, BharatEOError):
        return None
