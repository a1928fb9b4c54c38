# Sourced by the test and demo scripts: provisions (idempotent) and exports PYTHON, COMFYUI_DIR and COMFYUI_VERSION.
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_out="$(bash "$_here/provision.sh")" || { echo "provisioning failed" >&2; exit 1; }
while IFS='=' read -r _k _v; do
  case "$_k" in PYTHON|COMFYUI_DIR|COMFYUI_VERSION) export "$_k=$_v" ;; esac
done <<<"$_out"
export COMFYUI_PYTHON="$PYTHON"
export ELEMENTAL_CACHE="${ELEMENTAL_CACHE:-$HOME/.cache/comfyui-elemental-merge}"
export ELEMENTAL_CHECKPOINTS="${ELEMENTAL_CHECKPOINTS:-$ELEMENTAL_CACHE/checkpoints}"
unset _here _out _k _v
