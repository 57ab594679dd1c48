#!/usr/bin/env bash
# Open question of the fifth run: the DINOv2 classifier rewritten to cascade.MatMulBiasGelu ran at
# 1 and 8 at the engine's speed without CUDA graphs, ViT-B/16's rewrite with them. This runs both
# DINOv2 files at 1 and 8 with the engines' log (CASCADE_GPU_TRACE=1: warnings, the fallback's
# reason, and each batch's trace line, whose launch_us marks a graph launched) and prints what
# matters. Carried beforehand: /tmp/ortgpu (the pack) and /tmp/gb/new (gemm.sh unpacks it), and
# .gpucheck/dino16f2p.onnx in this call.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/ct-out}
export PYTHONPATH=/tmp/ortgpu LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
W=/tmp/ct
mkdir -p "$W/reg" "$OUT"
[ -f "$W/dino16f2p.onnx" ] || cp .gpucheck/dino16f2p.onnx "$W/"
[ -f "$W/dino16f2pg.onnx" ] || python3 scripts/train/gemm_gelu.py "$W/dino16f2p.onnx" "$W/dino16f2pg.onnx"
# shellcheck source=experiments/cuda-transformers/registry.sh
. experiments/cuda-transformers/registry.sh
{
  entry dino "$W/dino16f2p.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD"
  entry dinog "$W/dino16f2pg.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD"
} > "$W/reg/models.toml"
for m in dinog dino; do
  CASCADE_GPU_TRACE=1 timeout 60 /tmp/gb/new model "$W/reg" "$m" 1,8 1 > "$OUT/$m.out" 2> "$OUT/$m.err"
  echo "== $m"
  grep "^|" "$OUT/$m.out"
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/$m.err" | grep -v "gpu batch\|gpu prep" | cut -c1-400 | head -20
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/$m.err" | grep "gpu batch" | grep "rows=1 " | tail -2 | cut -c1-300
done
