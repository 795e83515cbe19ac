"""The app's knob layer: how each declared setting (bharateo/config/settings.py: name, type,
bounds, a new run's limits, help) is drawn on the Train page and the Chips form, and the one
check of a value from a page or a lesson link.

DRAWN holds, by setting name, what only a page needs: its widget, its column on the Train page
(`group`), a slider's ends and step, a select slider's `options`, a number's step and format.
A setting with a group is a Train knob; a typed knob (widget "number") takes its range from the
setting's limits (what a new run accepts, the CLI's too) unless DRAWN narrows it.

One check per value, in this order, whatever door it comes through (the CLI runs the first two,
the Train page's form and the lesson link all three), so a value gets the same sentence
everywhere: (1) the science's check of the setting alone (settings.problem, with a new run's
limits); (2) the science's cross-field rules (RunConfig.validate: heads that divide the embed
dim, ...); (3) what the page offers (a slider's ends and steps, a select slider's options, a
select box's choices). Values are never replaced by others: the page blocks Train, the link
leaves the value out with a note.

Imports no other app module and no Streamlit (the modules above share it: no import circle),
and torch only when a knob is first listed (bharateo.training.experiment, lazily: the lesson
link's module imports this one, and Home's first paint waits for no torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from bharateo.config.schema import is_number
from bharateo.config.settings import (Setting, number_words, parse, problem, rebuilt,
                                      settings_of, value_text)
from bharateo.errors import BharatEOError

WIDGETS = ("number", "slider", "select_slider", "checkbox", "selectbox")
GROUPS = ("Dataset", "Model", "Objective", "Optimiser")  # the Train page's columns, in order
HOLDOUT_KNOBS = ("holdout_roi", "holdout_block")  # the held-out choice belongs to the dataset


@dataclass(frozen=True)
class Drawn:
    """How one setting is drawn. `low`/`high`: a slider's ends, or a typed field's range where it
    is narrower than the setting's limits; `section`: the RunConfig section whose setting of
    this name is the Train knob (seed: the training's, which fills the chips' too)."""

    widget: str
    group: str | None = None
    options: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    format: str | None = None
    section: str | None = None

    def __post_init__(self):
        if self.widget not in WIDGETS:
            raise ValueError(f"widget must be one of {WIDGETS}, not {self.widget!r}")
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, not {self.group!r}")


_SIZES = (32, 64, 96, 128, 192, 256)
DRAWN = {
    # Dataset (and the Chips form's fields)
    "n_chips": Drawn("number", "Dataset", step=16),
    "min_classes": Drawn("number", "Dataset", step=1),
    "holdout_roi": Drawn("selectbox", "Dataset"),
    "holdout_block": Drawn("selectbox", "Dataset"),
    "chip_size": Drawn("select_slider", options=(64, 128, 256)),
    "patch_size": Drawn("select_slider", options=(8, 16, 32)),
    "n_holdout_chips": Drawn("number", low=1, high=1024, step=16),
    "source": Drawn("selectbox"),
    # Model
    "arch": Drawn("selectbox", "Model"),
    "embed_dim": Drawn("select_slider", "Model", options=_SIZES),
    "depth": Drawn("slider", "Model", low=1, high=8),
    "heads": Drawn("select_slider", "Model", options=(1, 2, 4, 6, 8)),
    "decoder_dim": Drawn("select_slider", "Model", options=(16, *_SIZES)),
    "decoder_depth": Drawn("slider", "Model", low=1, high=4),
    "decoder_heads": Drawn("select_slider", "Model", options=(1, 2, 4, 8)),
    # Objective
    "mask_ratio": Drawn("slider", "Objective", low=0.05, high=0.95, step=0.05),
    "patch_loss_weight": Drawn("slider", "Objective", low=0.0, high=2.0, step=0.05),
    "class_weighting": Drawn("selectbox", "Objective"),
    "seed": Drawn("number", "Objective", step=1, section="train"),
    # Optimiser
    "lr": Drawn("number", "Optimiser", step=1e-4, format="%.1e"),
    "weight_decay": Drawn("number", "Optimiser", step=0.01),
    "epochs": Drawn("number", "Optimiser", step=1),
    "batch_size": Drawn("select_slider", "Optimiser", options=(4, 8, 16, 32, 64, 128)),
    "cosine": Drawn("checkbox", "Optimiser"),
    "precision": Drawn("selectbox", "Optimiser"),
    "device": Drawn("selectbox"),
}


@dataclass(frozen=True)
class Knob:
    """A declared setting as a page draws it: the science's Setting and its Drawn; `label` and
    `help` replace the setting's where a page words it otherwise (the Chips form)."""

    setting: Setting
    drawn: Drawn
    label_text: str | None = None
    help_text: str | None = None

    name = property(lambda self: self.setting.name)
    type = property(lambda self: self.setting.type)
    optional = property(lambda self: self.setting.optional)
    default = property(lambda self: self.setting.default)
    choices = property(lambda self: self.setting.choices)
    whole = property(lambda self: self.setting.whole)
    widget = property(lambda self: self.drawn.widget)
    group = property(lambda self: self.drawn.group)
    options = property(lambda self: self.drawn.options)
    step = property(lambda self: self.drawn.step)
    format = property(lambda self: self.drawn.format)

    @property
    def label(self) -> str:
        return self.label_text or self.setting.label

    @property
    def help(self) -> str:
        return self.help_text or self.setting.help

    @property
    def low(self):
        return self.drawn.low if self.drawn.low is not None else (self.setting.limits or (None,))[0]

    @property
    def high(self):
        return self.drawn.high if self.drawn.high is not None else \
            (self.setting.limits or (None, None))[1]

    @property
    def typed(self) -> bool:
        """A typed field: no min/max on the widget, checked by knob_problems instead (with
        min/max the browser turns a bad value red and keeps sending the last valid one)."""
        return self.widget == "number" and self.low is not None and self.high is not None

    @property
    def range_text(self) -> str:
        """'Whole number from 16 to 4,096: <help>.' (a tooltip), or the help alone."""
        if not self.typed:
            return self.help[:1].upper() + self.help[1:] + "."
        return (f"{'Whole number' if self.whole else 'Number'} from {number_words(self.low)} to "
                f"{number_words(self.high)}: {self.help}.")

    def coerce(self, value):
        return self.setting.coerce(value)

    def changed(self, **changes) -> "Knob":
        """This knob drawn otherwise: `label`, `help`, or Drawn's fields (widget, low, ...)."""
        own = {k: changes.pop(k) for k in ("label", "help") if k in changes}
        return replace(self, drawn=replace(self.drawn, **changes),
                       label_text=own.get("label", self.label_text),
                       help_text=own.get("help", self.help_text))


def knob(s: Setting) -> Knob:
    """Setting `s` as the pages draw it (KeyError for a setting no page draws)."""
    return Knob(s, DRAWN[s.name])


def knob_settings() -> dict[str, Knob]:
    """The Train page's knobs: every declared setting of RunConfig's sections that DRAWN puts in
    a column (`group`), by name, in field order. A knob fills every section with a field of that
    name (`seed` seeds both the chips and the training). Read at call time, so a setting added
    to a config class and to DRAWN is a knob at once."""
    from bharateo.training.experiment import SECTIONS

    out = {}
    for key, cls in SECTIONS.items():
        for s in settings_of(cls):
            drawn = DRAWN.get(s.name)
            if drawn is not None and drawn.group and drawn.section in (None, key):
                out[s.name] = Knob(s, drawn)
    return out


def knob_specs() -> dict[str, Knob]:
    """The knobs in the Train page's order: column by column (GROUPS), each in field order."""
    return dict(sorted(knob_settings().items(), key=lambda kv: GROUPS.index(kv[1].group)))


def knob_help(key: str) -> str:
    """A knob's tooltip: the allowed range of a typed knob and why, or what it does."""
    return knob_settings()[key].range_text


def knobs_from_config(config) -> dict:
    """Widget values for every knob of RunConfig `config` ("" for an empty optional choice: a
    selectbox can't show None). A section of an older class lacking a knob's field gives that
    knob's default."""
    from bharateo.training.experiment import SECTIONS

    knobs, drawn = {}, knob_settings()
    for key, cls in SECTIONS.items():
        section = getattr(config, key)
        for s in settings_of(cls):
            if s.name in drawn and drawn[s.name].setting.owner is cls:
                value = getattr(section, s.name, s.default)
                knobs[s.name] = "" if value is None and s.optional else value
    return knobs


def chip_knobs(chip_config, roi_names: list[str]) -> dict:
    """The dataset knobs of chips built on the Chips page, so training uses what was browsed."""
    chip_fields = {f.name for f in fields(chip_config)}
    knobs = {name: getattr(chip_config, name) for name in knob_settings() if name in chip_fields}
    holdout = chip_config.holdout_roi if chip_config.holdout_roi in roi_names else ""
    return {**knobs, "holdout_roi": holdout,
            "holdout_block": (chip_config.holdout_block or "") if holdout else ""}


def section_from_knobs(key: str, base, knobs: dict):
    """RunConfig section `key` (its class from SECTIONS): `base`'s values, then the knobs that
    name one of its fields, each as the field's type."""
    from bharateo.training.experiment import SECTIONS

    cls, settings = SECTIONS[key], knob_settings()
    names = {f.name for f in fields(cls)}
    return rebuilt(cls, base, {name: settings[name].coerce(value) for name, value in knobs.items()
                               if name in settings and name in names})


# --- the one check of a value from a page or a link ----------------------------------------------
def offered_problem(k: Knob, value, allowed=None) -> str | None:
    """Check (3): None when the page could have set `value` (already valid as science), else one
    sentence naming the knob, the value and what the page offers: a typed field a number within
    low..high (settings.problem's sentence with the field's label, help and range: the Chips
    form's differ from a new run's limits); a select slider one of its options; a select box
    one of its choices (or `allowed`, e.g. the session's region names for the held-out region;
    "" for an optional one); a slider a value on its steps between its ends."""
    label = f"**{k.label}**"
    if k.type is bool:
        return None
    if k.type is str:
        if allowed is None and k.choices is None:  # what the page offers is the page's to say
            return None
        options = list(allowed if allowed is not None else k.choices)
        if (value in ("", None) and k.optional) or value in options:
            return None
        return f"{label} is {value!r}: choose one of {', '.join(map(repr, options)) or 'the choices'}."
    if k.typed:  # the science's sentence, with this field's label, help and range
        return problem(replace(k.setting, label=k.label, help=k.help, limits=(k.low, k.high)),
                       value, new_run=True)
    if not is_number(value) or not math.isfinite(value):
        return f"{label} is {value_text(value)}, not a number."
    if k.options:
        if value not in k.options:
            return f"{label} is {value_text(value)}: choose one of {', '.join(map(str, k.options))}."
        return None
    if k.widget == "slider" and k.low is not None and k.high is not None:
        if not k.low <= value <= k.high:
            return (f"{label} is {value_text(value)}: the slider runs from {number_words(k.low)} "
                    f"to {number_words(k.high)}.")
        steps = (value - k.low) / k.step if k.step else 0
        if abs(steps - round(steps)) > 1e-6:
            return f"{label} is {value:g}: not on the slider's steps of {k.step:g}."
    return None


def value_problem(k: Knob, value, new_run: bool = True) -> str | None:
    """Check (1): settings.problem's sentence for the knob's value alone (with a new run's limits
    when `new_run`); a typed field is held to its own range (the Chips form's differ from a new
    run's limits), in the same words and with its own label."""
    return offered_problem(k, value) if k.typed else problem(k.setting, value, new_run)


def config_problem(knobs: dict) -> str | None:
    """Check (2): the science's cross-field rules (RunConfig.validate) of the config the knobs
    make, every other setting at its default: ConfigError's sentence, or None."""
    from bharateo.training.experiment import SECTIONS, RunConfig

    try:
        RunConfig(**{key: section_from_knobs(key, cls(), knobs)
                     for key, cls in SECTIONS.items()}).validate()
    except BharatEOError as exc:
        return str(exc)
    return None


def knob_problems(knobs: dict, allowed: dict | None = None) -> list[str]:
    """The Train page's check of its knobs (empty list: all fine): (1) each knob's science
    sentence (settings.problem with a new run's limits, the CLI's sentence too); if none, (2)
    the cross-field rules; if none, (3) what the page offers (offered_problem). `allowed`:
    name -> the values a select box offers beyond its declaration (the session's regions)."""
    settings = knob_settings()
    values = {name: settings[name].coerce(value) for name, value in knobs.items() if name in settings}
    if problems := [p for name, value in values.items()
                    if (p := value_problem(settings[name], value))]:
        return problems
    if p := config_problem(values):
        return [p]
    return [p for name, value in values.items()
            if (p := offered_problem(settings[name], value, (allowed or {}).get(name)))]


def from_text(k: Knob, raw, allowed=None, knobs: dict | None = None, new_run: bool = True):
    """Text from a page address -> the knob's value, accepted only if the page could have set it;
    a slider's value is put exactly on its step (0.8500000000000001 reads as 0.85). Checks in
    knob_problems' order: parse (settings.parse), (1) the setting alone, (2) the cross-field
    rules with the other `knobs` (when given), (3) what the page offers. `new_run`: (1) with a
    new run's limits (a Train knob), else the bounds (a Chips field: the form has its own range).
    Raises ValueError with the sentence to show (the science's sentences as the CLI shows them)."""
    try:
        value = parse(k.setting, raw)
    except BharatEOError as exc:
        raise ValueError(str(exc).rstrip(".")) from None
    if k.optional and value == "":
        return value
    if (p := value_problem(k, value, new_run)) \
            or (knobs is not None and (p := config_problem({**knobs, k.name: value}))) \
            or (p := offered_problem(k, value, allowed)):
        raise ValueError(p.rstrip("."))
    if k.widget == "slider" and k.step and k.type is float:
        value = round(k.low + round((value - k.low) / k.step) * k.step, 10)
    return value
