#!/usr/bin/env bash
# Runs every test of the pack: provisions what is missing (venv, ComfyUI, test checkpoints, Chromium for
# the browser tests), then pytest over tests/. Extra arguments go to pytest (e.g. -k merge, tests/unit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
source scripts/env.sh
echo "[test] python: $PYTHON" >&2
echo "[test] ComfyUI: $COMFYUI_DIR" >&2
"$PYTHON" -m devkit.checkpoints "$ELEMENTAL_CHECKPOINTS" >/dev/null
if [[ -x scripts/browser.sh ]]; then bash scripts/browser.sh; fi
echo "[test] provisioned in $(( $(date +%s) - start )) s" >&2
set +e
"$PYTHON" -m pytest -ra "$@"  # no path given: pytest.ini testpaths (tests/)
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
  exit 1
fi
echo "[test] finished in $(( $(date +%s) - start )) s with exit code $rc" >&2
exit $rc
