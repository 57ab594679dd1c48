#!/usr/bin/env bash
# Issue 28 part 2, fourth run: the pipelined worker's CUDA graphs launched without waiting
# (`GpuInput::launch_prepared`; the finishing thread waits and reads the output back from
# page-locked memory) against the build before (each run waited for on the session's thread,
# its output read back there), ViT-B/16 and the DINOv2 classifier, patch MatMul + CUDA graphs,
# alternating twice; then ONNX Runtime's own run of the same files, which attention kernel it
# picks and the `sdpa_kernel` choices at 64, and PyTorch eager / torch.compile on the same
# machine. Carried beforehand (see README.md here): /tmp/ortgpu (the CUDA build), /tmp/gb/{before,after}
# (gpu-bench, the two builds), /tmp/whl (transformers' wheels), /tmp/ct/dino16f2p.onnx
# (export_backbone.py --fuse --fp16 --patch-matmul of the shipped cut); this call carries
# .gpucheck/hf16 (the cut as a Hugging Face checkpoint, fp16, for the PyTorch side) and
# .gpucheck/bin/{before,after}.xz (gpu-bench of the two builds). The after build is also run
# with two workers (two sessions, each pipelined: one's replay runs while the other waits).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ct-out}
W=/tmp/ct
mkdir -p "$W" "$OUT"
STEPS=${STEPS:-vit,torch,engine,trace,ort}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
if [ ! -d /tmp/pylib/transformers ] && [ -d /tmp/whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/pylib /tmp/whl/*.whl
fi
if [ -d .gpucheck/hf16 ]; then rm -rf /tmp/hf16 && cp -r .gpucheck/hf16 /tmp/hf16; fi
if [ -d .gpucheck/bin ]; then
  mkdir -p /tmp/gb
  for b in before after; do xz -dc ".gpucheck/bin/$b.xz" > "/tmp/gb/$b" && chmod +x "/tmp/gb/$b"; done
fi
export PYTHONPATH=/tmp/ortgpu:/tmp/pylib LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1 HF_HUB_OFFLINE=1 DINO_HF=/tmp/hf16
py() { python3 experiments/cuda-transformers/explore.py "$1" "$W" 2>> "$OUT/$1.err" | tee -a "$OUT/$1.jsonl"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if step vit && [ ! -f "$W/vit16fp.onnx" ]; then
  py vit
  MODELS=vit16f py patch
fi
step torch && py torch
# shellcheck source=experiments/cuda-transformers/registry.sh
. experiments/cuda-transformers/registry.sh
mkdir -p "$W/reg"
# patch MatMul + CUDA graphs
{ entry vit "$W/vit16fp.onnx" "$VIT_IN" "graph = true" ""; entry dino "$W/dino16f2p.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD"; } > "$W/reg/models.toml"
mkdir -p "$W/reg2"
sed 's/^max_batch = 64$/max_batch = 64\nworkers = 2/' "$W/reg/models.toml" > "$W/reg2/models.toml"
if step engine; then
  for round in ${ROUNDS:-1 2}; do
    for build in ${BUILDS:-before after after-2w}; do
      reg=$W/reg
      [ "$build" = after-2w ] && reg=$W/reg2
      for m in ${ENGINE_MODELS:-vit dino}; do
        echo "## engine: $m, $build, round $round" | tee -a "$OUT/engine.md"
        timeout 150 "/tmp/gb/${build%-2w}" model "$reg" "$m" 1,8,64 2 2>> "$OUT/engine.err" | tee -a "$OUT/engine.md" \
          || echo "(failed: see engine.err)" | tee -a "$OUT/engine.md"
      done
    done
  done
fi
# where a batch of 64 goes in each build: the engine's per-batch trace lines, medians
if step trace; then
  for build in before after; do
    for m in vit dino; do
      CASCADE_GPU_TRACE=1 timeout 120 "/tmp/gb/$build" model "$W/reg" "$m" 64 2 > /dev/null 2> "$OUT/trace-$build-$m.log" || true
      python3 - "$OUT/trace-$build-$m.log" "$build $m" <<'PY' | tee -a "$OUT/trace.md"
import re, statistics, sys
plain = (re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(sys.argv[1]))
rows = [dict(re.findall(r"(\w+)=(\d+)", l)) for l in plain if "gpu batch" in l and "rows=64" in l]
# the last line is a served batch's (warm-up lines come first and may carry other fields)
keys = [k for k in ("prep_us", "run_us", "launch_us", "wait_us", "read_us") if rows and k in rows[-1]]
print(f"{sys.argv[2]}: {len(rows)} batches of 64, medians " + ", ".join(f"{k} {statistics.median(int(r[k]) for r in rows if k in r)}" for k in keys))
PY
    done
  done
fi
if step ort; then
  # the same files through ONNX Runtime's Python API: IoBinding, device-resident input and output
  MODELS=vit16fp,dino16f2p SWEEP_OPTIONS=default SWEEP_GRAPH_OPTIONS=default py sweep
  # which attention kernel the fused Attention nodes run by default, then each `sdpa_kernel` at 64
  ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 python3 - "$W/vit16fp.onnx" <<'PY' 2>&1 | grep -i -m 4 -E "kernel|attention" | tee "$OUT/attention-kernel.txt" || true
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=[("CUDAExecutionProvider", {"device_id": "0"})])
i = s.get_inputs()[0]
s.run(None, {i.name: np.zeros((64, 3, 224, 224), np.float16)})
PY
  BATCHES=64 MODELS=vit16fp SWEEP_OPTIONS="sdpa flash,sdpa efficient,sdpa trt fused,sdpa cudnn flash" \
    SWEEP_GRAPH_OPTIONS="sdpa flash,sdpa efficient,sdpa trt fused,sdpa cudnn flash" py sweep
fi
echo "done"
