"""Regions: choose areas (WorldCover or Sentinel-2 pixels) on a map or by lon/lat, read them, and
look at them."""
import streamlit as st
from streamlit_folium import st_folium

from bharateo.app.figures import class_bar_chart
from bharateo.app.mapview import (build_region_map, fit_bounds, map_caption, map_frame, map_layers,
                                  map_view)
from bharateo.app.pictures import roi_picture, share_legend_html
from bharateo.app.regions import (SIZE_OPTIONS, collapsed_counts, current_presets, data_in_use_text,
                                  discard_proposal, empty_hint, handle_map_event, init_page_state,
                                  intro_text, is_cached, map_overviews, missing_presets,
                                  native_counts_html, nodata_pixels, offers_worldcover_presets,
                                  on_size_change, place_form, presets_place, proposal_outside,
                                  provenance_markdown, read_regions, region_pixel_metres,
                                  region_size_format, remove_roi, roi_summary, size_help,
                                  s2_dates_default, s2_presets, s2_scene_outlines,
                                  s2_skipped_notes, s2_source_text, set_pixel_query,
                                  source_choices, source_mismatch, spec_from_form, spec_summary)
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.startup import page_setup
from bharateo.app.state import PAGES, keep_widget
from bharateo.errors import BharatEOError
from bharateo.data.roi import NOTEBOOK_ROIS, SAMPLE_ROIS, RoiSpec, check_no_overlap
from bharateo.data.worldcover import ATTRIBUTION, data_source_from_env

page_setup("regions")
state = st.session_state
init_page_state()
handle_map_event()  # before the map is drawn, so it already shows the event's result

st.title("Regions")
intro = st.container()  # filled once the Pixels choice below is known, so it follows the choice
synthetic_banner()
map_col, side_col = st.columns([3, 2], gap="medium")

# --- right: messages, presets, size, the lon/lat form and the proposal -------------------------
with side_col:
    if state.get("pending_regions"):  # a read stopped part-way by a rerun: finish it
        specs, refit, tries, *at_form = state.pending_regions
        if tries < 3:  # never loop on a read that keeps failing
            read_regions(specs, refit, *at_form)
        state.pending_regions = None
    for kind, text in state.regions_messages:
        {"success": st.success, "warning": st.warning}.get(kind, st.error)(text)
    state.regions_messages = []

    # which pixels a region is read as: WorldCover palette RGB or Sentinel-2 reflectance
    sources = source_choices()
    keep_widget("region_pixel_source", state.pixel_source)
    picked = st.radio("Pixels", list(sources), format_func=sources.get, horizontal=True,
                      key="region_pixel_source",
                      help="WorldCover palette RGB (the notebook's input) or real Sentinel-2 L2A "
                           "reflectance (4 or 10 bands) with WorldCover as the patch labels.")
    s2_dates = s2_cloud = None
    if picked != "worldcover":
        keep_widget("region_s2_dates", default_from=s2_dates_default)
        keep_widget("region_s2_cloud", state.s2_max_cloud)
        d1, d2 = st.columns([3, 2])
        s2_dates = d1.text_input("Scene dates (first/last day)", key="region_s2_dates",
                                 help="e.g. 2021-01-01/2021-03-31")
        s2_cloud = d2.number_input("Max cloud over the scene (%)", 0.0, 100.0, step=5.0,
                                   key="region_s2_cloud")
        st.caption(s2_source_text())
        if skipped := s2_skipped_notes():  # sub-folders of BHARATEO_S2_DIR that are no scene
            with st.expander(f"{len(skipped)} folder{'s' * (len(skipped) > 1)} in "
                             "BHARATEO_S2_DIR skipped (not a scene)"):
                for note in skipped:
                    st.caption(note)
    if problem := set_pixel_query(picked, s2_dates, s2_cloud):
        st.error(problem)
    pixel_m = region_pixel_metres()  # None: WorldCover's 1/12000 degree; else the scenes' metres
    if mismatch := source_mismatch():
        st.warning(mismatch)
    with intro:
        st.markdown(intro_text())
        st.markdown(f"Pixels in use: {data_in_use_text()}")
    if picked != "worldcover" and (scene_presets := s2_presets()):
        st.markdown("**Sentinel-2 scenes in the local folder** (BHARATEO_S2_DIR)")
        for col, spec in zip(st.columns(min(len(scene_presets), 3)), scene_presets[:3]):
            if col.button(spec.name, key=f"add_s2_{spec.name}", width="stretch",
                          disabled=spec.name in [r.spec.name for r in state.rois],
                          help=f"{spec.size} px centred on {spec.lon:.4f}E {spec.lat:.4f}N"):
                read_regions([spec])

    defaults = current_presets(data_source_from_env())
    default_label = ("Add the notebook's three regions" if defaults == NOTEBOOK_ROIS else
                     f"Add the offline sample's {len(defaults)} regions")
    if offers_worldcover_presets():  # not from a local Sentinel-2 folder: its scenes are elsewhere
        missing_defaults = missing_presets(state.rois, defaults)
        if st.button(default_label, key="add_presets", type="primary",
                     disabled=not missing_defaults, width="stretch",
                     help="The defaults: " + ", ".join(s.name for s in defaults)
                     + f" in {presets_place(defaults)}"):
            read_regions(missing_defaults)
        missing = missing_presets(state.rois)
        for title, presets in (("The notebook's regions", NOTEBOOK_ROIS),
                               ("The offline sample (bundled with the lab)", SAMPLE_ROIS)):
            st.markdown(f"**{title}**: {presets_place(presets)}, 2048 px each")
            for col, spec in zip(st.columns(len(presets)), presets):
                if col.button(spec.name, key=f"add_preset_{spec.name}", width="stretch",
                              disabled=spec not in missing, help=spec_summary(spec, pixel_m)):
                    read_regions([spec])

    st.markdown("**A region of your own**")
    st.select_slider("Region size", options=SIZE_OPTIONS, key="region_size",
                     format_func=region_size_format(pixel_m), on_change=on_size_change,
                     help=size_help(pixel_m))
    with st.form("roi_form"):
        name = st.text_input("Name (optional)", key="form_name",
                             placeholder="e.g. agra (default: roi_<lon>E_<lat>N)")
        c1, c2 = st.columns(2)
        place_form(defaults)  # starts at a place the chosen source covers
        lon = c1.number_input("Longitude (°E)", step=0.01, format="%.4f", key="form_lon")
        lat = c2.number_input("Latitude (°N)", step=0.01, format="%.4f", key="form_lat")
        b1, b2 = st.columns(2)
        propose = b1.form_submit_button("Propose", width="stretch")
        add_now = b2.form_submit_button("Add region now", width="stretch")
    if propose or add_now:
        try:
            spec = spec_from_form(name, lon, lat, state.region_size)
        except BharatEOError as exc:
            st.error(str(exc))
        else:
            if add_now:
                read_regions([spec], at_form=True)  # reruns the page
            else:
                state.proposed_roi = spec
                state.region_map_view = None  # frame it, wherever it is
    for kind, text in state.regions_form_messages:  # a read from the form or proposal: said here
        {"warning": st.warning}.get(kind, st.error)(text)
    state.regions_form_messages = []

    proposal = state.proposed_roi
    if proposal is not None:
        with st.container(border=True):
            st.markdown(f"**Proposed: {proposal.name}** (dashed orange on the map, not read yet)")
            st.caption(spec_summary(proposal, pixel_m)
                       + ("; already in the local cache" if is_cached(proposal) else ""))
            if outside := proposal_outside(proposal):  # said now, not after a failed read
                st.warning(outside)
            try:
                check_no_overlap(proposal, state.rois)
            except BharatEOError as exc:
                st.warning(str(exc))
            new_name = st.text_input("Name", value=proposal.name,
                                     key=f"proposal_name_{proposal.lon}_{proposal.lat}")
            p1, p2 = st.columns(2)
            if p1.button("Add region", key="add_proposed", type="primary", width="stretch"):
                read_regions([RoiSpec(new_name.strip() or proposal.name, proposal.lon,
                                      proposal.lat, proposal.size)], refit=False, at_form=True)
            p2.button("Discard", key="discard_proposed", on_click=discard_proposal,
                      width="stretch")

# --- left: the map -----------------------------------------------------------------------------
with map_col:
    source = data_source_from_env()
    overviews = map_overviews(source)
    chosen, proposed = map_layers(state.rois, state.proposed_roi)
    scenes = s2_scene_outlines()  # Sentinel-2 from a local folder: where regions can go
    state.region_map_frame = map_frame(
        state.region_map_frame,
        (tuple(chosen), proposed, tuple(o.name for o in overviews), tuple(scenes)),
        state.region_map_view, lambda: map_view(fit_bounds(chosen, proposed, scenes, overviews)))
    center, zoom = state.region_map_frame[1]
    # the views this page drew lately: a map drawn at one reports it back, sometimes late (after
    # a refit on a loaded machine), and that report is not the user moving the map
    state.region_map_drawn = [state.region_map_frame[1], *state.get("region_map_drawn", [])][:6]
    st_folium(build_region_map(chosen, proposed, center=center, zoom=zoom, overviews=overviews,
                               scenes=scenes),
              use_container_width=True, height=450,
              returned_objects=["last_clicked", "center", "zoom"], key="region_map")
    if st.button("Fit the map to the regions", key="fit_map",
                 disabled=not (chosen or proposed or overviews or scenes)):
        state.region_map_view, state.region_map_frame = None, None
        st.rerun()
    st.caption(map_caption(overviews, scenes) + f" Land cover © {ATTRIBUTION}; CC-BY 4.0.")

# --- the chosen regions ------------------------------------------------------------------------
st.subheader(f"Your regions ({len(state.rois)})")
if not state.rois:
    st.info(empty_hint(default_label))
else:
    per_row = 3
    for first in range(0, len(state.rois), per_row):
        for col, roi in zip(st.columns(per_row), state.rois[first:first + per_row]):
            with col.container(border=True):
                st.markdown(f"#### {roi.spec.name}")
                picture = roi_picture(roi)
                st.image(picture.image, caption=picture.caption, width="stretch")
                counts, nodata = collapsed_counts(roi), nodata_pixels(roi)
                st.markdown(share_legend_html(counts, nodata), unsafe_allow_html=True)
                st.plotly_chart(class_bar_chart(counts, "collapsed class pixels", nodata=nodata),
                                key=f"bars_{roi.spec.name}")
                st.caption(roi_summary(roi))
                for note in roi.notes:
                    st.warning(note)
                with st.expander("Provenance and native class counts"):
                    st.markdown(provenance_markdown(roi))
                    st.caption("Native WorldCover codes in this region (as the notebook prints)")
                    st.markdown(native_counts_html(roi), unsafe_allow_html=True)
                st.button("Remove", key=f"remove_{roi.spec.name}", on_click=remove_roi,
                          args=(roi.spec.name,))
    st.page_link(PAGES["chips"], label="Next: cut these regions into chips", icon=":material/arrow_forward:")
