"""Chips: cut the regions into chips and look at the tokens the model sees."""
from dataclasses import replace

import streamlit as st

from bharateo.app.chips import (build_session_chips, chip_caption, chip_field_problems,
                                chip_form_field, chip_form_settings, chip_indices, chips_stale,
                                embed_dim_from_state, holdout_choices, holdout_label,
                                shape_journey, source_caption, token_label, token_mix_text,
                                token_values, token_view)
from bharateo.app.figures import chips_per_roi_chart, class_share_chart, token_variance_heatmap
from bharateo.app.pictures import (chip_modes, chip_picture, chip_with_grid, class_swatch_html,
                                   legend_html, mean_rgb_picture, token_picture)
from bharateo.app.regions import chip_source_fields, region_metres_by_name
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.train import training_chips_note
from bharateo.app.startup import page_setup
from bharateo.app.state import PAGES, current_chip_config, current_model, guidance, keep_widget
from bharateo.data.chips import MAX_CHIP_NODATA_FRACTION
from bharateo.data.worldcover import NODATA_ID

PER_PAGE = 24
page_setup("chips")
state = st.session_state

st.title("Chips")
st.markdown(
    "Each training example is a square **chip** cut at random from a region, kept only if it "
    "holds at least *min classes* land-cover classes. The model reads a chip as palette RGB, "
    "cut into 16 × 16 px **tokens**; the dominant class of each token is its **patch label**. "
    "No data (open sea away from the coast, outside coverage; black) is never a class (sea "
    "near the coast is mapped by ESA as water, a class): a chip more than "
    f"{MAX_CHIP_NODATA_FRACTION:.0%} no-data is drawn again, and a token at least half no-data "
    "gets no label and is left out of losses and metrics.")
if not state.rois:
    guidance("There are no regions to cut chips from yet. Choose some on the Regions page "
                "first (the notebook's three are one button away).", "regions", "Go to Regions")
    st.stop()
synthetic_banner()
if caption := source_caption(chip_source_fields()["source"]):
    st.caption(caption)

# --- controls -> ChipConfig -------------------------------------------------------------------
names = [r.spec.name for r in state.rois]
config = current_chip_config()
choices = holdout_choices(names)
form = chip_form_settings()  # ChipConfig's declared settings, as this form shows them
page_help = {"n_chips": " The notebook uses 384, spread evenly over the regions.",
             "seed": " Same seed and settings = the same chips (the notebook uses 42)."}

with st.form("chip_form"):
    row = st.columns(4)
    h1, h2 = st.columns([3, 1])
    columns = {"n_holdout_chips": h2,
               **dict(zip(["n_chips", "chip_size", "min_classes", "seed"], row))}
    values = {name: chip_form_field(columns[name], s, getattr(config, name),
                                    page_help.get(name, "")) for name, s in form.items()}
    if state.get("cfg_holdout") not in choices:  # its region was removed
        state.pop("cfg_holdout", None)
    holdout = h1.selectbox("Held-out region (never used for training)", list(choices),
                           index=list(choices).index(holdout_label(config, names)),
                           key="cfg_holdout",
                           help="Hold out a whole region, or one half of one, to test the model "
                                "on land it never saw.")
    build = st.form_submit_button("Build chips", type="primary", key="build_chips")

problems = chip_field_problems(values) if build else []
if problems:
    st.error("No chips were built: " + " ".join(problems) + " Correct the field and press "
             "**Build chips** again." + (" The chips below are the ones built before."
                                         if state.train_chips is not None else ""))
    build = False
if build:
    holdout_roi, holdout_block = choices[holdout]
    build_session_chips(replace(config, **{name: s.coerce(values[name]) for name, s in form.items()},
                                holdout_roi=holdout_roi, holdout_block=holdout_block,
                                **chip_source_fields()))
if message := state.pop("chips_message", None):
    st.success(message)

chips = state.train_chips
if note := training_chips_note():  # a training runs on chips of its own settings
    st.info(note, icon=":material/model_training:")
if chips is None:
    st.info("Choose the settings above and press **Build chips**.")
    st.stop()
if chips_stale(chips, state.rois):
    st.warning("The regions changed since these chips were built (they come from "
               f"{', '.join(chips.roi_names)}). Press **Build chips** to cut them again.")

# --- the chips --------------------------------------------------------------------------------
st.subheader("The chips")
held = state.heldout_chips
v1, v2, v3, v4 = st.columns([2, 2, 2, 1])
sets = {"training": chips} | ({"held-out": held} if held is not None else {})
keep_widget("chip_set", "training", lambda v: v if v in sets else "training")
shown_set = v1.radio("Chip set", list(sets), horizontal=True, key="chip_set")
shown = sets.get(shown_set, chips)
modes = chip_modes(shown)
keep_widget("chip_mode", None, lambda v: v if v in modes else next(iter(modes)))
mode = v2.radio("Show", list(modes), horizontal=True, key="chip_mode")
region_names = [n for n, k in shown.chips_per_roi().items() if k]
keep_widget("chip_region", "all regions",
               lambda v: v if v in ["all regions", *region_names] else "all regions")
region = v3.selectbox("From region", ["all regions", *region_names], key="chip_region")
selected = chip_indices(shown, None if region == "all regions" else region)
pages = max(1, -(-len(selected) // PER_PAGE))
keep_widget("chip_page", 1, lambda v: min(max(int(v), 1), pages))
page = v4.number_input(f"Page (of {pages})", 1, pages, key="chip_page")
indices = selected[(page - 1) * PER_PAGE:page * PER_PAGE]
kind = modes.get(mode, "patch")
st.caption(f"{len(indices)} of the {len(selected)} {shown_set} chips from {region} "
           f"(page {page} of {pages}), {shown.chip_size} × {shown.chip_size} px"
           + ("" if kind != "patch" else f"; each square is one {shown.patch_size} px token's "
                                       "dominant class"))
for row in range(0, len(indices), 8):
    for col, i in zip(st.columns(8), indices[row:row + 8]):
        col.image(chip_picture(shown, i, kind), caption=chip_caption(shown, i),
                  width="stretch")
ignored = shown.ignored_patches()
st.markdown(legend_html(nodata=ignored > 0 or shown.rejected_nodata > 0
                              or bool((shown.labels == NODATA_ID).any())), unsafe_allow_html=True)
if ignored:
    st.caption(f"{ignored:,} of the {shown_set} chips' {shown.patch_labels.size:,} patches are at "
               "least half no data (black): they have no patch label and are left out of losses "
               "and metrics.")

g1, g2 = st.columns(2)
g1.plotly_chart(chips_per_roi_chart(chips.chips_per_roi(),
                                    held.chips_per_roi() if held is not None else None),
                key="chips_per_roi")
balance = {"training": chips.patch_class_counts()}
nodata = {"training": chips.ignored_patches()}
if held is not None:
    balance["held-out"], nodata["held-out"] = held.patch_class_counts(), held.ignored_patches()
g2.plotly_chart(class_share_chart(balance, nodata=nodata), key="class_balance")

# --- one chip up close ------------------------------------------------------------------------
st.subheader("Inside one chip: 3 panels and the tensor shapes")
n_tokens = shown.grid_size ** 2
keep_widget("detail_chip", 0, lambda v: min(int(v), len(shown) - 1))
keep_widget("detail_token", 0, lambda v: min(int(v), n_tokens - 1))
d1, d2 = st.columns(2)
chip_i = d1.number_input(f"Chip ({shown_set}, 0–{len(shown) - 1})", 0, len(shown) - 1,
                         key="detail_chip")
token = d2.slider(f"Token (0–{n_tokens - 1}, row by row)", 0, n_tokens - 1, key="detail_token")
view = token_view(shown, chip_i)
row, col = view.rowcol(token)

p1, p2, p3 = st.columns(3)
p1.image(chip_with_grid(shown, chip_i, token), width="stretch",
         caption=f"{'RGB' if shown.pixels is None else 'true colour'} chip {chip_i} with its {view.grid} × {view.grid} token grid; "
                 f"token {token} outlined")
p2.image(mean_rgb_picture(view, token), width="stretch",
         caption="token mean RGB: each token's average colour")
p3.plotly_chart(token_variance_heatmap(view.color_var, (row, col)), key="token_variance")
p3.caption("black = one colour inside the token; bright = mixed classes")

embed_dim, embed_source = embed_dim_from_state(current_model())
st.markdown(shape_journey(shown, chip_i, view, embed_dim, embed_source, token,
                          region_metres_by_name(shown.roi_names[shown.roi_index[chip_i]])))

st.markdown(f"##### Token {token} (row {row}, col {col}): its {view.patch} × {view.patch} × "
            f"{view.channels} = {view.tokens.shape[1]} values")
t1, t2 = st.columns([1, 4])
with t1:
    st.image(token_picture(view, token), caption=f"token {token}, enlarged")
    label = token_label(shown, chip_i, token)
    st.markdown("Patch label: " + class_swatch_html(label), unsafe_allow_html=True)
    st.caption(token_mix_text(shown, chip_i, token))
with t2:
    values = token_values(view, token)
    for tab, (channel, table) in zip(st.tabs(list(values)), values.items()):
        tab.dataframe(table, height=600 if view.patch > 8 else "auto", column_config={
            "_index": st.column_config.NumberColumn(width=28),
            **{name: st.column_config.NumberColumn(name, format="%.3f", width=42)
               for name in table.columns}})
    st.caption(f"Rows and columns are pixel positions inside the token. In the "
               f"{view.tokens.shape[1]}-long token vector the {view.patch ** 2} {view.bands[0]} "
               "values come first" + "".join(f", then {b}" for b in view.bands[1:]) + ".")
st.page_link(PAGES["train"], label="Next: train the model on these chips", icon=":material/arrow_forward:")
