"""The Train page's logic: knobs <-> RunConfig, run names, chart series, the runs table, the
training-time estimate shown (and checked against the server's budget) before Train, and the
session's training: start it, adopt its model when it ends, its status in the sidebar, and the
server's queue with a Cancel button per training (the jobs themselves: bharateo/jobs/service.py)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from dataclasses import replace

import pandas as pd
import streamlit as st

from bharateo.app import teacher
from bharateo.app.chips import chip_config_problems  # what the Chips page could have cut
from bharateo.app.figures import accuracy_figure, loss_figure
from bharateo.app.state import clear_error, keep_error, show_kept_error, use_trained_model
from bharateo.models.registry import MODELS, model_class
from bharateo.data.chips import ChipConfig
from bharateo.models.device import native_bf16
from bharateo.errors import BharatEOError, ConfigError, RunNotFoundError
from bharateo.models.notebook import num_masked
# the knobs: declared settings as the pages draw and check them (bharateo/app/knobs.py)
from bharateo.app.knobs import (HOLDOUT_KNOBS, Knob, chip_knobs, knob, knob_problems,
                                knobs_from_config, section_from_knobs)
from bharateo.training.experiment import (PRESETS, SECTIONS, RunConfig, renamed, save_experiment,
                                          saved_as_message, split_quality)
from bharateo.training.estimate import (budget_advice, estimate_training_seconds, eta_seconds,
                                        format_duration, run_chips_per_s, speed_factor)
from bharateo.storage.runs import DamagedRun, ReservedName, SavedRun, reserve_run_name
from bharateo.config.schema import is_int, is_number, number_text
from bharateo.words import plural


def preset_knobs(preset: str) -> dict:
    """A preset's knobs, except the held-out choice: that belongs to the dataset being used."""
    knobs = knobs_from_config(PRESETS[preset])
    return {k: v for k, v in knobs.items() if k not in HOLDOUT_KNOBS}


def config_from_knobs(knobs: dict, rois, chip_config: ChipConfig) -> RunConfig:
    """RunConfig for the chosen ROIs and knob values (chip size from the Chips page).

    Raises ConfigError / ChipError with a teacher-readable message for impossible values
    (knob_problems' sentences: the CLI's for a value the science refuses).
    """
    if problems := knob_problems(knobs):
        raise ConfigError("Fix these settings before training: " + " ".join(problems))
    chips = section_from_knobs("chips", chip_config, knobs)
    if chips.holdout_roi is None:  # a held-out part of no region means none
        chips = replace(chips, holdout_block=None)
    if problems := chip_config_problems(chips):
        raise ConfigError("These chips are not ones the Chips page can cut, so Train is blocked: "
                          + " ".join(problems) + " Cut chips again on the Chips page.")
    model = section_from_knobs("model", SECTIONS["model"](), knobs).validate()
    train = section_from_knobs("train", SECTIONS["train"](), knobs).validate()
    return RunConfig(rois=tuple(r.spec for r in rois), chips=chips, model=model, train=train).validate()


# --- the page's knobs: one widget per declared setting, its value in session state ------------
def set_knobs(values: dict) -> None:
    """Put knob values (name -> value) into session state under knob_<name>, where the Train
    page's widgets read them (a widget given a value as well makes Streamlit warn)."""
    for key, value in values.items():
        st.session_state[f"knob_{key}"] = value


def apply_preset(name: str) -> None:
    """Button callback: the preset's knobs, except the held-out choice (preset_knobs)."""
    set_knobs(preset_knobs(name))


def restore_knobs(roi_names: list[str], chip_config: ChipConfig) -> None:
    """Before the knobs are drawn: put back the knobs this session had (Streamlit forgets a
    widget's value when another page is shown, so current_knobs keeps them under "train_knobs");
    a knob new to this session (a setting added since) starts at the notebook's default; chips
    built on the Chips page since the knobs last saw them set the dataset knobs (training uses
    what was browsed); settings changed in a paused training's form become the knobs (the
    browser would otherwise send back the knobs' old values); a held-out region that was
    removed is no longer held out."""
    kept = st.session_state.get("train_knobs") or {}
    set_knobs({key: kept.get(key, value)
               for key, value in knobs_from_config(PRESETS["notebook default"]).items()
               if f"knob_{key}" not in st.session_state})
    if st.session_state.train_chips is not None and st.session_state.get("knobs_chips") != chip_config:
        set_knobs(chip_knobs(chip_config, roi_names))
    st.session_state.knobs_chips = chip_config
    if changes := st.session_state.pop("live_knob_changes", None):  # apply_live_settings
        set_knobs(changes)
    if st.session_state.knob_holdout_roi not in ["", *roi_names]:
        set_knobs({"holdout_roi": "", "holdout_block": ""})


def current_knobs() -> dict:
    """The knobs' values now (name -> value), also kept under "train_knobs" for restore_knobs."""
    knobs = {key.removeprefix("knob_"): st.session_state[key]
             for key in st.session_state if str(key).startswith("knob_")}
    st.session_state.train_knobs = knobs
    return knobs


def knob_widget(s: Knob, **extra) -> None:
    """Setting `s` as a widget keyed knob_<name>, drawn from its declaration (widget, label,
    range, step, help); `extra`: what only the page knows (a selectbox's options, format_func,
    disabled). Its value lives in session state only (set_knobs). Typed knobs have no min/max
    (knob_problems checks them, see knob_settings). A choice of one is not drawn."""
    key, extra = f"knob_{s.name}", {"help": s.range_text, **extra}
    if s.widget == "number":
        st.number_input(s.label, key=key, step=s.step, format=s.format, **extra)
    elif s.widget == "slider":
        st.slider(s.label, s.low, s.high, step=s.step, key=key, **extra)
    elif s.widget == "select_slider":
        st.select_slider(s.label, list(s.options), key=key, **extra)
    elif s.widget == "checkbox":
        st.checkbox(s.label, key=key, **extra)
    elif s.widget == "selectbox":
        options = extra.pop("options", None) or [*([""] if s.optional else []), *s.choices]
        if len(options) > 1:  # a choice of one (a single model variant) is no choice
            st.selectbox(s.label, options, key=key, **extra)


def matching_preset(knobs: dict) -> str | None:
    """Name of the preset whose knobs these are (the held-out choice aside), if any."""
    for name in PRESETS:
        if all(knobs.get(k) == v for k, v in preset_knobs(name).items()):
            return name
    return None


def default_run_name(config: RunConfig) -> str:
    """mask<ratio>-lr<lr>-<MMDD-HHMMSS>: readable; two clicks in the same second still get
    different runs because free_run_name reserves (the second one becomes ...-2)."""
    stamp = dt.datetime.now().strftime("%m%d-%H%M%S")
    return f"mask{config.train.mask_ratio:.2f}-lr{config.train.lr:g}-{stamp}"


def free_run_name(name: str) -> ReservedName:
    """Reserve `name` for a training that starts now, or name-2, name-3, ... if it is taken
    (always within 64 characters). The reservation is atomic (runs.reserve_run_name), so two
    sessions asking for the same name at once get different names. RunNameError for a bad name,
    RunSaveError when the checkpoints folder can't be written (say so before training)."""
    return reserve_run_name(name)


def save_job_again(job) -> str:
    """Save a finished training whose save failed (full or read-only disk) from the model kept
    in memory -> the name it was saved under. RunSaveError again if the disk still refuses."""
    result = job.unsaved
    if result is None:
        raise RunNotFoundError("There is no unsaved training to save.")
    path = save_experiment(job.run_name, job.config, result, job.rois,
                           extra={"status": job.end.reason})
    with job._lock:
        job.status, job.error, job.saved_path, job.unsaved = job.end.reason, None, path, None
        for key, value in renamed(job.run_name, path).items():
            setattr(job, key, value)
    return path.name


LIVE_PREFIX = "live_"  # session keys of the paused training's settings form


def live_values(snap: dict) -> dict:
    """The live settings a paused training goes on with: its config's, then the changes waiting
    for its next step (name -> value)."""
    from bharateo.training.loop import live_settings

    train = snap["config"].train
    return {name: snap.get("pending_changes", {}).get(name, getattr(train, name))
            for name in live_settings()}


def apply_live_settings(job) -> None:
    """Form callback: send the settings changed in the paused-training form to the job
    (jobs.TrainingJob.change_settings), and make them the Train knobs too, so the lesson link
    and the next training carry the settings this run goes on with. A refusal is kept under
    "live" and shown in words; nothing is sent then."""
    clear_error("live")
    state = st.session_state
    now = live_values(job.snapshot())
    asked = {name: state.get(f"{LIVE_PREFIX}{name}", value) for name, value in now.items()}
    changes = {k: float(v) for k, v in asked.items() if is_number(v) and v != now[k]}
    if not changes:
        return
    try:
        job.change_settings(changes)
    except BharatEOError as exc:
        keep_error("live", exc)
        return
    for name, value in changes.items():
        state[f"knob_{name}"] = value
    state["train_knobs"] = {**(state.get("train_knobs") or {}), **changes}
    # the form runs in the live fragment, where the knobs are not drawn: the browser still holds
    # their old values and sends them with the next full run, which would undo the lines above;
    # restore_knobs sets these again before the knobs are drawn
    state["live_knob_changes"] = changes


def live_settings_form(job, snap: dict) -> None:
    """While a training is paused: its live settings (train.live_settings), to change before
    Resume or Step; the model's shape and the run's step plan stay as they are."""
    from bharateo.config.settings import settings_of
    from bharateo.training.loop import TrainConfig, live_settings

    state = st.session_state
    now = live_values(snap)
    for name, value in now.items():
        state.setdefault(f"{LIVE_PREFIX}{name}", value)
    specs = {s.name: knob(s) for s in settings_of(TrainConfig) if s.name in live_settings()}
    with st.form("live_settings_form", border=True):
        st.markdown("**Change settings while paused**")
        cols = st.columns(len(specs))
        for col, (name, s) in zip(cols, specs.items()):
            col.number_input(s.label, key=f"{LIVE_PREFIX}{name}", step=s.step, format=s.format,
                             help=s.range_text)
        if st.form_submit_button("Apply from the next step", on_click=apply_live_settings,
                                 args=(job,)):
            st.rerun()  # the whole app: the knobs and the lesson link take the new values
    show_kept_error("live")
    if pending := snap.get("pending_changes"):
        labels = live_settings()
        st.caption("Waiting for the next step (Resume or Step): " + " · ".join(
            f"{labels[k]} {v:g}" for k, v in pending.items()))
    st.caption("The model's shape (embed dim, depth, heads, …), epochs, batch size and seed "
               "can't change in a paused run: for other values, stop and train a new run. "
               "Each change is marked on the charts and saved with the run.")


def forget_live_form() -> None:
    """Once the training runs on: the next pause's form starts from the run's values."""
    for key in [k for k in st.session_state if str(k).startswith(LIVE_PREFIX)]:
        del st.session_state[key]


def draw_progress(snap: dict, requested_name: str | None = None, job=None) -> None:
    """The Train page's view of a training (TrainingJob.snapshot()): its queue place, a progress
    bar with ETA and chips/s, how it ended and under which name it was saved, and its live loss
    and accuracy charts. `requested_name`: the name asked for, when the run went under another."""
    from bharateo.jobs.service import max_trainings
    steps, epochs = snap["steps"], snap["config"].train.epochs
    if snap["status"] == "queued":
        st.info(f"Waiting for a free training slot: you are number {snap['queue_position'] or 1} "
                f"in the queue (this server trains {plural(max_trainings(), 'run')} at a time).")
    elif snap["status"] == "running" and snap.get("stopping"):
        st.info("Stopping after the current step; the run is saved when it has stopped.",
                icon=":material/hourglass_top:")
    elif snap["status"] == "running" and snap.get("control_state") in ("paused", "pausing",
                                                                        "stepping"):
        last = steps[-1] if steps else None
        where = (f"after step {last['global_step']} (epoch {last['epoch']}/{epochs}, step "
                 f"{last['step']}/{last['steps_per_epoch']})" if last else "before the first step")
        if snap["control_state"] == "paused":
            st.info(f"Paused {where}. Resume goes on from here; Step trains one more step (one "
                    "batch) and Step epoch to the end of this epoch, then pause again. Stop saves "
                    "the run.", icon=":material/pause:")
            if job is not None:
                live_settings_form(job, snap)
        else:
            st.info(("Pausing" if snap["control_state"] == "pausing" else "Stepping") +
                    f" {where}…", icon=":material/hourglass_top:")
    elif snap["status"] == "running":
        if steps:
            last = steps[-1]
            eta = eta_seconds(steps, epochs)
            st.progress(min(last["progress"] / epochs, 1.0),
                        text=f"epoch {last['epoch']}/{epochs} · step {last['step']}/"
                             f"{last['steps_per_epoch']} · {last['chips_per_s']:.0f} chips/s · "
                             + (f"about {eta:.0f} s left" if eta is not None else "starting"))
        else:
            st.progress(0.0, text="building chips and starting…")
    elif snap["status"] == "failed":
        st.error(snap["error"])
    elif snap["status"] == "diverged":
        st.error(f"{snap['end'].message} The run is saved as '{snap['run_name']}' (diverged); "
                 "Reconstruct and Evaluate keep using the model they had.")
    elif snap["end"] is not None and not snap["end"].epochs_done:
        st.warning(f"{snap['end'].message} No epoch finished, so run '{snap['run_name']}' is saved "
                   "but Reconstruct and Evaluate keep using the model they had.")
    elif snap["end"] is not None:
        st.success(f"{snap['end'].message} Saved as run '{snap['run_name']}'; it is now the model "
                   "the Reconstruct and Evaluate pages use.")
    if snap["saved_path"] is not None and (note := saved_as_message(requested_name, snap["run_name"])):
        st.info(note)
    if steps or snap["epochs"]:
        series = [series_from_job(snap, snap["run_name"])]
        left, right = st.columns(2)
        left.plotly_chart(loss_figure(series), width="stretch", key=f"loss-{len(steps)}")
        right.plotly_chart(accuracy_figure(series), width="stretch", key=f"acc-{len(steps)}")


def control_job(job, action: str, *args) -> None:
    """Callback of every button that controls a training (Stop, Pause / Resume, Step, Step epoch,
    Cancel): `job.<action>(*args)` before the rerun draws anything, so the sidebar, drawn before
    the page body, already says 'stopping' / 'pausing' (the walkthrough saw 'running, epoch
    6/60' beside the page's 'Stopping after the current step')."""
    getattr(job, action)(*args)
    if action == "stop":
        st.toast(f"Cancelling '{job.run_name}'." if args else
                 "Stopping after the current step; the run is kept.")


def control_buttons(job, running: bool) -> None:
    """Pause / Resume, Step and Step epoch beside Stop: the worker waits between optimiser steps
    (bharateo/jobs/worker.py TrainingControl); the chart stays and grows by exactly one step (or to
    the end of the epoch) on each Step. Drawn in a fragment while running: a click reruns the
    whole app, so the sidebar's training line says what the buttons now do."""
    paused = running and job.control_state in ("pausing", "paused")
    pause_col, step_col, epoch_col = st.columns(3)
    clicked = [
        pause_col.button("Resume" if paused else "Pause", key="train_pause", disabled=not running,
                         width="stretch", on_click=control_job,
                         args=(job, "resume" if paused else "pause"),
                         help="Pause between optimiser steps (nothing is lost); Resume goes on "
                              "from exactly there."),
        step_col.button("Step", key="train_step", disabled=not running, width="stretch",
                        on_click=control_job, args=(job, "step", "step"),
                        help="One optimiser step (one batch), then pause."),
        epoch_col.button("Step epoch", key="train_step_epoch", disabled=not running,
                         width="stretch", on_click=control_job, args=(job, "step", "epoch"),
                         help="Train to the end of the current epoch, then pause.")]
    if any(clicked):
        st.rerun()  # the app, not the fragment: the sidebar's line follows the click


@st.fragment(run_every=1.0)
def live_control_buttons(job) -> None:
    """control_buttons of a running job, redrawn every second (Pause turns into Resume when the
    worker has paused)."""
    control_buttons(job, not job.done)


@st.fragment(run_every=1.0)
def live_progress(job) -> None:
    """draw_progress of a running job, redrawn every second on its own (a fragment)."""
    if job.done:
        st.rerun(scope="app")  # once: refresh the runs table and the sidebar
    snap = job.snapshot()
    drawn = st.session_state.get(SIDEBAR_JOB_STATE)
    if drawn is not None and drawn != job_state_key(snap) and _fragment_run():
        # the sidebar's line is behind (e.g. a click's callback ran in a run of queued fragments,
        # this one before the sidebar's): the whole app, so the sidebar is drawn first
        st.rerun(scope="app")
    if snap.get("control_state") != "paused":
        forget_live_form()
    draw_progress(snap, job.requested_name, job)


def save_again(job) -> None:
    """Button callback: save a training whose save failed, from the model kept in memory, and
    make it the current model; a disk that still refuses keeps its error under "save"."""
    clear_error("save")
    try:
        name = save_job_again(job)
    except BharatEOError as exc:
        keep_error("save", exc)
        return
    if job.status in ("finished", "stopped"):
        use_trained_model(job.model, job.config, name, job.end.epochs_done)
    st.toast(f"Saved as run '{name}'.")


def manage_run(action, *args) -> None:
    """Button callback: `action(*args)` (runs.rename_run or runs.delete_run), keeping any
    BharatEOError under "manage" for the page to show until the next rename or delete."""
    clear_error("manage")
    try:
        action(*args)
        st.session_state.confirm_delete = False
    except BharatEOError as exc:
        keep_error("manage", exc)


def series_from_job(snapshot: dict, label: str) -> dict:
    steps = snapshot["steps"]
    return {"label": label, "steps": steps, "epochs": snapshot["epochs"],
            "patch_loss_weight": snapshot["config"].train.patch_loss_weight,
            "changes": change_marks(snapshot["controls"], steps)}


def change_marks(controls, steps: list[dict] = ()) -> list[dict]:
    """The settings changes logged in a run's `controls` (jobs.TrainingJob: action "changed")
    as chart marks: [{"progress": epoch axis, "elapsed": s of the step before (None when the
    steps are not known), "text": "learning rate 0.002 · mask ratio 0.5"}]. Anything malformed
    in a saved config.json is skipped."""
    from bharateo.training.loop import live_settings

    labels, marks = live_settings(), []
    by_step = {s["global_step"]: s for s in steps}
    for c in controls if isinstance(controls, list) else ():
        if not (isinstance(c, dict) and c.get("action") == "changed" and is_number(c.get("progress"))
                and isinstance(c.get("settings"), dict) and is_int(c.get("from_step"))):
            continue
        # only declared live settings with numbers: a saved config.json is not trusted, and
        # plotly annotations read HTML (a link) in their text
        text = " · ".join(f"{labels[k]} {v:g}" for k, v in c["settings"].items()
                          if k in labels and is_number(v))
        before = by_step.get(c["from_step"] - 1)
        marks.append({"progress": float(c["progress"]), "text": text,
                      "elapsed": before["elapsed"] if before else None})
    return marks


def run_variant(run: SavedRun) -> str:
    """'mae bf16', 'notebook fp32', ...: the run's model variant and the precision it trained at
    (auto as resolved then, from metrics.json; runs from before issue 13: notebook, fp32)."""
    arch = run.config["model"].get("arch", "notebook")
    precision = run.metrics.get("precision") or run.config["train"].get("precision", "fp32")
    return f"{arch} {precision}"


def series_from_run(run: SavedRun) -> dict:
    """A saved run for the compare charts (its variant and speed are in compare_table)."""
    return {"label": run.name, "steps": [], "epochs": run.history,
            "patch_loss_weight": run.config["train"]["patch_loss_weight"],
            "changes": change_marks(run.config.get("controls"))}


def changed_text(value, name: str, controls) -> str:
    """A run's setting `name` for the runs table: its final `value`, and, when it was changed in
    a paused training (a "changed" entry of the run's controls), the step it holds from, e.g.
    '0.0008 from step 16' (the steps before ran with the earlier value)."""
    steps = [c["from_step"] for c in controls if isinstance(c, dict) and c.get("action") == "changed"
             and isinstance(c.get("settings"), dict) and name in c["settings"]
             and is_int(c.get("from_step"))] if isinstance(controls, list) else []
    text = f"{value:g}" if is_number(value) else "—"
    return f"{text} from step {steps[-1]}" if steps and text != "—" else text


def compare_table(runs: list[SavedRun]) -> pd.DataFrame:
    """The compared runs side by side: variant and precision, training speed (chips/s) and its
    ratio to the first run, training time, and the final scores (so a class reads 'same data,
    N x the speed, the same reconstruction quality', or sees that it isn't)."""
    rows, first = [], None
    for run in runs:
        m, speed = run.metrics, run_chips_per_s(run)
        first = first if first is not None else speed
        elapsed = [e.get("elapsed") for e in run.history if is_number(e.get("elapsed"))]
        rows.append({
            "run": run.name, **accuracy_columns(m),  # first: seen without scrolling sideways
            "masked MAE": number_text(m.get("train_rec_mae")),
            "model": run_variant(run), "epochs": m.get("epochs_done"),
            "chips/s": None if speed is None else round(speed),
            "speed vs first": "—" if not (speed and first) else f"{speed / first:.2f}x",
            "training time": format_duration(elapsed[-1]) if elapsed else "—",
        })
    return pd.DataFrame(rows)


VARIANT_CHOICES = {arch: {"notebook": "notebook (all tokens)",  # fits a quarter-page box
                          "mae": "mae (visible tokens only)"}.get(arch, arch)
                   for arch in MODELS}  # the Train page's choices: every registered variant
VARIANT_WORDS = {"notebook": "notebook model: the encoder runs over all {n} tokens",
                 "mae": "mae: the encoder runs over the {v} visible tokens only, a light decoder "
                        "({dd} wide, {dl} layer(s)) over all {n}"}


def flops_table(config: RunConfig) -> pd.DataFrame:
    """Before Train: every model variant at these sizes and this mask ratio, side by side: what
    its encoder sees, training FLOPs per chip (its flops_per_chip), that vs the notebook model's,
    and parameters; `chosen` marks the selected one. Indexed by variant name."""
    m, ratio = config.model, config.train.mask_ratio
    n = m.num_patches
    words = dict(n=n, v=n - num_masked(n, ratio), dd=m.decoder_dim, dl=m.decoder_depth)
    notebook = model_class("notebook").flops_per_chip(replace(m, arch="notebook"), ratio)
    rows = []
    for arch in MODELS:
        variant = replace(m, arch=arch)
        flops = model_class(arch).flops_per_chip(variant, ratio)
        rows.append({"variant": arch, "chosen": "✓" if arch == m.arch else "",
                     "what runs": VARIANT_WORDS.get(arch, arch).format(**words),
                     "MFLOP per chip": round(flops / 1e6),
                     "vs notebook": f"{notebook / flops:.1f}x fewer" if flops < notebook else
                                    ("same" if flops == notebook else f"{flops / notebook:.1f}x more"),
                     "parameters": f"{model_class(arch).parameter_count(variant) / 1e6:.2f}M"})
    return pd.DataFrame(rows).set_index("variant")


def short_count(n: int) -> str:
    """A count in at most 6 characters, so an st.metric a fifth of the page wide shows it whole:
    exact below 10,000, else 3 significant digits: 492k, 283M, 1.23T (the exact number goes in
    the metric's help)."""
    if n < 10_000:
        return f"{n:,}"
    for size, unit in ((1e3, "k"), (1e6, "M"), (1e9, "B"), (1e12, "T")):
        if float(text := f"{n / size:.3g}") < 1000:  # 999,999 is 1M, not 1e+03k
            return text + unit
    return f"{n / 1e12:,.0f}T"


def token_metrics(config: RunConfig) -> list[tuple[str, str, str]]:
    """The Train page's accounting row: (label, short value, help with the exact value) for the
    parameters and the run's token presentations, visible and masked tokens, masked pixel
    targets (config.tokens(), the notebook's table)."""
    t = config.tokens()
    rows = [("token presentations", t.total_tokens, "chips x epochs x tokens per chip"),
            ("visible tokens", t.visible_tokens, "token presentations the encoder sees"),
            ("masked tokens", t.masked_tokens, "token presentations hidden from the model"),
            ("masked pixel targets", t.masked_pixel_targets,
             "masked tokens x patch pixels: the pixels the decoder regresses")]
    return [("parameters", f"{config.parameters / 1e6:.2f}M",
             f"{config.parameters:,} trainable parameters")] + [
        (label, short_count(n), f"{n:,} {what}") for label, n, what in rows]


def precision_caption(config: RunConfig) -> str:
    """What precision training will run at and why (auto resolved here, as train() will), and a
    warning when bf16 is asked for where it is only emulated."""
    precision, why = config.precision()
    if config.train.precision == "auto":
        return f"Precision: auto picks **{precision}** here: {why}."
    native, native_why = native_bf16(config.train.device)
    if precision == "bf16" and not native:
        return f"Precision: **bf16** as asked, but {native_why}."
    return f"Precision: **{precision}** as asked."


ACCURACY_HELP = {
    "ESA acc": "share of training patches whose class the patch head names (last epoch)",
    "majority": "what always answering the training chips' most common class scores on the same "
                "patches (no-data left out); blank for runs saved before baselines",
    "balanced": "balanced accuracy: mean recall over the classes present; answering one class "
                "everywhere scores 1 / classes present",
    "reading": "learned: above the majority baseline by more than the margin (evaluate.quality); "
               "majority: does little more than answer the most common class; no gain: tells "
               "some classes apart but gets no more patches right than that answer",
}


def accuracy_columns(metrics: dict) -> dict:
    """A saved run's accuracies beside their baselines, for the runs and compare tables: ESA acc,
    majority, balanced and reading on the training chips, the same for the held-out chips
    (experiment.split_quality; '—' where a run saved before baselines has none)."""
    words = {"learned": "learned", "majority": "majority", "no_gain": "no gain"}
    out = {}
    for split, prefix, acc in (("train", "", "ESA acc"), ("heldout", "held-out ", "held-out acc")):
        q = split_quality(metrics, split)
        if split == "heldout":
            out["held-out MAE"] = number_text(metrics.get("heldout_rec_mae"))
        out[acc] = number_text(q["accuracy"])
        out[f"{prefix}majority"] = number_text(q["majority_accuracy"])
        out[f"{prefix}balanced"] = number_text(q["balanced_accuracy"])
        out[f"{prefix}reading"] = words.get(q["verdict"], "—")
    return out


ACCURACY_CAPTION = ("Every accuracy stands beside its baselines: **majority** is what always "
                    "answering the most common class would score on the same patches, "
                    "**balanced** the mean recall over the classes present (one class "
                    "everywhere scores 1 / classes present). A run whose **reading** is "
                    "'majority' does little more than answer that class: train longer, or set "
                    "**class weights** to 'effective'.")


def accuracy_column_help() -> dict:
    """The runs and compare tables' column_config: each accuracy column's help (ACCURACY_HELP)."""
    return {f"{prefix}{name}": st.column_config.Column(f"{prefix}{name}", help=text)
            for name, text in ACCURACY_HELP.items() for prefix in ("", "held-out ")
            if f"{prefix}{name}" != "held-out ESA acc"}


def runs_table(runs: list[SavedRun], damaged: list[DamagedRun] = ()) -> pd.DataFrame:
    """One row per saved run (newest first), then one per damaged or reserved run folder.
    Scores that are missing or were not finite read '—'.
    Columns: the run, its status, then its accuracies beside their baselines (accuracy_columns),
    so they are seen in a page-wide table without scrolling sideways; then the settings."""
    rows = []
    for run in runs:
        m, cfg = run.metrics, run.config
        rows.append({
            "run": run.name,
            "status": cfg.get("status", m.get("end_reason", "")),
            **accuracy_columns(m),
            "masked MAE": number_text(m.get("train_rec_mae")),
            "epochs": m.get("epochs_done"),
            "mask": cfg["train"]["mask_ratio"],
            "lr": changed_text(cfg["train"]["lr"], "lr", cfg.get("controls")),
            "model": run_variant(run),
            "embed/depth/heads": f"{cfg['model']['embed_dim']}/{cfg['model']['depth']}/{cfg['model']['heads']}",
            "chips/s": number_text(run_chips_per_s(run), 0),
            "saved": cfg.get("saved_at", "")[:19].replace("T", " "),
        })
    for bad in damaged:
        rows.append({"run": bad.name, "status": "reserved" if bad.reserved else "damaged",
                     **dict.fromkeys(accuracy_columns({}), "—"), "masked MAE": "—",
                     "epochs": None, "mask": None, "lr": None, "model": "", "embed/depth/heads": "",
                     "chips/s": "—", "saved": ""})
    return pd.DataFrame(rows)


# --- training-time estimate (the speed model: bharateo/training/estimate.py) -----------------
def training_estimate(config: RunConfig, runs, budget: float | None,
                      available: int | None = None) -> tuple[str, str | None]:
    """(a caption with the estimated training time and peak memory, what they are based on and
    this server's limits; the refusal message if the time exceeds the server's `budget` in s or
    the memory the `available` bytes (default: limits.available_bytes()), else None). `runs`:
    saved runs to calibrate from; without any, the spare worker's start-up timing
    (worker.measured_calibration), if it has answered; else the caption says the estimate is
    uncalibrated."""
    from bharateo.jobs.worker import measured_calibration
    from bharateo.jobs.limits import available_bytes, gigabytes, memory_problem, training_memory

    factor, basis = speed_factor(runs, calibration=measured_calibration())
    estimate = estimate_training_seconds(config, factor)
    available = available_bytes() if available is None else available
    limit = (f"; this server's limit is {format_duration(budget)} per training" if budget else
             "; this server sets no time limit")
    free = f" of {gigabytes(available)} free" if available is not None else ""
    caption = (f"Estimated training time: about {format_duration(estimate)} (an estimate from "
               f"chips x epochs x model size at {basis}{limit}, BHARATEO_MAX_TRAINING_S); peak "
               f"memory about {gigabytes(training_memory(config).total)}{free}.")
    refusal = (budget_advice(config, factor, budget) if budget else None) or \
        memory_problem(config, available)
    return caption, refusal


# --- the session's training ------------------------------------------------------------------
def compare_selection(names: list[str], saved: list[str]) -> list[str]:
    """The Train page's "compare runs" selection (keep_widget's check): the kept `names` that
    are still `saved`, then each run this session saved since (adopt_finished_job), so a run
    that finishes joins the comparison instead of being left out of an old selection."""
    joining = st.session_state.pop("train_compare_joining", [])
    kept = [n for n in names if n in saved]
    return kept + [n for n in dict.fromkeys(joining) if n in saved and n not in kept]


def adopt_finished_job() -> bool:
    """Once a job has finished or been stopped, make its model the session's current model (a
    diverged run, or one stopped before its first epoch finished, is saved, but the pages keep
    the model they had). Every saved run of this session's joins the runs compared on Train."""
    job = st.session_state.job
    if job is None or not job.done or job.model is None or job.adopted:
        return False
    if job.saved_path is not None:  # saved: it joins "compare runs" (compare_selection)
        st.session_state.setdefault("train_compare_joining", []).append(Path(job.saved_path).name)
    if job.status in ("finished", "stopped") and job.end is not None and job.end.epochs_done >= 1:
        use_trained_model(job.model, job.config, job.run_name, job.end.epochs_done)
        st.session_state.train_chips, st.session_state.heldout_chips = job.train_chips, job.heldout_chips
        st.session_state.chip_config = job.config.chips
    job.adopted = True
    return True


def start_training(config, run_name: str):
    """Queue a training job for this session (see bharateo.jobs.service); it stops when this
    browser session has gone (session_alive)."""
    from bharateo.jobs.service import TrainingJob

    job = TrainingJob(config, list(st.session_state.rois), run_name, session_alive())
    st.session_state.job = job.start()
    return job


def session_alive():
    """A callable telling whether the current browser session is still connected (always True
    outside a real Streamlit server, e.g. in AppTest), for a job's thread to ask."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None or not Runtime.exists():
            return lambda: True
        runtime, session_id = Runtime.instance(), ctx.session_id
        return lambda: runtime.is_active_session(session_id)
    except Exception:  # streamlit internals moved: never stop a job on a guess
        return lambda: True


def training_status(job) -> None:
    """The sidebar's training line: how the session's training ended, or its live state
    (jobs.job_state_text: running, paused at step N, stopping, queued), redrawn every second,
    as the Train page's progress is (a worker's own change, paused or stopped, shows in both)."""
    if job.done:
        adopt_finished_job()
        st.markdown(f"**Training:** {job.status} ({job.run_name})")
    else:
        _training_status_live(job)


SIDEBAR_JOB_STATE = "_sidebar_job_state"  # session key: job_state_key of the sidebar's line


def _fragment_run() -> bool:
    """Whether this script run runs fragments only (a full run draws the sidebar first)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx is not None and getattr(ctx, "fragment_ids_this_run", None))


def job_state_key(snap: dict) -> tuple:
    """What a job's state line says, without its step counts (TrainingJob.snapshot())."""
    return (snap["run_name"], snap["status"], snap.get("control_state"), snap.get("stopping"))


@st.fragment(run_every=1.0)
def _training_status_live(job) -> None:
    from bharateo.jobs.service import job_state_text

    if job.done:
        st.rerun(scope="app")
    snap = job.snapshot()
    st.markdown(f"**Training:** run '{snap['run_name']}', {job_state_text(snap)}")
    st.session_state[SIDEBAR_JOB_STATE] = job_state_key(snap)  # live_progress never draws ahead
    if snap["status"] == "running" and snap["steps"]:
        st.progress(min(snap["steps"][-1]["progress"] / snap["config"].train.epochs, 1.0))


def training_chips_note() -> str | None:
    """While the session's training is queued, running or paused on chips that are not the
    session's (its own config: other knobs, or regions changed since): what it trains on, so a
    page showing the session's chips doesn't pass for the training's. None otherwise."""
    from bharateo.jobs.service import job_chips_text

    state = st.session_state
    job, chips = state.get("job"), state.get("train_chips")
    if job is None or job.done:
        return None
    if (chips is not None and job.config.chips == state.get("chip_config")
            and job.config.rois == tuple(r.spec for r in state.rois)):
        return None  # the same settings and regions cut the same chips (seeded)
    shown = "no chips are built here" if chips is None else f"the chips below are this page's {len(chips)}"
    return (f"Run '{job.run_name}' is training on chips cut with its own settings: "
            f"{job_chips_text(job.config)}; {shown}. When it ends (after at least one epoch), "
            "its chips and model become the session's.")


def queue_panel() -> None:
    """Every training on this server (running, then queued in order) with its run name and a
    Cancel button each. Your own job cancels at once; another session's needs the box ticked
    (a teacher freeing the slot for the class): it stops as if Stop was pressed and is saved,
    or leaves the queue, and its page says it was cancelled from another session."""
    from bharateo.jobs.service import jobs_listing

    st.subheader("Training queue on this server")
    if not jobs_listing():
        st.caption("No training is running or waiting.")
        return
    _queue_live()


@st.fragment(run_every=2.0)
def _queue_live() -> None:
    from bharateo.jobs.service import jobs_listing, max_trainings

    rows, mine = jobs_listing(), st.session_state.get("job")
    if not rows:
        st.caption("No training is running or waiting.")
        return
    st.caption(f"This server trains {max_trainings()} at a time; the rest wait in this order.")
    others = teacher.shown("cancel_others") and st.checkbox(  # teacher mode hides it (a focus tool)
        "allow cancelling other sessions' trainings (teacher)", key="cancel_others")
    for row in rows:
        job = row["job"]
        own = job is mine
        name_col, state_col, button_col = st.columns([3, 2, 1])
        name_col.markdown(f"**{row['run_name']}**" + (" (yours)" if own else ""))
        state_col.markdown(row["state"])  # a paused or stopping training says so
        if button_col.button("Cancel", key=f"cancel-{id(job)}", disabled=not (own or others)
                             or job.done, width="stretch", on_click=control_job,
                             args=(job, "stop", None if own else "cancelled from another session")
                             ) and own:
            st.rerun()  # the app, not the fragment: the sidebar's line says 'stopping'
