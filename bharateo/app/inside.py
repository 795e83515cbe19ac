"""The "Inside the model" page's logic: the embedding map (stored once per run and chips), its
figure and selection, and which token to show first.

The science is in bharateo/training/inspect_model.py (attention weights, token embeddings, PCA, nearest
chips); the attention pictures are drawn in bharateo/app/pictures.py with the other chip pictures;
the embedding map is computed once per model + chips and stored beside the run
(results.stored_result, like the evaluations). Nothing here calls Streamlit.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from bharateo.training import inspect_model as im
from bharateo.app import results
from bharateo.jobs import looks
from bharateo.app.figures import FIGURE_MARGIN, figure_title
from bharateo.data.chips import ChipSet
from bharateo.storage.runs import SavedRun
from bharateo.data.worldcover import CLASS_COLORS_255, CLASS_NAMES, NODATA_NAME

MAX_MAP_POINTS = 60_000  # points drawn on the embedding map (every token is stored)


def embedding_map(model, chips: ChipSet, run: SavedRun | None = None) -> results.StoredResult:
    """inspect_model.embedding_map, computed once per model + chips, stored beside `run`."""
    look = looks.embedding_look(chips)
    return results.stored_result(look.kind, model, chips, look.params,
                                 lambda: look.compute(model), run)


def embedding_map_or_filling(model, chips: ChipSet, run: SavedRun | None = None):
    """The stored embedding map, or the background looks.Filling computing it."""
    return looks.ready_or_fill(looks.embedding_look(chips), model, run)


def reconstruct_chip(state, splits: dict[str, ChipSet]) -> tuple[str, int] | None:
    """(split, chip) the Reconstruct page shows, or a lesson link set for it (`recon=held,4,...`,
    teacher.apply_recon), from session `state`: where Inside the model starts, so the lesson's
    chip is the one looked inside. None when there is none, its split has no chips here, or it
    was picked among other chips (Reconstruct's `recon_chip_<split>_of`, results.chip_picker_key)."""
    split = state.get("recon_split", state.get("_kept_recon_split"))
    chips = splits.get(split)
    key = f"recon_chip_{split}"
    chip = state.get(key, state.get(f"_kept_{key}"))
    if chips is None or not isinstance(chip, int) or not 0 <= chip < len(chips):
        return None
    if state.get(f"{key}_of", (id(chips), len(chips))) != (id(chips), len(chips)):
        return None
    return split, chip


def default_layer(maps: im.AttentionMaps) -> int:
    """The layer the page opens on: the last encoder layer (an `mae` decoder's mask tokens
    attend almost evenly, a confusing first look; the encoder is what the embedding map shows)."""
    encoder = [li for li in range(len(maps.layers)) if maps.is_encoder(li)]
    return encoder[-1] if encoder else len(maps.layers) - 1


def default_query(maps: im.AttentionMaps, layer: int) -> int:
    """The token the page opens on in `layer`: the first hidden patch where the layer computes
    hidden ones (what a hidden patch looks at is the lesson), else the first visible one (an
    `mae` encoder never sees a hidden patch), else token 0."""
    hidden = maps.mask.ravel()
    wanted = hidden if maps.sees_hidden(layer) else ~hidden & maps.queries[layer]
    first = np.flatnonzero(wanted)
    return int(first[0]) if len(first) else 0


def attention_reading(maps: im.AttentionMaps, layer: int, query: int, grid: np.ndarray) -> str:
    """In plain words (markdown): what the class looks at for this layer and token (encoder or
    decoder, what that layer's input holds, visible or hidden token) and where the weight goes.
    `grid` is the G x G weights drawn (maps.grid)."""
    n, hidden = maps.mask.size, int(maps.mask.sum())
    name, is_hidden = maps.layers[layer], bool(maps.mask.ravel()[query])
    if not maps.is_encoder(layer):
        holds = (f"the **decoder**: it runs over all {n} patches, the encoder's output for the "
                 f"{n - hidden} visible ones and a shared mask token (plus its position) for each of "
                 f"the {hidden} hidden ones")
    elif maps.sees_hidden(layer):
        holds = (f"the **encoder**: it runs over all {n} patches, each of the {hidden} hidden ones "
                 "as a shared mask token plus its position")
    else:
        holds = (f"the **encoder**: it sees only the {n - hidden} visible patches; the {hidden} "
                 "hidden ones are not in its input at all")
    role = ("a **hidden** patch, so this is where it looks to be filled in" if is_hidden else
            "a **visible** patch, so this is which patches it mixes into its own picture")
    weights = grid.ravel()
    top = weights.argsort()[::-1][:3]
    keys = int(maps.queries[layer].sum())  # self-attention: the keys are the queries
    spread = weights.max() < 2 / max(keys, 1)
    return (f"{name.capitalize()} is in {holds}. Token **{query}** is {role}. It gives the most "
            "weight to patches "
            + ", ".join(f"{t} ({weights[t]:.0%}{', hidden' if maps.mask.ravel()[t] else ''})"
                        for t in top)
            + (f": nearly even over the {keys} patches this layer sees (even would be "
               f"{1 / keys:.0%} each), so no single patch stands out." if spread else ".")
            + " Each row of weights sums to 100 %: attention shares out the token's view of the chip.")


def class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else NODATA_NAME


def embedding_figure(value: dict, selected_chip: int | None = None,
                     max_points: int = MAX_MAP_POINTS) -> go.Figure:
    """The embedding map as a plotly scatter: one trace per patch class (palette colours, legend
    toggles a class), hover naming chip, token, grid cell and class. customdata = [chip, token],
    so a selection gives back the point's chip. More than `max_points` points: every k-th chip is
    drawn (all tokens of a drawn chip), and the title says so. Tokens of `selected_chip` are
    drawn on top, outlined."""
    n, k = value["tokens_per_chip"], value["chips"]
    g = int(round(n ** 0.5))
    stride = max(1, -(-k * n // max_points))
    x, y = np.asarray(value["x"]), np.asarray(value["y"])
    chip, token, label = (np.asarray(value[c]) for c in ("chip", "token", "label"))
    drawn = chip % stride == 0
    fig = go.Figure()
    for cls in sorted(set(label[drawn].tolist())):
        sel = drawn & (label == cls)
        color = ("rgb(0,0,0)" if not 0 <= cls < len(CLASS_NAMES)
                 else "rgb({},{},{})".format(*CLASS_COLORS_255[cls]))
        fig.add_trace(go.Scattergl(
            x=x[sel], y=y[sel], mode="markers", name=class_name(cls),
            marker=dict(size=5, color=color, opacity=0.75, line=dict(width=0)),
            customdata=np.stack([chip[sel], token[sel]], axis=1),
            hovertemplate=("chip %{customdata[0]} · token %{customdata[1]}<br>" + class_name(cls) +
                           "<extra></extra>")))
    if selected_chip is not None and 0 <= selected_chip < k:
        sel = chip == selected_chip
        fig.add_trace(go.Scattergl(
            x=x[sel], y=y[sel], mode="markers", name=f"chip {selected_chip}",
            marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(width=2, color="#111")),
            customdata=np.stack([chip[sel], token[sel]], axis=1),
            text=[f"row {t // g}, col {t % g}" for t in token[sel]],
            hovertemplate="chip %{customdata[0]} · token %{customdata[1]} (%{text})<extra></extra>"))
    e1, e2 = value["explained"]
    title = (f"Token embeddings of {k:,} chips × {n} tokens, PCA to 2-D" +
             (f" (every {stride}th chip drawn)" if stride > 1 else ""))
    fig.update_layout(title=figure_title(title), height=540, margin=FIGURE_MARGIN,
                      xaxis_title=f"PC 1 ({e1:.0%} of the variance)",
                      yaxis_title=f"PC 2 ({e2:.0%})", legend_title="patch label",
                      # "zoom", not "lasso": with a lasso as the drag mode a click selects
                      # nothing (measured in Chromium with Streamlit 1.67); the lasso stays
                      # one click away in the chart's toolbar
                      dragmode="zoom", clickmode="event+select")
    return fig


def selected_point(event) -> tuple[int, int] | None:
    """(chip, token) of the first point in a st.plotly_chart selection event, else None.
    A point's customdata arrives as a list from a click and as {"0": chip, "1": token} from a
    lasso (Streamlit 1.67 turns the array into an object); anything malformed (a browser can send
    what it likes) is None."""
    try:
        points = event["selection"]["points"] if event else []
        for point in points:
            data = point.get("customdata")
            if isinstance(data, dict):
                data = [data.get("0"), data.get("1")]
            if isinstance(data, (list, tuple)) and len(data) >= 2 and None not in data[:2]:
                return int(data[0]), int(data[1])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


def picked_patch(chip, token, n_chips: int, n_tokens: int) -> tuple[int, int] | None:
    """The embedding map's picked (chip, token) from session state, checked: None when no chip
    is picked or it is not one of the `n_chips` chips (the chips changed since); a token that is
    not one of the chip's `n_tokens` is token 0."""
    if not (isinstance(chip, int) and 0 <= chip < n_chips):
        return None
    return chip, token if isinstance(token, int) and 0 <= token < n_tokens else 0


def neighbours(value: dict, chip: int, token: int) -> list[dict]:
    """"Chips like this one" for the clicked patch (inspect_model.patch_neighbours): each with
    its nearest patch, that patch's label and the similarity, best first."""
    return im.patch_neighbours(value, chip, token)


def class_shares(chips: ChipSet, chip: int, top: int = 2) -> str:
    """'tree 94 %, water 6 %': the `top` largest patch-label shares of one chip (no-data
    patches named as such), what a neighbour's caption compares with the clicked chip's."""
    labels = np.asarray(chips.patch_labels[chip]).ravel()
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return ", ".join(f"{class_name(int(values[i]))} {counts[i] / labels.size:.0%}" for i in order)


def why_alike(chips: ChipSet, clicked: tuple[int, int], near: dict) -> str:
    """One neighbour's caption: its score and the two cosines it is the mean of, its patch nearest
    to the clicked one (token, class) and its class shares, e.g. 'chip 7 · 0.812 (patch 0.990,
    whole chip 0.634): token 12 (water, same class) nearest; tree 94%, water 6%'."""
    same = near["label"] == int(np.asarray(chips.patch_labels[clicked[0]]).ravel()[clicked[1]])
    return (f"chip {near['chip']} · {near['similarity']:.3f} (patch {near['patch']:.3f}, whole "
            f"chip {near['whole']:.3f}): token {near['token']} ({class_name(near['label'])}"
            f"{', same class' if same else ''}) nearest; {class_shares(chips, near['chip'])}")
