#!/usr/bin/env bash
# Set up SpatialAvatar for development and use: system libraries, .venv, torch, the package.
#
#   bash scripts/setup.sh
#
# Safe to run again: it installs only what is missing, and skips pip entirely when .venv's torch
# imports and pyproject.toml is unchanged since the last successful run.
#
# Environment:
#   SAVATAR_PYTHON      interpreter used to create .venv (default: python3; needs >= 3.11)
#   SAVATAR_TORCH_SPEC  what `pip install` gets when .venv has no torch yet (default: torch==2.13.0,
#                       the CPU build on our machines). Split on whitespace and passed to pip as is,
#                       so extra pip options may follow the requirement.
#                       A torch that already imports in .venv is always kept: GPU users install
#                       their CUDA build of torch into .venv first (see README), then run this.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.savatar-setup-stamp"
PIP_LOG="$VENV/setup-pip.log"
TORCH_SPEC="${SAVATAR_TORCH_SPEC:-torch==2.13.0}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- 1. system packages -------------------------------------------------------------------------
# Each entry lists Debian names that provide it ("a|b": first one the archive has; Debian 13
# renamed some libraries with a t64 suffix).
#   Mesa EGL/GL (moderngl headless and windowed, Dear PyGui, pyglet), Xvfb + xauth (headless runs,
#   xvfb-run), PortAudio (sounddevice), GLib (OpenCV / MediaPipe).
SYSTEM_PACKAGES=(
    libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0
    xvfb xauth
    "libportaudio2"
    "libglib2.0-0t64|libglib2.0-0"
    espeak-ng
)

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing_packages() {  # prints one entry (possibly "a|b") per line for entries with nothing installed
    local entry alt ok
    for entry in "${SYSTEM_PACKAGES[@]}"; do
        ok=0
        IFS='|' read -ra alts <<<"$entry"
        for alt in "${alts[@]}"; do
            if pkg_installed "$alt"; then ok=1; break; fi
        done
        [ "$ok" = 1 ] || printf '%s\n' "$entry"
    done
}

has_candidate() {
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

if command -v dpkg-query >/dev/null 2>&1; then
    mapfile -t MISSING < <(missing_packages)
    if [ "${#MISSING[@]}" -eq 0 ]; then
        say "system packages: all present"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "system packages missing: ${MISSING[*]}; installing with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || say "warning: apt-get update failed; trying the install anyway"
        TO_INSTALL=()
        for entry in "${MISSING[@]}"; do
            IFS='|' read -ra alts <<<"$entry"
            pick=""
            for alt in "${alts[@]}"; do
                if has_candidate "$alt"; then pick="$alt"; break; fi
            done
            TO_INSTALL+=("${pick:-${alts[-1]}}")
        done
        APT_LOG="$(mktemp)"
        if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${TO_INSTALL[@]}" >"$APT_LOG" 2>&1; then
            tail -n 30 "$APT_LOG" >&2
            die "apt-get install ${TO_INSTALL[*]} failed"
        fi
        rm -f "$APT_LOG"
        say "installed: ${TO_INSTALL[*]}"
    else
        say "warning: missing system packages (not root, so not installing them):"
        say "    sudo apt-get install ${MISSING[*]//|/ or }"
        say "continuing; the viewer, headless tests or audio may not work until they are installed"
    fi
else
    say "no dpkg here: make sure these (Debian names) or your system's equivalents are installed:"
    say "    ${SYSTEM_PACKAGES[*]//|/ or }"
fi

# --- 2. virtual environment ---------------------------------------------------------------------
check_python() {  # $1 = interpreter; fails unless it is Python >= 3.11
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

if [ ! -x "$PY" ]; then
    BASE_PY="${SAVATAR_PYTHON:-python3}"
    command -v "$BASE_PY" >/dev/null 2>&1 || die "no '$BASE_PY' found; install Python >= 3.11 (or set SAVATAR_PYTHON)"
    if ! check_python "$BASE_PY"; then
        die "SpatialAvatar needs Python >= 3.11, but '$BASE_PY' is $("$BASE_PY" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo unknown). Install a newer Python and point SAVATAR_PYTHON at it."
    fi
    say "creating .venv with $BASE_PY ($("$BASE_PY" --version 2>&1))"
    "$BASE_PY" -m venv "$VENV" || die "could not create .venv (see above; on Debian/Ubuntu the python3-venv package may be missing)"
else
    check_python "$PY" || die ".venv uses Python $("$PY" -c 'import platform; print(platform.python_version())'), but >= 3.11 is needed: remove .venv and run again"
fi

# --- 3. torch -----------------------------------------------------------------------------------
torch_version() { "$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null; }

FRESH_LOG=1  # the first pip call of a run starts a new log, later ones append
if TORCH_VERSION="$(torch_version)"; then
    say "torch $TORCH_VERSION already in .venv: keeping it"
else
    FRESH_LOG=0
    read -ra TORCH_ARGS <<<"$TORCH_SPEC"
    say "installing ${TORCH_ARGS[*]} into .venv (log: $PIP_LOG)"
    if ! "$PY" -m pip install -q "${TORCH_ARGS[@]}" >"$PIP_LOG" 2>&1; then
        tail -n 40 "$PIP_LOG" >&2
        die "pip install ${TORCH_ARGS[*]} failed (full log: $PIP_LOG)"
    fi
    TORCH_VERSION="$(torch_version)" || die "torch installed but does not import; see $PIP_LOG"
    say "torch $TORCH_VERSION installed"
fi

# --- 4. the package and its test and bench extras ---------------------------------------------------------
STAMP_WANT="pyproject=$(sha256sum pyproject.toml | cut -d' ' -f1) torch=$TORCH_VERSION python=$("$PY" -c 'import platform; print(platform.python_version())')"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]; then
    say "savatar and its dependencies: up to date (stamp matches)"
else
    say "installing savatar (editable) with the test and bench extras (log: $PIP_LOG)"
    rm -f "$STAMP"
    # Pin the torch that is there, so no dependency can upgrade or replace it (a GPU user's CUDA
    # build in particular). Its ">=" lower bound in pyproject.toml is satisfied by it.
    CONSTRAINT="$(mktemp)"
    trap 'rm -f "$CONSTRAINT"' EXIT
    printf 'torch==%s\n' "$TORCH_VERSION" >"$CONSTRAINT"
    [ "$FRESH_LOG" = 0 ] || : >"$PIP_LOG"
    if ! "$PY" -m pip install -q -c "$CONSTRAINT" -e ".[test,bench]" >>"$PIP_LOG" 2>&1; then
        tail -n 40 "$PIP_LOG" >&2
        die "pip install -e .[test,bench] failed (full log: $PIP_LOG)"
    fi
    [ "$(torch_version)" = "$TORCH_VERSION" ] || die "torch changed during the install ($(torch_version || echo broken)); see $PIP_LOG"
    printf '%s\n' "$STAMP_WANT" >"$STAMP"
    say "done"
fi

say "ready: torch $TORCH_VERSION; run .venv/bin/savatar-viewer, or bash scripts/test.sh"
