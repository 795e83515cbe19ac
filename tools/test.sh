#!/usr/bin/env bash
# Set up a fresh machine and run every test: Python packages, Debian's Chromium for the browser
# test (Playwright drives /usr/bin/chromium; it never downloads a browser), then pytest.
# Each step prints what it is doing, so a run is never silent: pip names every package it checks
# or installs, and pytest prints a row of dots per 72 tests with its percentage.
# pytest runs in two processes (pytest-xdist, -n 2): the suite spends over half its wall time
# waiting (worker processes starting, Streamlit servers, the browser), so on 2 cores two
# processes finish in about half the time (docs/testing.md has the figures). Each process has
# its own session fixtures and temporary folders; tests share no files and no ports.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
START=$SECONDS

step "1/3 Python packages (requirements.txt; torch is the CPU build, about 200 MB the first time)"
python3 -m pip install --progress-bar off -r requirements.txt 2>&1 \
  | grep -vE '^\s*(Using cached|Downloading)|^(Collecting|Requirement already satisfied: ).*\(from [^-]|^WARNING: Running pip as' || true
python3 -c "import torch, streamlit, rasterio, playwright" \
  || { echo "A package failed to install: see pip's messages above." >&2; exit 1; }

step "2/3 Chromium for the browser test"
if [ -x /usr/bin/chromium ]; then
  echo "found /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
else
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  echo "installing Debian's chromium with apt-get (a few minutes)"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

step "3/3 tests (pytest in 2 processes; the slowest tests listed at the end)"
python3 -m pytest -n 2 --dist worksteal --durations=8 "$@"
step "done in $((SECONDS - START)) s"
