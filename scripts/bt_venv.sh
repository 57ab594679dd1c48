#!/usr/bin/env bash
# The real Python client for the interop tests: bittensor 9.12.2 (the version subnet 72 pins)
# in .cache/bt-venv, created once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/bt-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bittensor' 2>/dev/null; then
  echo "[setup] creating $VENV (bittensor==9.12.2)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'bittensor==9.12.2' 'async-substrate-interface==1.5.12'
fi
