"""A page's set-up: the first line of every page (page_setup) and of app.py (init_state), which
fill in a new session's state and restore a lesson from the page address (bharateo/app/lesson.py),
and open the page whose URL a fresh server was asked for first. Above state, lesson and teacher,
which it calls; nothing in the app imports it (the pages and app.py do).
"""
from __future__ import annotations

from dataclasses import fields

import streamlit as st
from streamlit.errors import StreamlitAPIException

from bharateo.app.state import PAGES, LabState, clean_leftovers_once


def init_state() -> None:
    """Fill in LabState's defaults this session lacks; on a session's first run, restore a
    lesson from the page address (bharateo/app/lesson.py) with a note for whatever was skipped,
    shown once on the page the address opens (kept while page_setup switches page)."""
    from bharateo.app.lesson import dropped_address_note, restore_lesson
    from bharateo.app.teacher import STREAMLIT_PARAMS
    from bharateo.jobs.worker import keep_spare_worker

    keep_spare_worker()  # so a Train click finds a training process with torch imported
    clean_leftovers_once()  # what a server killed mid-save or mid-training left
    fresh = "_app_ran" not in st.session_state
    missing = [f.name for f in fields(LabState) if f.name not in st.session_state]
    if missing:
        defaults = LabState()
        for name in missing:
            st.session_state[name] = getattr(defaults, name)
    st.session_state["_app_ran"] = True
    if fresh and any(k not in STREAMLIT_PARAMS for k in st.query_params):  # a refresh,
        # or a shared link (unknown keys too: they get a note)
        with st.spinner("Restoring the lesson from this page's address…"):
            st.session_state["_lesson_notes"] = restore_lesson(st.query_params)
    elif note := dropped_address_note(st.query_params):  # a session older than the guard
        st.session_state["_lesson_notes"] = [note]
    if "_open_page" not in st.session_state:  # (not in a run about to switch page: page_setup)
        for note in st.session_state.pop("_lesson_notes", []):  # once: the address drops the
            st.warning(note, icon=":material/link_off:")  # values they name (write_lesson_url)


def page_setup(page: str) -> None:
    """First line of every page, with the page's key in PAGES. If a page URL is the first request
    a fresh server gets, Streamlit runs the page file alone (the legacy pages/ mode: no sidebar,
    no navigation, no state); then go through app.py, which sets the lab up and comes back to
    this page."""
    if st.session_state.get("_app_ran"):
        return
    st.session_state["_open_page"] = PAGES[page]
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
