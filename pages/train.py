"""Train: poke hyperparameters, watch live loss charts, stop, save and compare runs."""
import streamlit as st

from bharateo.app import teacher
from bharateo.app.downloads import csv_button, run_zip_button
from bharateo.app.figures import X_AXES, accuracy_figure, loss_figure
from bharateo.jobs.service import job_chips_text, job_settings_text, max_training_seconds
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.startup import page_setup
from bharateo.app.state import (clear_error, current_chip_config, guidance, keep_error, keep_widget,
                                show_error, show_kept_error, use_saved_run)
from bharateo.app.train import (ACCURACY_CAPTION, VARIANT_CHOICES, accuracy_column_help,
                                adopt_finished_job, apply_preset, compare_selection, compare_table,
                                config_from_knobs, control_buttons, control_job, live_control_buttons,
                                series_from_job, current_knobs, default_run_name, draw_progress,
                                flops_table, free_run_name,
                                knob_widget, live_progress, manage_run, matching_preset,
                                precision_caption, queue_panel, restore_knobs, runs_table,
                                save_again, series_from_run, start_training, token_metrics, training_estimate)
from bharateo.errors import BharatEOError
from bharateo.storage.export import HISTORY_COLUMNS, series_rows
from bharateo.training.experiment import PRESETS
from bharateo.storage.runs import delete_run, rename_run, scan_runs
from bharateo.app.knobs import GROUPS, knob_problems, knob_settings
from bharateo.data.sources import pixel_source

page_setup("train")
st.title("Train")
synthetic_banner()
rois = st.session_state.rois
if not rois:
    guidance("Training needs regions to cut chips from. Add some on the Regions page first "
                "(the notebook's three presets are one click).", "regions", "Go to Regions")
    st.stop()
roi_names = [r.spec.name for r in rois]
restore_knobs(roi_names, current_chip_config())  # kept knobs back, chips' knobs, defaults

if teacher.student_view() is None:  # a preset would change the settings teacher mode fixes
    st.markdown("**Presets:** " + " · ".join(PRESETS))
    preset_cols = st.columns(len(PRESETS))
    for col, name in zip(preset_cols, PRESETS):
        col.button(name, on_click=apply_preset, args=(name,), width="stretch")

page_extras = {  # what only this page knows: its regions, and how an empty choice reads
    "holdout_roi": dict(options=["", *roi_names], format_func=lambda n: n or "none"),
    "holdout_block": dict(format_func=lambda b: f"{b} half" if b else "the whole region",
                          disabled=not st.session_state.knob_holdout_roi),
    "arch": dict(format_func=lambda a: VARIANT_CHOICES.get(a, a)),
    **{name: dict(disabled=st.session_state.knob_arch != "mae")  # only the mae variant has one
       for name in ("decoder_dim", "decoder_depth", "decoder_heads")}}
settings = [s for s in knob_settings().values() if teacher.shown(s.name)]  # teacher mode
groups = [g for g in GROUPS if any(s.group == g for s in settings)]
for group, col in zip(groups, st.columns(max(len(groups), 1))):
    with col:
        st.markdown(f"**{group}**")
        for s in settings:
            if s.group == group:
                knob_widget(s, **page_extras.get(s.name, {}))

knobs = current_knobs()
if teacher.student_view() is not None:
    st.caption(":material/school: Teacher mode: the other settings are set by the teacher for "
               "this lesson: " + teacher.hidden_summary(knobs))
config = None
if problems := knob_problems(knobs):  # blocks Train: nothing trains on values nobody typed
    st.error("Train is blocked until these settings are fixed:\n\n- " + "\n- ".join(problems),
             icon=":material/block:")
else:
    try:
        config = config_from_knobs(knobs, rois, current_chip_config())
    except BharatEOError as exc:
        show_error(exc)

over_budget = None
if config is not None:
    tokens = config.tokens()
    preset = matching_preset(knobs)
    metrics = token_metrics(config)  # short values (a fifth of the page each), exact in the help
    for col, (label, value, help_text) in zip(st.columns(len(metrics)), metrics):
        col.metric(label, value, help=help_text)
    st.caption(f"Settings: {preset or 'custom'} · chips of {config.chips.chip_size} px from "
               f"{', '.join(roi_names)} · {pixel_source(config.chips.source).label}: tokens of "
               f"{tokens.channels} × {tokens.patch_size} × {tokens.patch_size} = "
               f"{tokens.token_dim:,} values, {tokens.masked_value_targets:,} masked values "
               f"(masked pixels × {tokens.channels} bands) to reconstruct")
    st.markdown("**Expected work per chip** (training FLOPs: forward and backward, at this mask ratio)")
    st.table(flops_table(config))
    st.caption(precision_caption(config))
    estimate, over_budget = training_estimate(config, scan_runs()[0], max_training_seconds())
    st.caption(estimate)
    if over_budget:  # refused before it takes the slot for hours or runs out of memory
        st.error(over_budget, icon=":material/timer_off:")


# --- run control -------------------------------------------------------------------------------
job = st.session_state.job
running = job is not None and not job.done
name_col, train_col, stop_col, control_col = st.columns([3, 1, 1, 3])
keep_widget("run_name")
run_name = name_col.text_input("run name", key="run_name", on_change=clear_error, args=("train",),
                               placeholder="automatic, e.g. " + (default_run_name(config) if config
                                                                 else "mask0.75-lr0.0004-…"),
                               help="Saved under checkpoints/<run name>/")
if train_col.button("Train", type="primary", disabled=running or config is None
                    or bool(over_budget), width="stretch", on_click=clear_error,
                    args=("train",)) and config is not None and not over_budget:
    try:
        start_training(config, free_run_name(run_name or default_run_name(config)))
    except BharatEOError as exc:
        keep_error("train", exc)  # shown until the next Train click or run-name change
    st.rerun()
show_kept_error("train")
# a callback: the job is stopping before this rerun draws the sidebar, which comes first
stop_col.button("Stop", disabled=not running, width="stretch", on_click=control_job,
                args=(job, "stop"))
# Pause / Resume / Step: the worker waits between optimiser steps; the chart stays and grows
# by exactly one step (or to the end of the epoch) on each Step. Drawn by a fragment that follows
# the job each second, so Pause turns into Resume when the worker has paused.

with control_col:
    if running:
        live_control_buttons(job)
    else:
        control_buttons(job, False)


if job is not None:
    st.subheader(f"Run '{job.run_name}'")
    st.caption(f"Trains on {job_chips_text(job.config)} · {job_settings_text(job.config)} "
               "(its own settings: the knobs above are for the next training)")
    if running:
        live_progress(job)
    else:
        adopt_finished_job()
        snap = job.snapshot()
        draw_progress(snap, job.requested_name)
        if snap["steps"] or snap["epochs"]:
            csv_button("this run's steps and epochs (CSV)",
                       lambda: series_rows([series_from_job(snap, snap["run_name"])]),
                       f"{snap['run_name']}_history.csv", "train_job_csv", HISTORY_COLUMNS)
        if job.status == "failed" and job.unsaved is not None:
            st.caption("The trained model is still in memory: free some space (or make the "
                       "checkpoints folder writable), then save it.")
            st.button("Save again", on_click=save_again, args=(job,), type="primary")
        show_kept_error("save")

queue_panel()

# --- saved runs --------------------------------------------------------------------------------
st.subheader("Saved runs")
runs, damaged = scan_runs()
training_now = [bad.name for bad in damaged if bad.training]  # reserved by a live training
damaged = [bad for bad in damaged if not bad.training]  # not a broken folder: don't offer delete
if training_now:
    st.caption("Training now (saved here when it ends): " + ", ".join(training_now))
if not runs and not damaged:
    st.caption("No saved runs yet. Every finished or stopped run is saved here.")
    teacher.teacher_panel()  # at the page's end (below the runs when there are some)
    st.stop()
st.dataframe(runs_table(runs, damaged), hide_index=True, width="stretch",
             column_config=accuracy_column_help())
st.caption(ACCURACY_CAPTION)
manage = teacher.shown("manage_runs")  # teacher mode hides rename and delete unless chosen
if damaged:
    st.warning("Some run folders can't be used" + ("; rename or delete them below" if manage else
                                                   " (teacher mode hides rename and delete)")
               + ":\n\n" + "\n".join(
        f"- **{bad.name}**: {bad.reason}" for bad in damaged))
by_name = {r.name: r for r in runs}
if by_name:
    keep_widget("train_compare", list(by_name)[:2], lambda names: compare_selection(names, list(by_name)))
    compare = st.multiselect("compare runs on the same charts", list(by_name), key="train_compare")
    if compare:
        keep_widget("train_compare_x", "epoch", lambda x: x if x in X_AXES else "epoch")
        x = st.radio("x axis", list(X_AXES), key="train_compare_x", horizontal=True,
                     format_func=lambda k: {"epoch": "epoch", "time": "training time (s)"}[k],
                     help="Against training time, the faster run's curves end further left.")
        series = [series_from_run(by_name[n]) for n in compare]
        left, right = st.columns(2)
        left.plotly_chart(loss_figure(series, x), width="stretch")
        right.plotly_chart(accuracy_figure(series, x), width="stretch")
        st.dataframe(compare_table([by_name[n] for n in compare]), hide_index=True, width="stretch",
                     column_config=accuracy_column_help())
        csv_button("these runs' histories (CSV)", lambda: series_rows(series),
                   "run_histories.csv", "train_compare_csv", HISTORY_COLUMNS)

all_names = [*by_name, *(bad.name for bad in damaged)]  # a damaged run can be renamed or deleted
keep_widget("train_manage_run", None,
               lambda name: name if name in all_names else all_names[0])
chosen = st.selectbox("manage a run", all_names, key="train_manage_run")
load_col, rename_col, delete_col = st.columns(3)
if load_col.button("Use this run for Reconstruct / Evaluate", width="stretch",
                   disabled=chosen not in by_name,
                   help=None if chosen in by_name else "This run is damaged: rename or delete it."):
    clear_error("manage")
    try:
        use_saved_run(by_name[chosen])
        st.success(f"Now using saved run '{chosen}'.")
    except BharatEOError as exc:
        keep_error("manage", exc)  # shown below until the next load, rename or delete
if manage:
    keep_widget("rename_to")  # (the delete confirmation below is deliberately not kept)
    new_name = rename_col.text_input("new name", key="rename_to", label_visibility="collapsed",
                                     placeholder="new name")
    rename_col.button("Rename", width="stretch", disabled=not new_name,
                      on_click=manage_run, args=(rename_run, chosen, new_name))
    confirm = delete_col.checkbox(f"yes, delete '{chosen}'", key="confirm_delete")
    delete_col.button("Delete", width="stretch", disabled=not confirm,
                      on_click=manage_run, args=(delete_run, chosen))
show_kept_error("manage")
if chosen in by_name:
    run_zip_button(by_name[chosen], "train_run_zip")  # its folder: weights, settings, history
teacher.teacher_panel()  # at the page's end: the lesson's own controls come first
