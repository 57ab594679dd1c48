#!/usr/bin/env bash
# On the GPU machine (../shared/docs/GPU.md): after the ONNX Runtime CUDA build is unpacked in
# /tmp/ortgpu and the shipped DINOv2 cut joined in /tmp/dino (scripts/gpu/pack.sh says how),
# with transformers' wheels carried in .gpucheck/whl. STEPS picks explore.py's steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ct-out}
W=/tmp/ct
mkdir -p "$W" "$OUT"
if [ ! -d /tmp/pylib/transformers ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/pylib .gpucheck/whl/*.whl
fi
[ -f "$W/dinov2.onnx" ] || cp /tmp/dino/dinov2_vits14.onnx "$W/dinov2.onnx"
export PYTHONPATH=/tmp/ortgpu:/tmp/pylib LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
for s in ${STEPS:-models ort}; do
  echo "== $s"
  python3 experiments/cuda-transformers/explore.py "$s" "$W" 2>&1 | tee -a "$OUT/$s.log"
done
