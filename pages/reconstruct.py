"""Reconstruct: hide some of a chip's patches and see what the model paints back."""
import streamlit as st

from bharateo.training import evaluate
from bharateo.app import figures
from bharateo.app.downloads import csv_button
from bharateo.app.lesson import lesson_fragment
from bharateo.app.pictures import (RAW, error_legend_caption, legend_html, magma_legend,
                                   picture_rows, reconstruction_panels, score_panels,
                                   thumbnail)
from bharateo.jobs.looks import Filling
from bharateo.app.results import (THUMBNAILS, baseline_delta, chip_baseline_caption, chip_choice,
                                  chip_picker_key, chip_splits, curve_baseline_caption,
                                  model_and_chips, ratio_curve_or_filling,
                                  show_filling)
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.startup import page_setup
from bharateo.app.state import keep_widget, show_error
from bharateo.errors import BharatEOError
from bharateo.words import plural

page_setup("reconstruct")
st.title("Reconstruct")
st.caption("Hide some of a chip's 64 patches, as in training, and see what the model paints back "
           "and which land-cover class it names for every patch. Drag the mask ratio: the more is "
           "hidden, the less the model has to go on, though a small model often paints best near "
           "the ratio it was trained at (the curve below shows it).")
synthetic_banner()

current, run, train_chips, held_chips = model_and_chips("reconstruct")
model = current.model

# --- which chips ---------------------------------------------------------------------------------
splits, split_titles = chip_splits(train_chips, held_chips)
keep_widget("recon_split", "train", lambda s: s if s in splits else "train")
split_names = {s: f"{title} ({plural(len(splits[s]), 'chip')})" for s, title in split_titles.items()}
split = st.radio("Chips", list(splits), key="recon_split", horizontal=True,
                 format_func=split_names.get)
if held_chips is None:
    st.caption("No held-out region in these chips: hold one out on the Chips page to see the model "
               "on land it never saw.")
chips = splits[split]

chip_key = chip_picker_key(chips, split)
picker, *thumb_cols = st.columns([1.6] + [1] * THUMBNAILS, vertical_alignment="bottom")
# no min/max: the browser would turn a typed 999 red and keep showing the last chip
typed = picker.number_input(f"Chip (0–{len(chips) - 1})", step=1, key=chip_key,
                            help="Type a number, or click a thumbnail. Thumbnails show the ten "
                                 "chips around this one.")
index, shown = chip_choice(typed, len(chips))
for col, i in zip(thumb_cols, shown):
    col.image(thumbnail(chips, i), output_format="PNG")
    col.button(f"{i}", key=f"recon_thumb_{split}_{i}", width="stretch",
               type="primary" if i == index else "secondary",
               on_click=st.session_state.__setitem__, args=(chip_key, i))

# --- the mask, the panels and the curve: a fragment, so a slider move reruns only this part ------
@lesson_fragment  # st.fragment that also writes the ratio into the lesson's address
def mask_explorer(model, chips, index: int, split_title: str, run, train_ratio: float,
                  precision: str) -> None:
    keep_widget("recon_mask_ratio", 0.75)
    st.session_state.setdefault("recon_mask_seed", 0)  # a plain key: kept for the session
    keep_widget("recon_raw_output", False)
    slider_col, raw_col, seed_col = st.columns([3.6, 1.5, 1], vertical_alignment="bottom")
    ratio = round(slider_col.slider("Mask ratio: share of the 64 patches hidden", 0.05, 0.95,
                                    step=0.05, key="recon_mask_ratio", format="%.2f"), 2)
    seed_col.button(":material/casino: New mask", key="recon_new_mask", width="stretch",
                    help="Hide a different random set of patches (same ratio).",
                    on_click=lambda: st.session_state.update(
                        recon_mask_seed=st.session_state.recon_mask_seed + 1))
    raw = raw_col.toggle("Raw model output", key="recon_raw_output",
                         help=f"Show the {RAW}: the pixel loss scores hidden patches only (as in the "
                              "notebook and the MAE paper), so what the model paints on visible "
                              "patches is never trained and looks speckled.")
    try:
        rec = evaluate.reconstruct_chip(model, chips, index, ratio, st.session_state.recon_mask_seed,
                                       precision=precision)
    except BharatEOError as exc:
        show_error(exc)
        return
    panels = reconstruction_panels(rec, ratio, index)

    # target, masked input, reconstruction + visible; the raw output on request (Sentinel-2: a
    # second row in false colour)
    for n, row in enumerate(picture_rows(panels, raw)):
        cols = st.columns(4)
        for col, panel in zip(cols, row):
            col.image(panel.image, caption=panel.title, output_format="PNG")
        if n == 0 and not raw:
            cols[3].caption("Visible patches are pasted from the input, as in the MAE paper's "
                            "figures: the model is only trained to paint the hidden ones. Turn on "
                            "**Raw model output** to see what it paints on every patch.")
    row = st.columns(4)
    for col, panel in zip(row[:3], score_panels(panels)):
        col.image(panel.image, caption=panel.title, output_format="PNG")
    row[0].image(magma_legend(), output_format="PNG", caption=error_legend_caption(rec))
    row[1].markdown(legend_html(sorted(set(rec.patch_prediction.ravel()) |
                                                     set(rec.patch_target.ravel()))),
                    unsafe_allow_html=True)
    with row[3]:
        st.metric("Masked MAE (this chip)", "—" if rec.masked_mae is None else f"{rec.masked_mae:.3f}",
                  help="Mean absolute RGB error over the hidden patches' pixels (palette colours "
                       "run 0–1, so 0.1 is a small colour error and 0.5 a wrong class). Lower is "
                       "better.")
        st.metric("Patch accuracy (this chip)", "—" if rec.patch_acc is None else f"{rec.patch_acc:.0%}",
                  **baseline_delta(rec.quality or {}),
                  help="Share of this chip's 64 patches whose ESA class the patch head names "
                       "correctly (hidden and visible patches); the arrow: percentage points "
                       "above (or below) always answering this chip's most common class.")
        st.caption(chip_baseline_caption(rec.quality))
        ignored = int((rec.patch_target < 0).sum())
        st.caption(f"Mask #{st.session_state.recon_mask_seed} at {ratio:.0%}: "
                   f"{int(rec.mask.sum())} of {rec.mask.size} patches hidden."
                   + (f" {ignored} no-data patch{'es' if ignored > 1 else ''} (black): no data, "
                      "left out of losses and metrics." if ignored else ""))

    # the whole split at nine ratios, computed once off the page (stored by the training worker,
    # else filled in in the background); the current ratio marked
    curve = ratio_curve_or_filling(model, chips, run, precision)
    if isinstance(curve, Filling):
        if curve.error:
            st.warning(f"The mask-ratio curve could not be computed: {curve.error}")
        else:
            show_filling("the mask-ratio curve", [curve])
        return
    st.plotly_chart(
        figures.mask_ratio_curve(curve.value, ratio, train_ratio,
                                 title=f"{split_title}: masked MAE and patch accuracy vs mask "
                                       f"ratio (all {plural(len(chips), 'chip')})"),
        key="recon_curve")
    st.caption(f"Averages over all {plural(len(chips), 'chip')} with fixed masks. "
               + curve_baseline_caption(curve.value) + " The model was trained with "
               f"{train_ratio:.0%} hidden, and a small model is often best near that ratio. "
               + (f"Computed once and stored beside run '{run.name}' ({curve.filename})."
                  if curve.filename else "Computed once for this model and these chips."))
    csv_button("the curve (CSV)", curve.value, "mask_ratio_curve.csv", "recon_curve_csv")


if index is None:
    st.error(f"There is no chip {typed}: these {plural(len(chips), 'chip')} are numbered 0 to "
             f"{len(chips) - 1}. Type a number in that range, or click a thumbnail.")
    st.stop()
mask_explorer(model, chips, index, split_titles[split], run, current.config.train.mask_ratio,
              current.config.train.precision)
