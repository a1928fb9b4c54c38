#!/usr/bin/env bash
# The main job: provision what is missing, start ComfyUI with the pack, queue the example elemental merge,
# print the image path and the UI's URL. Arguments go to scripts/demo.py (--models DIR, --port, --exit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -n "${COMFYUI_DIR:-}" ]] && export ELEMENTAL_USER_COMFYUI=1
source scripts/env.sh
exec "$PYTHON" scripts/demo.py "$@"
