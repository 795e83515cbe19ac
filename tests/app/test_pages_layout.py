"""Issue 12.1: each page file stays layout only; its logic lives in bharateo/app/<page>.py.

A page may define functions only as `st.fragment`s (a part of its layout that reruns on its own)
and no classes; app.py may define `home`, the Home page st.navigation calls. Anything else a page
defines (callbacks, widget builders, state helpers) belongs in the app package, where it can be
imported and tested."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE_FUNCTIONS = {"app.py": {"home"}}  # a page function, not logic


def is_fragment(decorator: ast.expr) -> bool:
    """@st.fragment, @st.fragment(...) or @lesson_fragment (bharateo.app.lesson: a fragment that
    also writes the lesson's address)"""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fragment"
            or isinstance(target, ast.Name) and target.id == "lesson_fragment")


def page_logic(path: Path) -> list[str]:
    """Names of the top-level functions and classes `path` defines that are not layout."""
    allowed = PAGE_FUNCTIONS.get(path.name, set()) if path.parent == ROOT else set()
    out = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef):
            out.append(f"class {node.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name not in allowed and not any(map(is_fragment, node.decorator_list)):
                out.append(f"def {node.name}")
    return out


def test_page_files_define_no_logic_of_their_own():
    pages = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    assert len(pages) >= 6  # Home and the five pages
    found = {p.name: names for p in pages if (names := page_logic(p))}
    assert found == {}, f"logic in page files (move it to bharateo/app/<page>.py): {found}"


def test_the_check_sees_a_callback_but_not_a_fragment(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("import streamlit as st\n\n@st.fragment(run_every=1.0)\ndef live(): pass\n\n"
                    "@st.fragment\ndef panel(): pass\n\ndef on_click(): pass\n\nclass Knob: pass\n")
    assert page_logic(page) == ["def on_click", "class Knob"]
