"""The house's layers. The science (bharateo.config, data, models, storage, training), the job
service (bharateo.jobs) and the CLI import no Streamlit, plotly or folium and never the app
package bharateo.app; each package imports only its own modules and the packages below it
(LAYERS); no module imports itself back through others (no import circles, lazy imports
included); every package says its role in its opening docstring."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_PACKAGES = ("streamlit", "plotly", "folium", "streamlit_folium", "branca")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the bharateo package and its subpackages, dotted name -> file."""
    out = {}
    for path in sorted((root / "bharateo").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def science_modules(root: Path = ROOT) -> list[str]:
    """Every module outside the app package bharateo.app (science, job service, CLI), walking
    every subpackage."""
    return [n for n in module_files(root) if not n.endswith("__main__")
            and n != "bharateo.app" and not n.startswith("bharateo.app.")]


# Run in a fresh interpreter: a meta-path finder refuses the UI packages and the app package, so
# a science module that needs any of them fails to import, whatever was imported before it.
GUARDED_IMPORT = r"""
import importlib, json, sys
blocked, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])

class Refuse:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in blocked or name == "bharateo.app" or name.startswith("bharateo.app."):
            raise ImportError(f"{name} is blocked: the science layer must not import it")
        return None

sys.meta_path.insert(0, Refuse())
failed = {}
try:
    import streamlit  # the guard itself must work, or the test could not fail
    failed["(guard)"] = "streamlit imported despite the block"
except ImportError:
    pass
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_science_module_imports_without_the_app_or_ui_packages():
    modules = science_modules()
    assert "bharateo.cli" in modules and "bharateo.training.loop" in modules
    done = subprocess.run([sys.executable, "-c", GUARDED_IMPORT, json.dumps(UI_PACKAGES),
                           json.dumps(modules)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed == {}, "science modules that need the app or UI packages:\n" + "\n".join(
        f"  {name}: {why}" for name, why in failed.items())


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports anywhere (also inside functions), as dotted names;
    `from bharateo import app` counts as bharateo.app."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_science_module_imports_the_app_or_ui_packages_even_lazily():
    """A function-level import escapes the import test above until that function runs."""
    bad = {}
    for name in science_modules():
        path = module_files()[name]
        hits = sorted(n for n in imported_names(path)
                      if n.split(".")[0] in UI_PACKAGES or n == "bharateo.app"
                      or n.startswith("bharateo.app."))
        if hits:
            bad[name] = hits
    assert bad == {}, f"science modules importing app/UI code: {bad}"


# Bottom to top: a module may import its own package and anything in a lower layer. The base
# modules (errors, words, untrusted) sit under everything; the CLI and `python -m` on top.
LAYERS = (
    ("bharateo", "bharateo.errors", "bharateo.words", "bharateo.untrusted", "bharateo.files"),
    ("bharateo.config",),
    ("bharateo.data",),
    ("bharateo.models",),
    ("bharateo.storage",),
    ("bharateo.training",),
    ("bharateo.jobs",),
    ("bharateo.app",),
    ("bharateo.cli", "bharateo.__main__"),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that owns `module`. KeyError if none does."""
    best = None
    for i, owners in enumerate(LAYERS):
        for owner in owners:
            if (module == owner or module.startswith(owner + ".")) and (
                    best is None or len(owner) > len(best[1])):
                best = (i, owner)
    if best is None:
        raise KeyError(module)
    return best[0]


def lab_imports(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the lab modules it imports anywhere in its file (also inside functions)."""
    graph = {}
    for name, path in files.items():
        hits = set()
        for imported in imported_names(path):
            while imported and imported not in files:  # `from pkg import function` -> pkg
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                hits.add(imported)
        graph[name] = hits
    return graph


def test_every_module_belongs_to_a_layer_and_imports_only_down_or_level():
    files = module_files()
    assert {"bharateo.data.roi", "bharateo.jobs.service", "bharateo.app.train"} <= set(files)
    for name in files:
        layer_of(name)  # KeyError names a module outside every layer: add it to LAYERS
    upward = sorted(f"{name} (layer {layer_of(name)}) imports {dep} (layer {layer_of(dep)})"
                    for name, deps in lab_imports(files).items() for dep in deps
                    if layer_of(dep) > layer_of(name))
    assert upward == [], "imports that go up a layer:\n  " + "\n  ".join(upward)


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_import_circles_are_found():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = lab_imports(module_files())
    graph.pop("bharateo", None)  # the package's __init__ re-exports errors; not a circle
    assert import_circles(graph) == []


def test_every_package_says_its_role():
    import ast

    for name, path in module_files().items():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert len(doc.split()) >= 12, f"{name}: its __init__.py needs an opening docstring"
