#!/usr/bin/env bash
# Runs every test of the pack: provisions what is missing (venvs, ComfyUI trees, test checkpoints, Chromium
# for the browser tests), then pytest over tests/.
#
# With no arguments (what CI runs): the whole suite on ComfyUI 0.33.0, then the compatibility run on 0.3.75
# (`--compat`: the tests listed in tests/compat_selection.py). Both must pass.
# With arguments, or with COMFYUI_VERSION or COMFYUI_DIR set: one pytest run on that one ComfyUI (default
# 0.33.0), the arguments going to pytest (e.g. -k merge, tests/unit, --compat).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
PRIMARY=0.33.0
COMPAT=0.3.75

run_on() {  # $1: ComfyUI version ("" keeps COMFYUI_DIR / COMFYUI_VERSION as set); the rest goes to pytest
  local version="$1"; shift
  (
    set -euo pipefail
    [[ -n "$version" ]] && export COMFYUI_VERSION="$version"
    source scripts/env.sh
    echo "[test] python: $PYTHON" >&2
    echo "[test] ComfyUI $COMFYUI_VERSION: $COMFYUI_DIR" >&2
    "$PYTHON" -m devkit.checkpoints "$ELEMENTAL_CHECKPOINTS" >/dev/null
    if [[ -x scripts/browser.sh ]]; then bash scripts/browser.sh; fi
    echo "[test] provisioned in $(( $(date +%s) - start )) s" >&2
    set +e
    "$PYTHON" -m pytest -ra --durations=40 "$@"  # no path given: pytest.ini testpaths (tests/)
    rc=$?
    if [[ $rc -eq 5 ]]; then
      echo "[test] pytest collected no tests on ComfyUI $COMFYUI_VERSION: that is a failure" >&2
      rc=1
    fi
    echo "[test] ComfyUI $COMFYUI_VERSION finished at $(( $(date +%s) - start )) s with exit code $rc" >&2
    exit $rc
  )
}

if [[ $# -gt 0 || -n "${COMFYUI_DIR:-}" || -n "${COMFYUI_VERSION:-}" ]]; then
  set +e; run_on "" "$@"; rc=$?; set -e
else
  set +e
  run_on "$PRIMARY"; rc_primary=$?
  run_on "$COMPAT" --compat; rc_compat=$?
  set -e
  echo "[test] ComfyUI $PRIMARY (whole suite): exit $rc_primary; ComfyUI $COMPAT (--compat): exit $rc_compat" >&2
  rc=$(( rc_primary != 0 ? rc_primary : rc_compat ))
fi
echo "[test] finished in $(( $(date +%s) - start )) s with exit code $rc" >&2
exit $rc
