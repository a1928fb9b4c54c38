#!/usr/bin/env bash
# The GPU check (tests/gpu/README.md): bash tests/gpu/run.sh OUT_DIR [--cpu] [--size N] [--steps N] ...
# Uses COMFYUI_DIR and PYTHON when both are set (a ComfyUI 0.33 tree and a CUDA torch venv already there),
# else provisions through scripts/env.sh. Makes the seeded test checkpoints if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z "${COMFYUI_DIR:-}" || -z "${PYTHON:-}" ]]; then
  source scripts/env.sh
fi
export COMFYUI_PYTHON="${COMFYUI_PYTHON:-$PYTHON}"
export ELEMENTAL_CHECKPOINTS="${ELEMENTAL_CHECKPOINTS:-$HOME/.cache/comfyui-elemental-merge/checkpoints}"
"$PYTHON" -m devkit.checkpoints "$ELEMENTAL_CHECKPOINTS" >/dev/null
exec "$PYTHON" -m tests.gpu.run "$@"
