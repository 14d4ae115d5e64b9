#!/usr/bin/env bash
# Set up (idempotent), lint, and run the test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report test opens the HTML page in headless Chromium (Debian's package; needs root or sudo).
if ! command -v chromium >/dev/null 2>&1; then
    echo "test: installing Debian's chromium for the report test"
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
