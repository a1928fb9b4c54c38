#!/usr/bin/env bash
# Runs the benchmark (issue 7) from the repository root: provisions like the tests (venv, ComfyUI, test
# checkpoints), then `python -m bench.run "$@"`. Output: one line per figure and a SUMMARY line, also
# written to bench/results/latest.txt (raw numbers in latest.json, worker logs next to them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
flock /tmp/elemental-heavy.lock "$PYTHON" -m devkit.checkpoints "$ELEMENTAL_CHECKPOINTS" >/dev/null
exec "$PYTHON" -m bench.run "$@"
