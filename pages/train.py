"""Train: poke hyperparameters, watch live loss charts, stop, save and compare runs."""
import streamlit as st

from bharateo import ui
from bharateo.errors import BharatEOError
from bharateo.figures import accuracy_figure, loss_figure
from bharateo.jobs import max_trainings
from bharateo.pipeline import PRESETS
from bharateo.chips import HOLDOUT_BLOCKS
from bharateo.pipeline import saved_as_message
from bharateo.runs import delete_run, rename_run, scan_runs
from bharateo.studio import (chip_knobs, config_from_knobs, default_run_name, eta_seconds,
                             free_run_name, knobs_from_config, matching_preset, preset_knobs,
                             runs_table, save_job_again, series_from_job, series_from_run)

ui.page_setup()
st.title("Train")
ui.synthetic_banner()
rois = st.session_state.rois
if not rois:
    ui.guidance("Training needs regions to cut chips from. Add some on the Regions page first "
                "(the notebook's three presets are one click).", "regions", "Go to Regions")
    st.stop()
roi_names = [r.spec.name for r in rois]


def set_knobs(values: dict) -> None:
    for key, value in values.items():
        st.session_state[f"knob_{key}"] = value


def apply_preset(name: str) -> None:
    set_knobs(preset_knobs(name))


# Streamlit forgets a widget's value when another page is shown, so the knobs are kept under
# "train_knobs" as well and put back on return.
if "knob_n_chips" not in st.session_state:
    set_knobs(st.session_state.get("train_knobs") or knobs_from_config(PRESETS["notebook default"]))
# chips built on the Chips page since the knobs last saw them: train on those (held-out included)
chip_config = st.session_state.chip_config
if st.session_state.train_chips is not None and st.session_state.get("knobs_chips") != chip_config:
    set_knobs(chip_knobs(chip_config, roi_names))
st.session_state.knobs_chips = chip_config
if st.session_state.knob_holdout_roi not in ["", *roi_names]:  # that region was removed
    set_knobs({"holdout_roi": "", "holdout_block": ""})

# --- knobs -------------------------------------------------------------------------------------
st.markdown("**Presets:** " + " · ".join(PRESETS))
preset_cols = st.columns(len(PRESETS))
for col, name in zip(preset_cols, PRESETS):
    col.button(name, on_click=apply_preset, args=(name,), width="stretch")

data_col, model_col, objective_col, optim_col = st.columns(4)
with data_col:
    st.markdown("**Dataset**")
    st.number_input("chips", 16, 4096, step=16, key="knob_n_chips")
    st.number_input("min classes per chip", 1, 8, key="knob_min_classes")
    st.selectbox("held-out region", ["", *roi_names], key="knob_holdout_roi",
                 format_func=lambda n: n or "none",
                 help="A region kept out of training to test on; none: evaluate on training chips.")
    st.selectbox("held-out part", ["", *HOLDOUT_BLOCKS], key="knob_holdout_block",
                 format_func=lambda b: f"{b} half" if b else "the whole region",
                 disabled=not st.session_state.knob_holdout_roi)
with model_col:
    st.markdown("**Model**")
    st.select_slider("embed dim", [32, 64, 96, 128, 192, 256], key="knob_embed_dim")
    st.slider("depth (layers)", 1, 8, key="knob_depth")
    st.select_slider("heads", [1, 2, 4, 6, 8], key="knob_heads")
with objective_col:
    st.markdown("**Objective**")
    st.slider("mask ratio", 0.05, 0.95, step=0.05, key="knob_mask_ratio")
    st.slider("patch-loss weight", 0.0, 2.0, step=0.05, key="knob_patch_loss_weight")
    st.number_input("seed", 0, 2**31 - 1, key="knob_seed")
with optim_col:
    st.markdown("**Optimiser**")
    st.number_input("learning rate", min_value=1e-6, max_value=10.0, format="%.1e", key="knob_lr")
    st.number_input("weight decay", 0.0, 1.0, step=0.01, key="knob_weight_decay")
    st.number_input("epochs", 1, 500, key="knob_epochs")
    st.select_slider("batch size", [4, 8, 16, 32, 64, 128], key="knob_batch_size")
    st.checkbox("cosine schedule", key="knob_cosine")

knobs = {key.removeprefix("knob_"): st.session_state[key]
         for key in st.session_state if str(key).startswith("knob_")}
st.session_state.train_knobs = knobs
try:
    config = config_from_knobs(knobs, rois, st.session_state.chip_config)
except BharatEOError as exc:
    ui.show_error(exc)
    st.stop()

tokens = config.tokens()
preset = matching_preset(knobs)
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("parameters", f"{config.parameters / 1e6:.2f}M")
m2.metric("token presentations", f"{tokens.total_tokens:,}")
m3.metric("visible tokens", f"{tokens.visible_tokens:,}")
m4.metric("masked tokens", f"{tokens.masked_tokens:,}")
m5.metric("masked pixel targets", f"{tokens.masked_pixel_targets:,}")
st.caption(f"Settings: {preset or 'custom'} · chips of {config.chips.chip_size} px from "
           f"{', '.join(roi_names)}")

# --- run control -------------------------------------------------------------------------------
job = st.session_state.job
running = job is not None and not job.done
name_col, train_col, stop_col = st.columns([3, 1, 1])
run_name = name_col.text_input("run name", key="run_name",
                               placeholder=f"automatic, e.g. {default_run_name(config)}",
                               help="Saved under checkpoints/<run name>/")
if train_col.button("Train", type="primary", disabled=running, width="stretch"):
    try:
        ui.start_training(config, free_run_name(run_name or default_run_name(config)))
    except BharatEOError as exc:
        ui.show_error(exc)
    st.rerun()
if stop_col.button("Stop", disabled=not running, width="stretch"):
    job.stop()
    st.toast("Stopping after the current step; the run is kept.")


def draw_progress(snap, requested_name: str | None = None) -> None:
    steps, epochs = snap["steps"], snap["config"].train.epochs
    if snap["status"] == "queued":
        st.info(f"Waiting for a free training slot: you are number {snap['queue_position'] or 1} "
                f"in the queue (this server trains {max_trainings()} run(s) at a time).")
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


@st.fragment(run_every=1.0)
def live_progress(job) -> None:
    if job.done:
        st.rerun(scope="app")  # once: refresh the runs table and the sidebar
    draw_progress(job.snapshot(), getattr(job, "requested_name", None))


def save_again(job) -> None:
    """Button callback: save a training whose save failed, from the model kept in memory."""
    try:
        name = save_job_again(job)
    except BharatEOError as exc:
        st.session_state.save_error = str(exc)
        return
    if job.status in ("finished", "stopped"):
        ui.use_trained_model(job.model, job.config, name, job.end.epochs_done)
    st.toast(f"Saved as run '{name}'.")


if job is not None:
    st.subheader(f"Run '{job.run_name}'")
    if running:
        live_progress(job)
    else:
        ui.adopt_finished_job()
        draw_progress(job.snapshot(), getattr(job, "requested_name", None))
        if job.status == "failed" and getattr(job, "unsaved", None) is not None:
            st.caption("The trained model is still in memory: free some space (or make the "
                       "checkpoints folder writable), then save it.")
            st.button("Save again", on_click=save_again, args=(job,), type="primary")
        if error := st.session_state.pop("save_error", None):
            st.error(error)

# --- saved runs --------------------------------------------------------------------------------
st.subheader("Saved runs")
runs, damaged = scan_runs()
if not runs and not damaged:
    st.caption("No saved runs yet. Every finished or stopped run is saved here.")
    st.stop()
st.dataframe(runs_table(runs, damaged), hide_index=True, width="stretch")
if damaged:
    st.warning("Some run folders can't be used; rename or delete them below:\n\n" + "\n".join(
        f"- **{bad.name}**: {bad.reason}" for bad in damaged))
by_name = {r.name: r for r in runs}
if by_name:
    compare = st.multiselect("compare runs on the same charts", list(by_name),
                             default=list(by_name)[:min(2, len(by_name))])
    if compare:
        series = [series_from_run(by_name[n]) for n in compare]
        left, right = st.columns(2)
        left.plotly_chart(loss_figure(series), width="stretch")
        right.plotly_chart(accuracy_figure(series), width="stretch")

chosen = st.selectbox("manage a run", [*by_name, *(bad.name for bad in damaged)])
load_col, rename_col, delete_col = st.columns(3)
if load_col.button("Use this run for Reconstruct / Evaluate", width="stretch",
                   disabled=chosen not in by_name,
                   help=None if chosen in by_name else "This run is damaged: rename or delete it."):
    try:
        ui.use_saved_run(by_name[chosen])
        st.success(f"Now using saved run '{chosen}'.")
    except BharatEOError as exc:
        ui.show_error(exc)
new_name = rename_col.text_input("new name", key="rename_to", label_visibility="collapsed",
                                 placeholder="new name")


def manage(action, *args) -> None:
    """Button callback: rename or delete, keeping any error for the page to show."""
    try:
        action(*args)
        st.session_state.confirm_delete = False
    except BharatEOError as exc:
        st.session_state.manage_error = str(exc)


rename_col.button("Rename", width="stretch", disabled=not new_name,
                  on_click=manage, args=(rename_run, chosen, new_name))
confirm = delete_col.checkbox(f"yes, delete '{chosen}'", key="confirm_delete")
delete_col.button("Delete", width="stretch", disabled=not confirm,
                  on_click=manage, args=(delete_run, chosen))
if error := st.session_state.pop("manage_error", None):
    st.error(error)
