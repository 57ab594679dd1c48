#!/usr/bin/env bash
# Issue 28 part 2, fifth run: the engine's own operator `cascade.MatMulBiasGelu` (one cuBLASLt
# product with the bias and GELU in its epilogue, engines/src/gpu/gemm_gelu.rs) in place of
# ONNX Runtime's MatMul + BiasGelu (scripts/train/gemm_gelu.py), and the staging that uploads a
# batch piece by piece as it is written (engines/src/gpu/prep.rs), against main before them:
# ViT-B/16 (fused, patch MatMul, CUDA graphs) and, with STEPS=dino, the DINOv2 classifier.
# `prev` = gpu-bench of main before (e9559d9), `new` = with both changes; `vit`/`dino` are the
# files as before, `vitg`/`dinog` their rewrites, `vitg32` the rewrite with max_batch 32 (a
# group of 64 runs as two graphs of 32, the second staged while the first runs). Then the
# peers on the same machine: PyTorch eager and torch.compile per batch, and back to back at 64
# with ONNX Runtime's own run of the file (sustained.py).
# Carried beforehand: /tmp/ortgpu (the CUDA build, ../../shared/tools/ort-gpu-pack),
# /tmp/gb/{prev,new} (from .gpucheck/bin/*.xz); for STEPS=dino, .gpucheck/c5/dino16f2p.onnx.
# Sixth run (the host side of a batch: staging on a pool of threads, the output widened with
# F16C, a big batch's rows finished on the pool): a run is BUILD:MODEL or BUILD:MODEL@THREADS,
# THREADS being CASCADE_HOST_THREADS (the pool's size, and the parts a batch's staging is split
# into; `prev` ignores it: four threads spawned per batch), e.g.
#   RUNS="prev:vitg new:vitg@4 new:vitg@8" TRACE_RUNS="prev:vitg new:vitg@8" STEPS=vit,engine,trace
# The trace step's medians are over the batches of 64 run one at a time (before gpu-bench's
# "sustained load from here", or the first ones of the log where a build does not print it).
# Seventh run: a run may end in +cached (CASCADE_GPU_STAGING=cached: staging in cached pinned
# memory instead of write-combined; only the build of dd01cc5 reads it: it did not help and was
# taken out), e.g. new:vitg@8+cached; the `torchhost` step times the
# PyTorch peers from the same kind of host images to host answers (explore.py torchhost); the
# `dinopeers` step both peer kinds for the DINOv2 classifier, with transformers' wheels and the
# cut as an fp16 Hugging Face checkpoint carried in .gpucheck/c5/whl, .gpucheck/c6/{whl,hf16}
# (installed / copied under /tmp when present).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ct-out}
W=/tmp/ct
mkdir -p "$W" "$OUT" /tmp/gb
STEPS=${STEPS:-vit,engine,trace,torch}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
for f in .gpucheck/bin/*.xz; do  # prev, new and any other build carried
  b=$(basename "$f" .xz)
  if [ -f ".gpucheck/bin/$b.xz" ] && [ ! -x "/tmp/gb/$b" ]; then
    xz -dc ".gpucheck/bin/$b.xz" > "/tmp/gb/$b" && chmod +x "/tmp/gb/$b"
  fi
done
for d in .gpucheck/c5/whl .gpucheck/c6/whl; do
  if [ -d "$d" ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/pylib "$d"/*.whl; fi
done
if [ -d .gpucheck/c6/hf16 ]; then rm -rf /tmp/hf16 && cp -r .gpucheck/c6/hf16 /tmp/hf16; fi
if [ -f .gpucheck/c5/dino16f2p.onnx ]; then cp .gpucheck/c5/dino16f2p.onnx /tmp/dino16f2p.onnx; fi
export PYTHONPATH=/tmp/ortgpu:/tmp/pylib LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1 HF_HUB_OFFLINE=1
py() { python3 experiments/cuda-transformers/explore.py "$1" "$W" 2>> "$OUT/$1.err" | tee -a "$OUT/$1.jsonl"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if step vit && [ ! -f "$W/vit16fpg.onnx" ]; then
  [ -f "$W/vit16fp.onnx" ] || { py vit; MODELS=vit16f py patch; }
  python3 scripts/train/gemm_gelu.py "$W/vit16fp.onnx" "$W/vit16fpg.onnx" | tee -a "$OUT/rewrite.txt"
fi
if step dino && [ ! -f "$W/dino16f2pg.onnx" ]; then
  cp /tmp/dino16f2p.onnx "$W/dino16f2p.onnx"
  python3 scripts/train/gemm_gelu.py "$W/dino16f2p.onnx" "$W/dino16f2pg.onnx" | tee -a "$OUT/rewrite.txt"
fi
# shellcheck source=experiments/cuda-transformers/registry.sh
. experiments/cuda-transformers/registry.sh
mkdir -p "$W/reg"
{
  entry vit "$W/vit16fp.onnx" "$VIT_IN" "graph = true" ""
  entry vitg "$W/vit16fpg.onnx" "$VIT_IN" "graph = true" ""
  entry vitg32 "$W/vit16fpg.onnx" "$VIT_IN" "graph = true" "" | sed 's/^max_batch = 64$/max_batch = 32/'
  entry dino "$W/dino16f2p.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD"
  entry dinog "$W/dino16f2pg.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD"
  entry dinog32 "$W/dino16f2pg.onnx" "$DINO_IN" "graph = true" "$DINO_HEAD" | sed 's/^max_batch = 64$/max_batch = 32/'
} > "$W/reg/models.toml"
# a run BUILD:MODEL[@THREADS][+STAGING] as b, m, t and k
run_parts() {
  b=${1%%:*} m=${1#*:} t='' k=''
  if [[ $m == *+* ]]; then k=${m#*+} m=${m%+*}; fi
  if [[ $m == *@* ]]; then t=${m#*@} m=${m%@*}; fi
}
# build:model pairs in the order run, twice over
RUNS=${RUNS:-prev:vit new:vit new:vitg new:vitg32}
if step dino; then RUNS=${DINO_RUNS:-prev:dino new:dino new:dinog new:dinog32}; fi
if step engine || step dino; then
  for round in 1 2; do
    for r in $RUNS; do
      run_parts "$r"
      echo "## engine: $m, $b${t:+@$t}${k:++$k}, round $round" | tee -a "$OUT/engine.md"
      CASCADE_GPU_STAGING=$k CASCADE_HOST_THREADS=$t timeout 150 "/tmp/gb/$b" model "$W/reg" "$m" 1,8,64 2 2>> "$OUT/engine.err" | tee -a "$OUT/engine.md" \
        || echo "(failed: see engine.err)" | tee -a "$OUT/engine.md"
    done
  done
  # the rewrite answers as the original: the candidate pictures' lone answers, file against file
  python3 - "$OUT/engine.md" <<'PY' | tee -a "$OUT/agreement.md"
import json, re, sys
cur, lone = None, {}
for line in open(sys.argv[1]):
    m = re.match(r"## engine: (\S+), (\S+), round", line)
    if m:
        cur = f"{m.group(2)}:{m.group(1)}"
    elif line.startswith("lone answers") and cur:
        lone.setdefault(cur, json.loads(line.split(": ", 1)[1]))
base = {k.split(":")[1]: v for k, v in lone.items() if k.startswith("new:") and not k.endswith(("g", "g32"))}
for k, v in lone.items():
    net = k.split(":")[1].rstrip("32").rstrip("g")
    if net in base and k != f"new:{net}":
        d = max(abs(a - b) for x, y in zip(v, base[net]) for a, b in zip(x, y))
        print(f"{k} against new:{net}: largest difference over the 12 pictures' scores and top probabilities {d:.5f}")
PY
fi
# where a batch of 64 goes: staging (its copy, then upload and kernel), launch, wait, read
if step trace; then
  for r in ${TRACE_RUNS:-prev:vit new:vit new:vitg}; do
    run_parts "$r"
    tag=$b${t:+@$t}${k:++$k}
    CASCADE_GPU_STAGING=$k CASCADE_HOST_THREADS=$t CASCADE_GPU_TRACE=1 timeout 120 "/tmp/gb/$b" model "$W/reg" "$m" 64 2 \
      > "$OUT/trace-$tag-$m.out" 2> "$OUT/trace-$tag-$m.log" || true
    python3 - "$OUT/trace-$tag-$m.log" "$OUT/trace-$tag-$m.out" "$tag $m" <<'PY' | tee -a "$OUT/trace.md"
import re, statistics, sys
plain = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(sys.argv[1])]
# the batches of 64 run one at a time: up to gpu-bench's marker, or else the first 3 (warm-up)
# + as many as its table counts
cut = next((i for i, l in enumerate(plain) if "sustained load from here" in l), None)
table = [l for l in open(sys.argv[2]) if l.startswith("| ") and "| 64 |" in l]
count = int(table[0].split("|")[4]) + 3 if table else 0
def rows(kind):
    r = [dict(re.findall(r"(\w+)=(\d+)", l)) for l in (plain[:cut] if cut is not None else plain) if kind in l and ("rows=64" in l or "n=64" in l)]
    return r if cut is not None else r[:count]
def med(kind, keys):
    r = rows(kind)
    return f"{len(r)} × " + ", ".join(f"{k} {statistics.median(int(x[k]) for x in r if k in x)}" for k in keys if any(k in x for x in r))
p50 = table[0].split("|")[6].strip() if table else "?"
print(f"{sys.argv[3]}: model time p50 {p50} ms; batches {med('gpu batch', ('prep_us', 'launch_us', 'wait_us', 'read_us'))}; "
      f"staging {med('gpu prep', ('copy_us', 'prep_us'))}; answered {med('gpu answered', ('finish_us', 'total_us'))}")
PY
  done
fi
if step torch; then
  PEERS=vit py torch
  python3 experiments/cuda-transformers/sustained.py "$W/vit16fp.onnx" 2>> "$OUT/sustained.err" | tee -a "$OUT/sustained.jsonl"
fi
if step torchhost; then PEERS=vit py torchhost; fi
if step dinopeers; then
  export DINO_HF=/tmp/hf16
  PEERS=dino py torch
  PEERS=dino py torchhost
fi
