"""The sidebar every page shows (data source, regions, chips, current model, training) and the
banner that names pixels that are not verified ESA WorldCover."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import streamlit as st

from bharateo.app.regions import (PRESET_PLACES, data_in_use_text, pixel_query, s2_reading_text,
                                  source_choices)
from bharateo.app.state import current_model
from bharateo.data.cache import data_dir
from bharateo.data.worldcover import (
    ATTRIBUTION,
    SAMPLE_TILES,
    DataSource,
    bundled_tile_path,
    data_source_from_env,
    open_url,
    url_and_auth,
)


@st.cache_data(ttl=30, show_spinner=False)
def source_status(source: DataSource) -> tuple[str, str]:
    """(short label, detail) of where ROIs come from right now, bundled sample included; a URL's
    credentials are never shown (DataSource.shown), they reach the server as a header."""
    label, detail = _source_reach(source)
    bundled = [t for t in SAMPLE_TILES if bundled_tile_path(t) is not None]
    if bundled:
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


def synthetic_banner() -> None:
    """Say so loudly when pixels on screen are not verified ESA WorldCover (Roi.data_label): a
    test fixture, or a file under an official name without ESA's tags."""
    groups: dict[str, list[str]] = {}
    for roi in st.session_state.rois:
        if not roi.verified:
            groups.setdefault(roi.data_label, []).append(roi.spec.name)
    for label, names in groups.items():
        if label.startswith("Sentinel-2") and "fixture" in label:
            text = (f"The **land-cover labels** of {', '.join(names)} come from a **synthetic "
                    "test fixture** (tiles tagged BHARATEO_SYNTHETIC_FIXTURE), not from ESA "
                    "WorldCover; their Sentinel-2 reflectance is real.")
        elif "fixture" in label:
            text = (f"These pixels ({', '.join(names)}) come from a **synthetic test fixture** "
                    "(tiles tagged BHARATEO_SYNTHETIC_FIXTURE), not from ESA WorldCover.")
        else:
            text = (f"The pixels of {', '.join(names)} are **{label}**: the file has an official "
                    "WorldCover name but not ESA's own tags (product_tile, product_version). "
                    "Use the official tile before calling them WorldCover.")
        st.warning(text, icon=":material/warning:")


def sidebar() -> None:
    """The lab's state, always visible: data source, regions, chips, model, training."""
    state = st.session_state
    if state.job is not None:  # (bharateo.app.train imports torch: not for Home's first paint)
        from bharateo.app.train import adopt_finished_job, training_status

        adopt_finished_job()  # before drawing, so "Model" below is already the finished run's
    with st.sidebar:
        st.markdown("### Lab state")
        label, detail = source_status(data_source_from_env())
        st.markdown(f"**Data source:** {label}")
        st.caption(detail)
        if reading := s2_reading_text():  # Sentinel-2 pixels, WorldCover labels
            st.markdown(f"**Pixels:** {source_choices()[pixel_query()[0]]}")
            st.caption(f"From {reading}.")
        names = ", ".join(r.spec.name for r in state.rois) or "none yet"
        st.markdown(f"**Regions:** {names}")
        st.caption(data_in_use_text())
        if any(r.verified for r in state.rois):
            st.caption(f"© {ATTRIBUTION}; CC-BY 4.0.")
        if any(getattr(r, "pixels", None) is not None for r in state.rois):
            years = sorted({str(r.provenance.get("scene_date", ""))[:4] for r in state.rois
                            if getattr(r, "pixels", None) is not None})
            st.caption(f"Contains modified Copernicus Sentinel data {', '.join(years)}.")
        if state.job is not None and not state.job.done:
            _training_lines(state.job)
            return
        chips = state.train_chips
        held = state.heldout_chips
        st.markdown("**Chips:** " + (f"{len(chips)} train" + (f" + {len(held)} held-out" if held else "")
                                      if chips is not None else "not built"))
        model = current_model()
        st.markdown("**Model:** " + (model.label if model else "none (train or load a run)"))
        if state.job is not None:
            training_status(state.job)


def _training_lines(job) -> None:
    """While a training is queued, running or paused: what it trains, from its own config (the
    Chips page's chips and the Train knobs may have changed since it started), and its live
    state (running / paused at step N / stopping)."""
    from bharateo.jobs.service import job_chips_text, job_settings_text
    from bharateo.app.train import training_status

    training_status(job)
    st.markdown(f"**Chips:** {job_chips_text(job.config)}")
    st.caption(f"Settings: {job_settings_text(job.config)}")
    model = current_model()
    st.markdown("**Model:** " + (model.label if model else "none")
                + " (Reconstruct, Evaluate) until this training ends")
