#!/usr/bin/env bash
# Idempotent: makes sure Debian's Chromium (and its driver) is installed for the browser tests.
# Playwright is told to use /usr/bin/chromium (executable_path), so it never downloads a browser of its own.
# Does nothing when /usr/bin/chromium already exists.
set -euo pipefail
CHROMIUM="${ELEMENTAL_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
  exit 0
fi
echo "[browser] installing chromium + chromium-driver with apt-get" >&2
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq chromium chromium-driver >&2
[[ -x "$CHROMIUM" ]] || { echo "[browser] $CHROMIUM still missing after apt-get install" >&2; exit 1; }
echo "[browser] $("$CHROMIUM" --version 2>/dev/null || echo chromium installed)" >&2
