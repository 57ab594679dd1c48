#!/usr/bin/env bash
# Issue 16's CUDA collapse, measured: the shipped `accuracy` policy over HTTP at concurrency
# 1, 8, 32 and 128 on CUDA and on the CPU of the same host, distinct validator-style images
# (the stage cache off, so every request runs its models, as in the run that found it), with
# per-model runs, images and busy time, and per-batch GPU timings (CASCADE_GPU_TRACE=1:
# pack+upload+kernel, session run, read back). Runs on the GPU machine after
# `bash .ortgpu/p4/unpack`, with target/gpu-pack.tar.xz carried (scripts/gpu/pack.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/gpu-out}
P=/tmp/gpu
rm -rf "$P" && mkdir -p "$P" "$OUT"
tar -xJf target/gpu-pack.tar.xz -C "$P"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
CACHE_MB=${CACHE_MB:-0}
registry() {  # DEVICE
  local m=$P/models
  cat <<TOML
[[model]]
name = "roadwork"
kind = "classifier"
file = "$m/efficientnet_lite0.onnx"
output = "embedding"
head = "$P/models/roadwork-effnet.json"
activation = "sigmoid"
labels = ["other", "roadwork"]
positive = ["roadwork"]
input = { width = 224, height = 224, resize = "center_crop", resize_short = 256, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }
device = "$1"
max_batch = 64
max_delay_us = ${DELAY_US:-3000}
threads = ${THREADS:-4}

[[model]]
name = "ocr"
kind = "ocr"
file = "$m/ocr/ch_PP-OCRv4_det_infer.onnx"
device = "$1"
threads = 4
ocr = { rec = "$m/ocr/ch_PP-OCRv4_rec_infer.onnx", cls = "$m/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 480 }
TOML
}
for dev in cpu cuda:0; do
  d="$P/pol-${dev%%:*}"; mkdir -p "$d"
  registry "$dev" > "$d/models.toml"
  cp policies/accuracy.toml "$d/"
done
# cuda-unpinned: the batch shape follows each batch (CASCADE_GPU_STICKY_MS=0, as before the fix)
for run in ${RUNS:-cuda-unpinned cuda cpu}; do
  dev=${run%%-*}
  sticky=2000; [ "$run" = cuda-unpinned ] && sticky=0
  CASCADE_GPU_STICKY_MS=$sticky CASCADE_GPU_TRACE=1 "$P/bin/cascade" serve --listen 127.0.0.1:0 --policies "$P/pol-$dev" --components "$P/components" \
    --no-watch --stage-cache-mb "$CACHE_MB" > "$OUT/serve-$run.out" 2> "$OUT/serve-$run.log" &
  pid=$!
  for _ in $(seq 300); do grep -q listening "$OUT/serve-$run.out" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  url=$(sed -n 's/^listening on //p' "$OUT/serve-$run.out" | head -1)
  python3 - "$url" "$run" "$P/validator" <<'PY'
import glob, json, sys, time, urllib.request, concurrent.futures as cf
url, dev, d = sys.argv[1], sys.argv[2], sys.argv[3]
imgs = [open(p, "rb").read() for p in sorted(glob.glob(d + "/*.jpg"))]
def one(i):
    t = time.perf_counter()
    r = urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict/accuracy", data=imgs[i % len(imgs)], headers={"Content-Type": "image/jpeg"}))
    body = json.loads(r.read())
    return (time.perf_counter() - t) * 1e3, body["stage"]
def metrics():
    m = {}
    for l in urllib.request.urlopen(url + "/metrics").read().decode().splitlines():
        if l.startswith("cascade_model_") and "{" in l:
            k, v = l.rsplit(" ", 1); m[k] = float(v)
    return m
for i in range(8): one(i)
for c in (1, 8, 32, 128):
    n = max(64, c * 8)
    before = metrics()
    with cf.ThreadPoolExecutor(c) as ex:
        t = time.perf_counter(); res = list(ex.map(one, range(n))); took = time.perf_counter() - t
    after = metrics()
    lat = sorted(r[0] for r in res)
    stages = {}
    for _, s in res: stages[s] = stages.get(s, 0) + 1
    row = {"dev": dev, "concurrency": c, "n": n, "rps": round(n / took, 1), "p50_ms": round(lat[n // 2], 1), "p99_ms": round(lat[int(n * 0.99) - 1], 1), "stages": stages}
    for model in ("roadwork", "ocr"):
        runs = after.get(f'cascade_model_runs_total{{model="{model}"}}', 0) - before.get(f'cascade_model_runs_total{{model="{model}"}}', 0)
        items = after.get(f'cascade_model_items_total{{model="{model}"}}', 0) - before.get(f'cascade_model_items_total{{model="{model}"}}', 0)
        busy = after.get(f'cascade_model_busy_seconds_total{{model="{model}"}}', 0) - before.get(f'cascade_model_busy_seconds_total{{model="{model}"}}', 0)
        row[model] = {"runs": int(runs), "mean_batch": round(items / runs, 1) if runs else 0, "busy_ms_per_run": round(busy * 1e3 / runs, 2) if runs else 0}
    print(json.dumps(row), flush=True)
PY
  kill $pid; wait $pid 2>/dev/null || true
done
# where a CUDA batch's time goes
for run in cuda-unpinned cuda; do
[ -f "$OUT/serve-$run.log" ] || continue
echo "== $run"
python3 - "$OUT/serve-$run.log" <<'PY'
import re, sys
rows = []
for l in open(sys.argv[1]):
    if "gpu batch" in l:
        f = dict(re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", l)))
        rows.append({k: int(v) for k, v in f.items() if k in ("n", "rows", "prep_us", "run_us", "read_us")})
if not rows:
    print("no gpu batch lines"); sys.exit()
def pct(k, p):
    v = sorted(r[k] for r in rows); return v[min(len(v) - 1, int(len(v) * p))]
print(f"{len(rows)} CUDA batches; mean images {sum(r['n'] for r in rows) / len(rows):.1f}")
for k in ("prep_us", "run_us", "read_us"):
    print(f"  {k}: p50 {pct(k, .5)}  p90 {pct(k, .9)}  p99 {pct(k, .99)}  max {max(r[k] for r in rows)}")
by_rows = {}
for r in rows: by_rows.setdefault(r["rows"], []).append(r["run_us"])
for k in sorted(by_rows): v = sorted(by_rows[k]); print(f"  rows {k}: {len(v)} runs, run_us p50 {v[len(v)//2]}")
PY
done
grep -iE "warn|error" "$OUT/serve-cuda.log" | grep -v "gpu batch" | head -5 || true
