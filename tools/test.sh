#!/usr/bin/env bash
# Set up a fresh machine and run every test: Python packages, Debian's Chromium for the browser
# test (Playwright drives /usr/bin/chromium; it never downloads a browser), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
if [ ! -x /usr/bin/chromium ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m pytest -q "$@"
