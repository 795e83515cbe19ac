"""Session state every page shares: the lab's state (typed defaults), the current model, kept
widgets and kept errors, and the layout helpers every page uses (guidance, errors). A page's
set-up (a session's first run, a lesson restored from its address) is bharateo/app/startup.py,
above the modules that restore a lesson; this module imports no other app module.

Per-user state lives in st.session_state, one key per LabState field; frozen saved models are
cached for the whole server. A model being trained is never cached here. Nothing here imports
torch at module level, so Home's first paint doesn't wait for it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import streamlit as st

from bharateo.errors import BharatEOError, RunNotFoundError

if TYPE_CHECKING:
    from bharateo.jobs.service import TrainingJob
    from bharateo.data.chips import ChipConfig, ChipSet
    from bharateo.training.experiment import RunConfig
    from bharateo.data.roi import Roi, RoiSpec
    from bharateo.storage.runs import SavedRun

PAGES = {
    "regions": "pages/regions.py",
    "chips": "pages/chips.py",
    "train": "pages/train.py",
    "reconstruct": "pages/reconstruct.py",
    "evaluate": "pages/evaluate.py",
    "inside": "pages/inside.py",
}


@dataclass(frozen=True)
class CurrentModel:
    """The model the Reconstruct and Evaluate pages use (st.session_state.model), in eval mode.

    `run`: the name of its saved run (None: not saved); `epochs_done`: epochs it finished (None:
    not recorded, read as the planned epochs).
    """

    model: Any  # a model built by bharateo.models.registry.build_model
    label: str  # e.g. "saved run 'nb-default'", shown under the run picker and in the sidebar
    config: RunConfig | None
    run: str | None = None
    epochs_done: int | None = None


@dataclass
class LabState:
    """What a new session starts with: one st.session_state key per field (init_state)."""

    rois: list[Roi] = field(default_factory=list)  # in the order chosen
    proposed_roi: RoiSpec | None = None  # drawn dashed on the map, not read yet
    chip_config: ChipConfig | None = None  # the Chips page's; current_chip_config() reads it
    train_chips: ChipSet | None = None
    heldout_chips: ChipSet | None = None
    job: TrainingJob | None = None
    model: CurrentModel | None = None  # what Reconstruct and Evaluate use
    pixel_source: str = "worldcover"  # a name in sources.PIXEL_SOURCES: what Regions reads
    s2_dates: str = "2021-01-01/2021-12-31"  # Sentinel-2 sources: the scenes' date range...
    s2_max_cloud: float = 20.0  # ... and cloud limit (% of the scene); as ChipConfig's defaults


def current_model() -> CurrentModel | None:
    """The session's current model (None: none trained or loaded yet)."""
    return st.session_state.get("model")


def current_chip_config() -> ChipConfig:
    """The session's chip settings: the Chips page's, else ChipConfig()'s defaults (stored on
    first use rather than by init_state: bharateo.data.chips imports torch, which Home doesn't need)."""
    if st.session_state.get("chip_config") is None:
        from bharateo.data.chips import ChipConfig

        st.session_state.chip_config = ChipConfig()
    return st.session_state.chip_config


_cleaned = threading.Lock()  # held for good once this server process has cleaned


def clean_leftovers_once() -> None:
    """Once per server process, in a thread: runfolder.clean_checkpoints (torch-free, so a
    class opening Home waits for no torch import) removes temporary folders of saves killed
    part-way and reservations of trainings that ended with their server; a live process's are
    kept."""
    if not _cleaned.acquire(blocking=False):
        return

    def clean() -> None:
        from bharateo.storage.runfolder import clean_checkpoints

        clean_checkpoints()

    threading.Thread(target=clean, name="clean-checkpoints", daemon=True).start()


# --- models ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=16)
def _frozen_model(name: str, saved_at: str, root: str):
    """The saved run `name` of the checkpoints folder `root` (its key with saved_at: a run saved
    again, or a run of the same name in another folder, is another model), frozen for reads."""
    from pathlib import Path

    from bharateo.storage.runs import load_model, load_run

    return load_model(load_run(name, Path(root)))


def epochs_done(run: SavedRun) -> int:
    """Epochs a saved run finished (runs saved before metrics counted them: their history)."""
    done = run.metrics.get("epochs_done")
    return int(done) if isinstance(done, (int, float)) else len(run.history)


def use_saved_run(run: SavedRun) -> None:
    """Make a saved run the model the Reconstruct and Evaluate pages use.

    Raises RunNotFoundError for a run that stopped before its first epoch finished (only a run
    with at least one finished epoch is ever the pages' model) or whose weights can't be read.
    """
    from bharateo.training.experiment import RunConfig

    if epochs_done(run) < 1:
        raise RunNotFoundError(f"Run '{run.name}' was stopped before its first epoch finished, so "
                               "it has no trained model to show. Pick another run, or train it "
                               "for at least one epoch.")
    model = _frozen_model(run.name, run.config.get("saved_at", ""), str(run.path.parent))
    clear_error("run")  # a model is in use now: an earlier failed pick's error is over
    st.session_state.model = CurrentModel(model, f"saved run '{run.name}'",
                                          RunConfig.from_dict(run.config), run.name,
                                          run.metrics.get("epochs_done"))


def use_trained_model(model, config: RunConfig, run_name: str, epochs_done: int) -> None:
    """Make a model trained in this session (saved as `run_name`) the pages' model."""
    model.eval()
    clear_error("run")
    st.session_state.model = CurrentModel(model, f"run '{run_name}' (trained here)", config,
                                          run_name, epochs_done)


# --- layout helpers --------------------------------------------------------------------------
def guidance(message: str, page: str, label: str) -> None:
    """An info box telling the user what to do first, with a link to the page that does it."""
    st.info(message)
    st.page_link(PAGES[page], label=label, icon=":material/arrow_forward:")


def show_error(exc: BharatEOError) -> None:
    st.error(str(exc))


def keep_error(what: str, exc: BharatEOError) -> None:
    """Keep an action's error for show_kept_error until clear_error(what): reruns (a fragment's,
    another session's training finishing) don't wipe it before the user has read it."""
    st.session_state[f"_error_{what}"] = str(exc)


def clear_error(what: str) -> None:
    """The user acted again (clicked, typed): forget the error of the last attempt."""
    st.session_state.pop(f"_error_{what}", None)


def show_kept_error(what: str) -> None:
    if message := st.session_state.get(f"_error_{what}"):
        st.error(message)


def keep_widget(key: str, default=None, check=None, *, default_from=None) -> None:
    """Call before drawing the widget `key`: its value persists for the whole session.

    Streamlit forgets a widget's value once a page without that widget has run, so each value
    is mirrored under a plain session key and put back on return. `default` is the first value,
    or `default_from()` gives it (called only when the widget has no value yet: a default that
    reads a folder isn't read on every rerun); `check(value)` may correct a kept value that no
    longer fits (e.g. a deleted run's name).
    """
    kept = f"_kept_{key}"
    if key not in st.session_state and kept in st.session_state:
        st.session_state[key] = st.session_state[kept]
    elif key not in st.session_state and default is None and default_from is not None:
        default = default_from()
    if key not in st.session_state and default is not None:
        st.session_state[key] = default
    if key in st.session_state and check is not None:
        value = st.session_state[key]
        if (fixed := check(value)) != value:
            st.session_state[key] = fixed
    if key in st.session_state:
        st.session_state[kept] = st.session_state[key]


