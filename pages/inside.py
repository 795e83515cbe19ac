"""Inside the model: what each token attends to, and where the tokens' embeddings land."""
import streamlit as st

from bharateo.training import inspect_model
from bharateo.app import inside
from bharateo.app.downloads import csv_button, run_zip_button
from bharateo.app.pictures import (attention_grid_pictures, attention_picture, hidden_patches_picture,
                                   legend_html, patch_picture)
from bharateo.jobs.looks import Filling
from bharateo.app.results import model_and_chips, show_filling
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.startup import page_setup
from bharateo.app.state import keep_widget, show_error
from bharateo.errors import BharatEOError
from bharateo.words import plural

page_setup("inside")
st.title("Inside the model")
st.caption("Two looks inside the trained encoder. **Attention:** for one patch (a token), which "
           "patches each layer and head looks at to build its picture of it, so for a hidden patch, "
           "which visible patches the model uses to fill it in (in an `mae` run that is the "
           "decoder's job: its encoder sees only the visible patches). **Token embeddings:** every token's "
           "vector from the encoder, flattened to 2-D and coloured by its patch label; tokens of "
           "one land cover landing together show the encoder keeps that class apart. Palette "
           "colours already differ by class and the patch head trains on these labels, so read "
           "the map beside Evaluate's balanced accuracy.")
synthetic_banner()

current, run, train_chips, held_chips = model_and_chips("inside")
model = current.model
splits = {"train": train_chips, **({"held": held_chips} if held_chips is not None else {})}
start = inside.reconstruct_chip(st.session_state, splits)  # the lesson's Reconstruct chip, if any
# (a default only: once picked here, Inside keeps its own split and chip)
keep_widget("inside_split", start[0] if start else "train", lambda s: s if s in splits else "train")
split = st.radio("Chips", list(splits), key="inside_split", horizontal=True,
                 format_func=lambda s: f"{'training chips' if s == 'train' else 'held-out chips'} "
                                       f"({plural(len(splits[s]), 'chip')})")
chips = splits[split]

# --- attention ---------------------------------------------------------------------------------
st.subheader("Attention")
keep_widget("inside_chip", start[1] if start and start[0] == split else 0,
            lambda i: i if isinstance(i, int) and 0 <= i < len(chips) else 0)
keep_widget("inside_ratio", current.config.train.mask_ratio)
chip_col, ratio_col, layer_col, head_col = st.columns([1, 2, 1.3, 1])
index = chip_col.number_input(f"Chip (0–{len(chips) - 1})", 0, len(chips) - 1, step=1,
                              key="inside_chip")
ratio = round(ratio_col.slider("Mask ratio (hidden patches, as on Reconstruct)", 0.05, 0.95,
                               step=0.05, key="inside_ratio", format="%.2f"), 2)
try:
    maps = inspect_model.attention_maps(model, chips, int(index), ratio)
except BharatEOError as exc:
    show_error(exc)
    st.stop()
layer_key = f"inside_layer_{current.config.model.arch}"  # each variant opens on its own default
keep_widget(layer_key, inside.default_layer(maps),
            lambda li: li if li in range(len(maps.layers)) else inside.default_layer(maps))
layer = layer_col.selectbox("Layer", range(len(maps.layers)), format_func=maps.layers.__getitem__,
                            key=layer_key)
head = head_col.selectbox("Head", [None, *range(maps.heads)], key="inside_head",
                          format_func=lambda h: "mean of heads" if h is None else f"head {h + 1}")
n = maps.grid_size ** 2
query_key = f"inside_query_{split}_{index}_{ratio}"
query = st.select_slider("Token (patch) asking: row-major over the grid; hidden ones marked",
                         list(range(n)), value=st.session_state.get(query_key, inside.default_query(maps, layer)),
                         key=query_key,
                         format_func=lambda t: f"{t} (row {t // maps.grid_size}, col "
                                               f"{t % maps.grid_size}"
                                               + (", hidden)" if maps.mask.ravel()[t] else ")"))
left, right, words = st.columns([1, 1, 1.2])
left.image(hidden_patches_picture(chips, int(index), maps.mask, query), output_format="PNG",
           caption=f"chip {index}: {int(maps.mask.sum())} of {n} patches hidden (grey); token "
                   f"{query} outlined")
if head is not None and head >= maps.layer_heads[layer]:
    right.info(f"{maps.layers[layer]} has {maps.layer_heads[layer]} heads: pick one of them, or "
               "the mean of heads.")
elif maps.queries[layer, query]:
    grid = maps.grid(layer, head, query)
    right.image(attention_picture(chips, int(index), grid, query), output_format="PNG",
                caption=f"{maps.layers[layer]}, "
                        f"{'mean of heads' if head is None else f'head {head + 1}'}: where token "
                        f"{query} looks (brighter = more weight; largest {grid.max():.2f})")
    words.markdown(inside.attention_reading(maps, layer, query, grid))
else:
    right.info(f"{maps.layers[layer].capitalize()} is in the encoder, which sees only the visible "
               f"patches: token {query} is hidden, so it is not in this layer at all. Pick a "
               "visible token, or a decoder layer (where the hidden patches are filled in).")
with st.expander("Every layer and head for this token", expanded=False):
    for row in attention_grid_pictures(chips, int(index), maps, query):
        for col, (picture, caption) in zip(st.columns(max(len(row), 4)), row):
            col.image(picture, caption=caption, output_format="PNG")
csv_button("attention of this token (CSV)", lambda: inspect_model.attention_rows(maps, query),
           f"attention_chip{index}_token{query}.csv", "inside_attention_csv")

# --- the token-embedding map ---------------------------------------------------------------------
st.subheader("Token-embedding map")
# computed off the page: stored by the training worker, else filled in in the background
stored = inside.embedding_map_or_filling(model, chips, run)
if isinstance(stored, Filling) and stored.error:
    show_error(BharatEOError(stored.error))
    st.stop()
if isinstance(stored, Filling):
    show_filling(f"the map of all {len(chips) * n:,} tokens", [stored])
    st.stop()
value = stored.value
selected = st.session_state.get("inside_map_chip")
event = st.plotly_chart(inside.embedding_figure(value, selected), key="inside_map",
                        on_select="rerun", selection_mode=("points", "lasso"), width="stretch")
if (point := inside.selected_point(event)) is not None and point[0] != selected:
    st.session_state.inside_map_chip = selected = point[0]
    st.session_state.inside_map_token = point[1]
    st.rerun()
st.caption("Each dot is one token (patch) of one chip, coloured by its patch label; hover for "
           "chip and token, click one to open its chip, and the patch enlarged, below. "
           + (f"Computed once and stored beside run '{run.name}' ({stored.filename})."
              if stored.filename else "Computed once for this model and these chips."))
csv_button("embedding map (CSV)", lambda: inspect_model.embedding_rows(value),
           "embedding_map.csv", "inside_map_csv")
if (picked := inside.picked_patch(selected, st.session_state.get("inside_map_token"),
                                  len(chips), n)) is not None:
    selected, token = picked
    pic_col, patch_col, near_col = st.columns([1, 0.6, 2])
    pic_col.image(hidden_patches_picture(chips, selected, maps.mask & False, token),
                  output_format="PNG", caption=f"chip {selected}, token {token} outlined")
    label = int(chips.patch_labels[selected].ravel()[token])
    patch_col.image(patch_picture(chips, selected, token), output_format="PNG",
                    caption=f"token {token} enlarged (row {token // maps.grid_size}, col "
                            f"{token % maps.grid_size}): {inside.class_name(label)}")
    pic_col.button("Show this chip's attention above", key="inside_open_chip",
                   on_click=st.session_state.update, args=({"inside_chip": selected},))
    near_col.markdown(f"**Chips like this one**: ranked by how alike their patch nearest to token "
                      f"{token} is (outlined) and how alike the whole chips are (the mean of the "
                      f"two cosines of their embeddings, after taking away what every patch "
                      f"shares). This chip: {inside.class_shares(chips, selected)}.")
    near = inside.neighbours(value, selected, token)
    for col, hit in zip(near_col.columns(max(len(near), 1)), near):
        j = hit["chip"]
        col.image(hidden_patches_picture(chips, j, maps.mask & False, hit["token"]),
                  output_format="PNG", caption=inside.why_alike(chips, (selected, token), hit))
        col.button(f"open {j}", key=f"inside_near_{j}",
                   on_click=st.session_state.update,
                   args=({"inside_map_chip": j, "inside_map_token": hit["token"]},))
st.markdown(legend_html(set(value["label"])), unsafe_allow_html=True)

# --- the run itself ----------------------------------------------------------------------------
if run is not None:
    st.subheader("Download")
    run_zip_button(run, "inside_run_zip")
