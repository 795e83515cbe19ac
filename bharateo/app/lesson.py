"""The lesson in the page address (every page): regions, chips and the saved run as URL query
parameters, written after each run and restored when a refresh or a shared link opens a new
session.

A browser refresh starts a new session, so the lesson's minimal state is kept in the URL:
  roi=<lon>,<lat>,<size>,<name> (repeated, in order), chips=<ChipConfig fields in CHIP_PARAMS
  order, comma-separated, "" for none>, run=<saved run name>.
Regions come back from the ROI cache (or the source), chips are cut again from the chip config
(seeded, so identical), the model is loaded from its saved run. Nothing read here is trusted:
each value is checked, a bad one is skipped with a note (shown once; write_lesson_url then drops
it from the address), and no path is built from it unchecked.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING

import streamlit as st

from bharateo.app import teacher
from bharateo.app.regions import (chip_source_fields, pixel_query, read_roi, set_pixel_query,
                                  source_choices)
from bharateo.app.state import current_chip_config, current_model, use_saved_run
from bharateo.errors import BharatEOError
from bharateo.data.roi import RoiSpec, check_no_overlap, check_roi_spec

if TYPE_CHECKING:
    from bharateo.data.chips import ChipConfig

LESSON_PARAMS = ("roi", "chips", "run", "src")  # src=<pixel source>,<dates>,<max cloud> (Sentinel-2)
MAX_VALUE_CHARS = 512  # longest value a lesson parameter may hold (a region ~100, show= ~300)
DROPPED_PARAM = "_address_dropped"  # <characters>,<parameters> of an address Streamlit dropped
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
        config = current_chip_config()
        params["chips"] = [",".join("" if getattr(config, f) is None else str(getattr(config, f))
                                    for f in CHIP_PARAMS)]
    kind, dates, max_cloud = pixel_query()
    if kind != "worldcover":  # the regions and chips are read from this source
        params["src"] = [f"{kind},{dates},{max_cloud:g}"]
    model = current_model()
    if model and model.run:
        from bharateo.storage.runs import checkpoint_root  # imports torch: only once a model is in use

        if (checkpoint_root() / str(model.run) / "model.pt").exists():
            params["run"] = [model.run]
    return {**params, **teacher.extra_params()}  # knobs, Reconstruct chip and ratio, teacher mode


def write_lesson_url() -> None:
    """Make the address hold exactly lesson_params() (writing only the keys that changed), with
    Streamlit's own keys kept: any other key goes, an unknown one or a value that was left out
    (its note was shown once, by restore_lesson), so a refresh or a re-shared link doesn't
    carry it on and bring the note back."""
    params = lesson_params()
    for key in list(st.query_params):
        if key not in params and key not in teacher.STREAMLIT_PARAMS:
            del st.query_params[key]
    for key, values in params.items():
        if st.query_params.get_all(key) != values:
            st.query_params[key] = values


# --- an address too long for the web framework ------------------------------------------------
def guard_long_addresses() -> None:
    """Make an address Streamlit drops say so. Streamlit reads no query string over 512 KiB or
    1,000 parameters (streamlit.runtime.state.query_params.sanitize_query_string): it logs a
    warning on the server and the page sees no parameter at all, so the lesson silently opened
    empty and the junk stayed in the browser's address. No setting changes those limits; this
    wraps that one function (where Streamlit reads it) so a dropped query string reads as
    `DROPPED_PARAM=<characters>,<parameters>`, which restore_lesson turns into a note and
    write_lesson_url then drops, cleaning the address. Once per server process (app.py calls it
    on every run; a session whose first run came before it sees the note on its next run).
    Where Streamlit has moved that function, nothing is wrapped and nothing breaks."""
    try:
        from streamlit.runtime import app_session
        from streamlit.runtime.state import query_params
    except ImportError:
        return
    original = getattr(query_params, "sanitize_query_string", None)
    if original is None or getattr(original, "_bharateo_guard", False):
        return

    def sanitize(query_string: str) -> str:
        if query_string.startswith(f"{DROPPED_PARAM}="):  # ours, read a second time
            return query_string
        kept = original(query_string)
        if query_string and not kept:
            return f"{DROPPED_PARAM}={len(query_string)},{query_string.count('&') + 1}"
        return kept

    sanitize._bharateo_guard = True
    query_params.sanitize_query_string = sanitize
    if getattr(app_session, "sanitize_query_string", None) is original:
        app_session.sanitize_query_string = sanitize


def dropped_address_note(params) -> str | None:
    """The note for an address Streamlit dropped (guard_long_addresses), else None."""
    if DROPPED_PARAM not in params:
        return None
    chars, _, count = str(params.get(DROPPED_PARAM)).partition(",")
    size = (f" ({int(count):,} parameters, {int(chars):,} characters)"
            if chars.isdigit() and count.isdigit() else "")
    return (f"This page's address was too long to read{size}: the web framework reads at most "
            "1,000 parameters and 512 KiB, so none of it was used and it was cleaned from the "
            "address. Open the lesson from its shared link, or set it up again.")


class _Params:
    """A page address's parameters (key -> values, in order) with over-long values left out,
    read like st.query_params (get: the last value, get_all, `in`, iteration)."""

    def __init__(self, values: dict[str, list[str]]):
        self._values = values

    def get(self, key, default=None):
        return self._values[key][-1] if self._values.get(key) else default

    def get_all(self, key) -> list[str]:
        return list(self._values.get(key, []))

    def __contains__(self, key) -> bool:
        return key in self._values

    def __iter__(self):
        return iter(self._values)


def bounded(params) -> tuple[_Params, list[str]]:
    """(the address's parameters without any value over MAX_VALUE_CHARS, a note per key that
    lost one). A key whose only values were too long is left out whole; the address then drops
    it (write_lesson_url)."""
    kept, notes = {}, []
    for key in params:
        values = params.get_all(key)
        short = [v for v in values if len(v) <= MAX_VALUE_CHARS]
        if len(short) < len(values):
            notes.append(f"A value of '{str(key)[:40]}' in this page's address was left out: it "
                         f"is {max(map(len, values)):,} characters long, over the "
                         f"{MAX_VALUE_CHARS} any lesson setting needs.")
        if short:
            kept[key] = short
    return _Params(kept), notes


def lesson_fragment(func):
    """st.fragment for a part of a page that holds a control the lesson link carries (the
    Reconstruct mask ratio). A control moved inside a fragment reruns the fragment alone, not
    app.py, whose write_lesson_url would put it in the address only at the next full run (the
    slider at 0.60 left recon=train,1,0.75 there, and a fresh browser opened at 75 %): each run of
    this fragment writes the address as it starts (the moved control's value is in the session
    by then) and again as it ends (what its body changed), even when it stops early."""
    @functools.wraps(func)
    def body(*args, **kwargs):
        write_lesson_url()
        try:
            return func(*args, **kwargs)
        finally:
            write_lesson_url()

    return st.fragment(body)


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
    """The CHIP_PARAMS values, comma-separated -> ChipConfig, accepted only if the Chips page
    could have cut such chips: each value read and checked by its setting's one check
    (app/knobs.from_text, with the Chips form's ranges), then the whole config as the Train page
    checks a session's chips (chip_config_problems: the patch size no page changes).
    ValueError saying what is wrong."""
    from bharateo.app.chips import chip_config_problems, chip_form_settings
    from bharateo.app.knobs import from_text, knob
    from bharateo.data.chips import ChipConfig
    from bharateo.config.settings import settings_of

    parts = raw.split(",")
    if len(parts) != len(CHIP_PARAMS):
        raise ValueError(f"expected {len(CHIP_PARAMS)} values ({', '.join(CHIP_PARAMS)})")
    declared = {**{s.name: knob(s) for s in settings_of(ChipConfig) if s.name in CHIP_PARAMS},
                **chip_form_settings()}
    values = {}
    for name, text in zip(CHIP_PARAMS, parts):
        s = declared[name]
        values[name] = None if s.optional and not text.strip() else from_text(
            s, text, allowed=roi_names if name == "holdout_roi" else None, new_run=False)
    config = ChipConfig(**values)
    if config.holdout_roi is None and config.holdout_block is not None:
        raise ValueError("a held-out part needs a held-out region")
    if problems := chip_config_problems(config):
        raise ValueError(" ".join(problems))
    if config.chip_size % config.patch_size:
        raise ValueError("the chip size is not a multiple of the patch size")
    return config


def restore_lesson(params) -> list[str]:
    """Regions, chips and model from URL values (see LESSON_PARAMS) -> notes on what was skipped.

    Never raises: a malformed value or one that can't be used any more (a deleted run, a region
    that can't be read) is left out with a note saying what and why.
    """
    from bharateo.data.chips import build_chip_sets
    from bharateo.storage.runs import load_run, validate_run_name

    if note := dropped_address_note(params):
        return [note]
    params, notes = bounded(params)
    state, rois = st.session_state, []
    if raw := params.get("src"):  # Sentinel-2: set the source before any region is read
        kind, _, rest = str(raw).partition(",")
        dates, _, cloud = rest.rpartition(",")
        try:
            if kind not in source_choices():
                raise ValueError(f"unknown pixel source {kind!r}")
            if problem := (set_pixel_query(kind, dates, float(cloud)) if kind != "worldcover"
                           else set_pixel_query(kind)):
                raise ValueError(problem)
        except ValueError as exc:
            notes.append(f"The pixel source in this page's address was not used ({raw!r}): {exc}. "
                         "Regions are read as WorldCover.")
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
            config = replace(_chips_from_param(raw, [r.spec.name for r in rois]),
                             **chip_source_fields())
            state.train_chips, state.heldout_chips = build_chip_sets(rois, config)
            state.chip_config = config
        except Exception as exc:  # from the address: any bad value is a note, never a traceback
            notes.append(f"The chip settings in this page's address were not used ({raw!r}): {str(exc).rstrip('.')}. "
                         "Cut chips again on the Chips page.")
    if raw := params.get("run"):
        # the layer that owns a run's settings registers their check with load_run (a fresh
        # server's first visit may come here before any page imported it)
        import bharateo.training.experiment  # noqa: F401

        try:
            use_saved_run(load_run(validate_run_name(raw)))
        except BharatEOError as exc:
            notes.append(f"The model in this page's address was not loaded: {exc}")
    return notes + teacher.restore_extra(params, (*LESSON_PARAMS, DROPPED_PARAM))
