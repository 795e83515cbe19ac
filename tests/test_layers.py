"""The two layers: `bharateo/` (science + CLI) imports no Streamlit, plotly or folium, and never
the app package `bharateo/app/`; the app builds on the science, not the other way round."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_PACKAGES = ("streamlit", "plotly", "folium", "streamlit_folium", "branca")


def science_modules(root: Path = ROOT) -> list[str]:
    """Every module directly in bharateo/ (not bharateo/app/), as dotted names."""
    names = sorted(p.stem for p in (root / "bharateo").glob("*.py") if p.stem != "__main__")
    return ["bharateo" if n == "__init__" else f"bharateo.{n}" for n in names]


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
    assert "bharateo.cli" in modules and "bharateo.train" in modules
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
    for path in sorted((ROOT / "bharateo").glob("*.py")):
        hits = sorted(n for n in imported_names(path)
                      if n.split(".")[0] in UI_PACKAGES or n == "bharateo.app"
                      or n.startswith("bharateo.app."))
        if hits:
            bad[path.name] = hits
    assert bad == {}, f"science modules importing app/UI code: {bad}"
