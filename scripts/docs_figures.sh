#!/usr/bin/env bash
# Remakes the README's pictures (docs/diff_chart.png, docs/spec_editor.png) from a real ComfyUI run with the
# seeded demo checkpoints: provisions what is missing, then runs scripts/docs_figures.py (arguments go to it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
if [[ -x scripts/browser.sh ]]; then bash scripts/browser.sh; fi
exec "$PYTHON" scripts/docs_figures.py "$@"
