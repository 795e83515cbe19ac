"""Regions: choose WorldCover areas on a map (or by lon/lat), read them, and look at them."""
import time

import streamlit as st
from streamlit_folium import st_folium

from bharateo import ui, views
from bharateo.errors import BharatEOError
from bharateo.figures import class_bar_chart
from bharateo.mapview import build_region_map, propose_roi_from_click
from bharateo.roi import NOTEBOOK_ROIS, RoiSpec, check_no_overlap
from bharateo.worldcover import data_source_from_env

ui.page_setup()
state = st.session_state
state.setdefault("region_size", views.DEFAULT_SIZE)
state.setdefault("regions_messages", [])  # [(kind, text)] shown once, next to the map


# --- callbacks: they run before the page, so the map below already shows their result -------
def on_map_click() -> None:
    try:
        spec = propose_roi_from_click(state.get("region_map"), state.region_size)
    except BharatEOError as exc:
        state.regions_messages.append(("error", str(exc)))
        return
    if spec is not None:
        state.proposed_roi = spec


def on_size_change() -> None:
    if state.proposed_roi is not None:
        try:
            state.proposed_roi = views.resized(state.proposed_roi, state.region_size)
        except BharatEOError as exc:
            state.regions_messages.append(("error", str(exc)))


def discard_proposal() -> None:
    state.proposed_roi = None


def read_regions(specs) -> None:
    """Read and add `specs` showing progress, then rerun so every widget sees the new regions."""
    errors, read = [], []
    start = time.perf_counter()
    with st.status(f"Reading {len(specs)} region{'s' if len(specs) > 1 else ''}…",
                   expanded=True) as status:
        bar = st.progress(0.0)
        for k, spec in enumerate(specs):
            where = "the local cache" if ui.is_cached(spec) else data_source_from_env().describe()
            bar.progress(k / len(specs),
                         text=f"{spec.name}: {views.size_label(spec.size)} from {where}…")

            def progress(fraction, text, k=k):  # each tile, and the seconds spent, while it reads
                bar.progress(min((k + fraction) / len(specs), 1.0), text=text)

            try:
                roi = ui.add_roi(spec, progress)
                read.append(f"{spec.name} (from {where})")
                if roi.cache_error:
                    errors.append(("warning", f"**{spec.name}** is in use but was not cached: "
                                              f"{roi.cache_error}."))
            except BharatEOError as exc:
                errors.append(("error", f"**{spec.name}** was not added. {exc}"))
        bar.progress(1.0)
        status.update(state="error" if any(k == "error" for k, _ in errors) else "complete")
    if read:
        state.regions_messages.append(
            ("success", f"Read {', '.join(read)} in {time.perf_counter() - start:.1f} s."))
        where_read = {(r.spec.lon, r.spec.lat, r.spec.size) for r in state.rois}
        proposal = state.proposed_roi
        if proposal is not None and (proposal.lon, proposal.lat, proposal.size) in where_read:
            state.proposed_roi = None  # it was just added (perhaps renamed)
    state.regions_messages.extend(errors)
    st.rerun()


st.title("Regions")
st.markdown(
    "Pick the areas the model will learn from. Each region is a square of **ESA WorldCover "
    "10 m** pixels (2048 px = 20.5 km). Click the map to propose a region centred on the click, "
    "or type a longitude/latitude; the notebook's three regions are one button away.")
ui.synthetic_banner()
map_col, side_col = st.columns([3, 2], gap="medium")

# --- right: messages, presets, size, the lon/lat form and the proposal -------------------------
with side_col:
    for kind, text in state.regions_messages:
        {"success": st.success, "warning": st.warning}.get(kind, st.error)(text)
    state.regions_messages = []

    st.markdown("**The notebook's regions** (tile N27E075, 2048 px each)")
    missing = views.missing_presets(state.rois)
    if st.button("Add the notebook's three regions", key="add_presets", type="primary",
                 disabled=not missing, width="stretch",
                 help="delhi_ncr (built-up), shekhawati (semi-arid Rajasthan), "
                      "mathura_belt (UP cropland)"):
        read_regions(missing)
    for col, spec in zip(st.columns(len(NOTEBOOK_ROIS)), NOTEBOOK_ROIS):
        if col.button(spec.name, key=f"add_preset_{spec.name}", width="stretch",
                      disabled=spec not in missing, help=views.spec_summary(spec)):
            read_regions([spec])

    st.markdown("**A region of your own**")
    st.select_slider("Region size", options=views.SIZE_OPTIONS, key="region_size",
                     format_func=views.size_label, on_change=on_size_change,
                     help="Side of the square; used for map clicks and for the form below.")
    with st.form("roi_form"):
        name = st.text_input("Name (optional)", key="form_name",
                             placeholder="e.g. agra (default: roi_<lon>E_<lat>N)")
        c1, c2 = st.columns(2)
        lon = c1.number_input("Longitude (°E)", value=77.0, step=0.01, format="%.4f",
                              key="form_lon")
        lat = c2.number_input("Latitude (°N)", value=28.0, step=0.01, format="%.4f",
                              key="form_lat")
        b1, b2 = st.columns(2)
        propose = b1.form_submit_button("Propose", width="stretch")
        add_now = b2.form_submit_button("Add region now", width="stretch")
    if propose or add_now:
        try:
            spec = views.spec_from_form(name, lon, lat, state.region_size)
        except BharatEOError as exc:
            st.error(str(exc))
        else:
            if add_now:
                read_regions([spec])  # reruns the page
            else:
                state.proposed_roi = spec

    proposal = state.proposed_roi
    if proposal is not None:
        with st.container(border=True):
            st.markdown(f"**Proposed: {proposal.name}** (dashed orange on the map, not read yet)")
            st.caption(views.spec_summary(proposal)
                       + ("; already in the local cache" if ui.is_cached(proposal) else ""))
            try:
                check_no_overlap(proposal, state.rois)
            except BharatEOError as exc:
                st.warning(str(exc))
            new_name = st.text_input("Name", value=proposal.name,
                                     key=f"proposal_name_{proposal.lon}_{proposal.lat}")
            p1, p2 = st.columns(2)
            if p1.button("Add region", key="add_proposed", type="primary", width="stretch"):
                read_regions([RoiSpec(new_name.strip() or proposal.name, proposal.lon,
                                      proposal.lat, proposal.size)])
            p2.button("Discard", key="discard_proposed", on_click=discard_proposal,
                      width="stretch")

# --- left: the map -----------------------------------------------------------------------------
with map_col:
    chosen, proposed = views.map_layers(state.rois, state.proposed_roi)
    center, zoom = views.map_view([b for _, b in chosen] + ([proposed[1]] if proposed else []))
    st_folium(build_region_map(chosen, proposed, center=center, zoom=zoom),
              use_container_width=True, height=450, returned_objects=["last_clicked"],
              key="region_map", on_change=on_map_click)
    st.caption("Grey lines: the WorldCover 3° tiles, each labelled at its south-west corner. "
               "Blue: your regions; dashed orange: the proposal. The OpenStreetMap background "
               "needs internet; offline it stays plain, but the tiles, regions and clicks work.")

# --- the chosen regions ------------------------------------------------------------------------
st.subheader(f"Your regions ({len(state.rois)})")
if not state.rois:
    st.info("No regions yet. Add the notebook's three, click the map, or use the form.")
else:
    per_row = 3
    for first in range(0, len(state.rois), per_row):
        for col, roi in zip(st.columns(per_row), state.rois[first:first + per_row]):
            with col.container(border=True):
                st.markdown(f"#### {roi.spec.name}")
                picture = views.roi_picture(roi)
                st.image(picture.image, caption=picture.caption, width="stretch")
                counts, nodata = views.collapsed_counts(roi), views.nodata_pixels(roi)
                st.markdown(views.share_legend_html(counts, nodata), unsafe_allow_html=True)
                st.plotly_chart(class_bar_chart(counts, "collapsed class pixels", nodata=nodata),
                                key=f"bars_{roi.spec.name}")
                st.caption(views.roi_summary(roi))
                for note in roi.notes:
                    st.warning(note)
                with st.expander("Provenance and native class counts"):
                    st.markdown(views.provenance_markdown(roi))
                    st.caption("Native WorldCover codes in this region (as the notebook prints)")
                    st.table(views.native_counts_table(roi).set_index("code"))
                st.button("Remove", key=f"remove_{roi.spec.name}", on_click=ui.remove_roi,
                          args=(roi.spec.name,))
    st.page_link(ui.PAGES["chips"], label="Next: cut these regions into chips", icon=":material/arrow_forward:")
