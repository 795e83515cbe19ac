"""Every BHARATEO_* environment variable, declared once: its name, what it is for, its default,
the values it allows and the doc that explains it. This is the only module that reads them.

    STALL_S = variable("BHARATEO_STALL_S", Number(1, 86_400, unit="seconds"), 120.0, ...)
    environment.STALL_S.get()  # -> 120.0 unset, 3.0 for "3"; EnvironmentVariableError for "soon"

A variable is read each time its getter runs (never frozen at import), so a test that sets one
with monkeypatch sees it. Unset and empty (or only spaces) both mean the default.

One rule for a bad value, whatever the variable: `get()` raises EnvironmentVariableError (a
ConfigError) whose message has one shape,

    BHARATEO_STALL_S='soon' is not a number; it must be a number of seconds from 1 to 86,400.
    Change it, or unset it for the default (120 s); docs/operations.md explains it.

and the lab refuses to start on one: the CLI checks them all first (`check()`: exit 2, that
message, no traceback) and the app shows each as a note and stops (`problems()`), so nothing
downstream (a job thread, a training worker) ever meets a bad value. Kinds of bad value: not a
number, not a whole number, out of bounds, longer than MAX_CHARS, not a folder (a file is
there), not an http(s) address, not a host name. A source folder (BHARATEO_WORLDCOVER_DIR,
BHARATEO_S2_DIR) that does not exist yet is not refused here: its reader says so when a region
is read (it may be a drive plugged in later).

Variables that are not the lab's own (GDAL_*, torchrun's RANK / WORLD_SIZE / LOCAL_RANK,
PYTHONPATH for a worker) stay with the code that sets or reads them. docs/environment.md's table
is made from these declarations (markdown_table; tests/config/test_environment.py checks it).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from bharateo.errors import ConfigError

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the bharateo package
MAX_CHARS = 4096  # longest value read (PATH_MAX on Linux); a longer one is refused
_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class EnvironmentVariableError(ConfigError):
    """A BHARATEO_* variable holds a value the lab can't use; the message names the variable,
    the value, what is allowed, the default and the doc (module docstring)."""


class Bad(ValueError):
    """Raised by a kind's parse(): `problem` completes "<NAME>=<value> is ..."."""


class Kind(Protocol):
    """What a variable holds: Number, Folder, Url, Name or Hosts."""

    @property
    def allowed(self) -> str:
        """Completes "it must be ..." in a message, and the docs table's "Allowed"."""

    def parse(self, text: str) -> Any:
        """The typed value of stripped, non-empty `text`; Bad(problem) if it is not allowed."""


def _words(x: float) -> str:
    """1800 -> '1,800'; 0.5 -> '0.5'."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Number:
    """A number from `low` to `high` (both allowed); `whole`: an int; `none`: the word "none"
    (any case) is also allowed and reads as None (no limit)."""

    low: float
    high: float
    unit: str = ""
    whole: bool = False
    none: bool = False

    @property
    def allowed(self) -> str:
        what = "a whole number" if self.whole else "a number"
        unit = f" of {self.unit}" if self.unit else ""
        return (f"{what}{unit} from {_words(self.low)} to {_words(self.high)}"
                + (', or "none"' if self.none else ""))

    def parse(self, text: str):
        if self.none and text.lower() == "none":
            return None
        try:
            value = int(text) if self.whole and re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            raise Bad("not a number") from None
        if isinstance(value, float) and math.isnan(value):
            raise Bad("not a number")
        if self.whole and isinstance(value, float) and math.isfinite(value) \
                and not value.is_integer():
            raise Bad("not a whole number")
        if not self.low <= value <= self.high:
            raise Bad("out of bounds")
        return int(value) if self.whole else float(value)


@dataclass(frozen=True)
class Folder:
    """A folder's path (~ expanded; `resolve`: made absolute). A path where a file (or anything
    but a folder) is refused; a missing one is allowed (created, or reported by its reader)."""

    resolve: bool = False
    allowed: str = "the path of a folder"

    def parse(self, text: str) -> Path:
        path = Path(text).expanduser()
        try:
            there = path.exists() and not path.is_dir()
        except OSError:  # can't be looked at (no permission): its reader says what is wrong
            there = False
        if there:
            raise Bad("not a folder (a file is there)")
        return path.resolve() if self.resolve else path


@dataclass(frozen=True)
class Url:
    """An http:// or https:// address with a host; trailing slashes dropped."""

    allowed: str = "an http:// or https:// address"

    def parse(self, text: str) -> str:
        try:
            parts = urlsplit(text)
            host = parts.hostname
        except ValueError:
            raise Bad("not an http(s) address") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise Bad("not an http(s) address")
        return text.rstrip("/")


@dataclass(frozen=True)
class Name:
    """A short name: letters, digits, '.', '_' and '-', at most 100 characters."""

    allowed: str = "a name of letters, digits, '.', '_' and '-' (at most 100 characters)"

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
            raise Bad("not such a name")
        return text


@dataclass(frozen=True)
class Hosts:
    """Comma-separated host names (empty items skipped) -> a tuple of them."""

    allowed: str = "host names separated by commas (e.g. cogs.example.org,cdn.example.org)"

    def parse(self, text: str) -> tuple[str, ...]:
        hosts = tuple(h.strip() for h in text.split(",") if h.strip())
        if not all(_HOST.fullmatch(h) for h in hosts):
            raise Bad("not a list of host names")
        return hosts


def _shown(kind, text: str) -> str:
    """The value as a message quotes it: an address without its user:password or query (they may
    hold a secret), anything cut to 80 characters."""
    if isinstance(kind, Url):
        text = re.sub(r"//[^/@]*@", "//***@", text.split("?", 1)[0])
    return repr(text if len(text) <= 80 else text[:77] + "...")


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable of the lab; `get()` is its typed getter (module docstring)."""

    name: str
    kind: Kind
    default: T
    default_text: str  # the default as docs and messages say it
    meaning: str  # what it is for, one line
    doc: str  # the doc that explains it (a path from the repository root)
    read_in: tuple[str, ...]  # the modules that call get() (checked by tests/config/test_environment.py)

    def get(self) -> T:
        """The value now: the default when unset or blank, else the parsed value.
        EnvironmentVariableError for a value the kind refuses or longer than MAX_CHARS."""
        text = os.environ.get(self.name, "").strip()
        if not text:
            return self.default
        try:
            if len(text) > MAX_CHARS:
                raise Bad(f"longer than {MAX_CHARS:,} characters")
            return self.kind.parse(text)
        except Bad as bad:
            raise EnvironmentVariableError(self.message(text, str(bad))) from None

    def message(self, text: str, problem: str) -> str:
        """The one shape of every bad-value message (module docstring)."""
        return (f"{self.name}={_shown(self.kind, text)} is {problem}; it must be "
                f"{self.kind.allowed}. Change it, or unset it for the default "
                f"({self.default_text}); {self.doc} explains it.")


VARIABLES: dict[str, Variable] = {}


def variable(name: str, kind, default, default_text: str, meaning: str, doc: str,
             read_in: tuple[str, ...]) -> Variable:
    """Declare one variable (each name once; ValueError for a second declaration or a name
    without the BHARATEO_ prefix)."""
    if not name.startswith("BHARATEO_") or name in VARIABLES:
        raise ValueError(f"{name}: not a new BHARATEO_* name")
    VARIABLES[name] = var = Variable(name, kind, default, default_text, meaning, doc, read_in)
    return var


# --- where data and runs live ------------------------------------------------------------------
DATA_DIR = variable(
    "BHARATEO_DATA_DIR", Folder(), ROOT / "data", "data/ beside the bharateo package",
    "Folder of cached region reads and overviews (created when missing).", "docs/data.md",
    ("bharateo.data.cache",))
CHECKPOINT_DIR = variable(
    "BHARATEO_CHECKPOINT_DIR", Folder(), ROOT / "checkpoints",
    "checkpoints/ beside the bharateo package",
    "Folder of saved runs (created when missing).", "docs/operations.md",
    ("bharateo.storage.runfolder",))
WORLDCOVER_DIR = variable(
    "BHARATEO_WORLDCOVER_DIR", Folder(resolve=True), None,
    "none: tiles come from BHARATEO_WORLDCOVER_URL or ESA's bucket",
    "Folder of WorldCover tiles with their official names; wins over BHARATEO_WORLDCOVER_URL.",
    "docs/data.md", ("bharateo.data.worldcover",))
WORLDCOVER_URL = variable(
    "BHARATEO_WORLDCOVER_URL", Url(), None, "ESA's public bucket",
    "Address of a WorldCover mirror holding the tiles under their official names.",
    "docs/data.md", ("bharateo.data.worldcover",))
READ_TIMEOUT_S = variable(
    "BHARATEO_READ_TIMEOUT_S", Number(1, 3600, unit="seconds"), 30.0, "30 s",
    "Longest a whole region read may take (connect, requests, retries).", "docs/data.md",
    ("bharateo.data.deadline",))

# --- Sentinel-2 ------------------------------------------------------------------------------
S2_DIR = variable(
    "BHARATEO_S2_DIR", Folder(resolve=True), None, "none: scenes come from the STAC API",
    "Folder of Sentinel-2 scene folders (B02.tif ... SCL.tif); wins over the STAC API.",
    "docs/sentinel2.md", ("bharateo.data.sentinel2.scenes",))
S2_STAC_URL = variable(
    "BHARATEO_S2_STAC_URL", Url(), "https://earth-search.aws.element84.com/v1",
    "Element 84 Earth Search, https://earth-search.aws.element84.com/v1",
    "STAC API searched for Sentinel-2 L2A scenes.", "docs/sentinel2.md",
    ("bharateo.data.sentinel2.scenes",))
S2_COLLECTION = variable(
    "BHARATEO_S2_COLLECTION", Name(), "sentinel-2-l2a", "sentinel-2-l2a",
    "The STAC collection of Sentinel-2 L2A scenes.", "docs/sentinel2.md",
    ("bharateo.data.sentinel2.scenes",))
S2_ASSET_HOSTS = variable(
    "BHARATEO_S2_ASSET_HOSTS", Hosts(), (), "none besides Earth Search's COG bucket",
    "Hosts besides the catalogue's own that its band files may be read from.",
    "docs/untrusted-input.md", ("bharateo.data.sentinel2.scenes",))

# --- the server's trainings ------------------------------------------------------------------
MAX_TRAININGS = variable(
    "BHARATEO_MAX_TRAININGS", Number(1, 64, whole=True), 1, "1",
    "Trainings the server runs at once; later ones wait in line.", "docs/operations.md",
    ("bharateo.jobs.service",))
MAX_TRAINING_S = variable(
    "BHARATEO_MAX_TRAINING_S", Number(1, 604_800, unit="seconds", none=True), 1800.0,
    "1,800 s (30 min, half a lesson)",
    'Time budget of one training; "none" for no limit (a server of its own).',
    "docs/limits.md", ("bharateo.jobs.limits",))
STALL_S = variable(
    "BHARATEO_STALL_S", Number(1, 86_400, unit="seconds"), 120.0, "120 s",
    "Seconds a worker may send nothing and use no CPU before it is killed.",
    "docs/operations.md", ("bharateo.jobs.service",))
MEMORY_BYTES = variable(
    "BHARATEO_MEMORY_BYTES", Number(0, 10**15, unit="bytes", whole=True), None,
    "the free memory measured (MemAvailable, cgroup)",
    "Memory a training may use, instead of the measured free memory.", "docs/limits.md",
    ("bharateo.jobs.limits",))
WORKER_THREADS = variable(
    "BHARATEO_WORKER_THREADS", Number(1, 1024, whole=True), None, "the cores less one",
    "Torch threads of a training worker.", "docs/operations.md", ("bharateo.jobs.worker",))
WORKER_NICE = variable(
    "BHARATEO_WORKER_NICE", Number(0, 19, whole=True), 10, "10",
    "Added to a training worker's niceness, so the server answers first.", "docs/operations.md",
    ("bharateo.jobs.worker",))
DIST_TIMEOUT_S = variable(
    "BHARATEO_DIST_TIMEOUT_S", Number(1, 86_400, unit="seconds"), 300.0, "300 s",
    "Longest wait for another rank in one collective of a distributed training.",
    "docs/scale.md", ("bharateo.training.distributed",))


def problems() -> list[str]:
    """One message (module docstring) per BHARATEO_* variable set to a bad value; [] if none."""
    found = []
    for var in VARIABLES.values():
        try:
            var.get()
        except EnvironmentVariableError as exc:
            found.append(str(exc))
    return found


def check() -> None:
    """EnvironmentVariableError naming every bad BHARATEO_* value, one sentence each."""
    if found := problems():
        raise EnvironmentVariableError(" ".join(found))


def markdown_table() -> str:
    """docs/environment.md's table of every variable, made from the declarations."""
    rows = ["| Variable | What it is for | Default | Allowed | Read in | Explained in |",
            "|---|---|---|---|---|---|"]
    for v in VARIABLES.values():
        rows.append(f"| `{v.name}` | {v.meaning} | {v.default_text} | {v.kind.allowed} | "
                    f"{', '.join(f'`{m}`' for m in v.read_in)} | [{Path(v.doc).name}]"
                    f"({Path(v.doc).name}) |")
    return "\n".join(rows) + "\n"
