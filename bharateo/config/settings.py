"""Each hyperparameter declared once, as science: a config dataclass field carrying its label,
type, hard bounds, help and CLI flag, from which the lab builds everything else.

    epochs: int = setting(20, label="epochs", bounds=(1, MAX_EPOCHS), limits=(1, 500),
                          help="a run needs at least one pass over its chips")

`setting(...)` is a `dataclasses.field` whose metadata feeds:
  - validation, one path for every value wherever it comes from (a CLI flag, a page's form, a
    lesson link, a run's config.json): `problem(setting, value)` is the one check of one value
    and its one sentence ("Mask ratio must be strictly between 0 and 1 (got 1.5): ...");
    `check_settings(config, what, prefix)` (each config's validate() calls it, then adds its
    cross-field rules) raises the first; `parse(setting, text)` reads text (a flag, a link) as
    the setting's type with the same kind of sentence;
  - the CLI: `add_flags(parser, cls)` makes `--n-chips` for `n_chips` (`--no-cosine` for a bool
    that defaults to True) on `train`, and on each other subcommand its `commands` name
    (`evaluate --mask-ratio`, `tokens --channels`); `from_args(cls, args)` reads back the ones
    given and `flag_problems(args, settings)` checks them (problem's sentences);
  - presets and config.json: plain dataclass values (`asdict`), as before.
How a setting is drawn (its widget, page column, a slider's ends, a select slider's options) is
the app's business: bharateo/app/knobs.py, keyed by these names.

Two ranges, because a new run and a saved run have different limits:
  bounds   what every config must satisfy before anything is built (epochs 1-100,000; a None
           end is open); `strict` excludes the ends (a mask ratio of 0 or 1);
  limits   what a new run accepts (`train` on the CLI and the Train page: epochs 1-500, so a
           run fits a lesson); None: the bounds. Checked with `problem(..., new_run=True)`.
`choices` are the only values allowed; `check` a function that is the setting's one check where
the science shares it beyond configs (the mask ratio's, models/masking.check_mask_ratio, which
evaluation and the token table call too): it replaces the bounds check and its sentence.
"""
from __future__ import annotations

import argparse
import math
import typing
from dataclasses import MISSING, dataclass, field, fields, replace

from bharateo.errors import ConfigError
from bharateo.config.schema import check_types, is_number

_KEY = "bharateo.setting"


@dataclass(frozen=True)
class Setting:
    """One declared hyperparameter (see the module docstring for the meaning of each part)."""

    name: str  # the dataclass field, the knob key and (with dashes) the CLI flag
    owner: type  # the config dataclass that declares it
    type: type  # int, float, bool or str
    optional: bool  # None allowed
    default: object
    label: str
    help: str
    bounds: tuple = (None, None)
    strict: bool = False
    limits: tuple | None = None  # what a new run accepts; None: the bounds
    choices: tuple | None = None
    check: typing.Callable | None = None  # the setting's own check (raises ConfigError)
    flag: str | None = None  # None: no CLI flag
    aliases: tuple = ()  # other spellings of the flag (`--model` for `--arch`)
    commands: tuple = ()  # (subcommand, its flag) for each subcommand besides train taking it
    live: bool = False  # may change while a training is paused (loop.changed_config)

    @property
    def whole(self) -> bool:
        return self.type is int

    def coerce(self, value):
        """A value as the field's type: "" is None for an optional field, a whole number's 48.0
        is 48. Range and type are checked later (problem, check_settings)."""
        if value == "" and self.optional:
            return None
        if self.type in (int, float) and is_number(value) and math.isfinite(value) \
                and (self.type is float or value == int(value)):  # 48.5 stays, problem says so
            return self.type(value)
        return value


def setting(default, *, label: str, help: str, bounds=None, strict: bool = False, limits=None,
            choices=None, check=None, flag: str | bool = True, aliases=(), commands=(),
            live: bool = False):
    """A dataclass field declaring one hyperparameter (see the module docstring).

    `bounds`: (low, high), a None end open; `limits`: (low, high) a new run accepts, within the
    bounds. `live`: the setting may change while a training is paused and the training goes on
    with it (loop.changed_config): only settings that change neither the model's shape nor the
    run's step plan (epochs, batch size, seed) may.

    `choices` may be a zero-argument function (a registry read when the settings are listed,
    e.g. the model variants). `flag`: True for `--<name-with-dashes>`, False for none (fields
    the lab sets itself, such as the model's image size), or the flag's text; `aliases`: other
    spellings of it. `train` takes every setting with a flag; `commands` names the other
    subcommands that take this one (`("evaluate", "tokens")`), or maps them to the flag it has
    there where that differs (`{"tokens": "--channels"}`).
    Raises ValueError for limits outside the bounds.
    """
    bounds = tuple(bounds) if bounds is not None else (None, None)
    if limits is not None:
        limits = tuple(limits)
        low, high = bounds
        if (low is not None and limits[0] < low) or (high is not None and limits[1] > high):
            raise ValueError(f"limits {limits} must lie within the bounds {bounds}")
    meta = dict(label=label, help=help, bounds=bounds, strict=strict, limits=limits,
                choices=choices, check=check, flag=flag, aliases=tuple(aliases),
                commands=tuple(commands.items() if isinstance(commands, dict) else
                               ((c, True) for c in commands)), live=live)
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


def _within(value, low, high, strict: bool = False) -> bool:
    if not (is_number(value) and math.isfinite(value)):
        return False
    above = low is None or (value > low if strict else value >= low)
    below = high is None or (value < high if strict else value <= high)
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


def limits_words(s: Setting) -> str:
    """'a whole number from 16 to 4,096': what a new run accepts (its limits, else its bounds)."""
    if s.limits is None:
        return _bounds_words(s)
    low, high = s.limits
    return (f"{'a whole number' if s.whole else 'a number'} from {number_words(low)} to "
            f"{number_words(high)}")


def value_text(value) -> str:
    """A value as a sentence quotes it: 5000 for 5000 or 5000.0 (as typed), 1.5, nan, 'abc'."""
    if isinstance(value, bool) or not is_number(value):
        return repr(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value) \
            and abs(value) < 2**63:
        return f"{int(value)}"
    return repr(value)


def problem(s: Setting, value, new_run: bool = False) -> str | None:
    """The one check of one value of setting `s`, for every way a value arrives (a CLI flag, a
    page's form, a lesson link, a run's config.json): None when it is allowed, else the one
    sentence naming the setting, what is allowed and the value ("Mask ratio must be strictly
    between 0 and 1 (got 1.5): at 0 ..."; "Chips must be a whole number from 16 to 4,096 (got
    5000): <why>"). Checked: None where the setting is optional; a bool for a bool; one of
    `choices`; the setting's own `check` (its ConfigError's sentence) in place of the bounds; a
    finite number of the right kind within the bounds, or with `new_run` within its limits
    (what a new run accepts: `train` on the CLI and the Train page)."""
    label = s.label[:1].upper() + s.label[1:]
    got = "nothing" if value is None else value_text(value)
    if value is None and s.optional:
        return None
    if s.type is bool:
        return None if isinstance(value, bool) else f"{label} must be on or off (got {got})."
    if s.check is not None:
        try:
            s.check(value)
        except ConfigError as exc:
            return str(exc)
        return None
    if s.choices is not None:
        if value in s.choices and isinstance(value, s.type):
            return None
        return f"{label} must be one of {', '.join(map(repr, s.choices))} (got {got})."
    if s.type is str:
        return None if isinstance(value, str) else f"{label} must be text (got {got})."
    use_limits = new_run and s.limits is not None
    low, high = s.limits if use_limits else s.bounds
    whole = not s.whole or (is_number(value) and math.isfinite(value) and value == int(value))
    if _within(value, low, high, s.strict and not use_limits) and whole:
        return None
    if use_limits:
        return f"{label} must be {limits_words(s)} (got {got}): {s.help}."
    kind = "a whole number " if s.whole and not whole and is_number(value) else ""
    return f"{label} must be {kind}{_bounds_words(s)} (got {got})."


def check_settings(obj, what: str, prefix: str = "", new_run: bool = False) -> None:
    """Raise ConfigError for the first declared setting of dataclass `obj` that is wrong: its
    type (schema.check_types' message: "The model setting 'embed_dim' must be a whole number,
    not '64' (str)."), else problem()'s sentence ("Model: Heads must be between 1 and 64 (got
    0)."; `prefix` names the section, e.g. "Model: "). `what`: the section in words, e.g.
    "model". `new_run`: check each setting's limits (a new run's), not only its bounds.
    Cross-field rules (an image size that is a multiple of the patch size, ...) stay in the
    config's validate()."""
    check_types(obj, what)
    if problems := setting_problems(obj, new_run):
        raise ConfigError(prefix + problems[0])


def setting_problems(obj, new_run: bool = False) -> list[str]:
    """problem()'s sentence for each declared setting of dataclass `obj` that is wrong (empty:
    all fine)."""
    return [p for s in settings_of(obj) if (p := problem(s, getattr(obj, s.name), new_run))]


MAX_TEXT = 64  # longest text a flag or a page address may give a setting (a region name)


def parse(s: Setting, raw) -> object:
    """Text from outside (a CLI flag, a page address) -> a value of the setting's type, not yet
    checked against its range (problem does that). Raises ConfigError with the one sentence:
    too long or not printable (MAX_TEXT), not on/off, not a number, not a whole number."""
    label = s.label[:1].upper() + s.label[1:]
    raw = str(raw).strip()
    if len(raw) > MAX_TEXT or not raw.isprintable():
        raise ConfigError(f"{label} must be at most {MAX_TEXT} printable characters.")
    if s.type is bool:
        if raw.lower() not in ("1", "0", "true", "false"):
            raise ConfigError(f"{label} must be on or off: 1 or 0 (got {raw!r}).")
        return raw.lower() in ("1", "true")
    if s.type is str:
        return raw
    try:
        return int(raw) if s.type is int else float(raw)
    except ValueError:
        kind = "a whole number" if s.type is int else "a number"
        raise ConfigError(f"{label} must be {kind} (got {raw!r}).") from None


def flag_settings(cls, command: str = "train") -> list[Setting]:
    """The declared settings of `cls` that subcommand `command` takes, each with its flag there:
    on `train` every setting with a flag (and its aliases), on another command those whose
    `commands` name it."""
    if command == "train":
        return [s for s in settings_of(cls) if s.flag]
    return [replace(s, flag=dict(s.commands)[command], aliases=())
            for s in settings_of(cls) if command in dict(s.commands)]


def _flag_type(s: Setting):
    """argparse's `type` for setting `s`: parse(), its sentence as argparse's message (exit 2)."""
    def read(text):
        try:
            return parse(s, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    read.__name__ = s.type.__name__
    return read


def add_flags(parser: argparse.ArgumentParser, cls, command: str = "train") -> list[Setting]:
    """One optional flag per setting of `cls` that `command` takes (flag_settings), with the
    declared type, help and range; returns those settings. On `train` (and `chips build`) a
    flag's default is None, "not given", so a preset's value stays; on the other commands, which
    start from no preset, it is the declared default. A flag already on `parser` (a name two
    sections share, such as `--seed` for the chips and the training) is added once and fills
    both. The text is read by parse() (`--epochs 2.5` exits 2 with its sentence); the range and
    choices are checked by problem(), as every other value is (check_settings on train,
    flag_problems on the other commands)."""
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
        allowed = (limits_words(s) if command == "train" else _bounds_words(s)) \
            if s.type in (int, float) else ""
        where = f" ({allowed}; default {s.default})" if allowed else f" (default {s.default})"
        metavar = ("{" + ",".join(map(str, s.choices)) + "}" if s.choices else
                   s.flag[2:].upper().replace("-", "_"))
        parser.add_argument(s.flag, *s.aliases, dest=s.name, type=_flag_type(s),
                            default=default, metavar=metavar, help=f"{s.label}{where}: {s.help}")
    return added


def flag_problems(args: argparse.Namespace, settings: list[Setting]) -> list[str]:
    """problem()'s sentence for each flag of `settings` (as add_flags returned them, for a
    command other than train) whose value in `args` is not allowed, after the flag ("--mask-
    ratio: Mask ratio must be strictly between 0 and 1 (got 1.5): ..."). Empty: all fine.
    A new run's narrower limits are train's alone: `tokens --epochs 800` counts a plan, it
    doesn't run one."""
    return [f"{s.flag}: {p}" for s in settings if (value := getattr(args, s.name)) is not None
            and (p := problem(s, value))]


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
