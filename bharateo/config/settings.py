"""Each hyperparameter declared once: a config dataclass field carrying its label, range, step
and help, from which the lab builds everything else.

    epochs: int = setting(20, label="epochs", low=1, high=500, bounds=(1, MAX_EPOCHS),
                          step=1, widget="number", group="Optimiser", help="...")

`setting(...)` is a `dataclasses.field` whose metadata feeds:
  - validation: `check_settings(config, what, prefix)` (each config's validate() calls it, then
    adds its cross-field rules): the field's type, its `choices` and its hard `bounds`, for a
    config typed on the CLI, built on a page or read back from a run's config.json;
  - the CLI: `add_flags(parser, cls)` makes `--n-chips` for `n_chips` (`--no-cosine` for a bool
    that defaults to True) on `train`, and on each other subcommand its `commands` name
    (`evaluate --mask-ratio`, `tokens --channels`); `from_args(cls, args)` reads back the ones
    given and `flag_problems(args, settings)` checks them against their declared range;
  - the app: the Train page draws one widget per setting that has a `group` (its column), the
    Chips page its fields; `range_problems` checks typed values against `low`..`high` with the
    sentences both the page and the CLI show (a value is never replaced by another);
  - presets and config.json: plain dataclass values (`asdict`), as before.
Adding a hyperparameter is this one field; nothing else lists it. `registered(registry, name,
what)` is the one lookup of a registry a setting's `choices` read (model variants, pixel sources).

Two ranges, because a lesson and a saved run have different limits:
  low..high  what the Train page offers: a slider's ends, or, for a typed field
             (widget "number"), the values Train and the CLI accept (epochs 1-500, so a run
             fits a lesson);
  bounds     what every config must satisfy before anything is built (epochs 1-100,000; a
             None end is open); `strict` excludes the ends (a mask ratio of 0 or 1). Default:
             low..high.
`choices` are the only values allowed (validated); `options` only what a select slider offers
(the CLI and config.json may use any value within bounds, e.g. embed dim 16 in tests).
"""
from __future__ import annotations

import argparse
import math
import typing
from dataclasses import MISSING, dataclass, field, fields, replace

from bharateo.errors import ConfigError
from bharateo.config.schema import check_types, is_number

WIDGETS = ("number", "slider", "select_slider", "checkbox", "selectbox")
GROUPS = ("Dataset", "Model", "Objective", "Optimiser")  # the Train page's columns, in order
_KEY = "bharateo.setting"


@dataclass(frozen=True)
class Setting:
    """One declared hyperparameter (see the module docstring for the meaning of each part)."""

    name: str  # the dataclass field, the knob key and (with dashes) the CLI flag
    owner: type  # the config dataclass that declares it
    type: type  # int, float, bool or str
    optional: bool  # None allowed (shown as "" in a select box)
    default: object
    label: str
    help: str
    low: float | None = None
    high: float | None = None
    bounds: tuple = (None, None)
    strict: bool = False
    step: float | None = None
    choices: tuple | None = None
    options: tuple | None = None
    widget: str | None = None
    group: str | None = None
    flag: str | None = None  # None: no CLI flag
    aliases: tuple = ()  # other spellings of the flag (`--model` for `--arch`)
    commands: tuple = ()  # (subcommand, its flag) for each subcommand besides train taking it
    format: str | None = None  # printf format of a typed field, e.g. "%.1e"
    live: bool = False  # may change while a training is paused (train.changed_config)

    @property
    def whole(self) -> bool:
        return self.type is int

    @property
    def typed(self) -> bool:
        """A typed field: no min/max on the widget, checked by range_problems instead (with
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
        """A widget's value as the field's type: "" is None for an optional field, a whole-number
        knob's 48.0 is 48. Range and type are checked later (range_problems, check_settings)."""
        if value == "" and self.optional:
            return None
        if self.type in (int, float) and is_number(value) and math.isfinite(value) \
                and (self.type is float or value == int(value)):  # 48.5 stays, check_types says so
            return self.type(value)
        return value


def setting(default, *, label: str, help: str, low=None, high=None, bounds=None,
            strict: bool = False, step=None, choices=None, options=None, widget: str | None = None,
            group: str | None = None, flag: str | bool = True, aliases=(), commands=(),
            format: str | None = None, live: bool = False):
    """A dataclass field declaring one hyperparameter (see the module docstring).

    `live`: the setting may change while a training is paused and the training goes on with it
    (train.changed_config): only settings that change neither the model's shape nor the run's
    step plan (epochs, batch size, seed) may.

    `choices` may be a zero-argument function (a registry read when the settings are listed,
    e.g. the model variants). `flag`: True for `--<name-with-dashes>`, False for none (fields
    the lab sets itself, such as the model's image size), or the flag's text; `aliases`: other
    spellings of it. `train` takes every setting with a flag; `commands` names the other
    subcommands that take this one (`("evaluate", "tokens")`), or maps them to the flag it has
    there where that differs (`{"tokens": "--channels"}`).
    Raises ValueError for a declaration the app can't draw (an unknown widget or group).
    """
    if widget is not None and widget not in WIDGETS:
        raise ValueError(f"widget must be one of {WIDGETS}, not {widget!r}")
    if group is not None and group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, not {group!r}")
    meta = dict(label=label, help=help, low=low, high=high,
                bounds=tuple(bounds) if bounds is not None else (low, high), strict=strict,
                step=step, choices=choices, options=tuple(options) if options else None,
                widget=widget, group=group, flag=flag, aliases=tuple(aliases),
                commands=tuple(commands.items() if isinstance(commands, dict) else
                               ((c, True) for c in commands)), format=format, live=live)
    return field(default=default, metadata={_KEY: meta})


def _base_type(hint) -> tuple[type, bool]:
    """(int, True) for `int | None`; (float, False) for `float`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), len(args) < len(typing.get_args(hint))


def settings_of(cls) -> list[Setting]:
    """The declared settings of config dataclass `cls` (or an instance), in field order."""
    cls = cls if isinstance(cls, type) else type(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if _KEY not in f.metadata:
            continue
        meta = dict(f.metadata[_KEY])
        if callable(meta["choices"]):
            meta["choices"] = meta["choices"]()
        meta["choices"] = tuple(meta["choices"]) if meta["choices"] is not None else None
        kind, optional = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        auto = f"--{'no-' if kind is bool and default else ''}{f.name.replace('_', '-')}"
        flag = auto if meta["flag"] is True else meta["flag"] or None
        commands = tuple((c, auto if text is True else text) for c, text in meta["commands"])
        out.append(Setting(name=f.name, owner=cls, type=kind, optional=optional, default=default,
                           **{**meta, "flag": flag, "commands": commands}))
    return out


def registered(registry: dict, name, what: str):
    """`registry[name]`, for a registry of named entries (the model variants, the pixel sources:
    what their settings' `choices` list). Raises ConfigError "Unknown <what> 'x': this lab has
    'a', 'b'. ..." for a name it lacks, also an unhashable one read from a config.json."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        known = ", ".join(f"'{n}'" for n in registry)
        raise ConfigError(f"Unknown {what} {name!r}: this lab has {known}. A run saved by a newer "
                          "version of the lab needs that version to load.") from None


def number_words(x) -> str:
    """A bound for reading: 4,096 for a whole number, 0.0001 / 1e-06 for a fraction."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1e4):
        return f"{int(x):,}"
    return f"{x:g}"


def _within(s: Setting, value) -> bool:
    low, high = s.bounds
    if not (is_number(value) and math.isfinite(value)):
        return False
    above = low is None or (value > low if s.strict else value >= low)
    below = high is None or (value < high if s.strict else value <= high)
    return above and below


def _bounds_words(s: Setting) -> str:
    low, high = s.bounds
    if low is not None and high is not None:
        return (f"{'strictly ' if s.strict else ''}between {number_words(low)} and "
                f"{number_words(high)}")
    if low is not None:
        return f"a finite number {'above' if s.strict else 'of'} {number_words(low)}" + \
            ("" if s.strict else " or more")
    if high is not None:
        return f"a finite number {'below' if s.strict else 'of'} {number_words(high)}" + \
            ("" if s.strict else " or less")
    return "a finite number"


def check_settings(obj, what: str, prefix: str = "") -> None:
    """Raise ConfigError for the first declared setting of dataclass `obj` that is wrong: its
    type (schema.check_types' message: "The model setting 'embed_dim' must be a whole number,
    not '64' (str)."), a value outside `choices`, or a number outside `bounds` ("Model: heads
    must be between 1 and 64 (got 0)."; `prefix` names the section, e.g. "Model: ", and the
    sentence starts with a capital). `what`: the section in words, e.g. "model".
    Cross-field rules (an image size that is a multiple of the patch size, ...) stay in the
    config's validate()."""
    check_types(obj, what)
    for s in settings_of(obj):
        value = getattr(obj, s.name)
        if value is None and s.optional:
            continue
        problem = None
        if s.choices is not None and value not in s.choices:
            problem = f"must be one of {', '.join(map(repr, s.choices))}"
        elif s.type in (int, float) and not _within(s, value):
            problem = f"must be {_bounds_words(s)}"
        if problem:
            text = f"{prefix}{s.label} {problem} (got {value!r})."
            raise ConfigError(text[:1].upper() + text[1:])


MAX_TEXT = 64  # longest text a page address may give a setting (a region name)


def _typed_text(value) -> str:
    return f"{int(value)}" if value == int(value) else f"{value:g}"  # 2147483648 as typed


def page_problem(s: Setting, value, label: str | None = None, allowed=None) -> str | None:
    """The one check of a value against what the pages can set, for every way a value arrives
    (a Train knob or Chips field, a page address, a CLI flag): None when a page could have set
    it, else one sentence naming the setting (`label`, default its bold label), the value and
    what is allowed. What a page can set: a typed field (Setting.typed) a number of the right
    kind within low..high; a select slider one of its `options`; a select box one of `choices`
    (or `allowed`, e.g. the session's region names for the held-out region; "" for an optional
    one); a slider a value on its steps from low to high; a checkbox True or False."""
    label = label or f"**{s.label}**"
    if s.type is bool:
        return None if isinstance(value, bool) else f"{label} is {value!r}: it is on or off."
    if s.type is str:
        options = list(allowed if allowed is not None else s.choices or ())
        if (value == "" or value is None) and s.optional:
            return None
        if value not in options:
            listed = ", ".join(map(repr, options)) or "the choices"
            return f"{label} is {value!r}: choose one of {listed}."
        return None
    if s.typed:
        allowed_text = (f"type a {'whole number' if s.whole else 'number'} from "
                        f"{number_words(s.low)} to {number_words(s.high)}")
        if value is None:  # an emptied field
            return f"{label} is empty: {allowed_text}."
        if not is_number(value) or not math.isfinite(value):  # NaN / inf: only from the CLI
            return f"{label} is {value}, not a number: {allowed_text}."
        if not s.low <= value <= s.high or (s.whole and value != int(value)):
            return f"{label} is {_typed_text(value)}: {allowed_text} ({s.help})."
        return None
    if not is_number(value) or not math.isfinite(value):
        return f"{label} is {value!r}, not a number."
    choices = s.options or s.choices
    if choices:
        if value not in choices:
            return f"{label} is {_typed_text(value)}: choose one of {', '.join(map(str, choices))}."
        return None
    if s.widget == "slider" and s.low is not None and s.high is not None:
        if not s.low <= value <= s.high:
            return (f"{label} is {_typed_text(value)}: the slider runs from {number_words(s.low)} "
                    f"to {number_words(s.high)}.")
        steps = (value - s.low) / s.step if s.step else 0
        if abs(steps - round(steps)) > 1e-6:
            return f"{label} is {value:g}: not on the slider's steps of {s.step:g}."
        return None
    if not _within(s, value):
        return f"{label} is {_typed_text(value)}: it must be {_bounds_words(s)}."
    return None


def from_text(s: Setting, raw: str, label: str | None = None, allowed=None):
    """Text from outside (a page address) -> the setting's value, accepted only if a page could
    have set it (page_problem); a slider's value is put exactly on its step (0.8500000000000001
    reads as 0.85). Raises ValueError with the sentence to show: not a number, not whole, too
    long or not printable (MAX_TEXT), or page_problem's."""
    label = label or f"**{s.label}**"
    raw = str(raw).strip()
    if len(raw) > MAX_TEXT or not raw.isprintable():
        raise ValueError(f"{label}: the text is too long or not printable")
    if s.type is bool:
        if raw.lower() not in ("1", "0", "true", "false"):
            raise ValueError(f"{label} is {raw!r}: expected 1 or 0")
        return raw.lower() in ("1", "true")
    if s.type is str:
        value = raw
    else:
        try:
            value = int(raw) if s.type is int else float(raw)
        except ValueError:
            raise ValueError(f"{label}: {raw!r} is not "
                             f"{'a whole number' if s.type is int else 'a number'}") from None
    if problem := page_problem(s, value, label, allowed):
        raise ValueError(problem.rstrip("."))
    if s.widget == "slider" and s.step and s.type is float:
        value = round(s.low + round((value - s.low) / s.step) * s.step, 10)
    return value


def range_problems(values: dict, settings: list[Setting], names: dict[str, str] | None = None
                   ) -> list[str]:
    """One sentence per typed setting (Setting.typed) whose value in `values` (keyed by setting
    name) is empty, not a number, not whole where it must be, or outside `low`..`high`
    (page_problem's sentences); the setting is named by `names` (e.g. CLI flags) or its bold
    label. Empty list: all fine."""
    problems = []
    for s in settings:
        if s.typed and (problem := page_problem(s, values.get(s.name), (names or {}).get(s.name))):
            problems.append(problem)
    return problems


def flag_settings(cls, command: str = "train") -> list[Setting]:
    """The declared settings of `cls` that subcommand `command` takes, each with its flag there:
    on `train` every setting with a flag (and its aliases), on another command those whose
    `commands` name it."""
    if command == "train":
        return [s for s in settings_of(cls) if s.flag]
    return [replace(s, flag=dict(s.commands)[command], aliases=())
            for s in settings_of(cls) if command in dict(s.commands)]


def add_flags(parser: argparse.ArgumentParser, cls, command: str = "train") -> list[Setting]:
    """One optional flag per setting of `cls` that `command` takes (flag_settings), with the
    declared type, choices, help and range; returns those settings. On `train` (and
    `chips build`) a flag's default is None, "not given", so a preset's value stays; on the other
    commands, which start from no preset, it is the declared default. A flag already on `parser`
    (a name two sections share, such as `--seed` for the chips and the training) is added once
    and fills both. Whole numbers parse as int, so `--epochs 2.5` is refused by argparse (exit 2)."""
    added = []
    for s in flag_settings(cls, command):
        if s.flag in parser._option_string_actions:
            continue
        added.append(s)
        default = None if command == "train" else s.default
        if s.type is bool:
            parser.add_argument(s.flag, *s.aliases, dest=s.name, action="store_const",
                                const=not s.default, default=default,
                                help=f"{'no ' if s.default else ''}{s.label}: {s.help}")
            continue
        allowed = (f"{number_words(s.low)} to {number_words(s.high)}"
                   if s.typed and command == "train" else
                   _bounds_words(s) if s.type in (int, float) else "")
        where = f" ({allowed}; default {s.default})" if allowed else f" (default {s.default})"
        parser.add_argument(s.flag, *s.aliases, dest=s.name, type=s.type, choices=s.choices,
                            default=default, metavar=None if s.choices else
                            s.flag[2:].upper().replace("-", "_"), help=f"{s.label}{where}: {s.help}")
    return added


def flag_problems(args: argparse.Namespace, settings: list[Setting]) -> list[str]:
    """One sentence per flag of `settings` (as add_flags returned them, for a command other than
    train) whose number in `args` is outside the setting's hard bounds, naming the flag ("--mask-
    ratio is 1.5: it must be strictly between 0 and 1 (...)."). Empty: all fine. The Train
    page's narrower low..high (a lesson's range) is train's alone: `tokens --epochs 800` counts
    a plan, it doesn't run one."""
    problems = []
    for s in settings:
        value = getattr(args, s.name)
        if s.type in (int, float) and value is not None and not _within(s, value):
            problems.append(f"{s.flag} is {value:g}: it must be {_bounds_words(s)} ({s.help}).")
    return problems


def from_args(cls, args: argparse.Namespace) -> dict:
    """{field: value} of the settings of `cls` given on the command line (flags left out are
    None and not included, so `dataclasses.replace(preset, **from_args(...))` keeps the rest)."""
    given = vars(args)
    return {s.name: given[s.name] for s in settings_of(cls) if given.get(s.name) is not None}


def rebuilt(cls, base, values: dict):
    """An instance of `cls` with `base`'s values for the fields both have, then `values`: a
    preset saved as one config class carried into another (a class with an extra setting)."""
    names = {f.name for f in fields(cls) if f.init}
    return cls(**{**{k: v for k, v in vars(base).items() if k in names}, **values})
