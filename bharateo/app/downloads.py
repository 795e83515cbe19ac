"""Download buttons: a chart's data as CSV, a saved run as a zip (bharateo/storage/export.py builds the
bytes in memory). Figures keep plotly's own "download as PNG" in their toolbar."""
from __future__ import annotations

import streamlit as st

from bharateo.errors import BharatEOError
from bharateo.storage.export import csv_bytes, run_archive
from bharateo.storage.runs import SavedRun, validate_run_name


def csv_button(label: str, rows, filename: str, key: str, columns=None) -> None:
    """A download button for `rows` (a list of dicts, or a callable returning one: built only
    when clicked) as `filename` (a name the page makes, never user text)."""
    data = (lambda: csv_bytes(rows(), columns)) if callable(rows) else csv_bytes(rows, columns)
    st.download_button(f":material/download: {label}", data, file_name=filename,
                       mime="text/csv", key=key, on_click="ignore")


def run_zip_button(run: SavedRun, key: str) -> None:
    """A button preparing the run's zip, then a download button for it: a model's weights are
    read only when asked. Errors (the run deleted meanwhile, too big) are shown in words."""
    name = validate_run_name(run.name)
    ready = st.session_state.get(f"_zip_{key}")
    if ready is not None and ready[0] == (name, str(run.path)):
        st.download_button(f":material/download: Download run '{name}' (.zip)", ready[1],
                           file_name=f"{name}.zip", mime="application/zip", key=key,
                           on_click="ignore")
        return
    if st.button(f":material/folder_zip: Prepare run '{name}' as a zip", key=f"{key}_prepare"):
        try:
            st.session_state[f"_zip_{key}"] = ((name, str(run.path)), run_archive(run))
        except BharatEOError as exc:
            st.error(str(exc))
            return
        st.rerun()
