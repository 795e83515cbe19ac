"""Every BHARATEO_* environment variable is declared, read and checked in one module
(bharateo/config/environment.py): no other module reads one; a bad value of any kind gets one
message of one shape from every reader, the CLI (exit 2) and the app (a note); every variable is
in docs/environment.md's table, made from the declarations."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bharateo.config import environment
from bharateo.config.environment import (MAX_CHARS, VARIABLES, EnvironmentVariableError, Folder,
                                         Hosts, Name, Number, Url, Variable)
from bharateo.errors import ConfigError

from tests.support.paths import REPO  # noqa: E402

ROOT = REPO
ENVIRONMENT_PY = ROOT / "bharateo" / "config" / "environment.py"
# "BHARATEO_..." words that are no variable of the lab: the tag of the tests' fixture tiles, a
# switch of the browser test, a MIME boundary of a test server
NOT_VARIABLES = {"BHARATEO_SYNTHETIC_FIXTURE", "BHARATEO_UPDATE_SCREENSHOTS",
                 "BHARATEO_FIXTURE_BOUNDARY"}
SHAPE = re.compile(r"(BHARATEO_[A-Z0-9_]+)='[^']*' is [^;]+; it must be .+\. Change it, or unset "
                   r"it for the default \(.+\); docs/[\w.-]+\.md explains it\.")


def lab_files() -> list[Path]:
    """The lab's code: bharateo/ (every subpackage), app.py and pages/."""
    return sorted([*(ROOT / "bharateo").rglob("*.py"), ROOT / "app.py",
                   *(ROOT / "pages").glob("*.py")])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os") or \
        (isinstance(node, ast.Name) and node.id == "environ")


def _is_getenv(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "getenv") or \
        (isinstance(node, ast.Name) and node.id == "getenv")


def _env_key(node):
    """The key expression of an os.environ / os.getenv read at `node`, else None."""
    if isinstance(node, ast.Call) and node.args and (
            _is_getenv(node.func) or (isinstance(node.func, ast.Attribute)
                                      and node.func.attr in ("get", "pop", "setdefault")
                                      and _is_environ(node.func.value))):
        return node.args[0]
    if isinstance(node, ast.Subscript) and _is_environ(node.value) \
            and isinstance(node.ctx, ast.Load):
        return node.slice
    if isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
        return node.left
    return None


def environment_reads(path: Path) -> list[str]:
    """'line N: ...' for each read of os.environ / os.getenv in `path` whose key is a BHARATEO_
    name or not a constant (a helper handed the name, as jobs' _positive_seconds was), and for
    each declared variable's name handed to another function as an argument (such a helper)."""
    tree = ast.parse(path.read_text(), str(path))
    # in `for k in ("RANK", "WORLD_SIZE")` (a loop or comprehension), a read keyed k reads those
    names_of: dict[int, list] = {}
    for loop in ast.walk(tree):  # outer loops first, so an inner loop's names win
        gens = getattr(loop, "generators", None) or ([loop] if isinstance(loop, ast.For) else [])
        for gen in gens:
            if isinstance(gen.target, ast.Name) and isinstance(gen.iter, (ast.Tuple, ast.List)) \
                    and all(isinstance(e, ast.Constant) for e in gen.iter.elts):
                for node in ast.walk(loop):
                    key = _env_key(node)
                    if isinstance(key, ast.Name) and key.id == gen.target.id:
                        names_of[id(node)] = [e.value for e in gen.iter.elts]
    found = {}
    for node in ast.walk(tree):
        if (key := _env_key(node)) is not None:
            names = [key.value] if isinstance(key, ast.Constant) else names_of.get(id(node), [None])
            if any(not isinstance(n, str) or n.startswith("BHARATEO_") for n in names):
                found.setdefault(node.lineno, f"line {node.lineno}: os.environ read of "
                                              f"{ast.unparse(key)}")
        elif isinstance(node, ast.Call):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(arg, ast.Constant) and arg.value in VARIABLES:
                    found.setdefault(node.lineno, f"line {node.lineno}: {arg.value!r} handed to "
                                                  f"{ast.unparse(node.func)}")
    return [found[line] for line in sorted(found)]


def test_only_the_environment_module_reads_bharateo_variables():
    files = lab_files()
    assert ENVIRONMENT_PY in files and ROOT / "app.py" in files and len(files) > 50
    bad = {module_name(p): hits for p in files if p != ENVIRONMENT_PY
           for hits in [environment_reads(p)] if hits}
    assert bad == {}, "BHARATEO_* variables read outside bharateo/config/environment.py " \
                      "(call its getters):\n" + "\n".join(f"  {m}: {h}" for m, h in bad.items())


def test_the_walk_finds_each_way_of_reading_one(tmp_path):
    """The test above can fail: each pattern it must catch, caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom os import environ, getenv\n"
        "a = os.environ.get('BHARATEO_STALL_S', '1')\nb = os.environ['BHARATEO_DATA_DIR']\n"
        "c = os.getenv('BHARATEO_X')\nd = 'BHARATEO_S2_DIR' in environ\ne = getenv(name)\n"
        "f = helper('BHARATEO_MAX_TRAININGS')\n"
        "ok = (os.environ.get('PYTHONPATH'), 'WORLD_SIZE' in os.environ, {**os.environ},\n"
        "      'set BHARATEO_S2_DIR to a folder', 'BHARATEO_SYNTHETIC_FIXTURE',\n"
        "      'BHARATEO_S2_DIR' in message, [os.environ[k] for k in ('RANK', 'LOCAL_RANK')])\n"
        "g = [os.environ[k] for k in ('RANK', 'BHARATEO_STALL_S')]\n")
    assert [hit.split(":")[0] for hit in environment_reads(sample)] == \
        ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "line 12"]


def test_each_variable_is_read_in_the_modules_it_declares():
    """`read_in` (docs/environment.md's "Read in") is where `environment.<NAME>.get()` is called,
    so the table can't drift from the code; every declared variable is used."""
    attrs = {id(v): a for a, v in vars(environment).items() if isinstance(v, Variable)}
    assert len(attrs) == len(VARIABLES) >= 16
    used: dict[str, set[str]] = {v.name: set() for v in VARIABLES.values()}
    by_attr = {a: v for a, v in vars(environment).items() if isinstance(v, Variable)}
    for path in lab_files():
        if path == ENVIRONMENT_PY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "get" and \
                    isinstance(node.value, ast.Attribute) and node.value.attr in by_attr and \
                    isinstance(node.value.value, ast.Name) and node.value.value.id == "environment":
                used[by_attr[node.value.attr].name].add(module_name(path))
    assert used == {v.name: set(v.read_in) for v in VARIABLES.values()}


def test_values_are_read_when_asked_not_at_import(monkeypatch):
    monkeypatch.delenv("BHARATEO_STALL_S", raising=False)
    assert environment.STALL_S.get() == 120.0
    monkeypatch.setenv("BHARATEO_STALL_S", " 3 ")
    assert environment.STALL_S.get() == 3.0
    monkeypatch.setenv("BHARATEO_STALL_S", "")  # empty is unset
    assert environment.STALL_S.get() == 120.0
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "None")
    assert environment.MAX_TRAINING_S.get() is None
    monkeypatch.setenv("BHARATEO_MEMORY_BYTES", "3e8")
    assert environment.MEMORY_BYTES.get() == 300_000_000
    monkeypatch.setenv("BHARATEO_S2_ASSET_HOSTS", "cogs.example.org, ,cdn.example.org")
    assert environment.S2_ASSET_HOSTS.get() == ("cogs.example.org", "cdn.example.org")
    monkeypatch.setenv("BHARATEO_WORLDCOVER_URL", "https://mirror.example.org/wc/")
    assert environment.WORLDCOVER_URL.get() == "https://mirror.example.org/wc"


def bad_values(tmp_path) -> list[tuple[Variable, str, str]]:
    """(variable, bad value, the problem its message must name), each kind of bad value for every
    variable it applies to."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    out = []
    for v in VARIABLES.values():
        out.append((v, "x" * (MAX_CHARS + 1), "longer than"))
        if isinstance(v.kind, Number):
            k = v.kind
            out += [(v, "soon", "not a number"), (v, "nan", "not a number"),
                    (v, repr(k.low - 1), "out of bounds"), (v, repr(k.high + 1), "out of bounds"),
                    (v, "inf", "out of bounds")]
            if k.whole:
                out.append((v, "2.5", "not a whole number"))
        elif isinstance(v.kind, Folder):
            out.append((v, str(a_file), "not a folder"))
        elif isinstance(v.kind, Url):
            out += [(v, "ftp://u:secret@host/x", "not an http(s) address"),
                    (v, "earth-search.example.org", "not an http(s) address")]
        elif isinstance(v.kind, Hosts):
            out.append((v, "cogs.example.org, bad host", "not a list of host names"))
        elif isinstance(v.kind, Name):
            out.append((v, "sentinel 2", "not such a name"))
    return out


def test_every_kind_of_bad_value_gets_the_same_shape_of_message(tmp_path, monkeypatch):
    cases = bad_values(tmp_path)
    kinds = {problem for _, _, problem in cases}
    assert {"not a number", "out of bounds", "not a whole number", "not a folder",
            "not an http(s) address"} <= kinds and {v.name for v, _, _ in cases} == set(VARIABLES)
    for v, value, problem in cases:
        monkeypatch.setenv(v.name, value)
        with pytest.raises(EnvironmentVariableError) as e:
            v.get()
        msg = str(e.value)
        assert SHAPE.fullmatch(msg) and SHAPE.fullmatch(msg).group(1) == v.name, msg
        assert f" is {problem}" in msg and v.kind.allowed in msg and v.default_text in msg, msg
        assert "secret" not in msg and len(msg) < 600, msg  # credentials and huge values not echoed
        assert isinstance(e.value, ConfigError)
        assert environment.problems() == [msg]
        monkeypatch.delenv(v.name)
    assert environment.problems() == []


def readers() -> dict[str, object]:
    """Each variable's reader outside the environment module, called as the lab calls it."""
    from bharateo.data import cache, deadline, worldcover
    from bharateo.data.sentinel2 import scenes
    from bharateo.jobs import limits, service, worker
    from bharateo.storage import runfolder
    from bharateo.training import distributed

    return {"BHARATEO_DATA_DIR": cache.data_dir, "BHARATEO_CHECKPOINT_DIR": runfolder.checkpoint_root,
            "BHARATEO_WORLDCOVER_DIR": worldcover.data_source_from_env,
            "BHARATEO_WORLDCOVER_URL": worldcover.data_source_from_env,
            "BHARATEO_READ_TIMEOUT_S": deadline.read_timeout_s,
            "BHARATEO_S2_DIR": scenes.s2_source_from_env,
            "BHARATEO_S2_STAC_URL": scenes.s2_source_from_env,
            "BHARATEO_S2_COLLECTION": scenes.s2_source_from_env,
            "BHARATEO_S2_ASSET_HOSTS": scenes.s2_source_from_env,
            "BHARATEO_MAX_TRAININGS": service.max_trainings,
            "BHARATEO_MAX_TRAINING_S": limits.max_training_seconds,
            "BHARATEO_STALL_S": service.stall_seconds,
            "BHARATEO_MEMORY_BYTES": limits.available_bytes,
            "BHARATEO_WORKER_THREADS": worker.worker_threads,
            "BHARATEO_WORKER_NICE": worker.lower_priority,  # (os.nice patched by the caller)
            "BHARATEO_DIST_TIMEOUT_S": distributed.timeout_s}


def test_every_reader_refuses_a_bad_value_with_that_message(tmp_path, monkeypatch):
    """Before, a bad value fell back silently in five readers and raised in two, each in its own
    words: now each reader raises the declared message (BharatEOError: the CLI's exit 2, a page's
    note)."""
    from bharateo.errors import BharatEOError

    calls = readers()
    monkeypatch.setattr(os, "nice", lambda increment: 0)  # never renice the test process
    assert set(calls) == set(VARIABLES)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for v in VARIABLES.values():
        value = {Folder: str(a_file), Url: "ftp://host/x", Hosts: "a b", Name: "a b"}.get(
            type(v.kind), "soon")
        monkeypatch.setenv(v.name, value)
        with pytest.raises(BharatEOError) as e:
            calls[v.name]()
        with pytest.raises(EnvironmentVariableError) as declared:
            v.get()
        assert str(e.value) == str(declared.value) and SHAPE.fullmatch(str(e.value))
        monkeypatch.delenv(v.name)


def test_the_cli_stops_with_one_plain_message_and_exit_2(tmp_path):
    env = {**os.environ, "BHARATEO_STALL_S": "soon", "BHARATEO_DATA_DIR": str(ENVIRONMENT_PY)}
    done = subprocess.run([sys.executable, "-m", "bharateo", "tokens"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BHARATEO_"), done.stderr
    assert "BHARATEO_STALL_S='soon' is not a number" in lines[0]
    assert "BHARATEO_DATA_DIR=" in lines[0] and "is not a folder" in lines[0]


def test_the_app_shows_a_note_and_runs_nothing_else(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == [environment.MAX_TRAININGS.message("0", "out of bounds")]
    assert "docs/environment.md" in at.info[0].value and not at.title  # Home never drawn


def test_every_variable_is_in_the_docs_table_and_its_own_doc():
    doc = (ROOT / "docs" / "environment.md").read_text()
    assert environment.markdown_table() in doc, \
        "docs/environment.md's table differs from the declarations: run tools/environment_table.py"
    for v in VARIABLES.values():
        assert v.name in (ROOT / v.doc).read_text(), f"{v.doc} never names {v.name}"


def test_no_doc_or_message_names_an_undeclared_variable():
    """A renamed or removed variable leaves no trace in the docs, the README or the lab's own
    messages (the tile tag and the browser test's switch are not variables)."""
    texts = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", *lab_files()]
    named = {m: p.relative_to(ROOT).as_posix() for p in texts
             for m in re.findall(r"BHARATEO_[A-Z0-9_]*[A-Z0-9]", p.read_text())}
    stray = {m: at for m, at in named.items() if m not in VARIABLES and m not in NOT_VARIABLES}
    assert stray == {}
