"""The training studio's logic: knobs <-> RunConfig, run names, chart series, the runs table."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pandas as pd

from bharateo.chips import ChipConfig
from bharateo.errors import ConfigError
from bharateo.model import ModelConfig
from bharateo.pipeline import PRESETS, RunConfig
from bharateo.runs import SavedRun, checkpoint_root, validate_run_name
from bharateo.train import TrainConfig

# knob key -> (section, field) in RunConfig
KNOBS = {
    "n_chips": ("chips", "n_chips"), "min_classes": ("chips", "min_classes"),
    "holdout_roi": ("chips", "holdout_roi"), "holdout_block": ("chips", "holdout_block"),
    "embed_dim": ("model", "embed_dim"), "depth": ("model", "depth"), "heads": ("model", "heads"),
    "mask_ratio": ("train", "mask_ratio"), "patch_loss_weight": ("train", "patch_loss_weight"),
    "lr": ("train", "lr"), "weight_decay": ("train", "weight_decay"), "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"), "cosine": ("train", "cosine"), "seed": ("train", "seed"),
}


HOLDOUT_KNOBS = ("holdout_roi", "holdout_block")  # "" means none (a selectbox can't show None)

# The typed (number-input) knobs: label on the page, lowest, highest, whole number?, why the limit.
# The inputs have no min/max of their own: with them the browser turns a bad value red and keeps
# sending the last valid one, so a run would train on settings nobody typed. Checked here instead.
NUMBER_KNOBS = {
    "n_chips": ("chips", 16, 4096, True, "fewer than 16 can't fill a batch; more than 4096 take "
                "too long to cut and train in a lesson"),
    "min_classes": ("min classes per chip", 1, 8, True, "there are 8 land-cover classes"),
    "seed": ("seed", 0, 2**31 - 1, True, "seeds are whole numbers from 0 to 2^31 - 1"),
    "lr": ("learning rate", 1e-6, 10.0, False, "at 0 the model never changes, below 1e-6 hardly; "
           "the notebook uses 4e-4"),
    "weight_decay": ("weight decay", 0.0, 1.0, False, "AdamW's decay is a share from 0 to 1 "
                     "(the notebook uses 0.05)"),
    "epochs": ("epochs", 1, 500, True, "a run needs at least one pass over its chips"),
}


def knob_help(key: str) -> str:
    """The allowed range of a typed knob, for its help tooltip."""
    label, low, high, whole, why = NUMBER_KNOBS[key]
    return f"{'Whole number' if whole else 'Number'} from {low:g} to {high:g}: {why}."


def knob_problems(knobs: dict, names: dict[str, str] | None = None) -> list[str]:
    """One sentence per invalid typed knob, naming the field (`names`: other names for the knobs,
    e.g. the CLI's flags), the value and the allowed range (empty list: all fine). A value is
    never replaced by another: the page blocks Train instead, the CLI stops with exit code 2."""
    problems = []
    for key, (label, low, high, whole, why) in NUMBER_KNOBS.items():
        label = (names or {}).get(key, label)
        value = knobs.get(key)
        allowed = f"type a {'whole number' if whole else 'number'} from {low:g} to {high:g}"
        if value is None or value != value:
            problems.append(f"**{label}** is empty: {allowed}.")
        elif not low <= value <= high or (whole and value != int(value)):
            problems.append(f"**{label}** is {value:g}: {allowed} ({why}).")
    return problems


def knobs_from_config(config: RunConfig) -> dict:
    """Widget values for every knob."""
    knobs = {key: getattr(getattr(config, section), name) for key, (section, name) in KNOBS.items()}
    return {**knobs, **{k: knobs[k] or "" for k in HOLDOUT_KNOBS}}


def preset_knobs(preset: str) -> dict:
    """A preset's knobs, except the held-out choice: that belongs to the dataset being used."""
    knobs = knobs_from_config(PRESETS[preset])
    return {k: v for k, v in knobs.items() if k not in HOLDOUT_KNOBS}


def chip_knobs(chip_config: ChipConfig, roi_names: list[str]) -> dict:
    """The dataset knobs of chips built on the Chips page, so training uses what was browsed."""
    holdout = chip_config.holdout_roi if chip_config.holdout_roi in roi_names else ""
    return {"n_chips": chip_config.n_chips, "min_classes": chip_config.min_classes,
            "holdout_roi": holdout,
            "holdout_block": (chip_config.holdout_block or "") if holdout else "",
            "seed": chip_config.seed}


def config_from_knobs(knobs: dict, rois, chip_config: ChipConfig) -> RunConfig:
    """RunConfig for the chosen ROIs and knob values (chip size from the Chips page).

    Raises ConfigError / ChipError with a teacher-readable message for impossible values
    (knob_problems' sentences for out-of-range typed knobs).
    """
    if problems := knob_problems(knobs):
        raise ConfigError("Fix these settings before training: " + " ".join(problems))
    seed = int(knobs["seed"])
    chips = replace(chip_config, n_chips=int(knobs["n_chips"]), min_classes=int(knobs["min_classes"]),
                    holdout_roi=knobs["holdout_roi"] or None,
                    holdout_block=(knobs["holdout_block"] or None) if knobs["holdout_roi"] else None,
                    seed=seed)
    model = ModelConfig(embed_dim=int(knobs["embed_dim"]), depth=int(knobs["depth"]),
                        heads=int(knobs["heads"])).validate()
    train = TrainConfig(epochs=int(knobs["epochs"]), batch_size=int(knobs["batch_size"]),
                        lr=float(knobs["lr"]), weight_decay=float(knobs["weight_decay"]),
                        cosine=bool(knobs["cosine"]), mask_ratio=float(knobs["mask_ratio"]),
                        patch_loss_weight=float(knobs["patch_loss_weight"]), seed=seed).validate()
    return RunConfig(rois=tuple(r.spec for r in rois), chips=chips, model=model, train=train)


def matching_preset(knobs: dict) -> str | None:
    """Name of the preset whose knobs these are (the held-out choice aside), if any."""
    for name in PRESETS:
        if all(knobs.get(k) == v for k, v in preset_knobs(name).items()):
            return name
    return None


def default_run_name(config: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%m%d-%H%M%S")
    return f"mask{config.train.mask_ratio:.2f}-lr{config.train.lr:g}-{stamp}"


def free_run_name(name: str) -> str:
    """`name` if unused, else name-2, name-3, ... (validated)."""
    name = validate_run_name(name)
    root, candidate, k = checkpoint_root(), name, 2
    while (root / candidate).exists():
        candidate, k = f"{name}-{k}", k + 1
    return validate_run_name(candidate)


def eta_seconds(steps: list[dict], epochs: int, window: int = 20) -> float | None:
    """Seconds left, from the pace of the last `window` steps (the first ones are slower)."""
    if len(steps) < 3:
        return None
    recent = steps[-min(window, len(steps) - 1) - 1:]
    per_step = (recent[-1]["elapsed"] - recent[0]["elapsed"]) / (len(recent) - 1)
    return max(steps[-1]["steps_per_epoch"] * epochs - len(steps), 0) * per_step


def series_from_job(snapshot: dict, label: str) -> dict:
    return {"label": label, "steps": snapshot["steps"], "epochs": snapshot["epochs"],
            "patch_loss_weight": snapshot["config"].train.patch_loss_weight}


def series_from_run(run: SavedRun) -> dict:
    return {"label": run.name, "steps": [], "epochs": run.history,
            "patch_loss_weight": run.config["train"]["patch_loss_weight"]}


def runs_table(runs: list[SavedRun]) -> pd.DataFrame:
    rows = []
    for run in runs:
        m, cfg = run.metrics, run.config
        rows.append({
            "run": run.name,
            "saved": cfg.get("saved_at", "")[:19].replace("T", " "),
            "status": cfg.get("status", m.get("end_reason", "")),
            "epochs": m.get("epochs_done"),
            "mask": cfg["train"]["mask_ratio"],
            "lr": cfg["train"]["lr"],
            "embed/depth/heads": f"{cfg['model']['embed_dim']}/{cfg['model']['depth']}/{cfg['model']['heads']}",
            "masked MAE": _score(m.get("train_rec_mae")),
            "ESA acc": _score(m.get("train_esa_acc")),
            "held-out MAE": _score(m.get("heldout_rec_mae")),
            "held-out acc": _score(m.get("heldout_esa_acc")),
        })
    return pd.DataFrame(rows)


def _score(value) -> str:
    return "—" if value is None else f"{value:.3f}"
