"""Paths the tests share, wherever a test file sits (tests/ for the science, tests/app/ for the
app): the repository, Home's script, and ../shared beside the project (read-only real data)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
SHARED = REPO.parent / "shared"
