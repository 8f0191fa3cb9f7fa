#!/usr/bin/env bash
# Install what is missing (scripts/setup.sh), then run the test suite: bash scripts/test.sh [PYTEST ARGS]
# Without a DISPLAY the tests run on a virtual X screen (xvfb-run), so the OpenGL / GUI tests work
# headless. Exits with pytest's exit code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

PYTEST=(.venv/bin/python -m pytest "$@")
status=0
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
    xvfb-run -a -s "-screen 0 1920x1080x24" "${PYTEST[@]}" || status=$?
else
    if [ -z "${DISPLAY:-}" ]; then
        echo "[test] warning: no DISPLAY and no xvfb-run (Debian package xvfb): tests needing a screen may skip or fail" >&2
    fi
    "${PYTEST[@]}" || status=$?
fi
exit "$status"
