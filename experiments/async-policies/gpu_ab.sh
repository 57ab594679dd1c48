#!/usr/bin/env bash
# Policies called async (issue 28 part 4's change) on the GPU machine: one one-stage policy
# (the fp16 EfficientNet roadwork classifier on CUDA, batches up to 64) over HTTP, every
# request's bytes distinct (gpu-bench http), at 8, 64 and 256 in flight, with the binary before
# the change (bin/cascade-before: BEFORE=… scripts/gpu/pack.sh) and after it, alternating, twice.
# Runs after `bash .ortgpu/p4/unpack` (../shared/docs/GPU.md) with target/gpu-pack.tar.xz carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
unpack_pack
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cpu cores: $(nproc)" | tee -a "$OUT/gpu.txt"
python3 scripts/fp16.py "$P/models/efficientnet_lite0.onnx" "$P/roadwork16.onnx" 2>&1 | tail -1
d=$P/pol
mkdir -p "$d"
roadwork_model roadwork16 "$P/roadwork16.onnx" cuda:0 > "$d/models.toml"
rw_policy rw16 roadwork16 > "$d/rw16.toml"
for round in 1 2; do
  for bin in cascade-before cascade; do
    "$P/bin/$bin" serve --listen 127.0.0.1:0 --policies "$d" --components "$P/components" --no-watch > "$OUT/serve.out" 2> "$OUT/serve-$bin.log" &
    pid=$!
    for _ in $(seq 600); do grep -q listening "$OUT/serve.out" 2>/dev/null && break; sleep 0.2; done
    url=$(sed -n 's/^listening on //p' "$OUT/serve.out" | head -1)
    for c in 8 64 256; do
      r=$("$P/bin/gpu-bench" http "$url/v1/predict/rw16" "$P/validator" $c 6 || echo '{"failed": true}')
      echo "{\"bin\": \"$bin\", \"round\": $round, \"result\": $r}" | tee -a "$OUT/ab.jsonl"
    done
    kill $pid; wait $pid 2>/dev/null || true
  done
done
python3 - "$OUT/ab.jsonl" <<'PY' | tee "$OUT/ab.md"
import json, sys
print("| binary | round | in flight | requests/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for l in open(sys.argv[1]):
    r = json.loads(l); x = r["result"]
    if x.get("failed"):
        print(f"| {r['bin']} | {r['round']} | – | failed | | | |"); continue
    print(f"| {r['bin']} | {r['round']} | {x['concurrency']} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} |")
PY
