"""The Chips page's logic: cutting the session's chips (with a progress bar), held-out choices,
the chip form's limits, chip selection, and the notebook's "patch tokens" view of one chip (token
mean RGB, token colour variance, one token's p x p x C values) with the tensor-shape journey
spelled out for that chip. The pictures themselves are drawn in bharateo/app/pictures.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from bharateo.data.geodesy import km_text, pixel_metres
from bharateo.app.state import CurrentModel
from bharateo.data.chips import (HOLDOUT_BLOCKS, MAX_CHIP_NODATA_FRACTION, ChipConfig, ChipSet,
                            build_chip_sets)
from bharateo.errors import BharatEOError
from bharateo.models.notebook import ModelConfig
from bharateo.data.roi import Roi
from bharateo.app.knobs import Knob, knob, offered_problem, value_problem
from bharateo.config.settings import settings_of
from bharateo.words import plural
from bharateo.data.worldcover import NODATA_HELP, NODATA_NAME, NUM_CLASSES, PALETTE_BANDS, class_name

def holdout_choices(roi_names: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Label -> (holdout_roi, holdout_block), 'none' first."""
    choices = {"none (all regions train)": (None, None)}
    for name in roi_names:
        choices[f"all of {name}"] = (name, None)
        for block in HOLDOUT_BLOCKS:
            choices[f"{name}: {block} half"] = (name, block)
    return choices


def holdout_label(config: ChipConfig, roi_names: list[str]) -> str:
    """The choice label matching `config` (or 'none' when its ROI is gone)."""
    for label, value in holdout_choices(roi_names).items():
        if value == (config.holdout_roi, config.holdout_block):
            return label
    return next(iter(holdout_choices(roi_names)))


# The Chips form draws these ChipConfig settings (declared once in bharateo/data/chips.py), keyed by
# its widget keys, with capitalised labels and these changes: "Training chips", since the form
# counts held-out chips too, from 1 (a few chips are enough to look at; Train asks for 16, a
# batch), and a slider for min classes (1-8: nothing to type). Typed fields are checked on
# Build, never clamped (chip_field_problems).
CHIP_FORM = {"n_chips": "cfg_n", "chip_size": "cfg_size", "min_classes": "cfg_min",
             "seed": "cfg_seed", "n_holdout_chips": "cfg_n_holdout"}
CHIP_FORM_CHANGES = {
    "n_chips": dict(label="Training chips", low=1,
                    help="more than 4096 take too long to cut and train in a lesson"),
    "min_classes": dict(widget="slider")}


def chip_form_settings() -> dict[str, Knob]:
    """CHIP_FORM's settings as the Chips form shows them (app/knobs.py), in form order."""
    declared = {s.name: knob(s) for s in settings_of(ChipConfig) if s.name in CHIP_FORM}
    return {name: declared[name].changed(**{"label": declared[name].label.capitalize(),
                                             **CHIP_FORM_CHANGES.get(name, {})})
            for name in CHIP_FORM}


def chip_form_field(col, s: Knob, value, page_help: str = ""):
    """One Chips-form field in column `col`, drawn from its declaration (chip_form_settings:
    widget, label, range, step, help + `page_help`) starting at `value` -> the value it holds.
    Typed fields have no min/max: the browser would turn a bad value red and keep sending the
    last valid one, so a click would build chips nobody asked for; chip_field_problems checks
    them on Build instead."""
    kw = dict(key=CHIP_FORM[s.name], help=s.range_text + page_help)
    if s.widget == "number":
        return col.number_input(s.label, value=value, step=s.step, **kw)
    if s.widget == "select_slider":
        return col.select_slider(s.label, list(s.options), value=value, **kw)
    return col.slider(s.label, s.low, s.high, value, **kw)


def chip_field_help(key: str) -> str:
    """The tooltip of one of the Chips form's fields (a typed one: its allowed range and why)."""
    return chip_form_settings()[key].range_text


def chip_field_problems(values: dict) -> list[str]:
    """One sentence per invalid typed Chips field (empty: all fine), naming the field, the value
    typed and what is allowed (the setting's own check, then the form's range); a value is never
    replaced by another."""
    return [p for name, k in chip_form_settings().items()
            if k.typed and (p := _field_problem(k, k.coerce(values.get(name))))]


def _field_problem(k: Knob, value) -> str | None:
    """A Chips field's value: a typed field against its range (settings.problem's sentence with
    the form's label and range, within the setting's bounds); any other the science's sentence,
    then what the form offers."""
    return value_problem(k, value, new_run=False) or offered_problem(k, value)


# ChipConfig settings no page draws: every chip set a page cuts has their declared default
CHIP_FIXED = ("patch_size",)


def chip_config_problems(config: ChipConfig) -> list[str]:
    """What in `config` the Chips page could not have set (empty list: nothing), for a config
    from outside the form (a page address, a session's chips given to the Train page): each
    form field checked as the form checks it (_field_problem: the setting's own check, a typed
    field's range, a size the form offers, min classes on its slider), and each setting no page draws
    (CHIP_FIXED: the patch size) at its declared default; one sentence each."""
    problems = [p for name, k in chip_form_settings().items()
                if (p := _field_problem(k, getattr(config, name)))]
    for s in settings_of(ChipConfig):
        if s.name in CHIP_FIXED and getattr(config, s.name) != s.default:
            problems.append(f"**{s.label}** is {getattr(config, s.name)}: the Chips page cuts "
                            f"chips with {s.default} only.")
    return problems


def chips_stale(chips: ChipSet | None, rois: list[Roi]) -> bool:
    """True if the chips were cut from regions other than the ones chosen now."""
    return chips is not None and chips.roi_names != [r.spec.name for r in rois]


def chip_indices(chips: ChipSet, roi_name: str | None = None) -> list[int]:
    """Indices of the chips from `roi_name` (all chips when None)."""
    if roi_name is None:
        return list(range(len(chips)))
    if roi_name not in chips.roi_names:
        return []
    return np.flatnonzero(chips.roi_index == chips.roi_names.index(roi_name)).tolist()


def chip_caption(chips: ChipSet, i: int) -> str:
    return f"#{i} · {chips.roi_names[chips.roi_index[i]]}"


@dataclass
class TokenView:
    """The notebook's patch-token view of one chip of C = len(bands) input channels (palette
    RGB: C = 3, the token's colour)."""

    tokens: np.ndarray  # N x (C*p*p) float32, the model's input rows
    tokens_rgb: np.ndarray  # N x C x p x p (channel-major, as in a token)
    mean_rgb: np.ndarray  # N x C: each token's mean per channel (palette RGB: its mean colour)
    color_var: np.ndarray  # G x G: per-channel variance inside a token, averaged over channels
    grid: int
    patch: int
    bands: tuple[str, ...] = PALETTE_BANDS
    # reflectance chips: N x 3 x p x p of the chip's true colour picture, what the pictures show
    picture: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def channels(self) -> int:
        return len(self.bands)

    def rowcol(self, token: int) -> tuple[int, int]:
        return divmod(int(token), self.grid)


def token_view(chips: ChipSet, i: int) -> TokenView:
    """Tokens of chip i plus the notebook's token mean RGB and token colour variance (per
    channel of the chips' bands)."""
    tokens = chips.tokens([i])[0].numpy()
    p, g, c = chips.patch_size, chips.grid_size, chips.channels
    tokens_rgb = tokens.reshape(g * g, c, p, p)
    mean_rgb = tokens_rgb.mean(axis=(-1, -2))
    flat = tokens_rgb.reshape(g * g, c, p * p).astype(np.float64)
    color_var = flat.var(axis=-1, ddof=1).mean(axis=1).reshape(g, g)  # torch .var is unbiased
    from bharateo.data.reflectance import composite_bands

    picture = None
    if chips.pixels is not None and composite_bands(chips.bands, "true"):  # true colour, in tokens
        image = chips.picture(i, "true").transpose(2, 0, 1)
        picture = image.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, 3, p, p)
    return TokenView(tokens, tokens_rgb, mean_rgb, color_var, g, p, chips.bands, picture)


def source_caption(source: str) -> str:
    """One sentence on what a Sentinel-2 chip is ('' for WorldCover palette RGB)."""
    if source == "worldcover":
        return ""
    from bharateo.data.sources import pixel_source

    bands = pixel_source(source).bands
    return (f"{pixel_source(source).label}: the model reads {len(bands)} bands "
            f"({' '.join(bands)}) of real Sentinel-2 L2A reflectance, each normalised by the "
            "training chips' mean and standard deviation; a token holds "
            f"{len(bands)} × 16 × 16 = {len(bands) * 256:,} values. Cloud, cloud shadow and "
            "no-data pixels are no data (black). The patch labels are WorldCover, reprojected "
            "onto the scene's grid.")


def channel_label(band: str) -> str:
    """A token channel's tab label: 'R (red)' for a palette band, else the band's own name."""
    return f"{band[0].upper()} ({band})" if band in PALETTE_BANDS else band


def token_values(view: TokenView, token: int) -> dict[str, pd.DataFrame]:
    """Channel label (channel_label) -> p x p table of token `token`'s values in that band
    (rows u, columns v), 3 decimals, in channel order."""
    out = {}
    for c, name in enumerate(map(channel_label, view.bands)):
        values = np.round(view.tokens_rgb[token, c].astype(np.float64), 3)
        out[name] = pd.DataFrame(values, columns=[str(v) for v in range(view.patch)])
    return out


def token_class_mix(chips: ChipSet, i: int, token: int) -> list[tuple[int, int]]:
    """[(collapsed id, pixels)] inside token `token` of chip i, most pixels first (no-data, id
    NODATA_ID, among them)."""
    p, g = chips.patch_size, chips.grid_size
    r, c = divmod(int(token), g)
    block = chips.labels[i, r * p:(r + 1) * p, c * p:(c + 1) * p]
    counts = np.bincount(block.ravel(), minlength=NUM_CLASSES)
    return [(int(k), int(counts[k])) for k in np.argsort(-counts, kind="stable") if counts[k]]


def token_mix_text(chips: ChipSet, i: int, token: int) -> str:
    """'Pixels by class: built_up 180, tree 76 (of 256); the most frequent class is the label.'

    For a patch at least half no-data it says the label is no data, left out of losses and
    metrics (the no-data rule in bharateo/data/chips.py)."""
    mix = token_class_mix(chips, i, token)
    text = ("Pixels by class: " + ", ".join(f"{class_name(k)} {n}" for k, n in mix)
            + f" (of {chips.patch_size ** 2}); ")
    if token_label(chips, i, token) < 0:
        return text + (f"at least half is no data, so the patch label is {NODATA_NAME} "
                       f"({NODATA_HELP}).")
    land = [(k, n) for k, n in mix if k < NUM_CLASSES]
    text += "the most frequent " + ("land-cover class (no data never is)" if len(land) < len(mix)
                                    else "class") + " is the label"
    if len(land) > 1 and land[0][1] == land[1][1]:
        text += " (a tie goes to the class listed first in the legend)"
    return text + "."


def token_label(chips: ChipSet, i: int, token: int) -> int:
    g = chips.grid_size
    r, c = divmod(int(token), g)
    return int(chips.patch_labels[i, r, c])


def embed_dim_from_state(current: CurrentModel | None) -> tuple[int, str]:
    """(embed dim, where it came from) for the current model, else the notebook's default."""
    if current is not None and current.config is not None and current.config.model.embed_dim:
        return int(current.config.model.embed_dim), f"the current model, {current.label}"
    return ModelConfig().embed_dim, "the notebook's default; no model trained or loaded yet"


def shape_journey(chips: ChipSet, i: int, view: TokenView, embed_dim: int, embed_source: str,
                  token: int = 0, pixel_m: float | None = None) -> str:
    """Markdown: how chip i becomes the model's input, with this chip's numbers. `pixel_m`: metres
    per pixel of its region (regions.region_metres_by_name: a Sentinel-2 scene's own, e.g. 100 m);
    None: WorldCover's 1/12000 degree (about 9.2 m N-S)."""
    s, p, g, n = chips.chip_size, chips.patch_size, view.grid, view.n_tokens
    dim = view.tokens.shape[1]
    r0, c0 = (int(v) for v in chips.origins[i])
    roi = chips.roi_names[chips.roi_index[i]]
    classes = sorted(set(np.unique(chips.labels[i]).tolist()))  # NODATA_ID (255) sorts last
    lo, hi = float(view.tokens.min()), float(view.tokens.max())
    first = ", ".join(f"{v:.3f}" for v in view.mean_rgb[0])
    chosen = ", ".join(f"{v:.3f}" for v in view.mean_rgb[token])
    tr, tc = view.rowcol(token)
    c, bands = view.channels, view.bands
    if chips.pixels is None:  # palette RGB: the class ids are painted
        step_1 = (f"1. **{s} × {s}** class ids (classes here: "
                  f"{', '.join(class_name(k) for k in classes)}) are painted in the palette: the "
                  f"input tensor is **{c} × {s} × {s}** = {c * s * s:,} values, min {lo:.3f}, "
                  f"max {hi:.3f}.")
    else:
        step_1 = (f"1. **{s} × {s}** pixels of {c} bands ({', '.join(bands)}): the input tensor "
                  f"is **{c} × {s} × {s}** = {c * s * s:,} values, min {lo:.3f}, max {hi:.3f}.")
    order = f"all {bands[0]} values" + "".join(f", then {b}" for b in bands[1:])
    mean_of, variance = (("RGB", "colour variance") if chips.pixels is None else
                         (f"per band ({', '.join(bands)})", "variance"))
    return "\n".join([
        f"**Chip {i}** was cut from `{roi}` at rows {r0}–{r0 + s - 1}, columns {c0}–{c0 + s - 1} "
        f"of the region (about {km_text(s * (pixel_m or pixel_metres(0)[0]))} a side).",
        "",
        step_1,
        f"2. Patchify: cutting the chip into {g} × {g} patches of {p} × {p} px gives "
        f"**{n} × {dim}**: {n} tokens, each {c} channels × {p} × {p} px = {dim} values "
        f"({order}).",
        f"3. The linear patch embedding ({dim} → {embed_dim}) turns them into "
        f"**{n} × {embed_dim}**, the transformer's sequence (embed dim {embed_dim}: "
        f"{embed_source}).",
        f"4. The encoder keeps **{n} × {embed_dim}**; the pixel head maps each token back to "
        f"{dim} values and the patch head to {NUM_CLASSES} class scores: **{n} × {dim}** and "
        f"**{n} × {NUM_CLASSES}**.",
        "",
        f"First token's mean {mean_of}: ({first}); its {variance} "
        f"{float(view.color_var.flat[0]):.4f}. Selected token {token} (row {tr}, col {tc}): mean "
        f"{mean_of} ({chosen}), variance {float(view.color_var[tr, tc]):.4f}.",
    ])


# --- building the session's chips -------------------------------------------------------------
def build_session_chips(config: ChipConfig) -> None:
    """Cut chips from the session's regions with `config`, drawing a progress bar. On success the
    session's chip config and chips are replaced, a message is kept for the next run and the page
    reruns (so the sidebar and every widget see the new chips); on failure (ChipError ...) the
    reason is shown and the chips built before stay."""
    state = st.session_state
    what = (f"Sampling {config.n_chips} chips of {config.chip_size} px from "
            f"{plural(len(state.rois), 'region')}")
    bar = st.progress(0.0, text=f"{what}…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0), text=f"{what}: {done} of {total} chips")

    start = time.perf_counter()
    try:
        train, held = build_chip_sets(state.rois, config, progress)
    except BharatEOError as exc:
        bar.empty()
        st.error(f"No chips were built. {exc}"
                 + (" The chips below are the ones built before."
                    if state.train_chips is not None else ""))
        return
    bar.progress(1.0, text="done")
    state.chip_config, state.train_chips, state.heldout_chips = config, train, held
    rejected = train.rejected_nodata + (held.rejected_nodata if held is not None else 0)
    state.chips_message = (f"Built {len(train)} training"
                           + (f" + {len(held)} held-out" if held is not None else "")
                           + f" chips in {time.perf_counter() - start:.1f} s."
                           + (f" {rejected:,} candidate chips were drawn again because more "
                              f"than {MAX_CHIP_NODATA_FRACTION:.0%} of their pixels were no "
                              "data." if rejected else ""))
    st.rerun()
