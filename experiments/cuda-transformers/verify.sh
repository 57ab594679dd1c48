#!/usr/bin/env bash
# The two CUDA-graph worker shapes on a GPU: pipelined (`pipeline` default; its runner thread
# captures the graphs at load) and unpipelined (`pipeline = false`: its own thread captures at
# warm-up, three runs a shape; not run on a GPU yet), ViT-B/16 and the DINOv2 classifier, two
# builds (`prev`, `new`: e.g. before and after a change to the warm-up), each answer checked by
# gpu-bench; the load line (time, device memory) from the engine's log. Carried beforehand:
# /tmp/ortgpu, and with this call .gpucheck/bin/{prev,new}.xz and .gpucheck/dino16f2p.onnx.
# MODELS_V / BUILDS_V pick a subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ct-out}
W=/tmp/ct
mkdir -p "$W" /tmp/gb "$OUT"
for b in prev new; do
  [ -f ".gpucheck/bin/$b.xz" ] && xz -dc ".gpucheck/bin/$b.xz" > "/tmp/gb/$b" && chmod +x "/tmp/gb/$b"
done
[ -f .gpucheck/dino16f2p.onnx ] && cp .gpucheck/dino16f2p.onnx "$W/"
export PYTHONPATH=/tmp/ortgpu LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
py() { python3 experiments/cuda-transformers/explore.py "$1" "$W" 2>> "$OUT/$1.err" > /dev/null; }
MODELS_V=${MODELS_V:-vit dino}
BUILDS_V=${BUILDS_V:-prev new}
if [[ " $MODELS_V " == *" vit "* ]] && [ ! -f "$W/vit16fp.onnx" ]; then py vit; MODELS=vit16f py patch; fi
# shellcheck source=experiments/cuda-transformers/registry.sh
. experiments/cuda-transformers/registry.sh
mkdir -p "$W/pipelined" "$W/plain"
for shape in pipelined plain; do
  opts="graph = true"
  [ "$shape" = plain ] && opts="graph = true, pipeline = false"
  { entry vit "$W/vit16fp.onnx" "$VIT_IN" "$opts" ""; entry dino "$W/dino16f2p.onnx" "$DINO_IN" "$opts" "$DINO_HEAD"; } > "$W/$shape/models.toml"
done
for shape in pipelined plain; do
  for build in $BUILDS_V; do
    for m in $MODELS_V; do
      echo "## $m, $shape, $build" | tee -a "$OUT/verify.md"
      CASCADE_GPU_TRACE=1 timeout 120 "/tmp/gb/$build" model "$W/$shape" "$m" 1,8,64 1 2> "$OUT/log-$shape-$build-$m.txt" \
        | grep -E "^\| $m |answers" | tee -a "$OUT/verify.md" || echo "(failed)" | tee -a "$OUT/verify.md"
      sed 's/\x1b\[[0-9;]*m//g' "$OUT/log-$shape-$build-$m.txt" | grep -E "model loaded|WARN|ERROR" | cut -c29- | tee -a "$OUT/verify.md"
      rm -f "$OUT/log-$shape-$build-$m.txt"
    done
  done
done
echo "done"
