#!/usr/bin/env bash
# The training tools (scripts/train/): PyTorch, transformers, onnx and onnxruntime, pinned in
# scripts/train/requirements.txt, in .cache/train-venv, created once and reused (re-installed
# when the requirements change). About 5.7 GB on disk (PyTorch's CUDA wheels), ~2 min to install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/train-venv
REQ=scripts/train/requirements.txt
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating $VENV ($REQ)"
  python3 -m venv "$VENV"
  # no wheel cache: PyTorch's CUDA wheels would keep another 3 GB on disk
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$REQ"
  echo "$want" > "$STAMP"
fi
