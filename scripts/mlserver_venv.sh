#!/usr/bin/env bash
# The KServe v2 server the remote-engine tests run against: MLServer (Seldon) from PyPI, with
# ONNX Runtime for tests/kserve/onnx_runtime.py, in .cache/mlserver-venv, created once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/mlserver-venv
if [ ! -x "$VENV/bin/mlserver" ] || ! "$VENV/bin/python" -c 'import mlserver, onnxruntime' 2>/dev/null; then
  echo "[setup] creating $VENV (mlserver==1.7.1)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/kserve/requirements.txt
fi
