"""Streamlit glue shared by every page: session state, the sidebar, cached reads, guidance.

Pages call these so that none of them repeats state handling. Per-user state lives in
st.session_state; ROI reads and frozen saved models are cached for the whole server (thirty
students choosing Delhi read it once). A model being trained is never cached here.
"""
from __future__ import annotations

import sys
import threading
import urllib.request
from collections import OrderedDict
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from bharateo.app import teacher
from bharateo.chips import HOLDOUT_BLOCKS, ChipConfig
from bharateo.errors import BharatEOError, RunNotFoundError
from bharateo.roi import (
    Roi,
    RoiSpec,
    cache_path,
    check_no_overlap,
    check_roi_spec,
    data_dir,
    default_presets,
    load_roi,
    roi_window,
)
from bharateo.runs import SavedRun, checkpoint_root, load_model, load_run, validate_run_name
from bharateo.worldcover import (
    ATTRIBUTION,
    SAMPLE_TILES,
    DataSource,
    bundled_tile_path,
    data_source_from_env,
    open_url,
    url_and_auth,
)

PAGES = {
    "regions": "pages/regions.py",
    "chips": "pages/chips.py",
    "train": "pages/train.py",
    "reconstruct": "pages/reconstruct.py",
    "evaluate": "pages/evaluate.py",
    "inside": "pages/inside.py",
}
STATE_DEFAULTS = {
    "rois": [],  # list[Roi], in the order chosen
    "proposed_roi": None,  # RoiSpec drawn dashed on the map, not read yet
    "chip_config": ChipConfig(),
    "train_chips": None,  # ChipSet
    "heldout_chips": None,  # ChipSet | None
    "job": None,  # bharateo.app.jobs.TrainingJob
    "model": None,  # {"model", "label", "config", "run"}: what Reconstruct/Evaluate use
}


def init_state() -> None:
    from bharateo.app.worker import keep_spare_worker

    keep_spare_worker()  # so a Train click finds a training process with torch imported
    fresh = "_app_ran" not in st.session_state
    for key, value in STATE_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, list) else value
    st.session_state["_app_ran"] = True
    if fresh and any(k not in teacher.STREAMLIT_PARAMS for k in st.query_params):  # a refresh,
        # or a shared link (unknown keys too: they get a note)
        with st.spinner("Restoring the lesson from this page's address…"):
            notes = restore_lesson(st.query_params)
        for note in notes:
            st.warning(note, icon=":material/link_off:")


# --- the lesson in the page address ------------------------------------------------------------
# A browser refresh starts a new session, so the lesson's minimal state is kept in the URL:
#   roi=<lon>,<lat>,<size>,<name> (repeated, in order), chips=<ChipConfig fields in CHIP_PARAMS
#   order, comma-separated, "" for none>, run=<saved run name>.
# Regions come back from the ROI cache (or the source), chips are cut again from the chip config
# (seeded, so identical), the model is loaded from its saved run. Nothing read here is trusted:
# each value is checked, a bad one is skipped with a note, and no path is built from it unchecked.
LESSON_PARAMS = ("roi", "chips", "run")
MAX_LESSON_REGIONS = 8  # regions a page address may restore (each up to 4096 x 4096 px)
CHIP_PARAMS = ("n_chips", "chip_size", "patch_size", "min_classes", "seed", "n_holdout_chips",
               "holdout_roi", "holdout_block")


def lesson_params() -> dict[str, list[str]]:
    """The session's regions, chip config (once chips are built) and saved run as URL values."""
    state, params = st.session_state, {}
    if state.get("rois"):
        params["roi"] = [f"{r.spec.lon!r},{r.spec.lat!r},{r.spec.size},{r.spec.name}"
                         for r in state.rois]
    if state.get("train_chips") is not None:
        config = state.chip_config
        params["chips"] = [",".join("" if getattr(config, f) is None else str(getattr(config, f))
                                    for f in CHIP_PARAMS)]
    model = state.get("model")
    if model and model.get("run") and (checkpoint_root() / str(model["run"]) / "model.pt").exists():
        params["run"] = [model["run"]]
    return {**params, **teacher.extra_params()}  # knobs, Reconstruct chip and ratio, teacher mode


def write_lesson_url() -> None:
    """Put lesson_params() in the address bar (only the keys that changed)."""
    params = lesson_params()
    for key in (*LESSON_PARAMS, *teacher.extra_keys()):
        if key not in params:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get_all(key) != params[key]:
            st.query_params[key] = params[key]


def _roi_from_param(raw: str) -> RoiSpec:
    """'lon,lat,size,name' -> a checked RoiSpec (ValueError / RegionError saying what is wrong)."""
    parts = raw.split(",", 3)
    if len(parts) != 4:
        raise ValueError("expected longitude,latitude,size,name")
    name = parts[3].strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise ValueError("the region name is empty, too long or not printable")
    try:
        lon, lat, size = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError("longitude and latitude must be numbers and size a whole number") from None
    spec = RoiSpec(name, lon, lat, size)
    check_roi_spec(spec)  # RegionError in words
    return spec


def _chips_from_param(raw: str, roi_names: list[str]) -> ChipConfig:
    """The CHIP_PARAMS values, comma-separated -> ChipConfig (ValueError saying what is wrong)."""
    if len(raw.split(",")) != len(CHIP_PARAMS):
        raise ValueError(f"expected {len(CHIP_PARAMS)} values ({', '.join(CHIP_PARAMS)})")
    values = dict(zip(CHIP_PARAMS, raw.split(",")))
    try:
        numbers = {k: int(values[k]) for k in CHIP_PARAMS[:6]}
    except ValueError:
        raise ValueError(f"{', '.join(CHIP_PARAMS[:6])} must be whole numbers") from None
    config = ChipConfig(**numbers,
                        holdout_roi=values["holdout_roi"] or None,
                        holdout_block=values["holdout_block"] or None)
    if config.holdout_roi is not None and config.holdout_roi not in roi_names:
        raise ValueError(f"its held-out region '{config.holdout_roi}' is not among the regions")
    if config.holdout_block not in (None, *HOLDOUT_BLOCKS):
        raise ValueError(f"'{config.holdout_block}' is not a held-out part")
    if not (1 <= config.n_chips <= 4096 and 1 <= config.n_holdout_chips <= 4096):
        raise ValueError("the chip count is out of range")
    # only what the Chips page can set: an address must not ask for chips that exhaust memory
    if config.chip_size not in (64, 128, 256) or config.patch_size not in (8, 16, 32) \
            or config.chip_size % config.patch_size:
        raise ValueError("the chip or patch size is not one the Chips page offers")
    if not (1 <= config.min_classes <= 8 and 0 <= config.seed <= 2**31 - 1):
        raise ValueError("min classes must be 1 to 8 and the seed 0 to 2^31 - 1")
    return config


def restore_lesson(params) -> list[str]:
    """Regions, chips and model from URL values (see LESSON_PARAMS) -> notes on what was skipped.

    Never raises: a malformed value or one that can't be used any more (a deleted run, a region
    that can't be read) is left out with a note saying what and why.
    """
    from bharateo.chips import build_chip_sets

    state, notes, rois = st.session_state, [], []
    wanted = params.get_all("roi")
    if len(wanted) > MAX_LESSON_REGIONS:
        notes.append(f"This page's address names {len(wanted)} regions; only the first "
                     f"{MAX_LESSON_REGIONS} were read.")
    for raw in wanted[:MAX_LESSON_REGIONS]:
        try:
            spec = _roi_from_param(raw)
            if spec.name in [r.spec.name for r in rois]:
                raise ValueError(f"a second region called '{spec.name}'")
            check_no_overlap(spec, rois)
            rois.append(read_roi(spec))
        except (ValueError, BharatEOError) as exc:
            notes.append(f"A region in this page's address was left out ({raw!r}): {exc}")
    state.rois = rois
    if (raw := params.get("chips")) and rois:
        try:
            config = _chips_from_param(raw, [r.spec.name for r in rois])
            state.train_chips, state.heldout_chips = build_chip_sets(rois, config)
            state.chip_config = config
        except Exception as exc:  # from the address: any bad value is a note, never a traceback
            notes.append(f"The chip settings in this page's address were not used ({raw!r}): {exc}. "
                         "Cut chips again on the Chips page.")
    if raw := params.get("run"):
        try:
            use_saved_run(load_run(validate_run_name(raw)))
        except BharatEOError as exc:
            notes.append(f"The model in this page's address was not loaded: {exc}")
    return notes + teacher.restore_extra(params, LESSON_PARAMS)


def page_setup() -> None:
    """First line of every page. If a page URL is the first request a fresh server gets,
    Streamlit runs the page file alone (the legacy pages/ mode: no sidebar, no navigation, no
    state); then go through app.py, which sets the lab up and comes back to this page."""
    if st.session_state.get("_app_ran"):
        return
    page = Path(sys._getframe(1).f_code.co_filename).name  # the page file that called us
    st.session_state["_open_page"] = next(p for p in PAGES.values() if Path(p).name == page)
    try:
        st.switch_page("app.py", query_params=_address_params())
    except StreamlitAPIException:  # the page is itself the entrypoint (e.g. a test): just set up
        del st.session_state["_open_page"]
        init_state()


def open_requested_page() -> None:
    """In app.py, after st.navigation: show the page whose URL was opened first (see page_setup)."""
    if page := st.session_state.pop("_open_page", None):
        st.switch_page(page, query_params=_address_params())


def _address_params() -> dict[str, list[str]]:
    """The address's query parameters, repeated keys included (switch_page would drop them)."""
    return {key: st.query_params.get_all(key) for key in st.query_params}


# --- data ------------------------------------------------------------------------------------
@st.cache_data(ttl=30, show_spinner=False)
def source_status(source: DataSource) -> tuple[str, str]:
    """(short label, detail) of where ROIs come from right now, bundled sample included; a URL's
    credentials are never shown (DataSource.shown), they reach the server as a header."""
    label, detail = _source_reach(source)
    bundled = [t for t in SAMPLE_TILES if bundled_tile_path(t) is not None]
    if bundled:
        from bharateo.app.regions import PRESET_PLACES

        places = ", ".join(f"{t} ({PRESET_PLACES.get(t, t)})" for t in bundled)
        detail += f"; bundled offline sample: {places}"
        if label == "cache only":
            label = "cache + bundled sample"
    return label, detail


def _source_reach(source: DataSource) -> tuple[str, str]:
    cached = len(list(data_dir().glob("*.npz"))) if data_dir().is_dir() else 0
    if source.kind == "folder":
        if Path(source.location).is_dir():
            return "local folder", source.location
        return "cache only", f"folder {source.location} is missing; {cached} cached regions"
    try:
        url, headers = url_and_auth(source.location)
        open_url(urllib.request.Request(url, headers=headers, method="HEAD"), timeout=2)
        reachable = True
    except urllib.error.HTTPError:
        reachable = True  # the server answered
    except Exception:
        reachable = False
    label = "public bucket" if source.kind == "public" else "WorldCover mirror"
    if reachable:
        return label, source.shown
    return "cache only", f"{source.shown} unreachable; {cached} cached regions"


SHARED_ROIS = 64  # regions kept in the server's memory for every session


@st.cache_resource(show_spinner=False)
def _shared_rois() -> tuple[threading.Lock, OrderedDict]:
    """The server-wide store of regions read: (lock, {(lon, lat, size, source): Roi}), newest
    last. A plain store, not st.cache_data, so that a read can draw its progress on the page."""
    return threading.Lock(), OrderedDict()


@st.cache_data(ttl=30, show_spinner=False)
def current_presets(source: DataSource) -> list[RoiSpec]:
    """roi.default_presets(source), asked at most every 30 s (it may ask the source)."""
    return default_presets(source)


@st.cache_data(show_spinner=False, max_entries=256)
def _tile_overview(tile: str, path: str, mtime_ns: int, cache_dir: str):
    from bharateo.overview import tile_overview

    return tile_overview(tile, path, Path(cache_dir))


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_region_overviews(folder: str, listing: tuple):
    from bharateo.overview import cached_region_overviews

    return cached_region_overviews(Path(folder))


def map_overviews(source: DataSource) -> list:
    """Land-cover pictures for the map (bharateo.overview.Overview): every local or bundled tile
    from its own COG overviews (~1 km), then every cached region (~80 m), all offline. Cached per
    file (and under data/overviews/), so a rerun reads nothing."""
    from bharateo.overview import local_tiles

    tiles = local_tiles(source.location) if source.kind == "folder" else {}
    for tile in SAMPLE_TILES:
        if tile not in tiles and (path := bundled_tile_path(tile)) is not None:
            tiles[tile] = path
    out = []
    for tile, path in tiles.items():
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if (overview := _tile_overview(tile, str(path), mtime, str(data_dir()))) is not None:
            out.append(overview)
    folder, listing = data_dir(), []
    for f in sorted(folder.glob("worldcover_*.npz")) if folder.is_dir() else []:
        try:
            listing.append((f.name, f.stat().st_mtime_ns))
        except OSError:  # moved aside or replaced meanwhile
            continue
    return out + (_cached_region_overviews(str(folder), tuple(listing)) if listing else [])


def read_roi(spec: RoiSpec, progress=None) -> Roi:
    """An ROI through the server-wide store (thirty students choosing Delhi read it once),
    carrying this user's name for it. `progress(fraction, text)` is called while a read from the
    source runs (bounded by BHARATEO_READ_TIMEOUT_S); raises BharatEOError as load_roi does."""
    source = data_source_from_env()
    key = (spec.lon, spec.lat, spec.size, source)
    lock, store = _shared_rois()
    with lock:
        roi = store.get(key)
        if roi is not None:
            store.move_to_end(key)
    if roi is None:
        roi = load_roi(spec, source, progress=progress)  # its notes name no region
        with lock:
            store[key] = roi
            while len(store) > SHARED_ROIS:
                store.popitem(last=False)
    return Roi(spec, roi.native, {**roi.provenance, "name": spec.name}, list(roi.notes),
               roi.cache_error)


def add_roi(spec: RoiSpec, progress=None) -> Roi:
    """Read `spec` and add it to this session's regions (BharatEOError if it can't be used).

    Adding any region ends the current map proposal (it and its overlap warning were about the
    regions before this one)."""
    check_no_overlap(spec, st.session_state.rois)
    roi = read_roi(spec, progress)
    st.session_state.rois = [*st.session_state.rois, roi]
    st.session_state.proposed_roi = None
    return roi


def remove_roi(name: str) -> None:
    st.session_state.rois = [r for r in st.session_state.rois if r.spec.name != name]
    chips = st.session_state.train_chips
    if chips is not None and name in chips.roi_names:
        st.session_state.train_chips = st.session_state.heldout_chips = None


def is_cached(spec: RoiSpec) -> bool:
    return cache_path(roi_window(spec), data_source_from_env()).exists()


def synthetic_banner() -> None:
    """Say so loudly when pixels on screen are not verified ESA WorldCover (Roi.data_label): a
    test fixture, or a file under an official name without ESA's tags."""
    groups: dict[str, list[str]] = {}
    for roi in st.session_state.rois:
        if not roi.verified:
            groups.setdefault(roi.data_label, []).append(roi.spec.name)
    for label, names in groups.items():
        if "fixture" in label:
            text = (f"These pixels ({', '.join(names)}) come from a **synthetic test fixture** "
                    "(tiles tagged BHARATEO_SYNTHETIC_FIXTURE), not from ESA WorldCover.")
        else:
            text = (f"The pixels of {', '.join(names)} are **{label}**: the file has an official "
                    "WorldCover name but not ESA's own tags (product_tile, product_version). "
                    "Use the official tile before calling them WorldCover.")
        st.warning(text, icon=":material/warning:")



def data_in_use_text() -> str:
    """views.data_in_use for this session: its regions' data, or where the default presets lie."""
    from bharateo.app.regions import data_in_use

    rois = st.session_state.rois
    return data_in_use(rois, [] if rois else current_presets(data_source_from_env()))


# --- models ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=16)
def _frozen_model(name: str, saved_at: str):
    return load_model(load_run(name))


def epochs_done(run: SavedRun) -> int:
    """Epochs a saved run finished (runs saved before metrics counted them: their history)."""
    done = run.metrics.get("epochs_done")
    return int(done) if isinstance(done, (int, float)) else len(run.history)


def use_saved_run(run: SavedRun) -> None:
    """Make a saved run the model the Reconstruct and Evaluate pages use.

    Raises RunNotFoundError for a run that stopped before its first epoch finished (only a run
    with at least one finished epoch is ever the pages' model) or whose weights can't be read.
    """
    from bharateo.pipeline import RunConfig

    if epochs_done(run) < 1:
        raise RunNotFoundError(f"Run '{run.name}' was stopped before its first epoch finished, so "
                               "it has no trained model to show. Pick another run, or train it "
                               "for at least one epoch.")
    model = _frozen_model(run.name, run.config.get("saved_at", ""))
    clear_error("run")  # a model is in use now: an earlier failed pick's error is over
    st.session_state.model = {"model": model, "label": f"saved run '{run.name}'",
                              "config": RunConfig.from_dict(run.config), "run": run.name,
                              "epochs_done": run.metrics.get("epochs_done")}


def use_trained_model(model, config, run_name: str, epochs_done: int) -> None:
    model.eval()
    clear_error("run")
    st.session_state.model = {"model": model, "label": f"run '{run_name}' (trained here)",
                              "config": config, "run": run_name, "epochs_done": epochs_done}


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


def keep_widget(key: str, default=None, check=None) -> None:
    """Call before drawing the widget `key`: its value persists for the whole session.

    Streamlit forgets a widget's value once a page without that widget has run, so each value
    is mirrored under a plain session key and put back on return. `default` is the first value;
    `check(value)` may correct a kept value that no longer fits (e.g. a deleted run's name).
    """
    kept = f"_kept_{key}"
    if key not in st.session_state and kept in st.session_state:
        st.session_state[key] = st.session_state[kept]
    elif key not in st.session_state and default is not None:
        st.session_state[key] = default
    if key in st.session_state and check is not None:
        value = st.session_state[key]
        if (fixed := check(value)) != value:
            st.session_state[key] = fixed
    if key in st.session_state:
        st.session_state[kept] = st.session_state[key]


def sidebar() -> None:
    """The lab's state, always visible: data source, regions, chips, model, training."""
    state = st.session_state
    adopt_finished_job()  # before drawing, so "Model" below is already the finished run's
    with st.sidebar:
        st.markdown("### Lab state")
        label, detail = source_status(data_source_from_env())
        st.markdown(f"**Data source:** {label}")
        st.caption(detail)
        names = ", ".join(r.spec.name for r in state.rois) or "none yet"
        st.markdown(f"**Regions:** {names}")
        st.caption(data_in_use_text())
        if any(r.verified for r in state.rois):
            st.caption(f"© {ATTRIBUTION}; CC-BY 4.0.")
        chips = state.train_chips
        held = state.heldout_chips
        st.markdown("**Chips:** " + (f"{len(chips)} train" + (f" + {len(held)} held-out" if held else "")
                                      if chips is not None else "not built"))
        model = state.model
        st.markdown("**Model:** " + (model["label"] if model else "none (train or load a run)"))
        if state.job is not None:
            training_status(state.job)


def adopt_finished_job() -> bool:
    """Once a job has finished or been stopped, make its model the session's current model (a
    diverged run, or one stopped before its first epoch finished, is saved, but the pages keep
    the model they had)."""
    job = st.session_state.job
    if job is None or not job.done or job.model is None or getattr(job, "adopted", False):
        return False
    if job.status in ("finished", "stopped") and job.end is not None and job.end.epochs_done >= 1:
        use_trained_model(job.model, job.config, job.run_name, job.end.epochs_done)
        st.session_state.train_chips, st.session_state.heldout_chips = job.train_chips, job.heldout_chips
        st.session_state.chip_config = job.config.chips
    job.adopted = True
    return True


def start_training(config, run_name: str):
    """Queue a training job for this session (see bharateo.app.jobs)."""
    from bharateo.app.jobs import TrainingJob, streamlit_session_alive

    job = TrainingJob(config, list(st.session_state.rois), run_name, streamlit_session_alive())
    st.session_state.job = job.start()
    return job


def training_status(job) -> None:
    if job.done:
        adopt_finished_job()
        st.markdown(f"**Training:** {job.status} ({job.run_name})")
    else:
        _training_status_live(job)


@st.fragment(run_every=2.0)
def _training_status_live(job) -> None:
    if job.done:
        st.rerun(scope="app")
    snap = job.snapshot()
    if snap["status"] == "queued":
        st.markdown(f"**Training:** queued (position {snap['queue_position'] or '…'})")
    elif snap["status"] == "running" and snap["steps"]:
        last = snap["steps"][-1]
        st.markdown(f"**Training:** epoch {last['epoch']}/{snap['config'].train.epochs}")
        st.progress(min(last["progress"] / snap["config"].train.epochs, 1.0))
    else:
        st.markdown(f"**Training:** {snap['status']}")


def queue_panel() -> None:
    """Every training on this server (running, then queued in order) with its run name and a
    Cancel button each. Your own job cancels at once; another session's needs the box ticked
    (a teacher freeing the slot for the class): it stops as if Stop was pressed and is saved,
    or leaves the queue, and its page says it was cancelled from another session."""
    from bharateo.app.jobs import jobs_listing

    st.subheader("Training queue on this server")
    if not jobs_listing():
        st.caption("No training is running or waiting.")
        return
    _queue_live()


@st.fragment(run_every=2.0)
def _queue_live() -> None:
    from bharateo.app.jobs import jobs_listing, max_trainings

    rows, mine = jobs_listing(), st.session_state.get("job")
    if not rows:
        st.caption("No training is running or waiting.")
        return
    st.caption(f"This server trains {max_trainings()} at a time; the rest wait in this order.")
    others = st.checkbox("allow cancelling other sessions' trainings (teacher)", key="cancel_others")
    for row in rows:
        job = row["job"]
        own = job is mine
        state = (f"running, epoch {row['epoch']}/{row['epochs']}" if row["position"] is None
                 else f"queued, number {row['position']}")
        name_col, state_col, button_col = st.columns([3, 2, 1])
        name_col.markdown(f"**{row['run_name']}**" + (" (yours)" if own else ""))
        state_col.markdown(state)
        if button_col.button("Cancel", key=f"cancel-{id(job)}", disabled=not (own or others)
                             or job.done, width="stretch"):
            job.stop(None if own else "cancelled from another session")
            st.toast(f"Cancelling '{row['run_name']}'.")
