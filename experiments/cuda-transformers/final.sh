#!/usr/bin/env bash
# Issue 28 part 2 on the GPU machine, in one run: ViT-B/16 fp16 and the shipped DINOv2
# classifier through ONNX Runtime's CUDA provider (Python: a sweep of provider options, with and
# without CUDA graphs, and the patch Conv as a MatMul, patch_matmul.py) and through the engine
# (gpu-bench model, registry options), against
# PyTorch eager and torch.compile on the same inputs. Carried beforehand (README.md here):
# /tmp/ortgpu (the CUDA build); then /tmp/ct/dino16f2.onnx (export_backbone.py --fuse --fp16 of the
# shipped cut), /tmp/hf16 (the cut as a Hugging Face checkpoint, fp16 weights), transformers'
# wheels and gpu-bench: each may be carried with any call (.gpucheck/dino16, .gpucheck/hf16,
# .gpucheck/whl, .gpucheck/bin) and is copied under /tmp. STEPS picks a subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ct-out}
W=/tmp/ct
mkdir -p "$W" "$OUT"
STEPS=${STEPS:-vit,torch,sweep,patch,engine,profile,nvjpeg}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
if [ ! -d /tmp/pylib/transformers ] && [ -d .gpucheck/whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/pylib .gpucheck/whl/*.whl
fi
# carried files do not outlive their call: the engine's bench and the DINOv2 export move to /tmp
if [ -f .gpucheck/bin/gpu-bench ]; then cp .gpucheck/bin/gpu-bench /tmp/gpu-bench; fi
if [ -f .gpucheck/dino16/dino16f2.onnx ]; then cp .gpucheck/dino16/dino16f2.onnx "$W/dino16f2.onnx"; fi
if [ -d .gpucheck/jpegs ]; then rm -rf /tmp/jpegs && cp -r .gpucheck/jpegs /tmp/jpegs; fi
if [ -d .gpucheck/hf16 ]; then rm -rf /tmp/hf16 && cp -r .gpucheck/hf16 /tmp/hf16; fi
export PYTHONPATH=/tmp/ortgpu:/tmp/pylib LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1 HF_HUB_OFFLINE=1 DINO_HF=/tmp/hf16
export MODELS=vit16f,dino16f2 MODES=${MODES:-default}
py() { python3 experiments/cuda-transformers/explore.py "$1" "$W" 2> "$OUT/$1.err" | tee -a "$OUT/$1.jsonl"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step vit && { [ -f "$W/vit16f.onnx" ] || py vit; }
step torch && py torch
step sweep && py sweep
# the patch Conv as a MatMul, on the fused graphs: default options and NHWC, with and without graphs
if step patch; then
  py patch
  MODELS=vit16fp,dino16f2p SWEEP_OPTIONS="default,nhwc" py sweep
fi
# the engine's option sets: label|file suffix|registry `cuda = { … }`; ENGINE_OPTS=short keeps
# the defaults, CUDA graphs and the patch-MatMul files
ALL_OPTS=$(cat <<'OPTS'
engine defaults (heuristic conv search)||
exhaustive conv search||conv_search = "exhaustive"
exhaustive + NHWC||conv_search = "exhaustive", prefer_nhwc = true
exhaustive + flash attention||conv_search = "exhaustive", attention = ["flash"]
exhaustive + efficient attention||conv_search = "exhaustive", attention = ["efficient"]
exhaustive + cuDNN flash attention||conv_search = "exhaustive", attention = ["cudnn_flash"]
CUDA graphs||graph = true
exhaustive + CUDA graphs||graph = true, conv_search = "exhaustive"
patch Conv as MatMul, engine defaults|p|
patch Conv as MatMul, CUDA graphs|p|graph = true
OPTS
)
if step engine; then
  # the engine: one registry per option set, each model alone (gpu-bench model loads only it)
  # shellcheck source=experiments/cuda-transformers/registry.sh
  . experiments/cuda-transformers/registry.sh
  i=0
  while IFS='|' read -r label sfx opts; do
    i=$((i + 1))
    d="$W/reg$i"
    mkdir -p "$d"
    [ -f "$W/vit16f$sfx.onnx" ] || continue
    { entry vit "$W/vit16f$sfx.onnx" "$VIT_IN" "$opts" ""; entry dino "$W/dino16f2$sfx.onnx" "$DINO_IN" "$opts" "$DINO_HEAD"; } > "$d/models.toml"
    for m in vit dino; do
      echo "## engine: $m, $label" | tee -a "$OUT/engine.md"
      timeout 120 /tmp/gpu-bench model "$d" "$m" 1,8,64 2 2>> "$OUT/engine.err" | tee -a "$OUT/engine.md" || echo "(failed: see engine.err)" | tee -a "$OUT/engine.md"
    done
  done < <(if [ "${ENGINE_OPTS:-all}" = short ]; then grep -E '^(engine defaults|CUDA graphs|patch)' <<<"$ALL_OPTS"; else echo "$ALL_OPTS"; fi)
fi
step profile && py profile
# issue 28 part 3: nvJPEG (the toolkit's, else the first on the machine) against the server's CPU
# decoder at 256 in flight, and torchvision's batched GPU decode of the same files as a peer
if step nvjpeg; then
  { echo "## nvJPEG libraries on the machine"; find / -xdev -name 'libnvjpeg*.so*' 2>/dev/null | head -20; } | tee "$OUT/nvjpeg.md"
  lib=$(find /usr/local/cuda/ -name 'libnvjpeg.so*' 2>/dev/null | head -1)
  [ -n "$lib" ] || lib=$(find / -xdev -name 'libnvjpeg*.so*' 2>/dev/null | head -1)
  echo "## gpu-bench nvjpeg (CASCADE_NVJPEG=$lib)" | tee -a "$OUT/nvjpeg.md"
  CASCADE_NVJPEG=$lib timeout 300 /tmp/gpu-bench nvjpeg /tmp/jpegs 256 40 2>&1 | tee -a "$OUT/nvjpeg.md"
  echo "## torchvision" | tee -a "$OUT/nvjpeg.md"
  timeout 200 python3 experiments/cuda-transformers/tv_decode.py /tmp/jpegs 256 40 2>&1 | tee -a "$OUT/nvjpeg.md"
fi
echo "done"
