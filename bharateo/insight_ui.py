"""Streamlit glue shared by the Reconstruct and Evaluate pages: which model, which chips.

Both pages start the same way: the session's model (or a saved run picked here), then the
session's chips (or the chips the run was trained on, rebuilt on request), checked against the
model. Each step shows guidance or an error in words and returns None when the page can't go on.
"""
from __future__ import annotations

import streamlit as st

from bharateo import evaluate
from bharateo.app import results as insight, state as ui
from bharateo.errors import BharatEOError, ConfigError
from bharateo.words import plural
from bharateo.runs import SavedRun, list_runs, load_run, unreadable_weights_message
from bharateo.schema import number_text


def _switch_run(key: str) -> None:
    """Selectbox callback: make the chosen saved run the session's model."""
    name = st.session_state.get(key)
    ui.clear_error("run")
    if not name:
        return
    try:
        ui.use_saved_run(load_run(name))
    except BharatEOError as exc:  # kept until another pick or another model (ui.keep_error)
        ui.keep_error("run", exc)
    except Exception:  # anything else unreadable: the same plain words as the CLI, no traceback
        ui.keep_error("run", BharatEOError(unreadable_weights_message(name)))


def _run_label(run: SavedRun) -> str:
    saved = run.config.get("saved_at", "")[:16].replace("T", " ")
    epochs = run.metrics.get("epochs_done", run.config.get("train", {}).get("epochs", "?"))
    held = number_text(run.metrics.get("heldout_esa_acc"), 2)
    tail = f", held-out acc {held}" if held != "—" else ""
    epochs = plural(epochs, "epoch") if isinstance(epochs, int) else f"{epochs} epochs"
    return f"{run.name} · {saved} · {epochs}{tail}"


def choose_model(page: str) -> tuple[dict, SavedRun | None] | None:
    """The saved-run picker and a line about the model -> (model entry, its saved run or None)."""
    runs = list_runs()
    entry = st.session_state.model
    if entry is None and not runs:
        ui.guidance("There is no trained model yet. Train one on the Train page (the 'quick demo' "
                    "preset takes under a minute), then come back here.", "train", "Go to Train")
        return None
    by_name = {r.name: r for r in runs}
    key = f"{page}_saved_run"
    current = entry.get("run") if entry else None
    st.session_state[key] = current if current in by_name else None  # follow the session's model
    st.selectbox("Saved run", list(by_name), key=key, on_change=_switch_run, args=(key,),
                 format_func=lambda name: _run_label(by_name[name]),
                 placeholder="choose a saved run…",
                 help="Switches the model this page and the other pages use. Newest first.")
    ui.show_kept_error("run")
    entry = st.session_state.model
    if entry is None:
        ui.guidance("No model in this session yet: choose a saved run above, or train one.",
                    "train", "Go to Train")
        return None
    st.caption(insight.describe_model(entry))
    return entry, by_name.get(entry.get("run"))


def _load_run_chips_button(entry: dict, page: str, label: str) -> None:
    """A button that rebuilds the run's own chips (its regions, its chip settings) into the session."""
    if not st.button(label, key=f"{page}_load_run_chips", type="primary"):
        return
    config = entry["config"]
    with st.spinner("Reading the run's regions and cutting its chips…"):
        try:
            rois, train, held = insight.chips_for_run(config, ui.read_roi)
        except BharatEOError as exc:
            ui.show_error(exc)
            return
    st.session_state.rois = rois
    st.session_state.chip_config = config.chips
    st.session_state.train_chips, st.session_state.heldout_chips = train, held
    st.rerun()


def choose_chips(entry: dict, page: str):
    """The session's chips, checked against the model -> (training chips, held-out or None) or None."""
    train, held = st.session_state.train_chips, st.session_state.heldout_chips
    run_label = "Load the chips this run was trained on"
    if train is None:
        st.info("There are no chips in this session yet. Load the chips this run was trained on "
                "(rebuilt from its regions and chip settings), or cut other chips on the Chips page.")
        _load_run_chips_button(entry, page, run_label)
        st.page_link(ui.PAGES["chips"], label="Go to Chips", icon=":material/arrow_forward:")
        return None
    try:
        evaluate.check_compatible(entry["model"], train)
    except ConfigError as exc:
        st.error(str(exc))
        _load_run_chips_button(entry, page, "Load the chips this run was trained on (replaces the "
                                            "current chips)")
        return None
    if held is not None:
        try:
            evaluate.check_compatible(entry["model"], held)
        except ConfigError as exc:
            st.warning(f"The held-out chips can't be used: {exc}")
            held = None
    differences = insight.chip_differences(entry["config"], train, held)
    if differences:
        with st.expander("ℹ️ These are not the chips this run was trained on", expanded=False):
            st.markdown("- " + "\n- ".join(differences))
            st.caption("'Training chips' below means the chips in this session. To see the run on "
                       "its own chips, load them:")
            _load_run_chips_button(entry, page, f"{run_label} (replaces the current chips)")
    return train, held


def model_and_chips(page: str):
    """Both pages' first step: (model entry, saved run or None, training chips, held-out chips or
    None). Stops the page when guidance or an error has been shown instead."""
    choice = choose_model(page)
    chip_sets = choose_chips(choice[0], page) if choice is not None else None
    if chip_sets is None:
        st.stop()
    entry, run = choice
    return entry, run, *chip_sets
