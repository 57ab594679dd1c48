#!/usr/bin/env bash
# Issue 16 on the GPU machine, one run, peers in the same run:
#  1. pipelining inside one worker: JPEG bytes -> score in process (gpu-bench e2e) at 8, 64 and
#     256 in flight, the fp16 EfficientNet roadwork model and the shipped DINOv2 classifier
#     (fp32), each without and with `cuda = { pipeline = true }`;
#  2. the shipped `accuracy` policy over HTTP at concurrency 1, 8, 32 and 128: CUDA with the
#     binary before this change (`bin/cascade-before`), CUDA after it (pipelined classifier,
#     bucketed OCR shapes), and the same host's CPU; twice: as shipped (most images exit at the
#     classifier) and with its exits removed, so every request reaches the zoom, OCR and the
#     detector. Every request's bytes are distinct (no cache answers), with per-model runs,
#     mean batch and busy time from /metrics, and per-batch CUDA timings (CASCADE_GPU_TRACE=1).
# Runs after `bash .ortgpu/p4/unpack` and the DINOv2 parts (scripts/gpu/pack.sh says how),
# with target/gpu-pack.tar.xz carried. RUNS / LOADS / LEVELS pick a subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
DINO=${DINO:-/tmp/dino/dinov2_vits14.onnx}
unpack_pack
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cpu cores: $(nproc)" | tee -a "$OUT/gpu.txt"
m=$P/models
cp policies/heads/roadwork.json "$m/"
echo "== fp16 EfficientNet (scripts/fp16.py)"
python3 scripts/fp16.py "$m/efficientnet_lite0.onnx" "$m/roadwork16.onnx" 2>&1 | tail -2

DINO_IN='{ width = 224, height = 224, resize = "center_crop", resize_short = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }'
# the accuracy policy's registry: DEVICE PIPELINE(true|false|absent) [OCR_DEVICE]
registry() {
  local extra
  if [ "$1" = cpu ]; then
    extra=$'workers = 4\nthreads = 4\nmax_batch = 16\nmax_delay_us = 2000'
  else
    extra=$'max_batch = 64\nmax_delay_us = 2000\nthreads = 4'
    [ "$2" != absent ] && extra+=$'\ncuda = { pipeline = '"$2"' }'
  fi
  classifier roadwork "$DINO" "$m/roadwork.json" "$DINO_IN" "$1" "$extra"
  local od=${3:-$1}
  echo
  ocr_model "$od" "$([ "$od" = cpu ] && echo 4 || echo 2)"
  echo
  detector_model "$1" "$([ "$1" = cpu ] && echo 4 || echo 2)"
}
policies() {  # DIR DEVICE PIPELINE [OCR_DEVICE]
  mkdir -p "$1"
  registry "$2" "$3" "${4:-}" > "$1/models.toml"
  # (the shipped calibration names the shipped head and hotkey: left out here)
  sed '/^calibration = /d' policies/accuracy.toml > "$1/accuracy.toml"
  # the same policy with no early exit: every request reaches zoom, OCR and the detector
  sed -e 's/^name = "accuracy"/name = "accuracy-all"/' -e '/^exit_low/d' -e '/^exit_high/d' -e '/^calibration = /d' policies/accuracy.toml > "$1/accuracy-all.toml"
}
policies "$P/pol-before" cuda:0 absent
policies "$P/pol-cuda" cuda:0 true
policies "$P/pol-cpu" cpu absent
# the classifier and detector on CUDA, OCR on the CPU cores (for hosts short of GPU memory)
policies "$P/pol-hybrid" cuda:0 true cpu

echo "== 1. pipelining inside one worker: in process, JPEG bytes -> score"
E="$OUT/e2e.jsonl"; : > "$E"
if [[ ",${STEPS:-e2e,http}," == *",e2e,"* ]]; then
  d="$P/pol-e2e"; mkdir -p "$d"
  for pipe in false true; do
    classifier "rw16-pipe-$pipe" "$m/roadwork16.onnx" "$P/models/roadwork-effnet.json" "$EFF_IN" cuda:0 $'max_batch = 64\nmax_delay_us = 2000\ncuda = { pipeline = '"$pipe"' }'
    classifier "dino-pipe-$pipe" "$DINO" "$m/roadwork.json" "$DINO_IN" cuda:0 $'max_batch = 64\nmax_delay_us = 2000\ncuda = { pipeline = '"$pipe"' }'
  done > "$d/models.toml"
  for model in rw16 dino; do
    for c in 8 64 256; do
      for pipe in false true; do
        "$P/bin/gpu-bench" e2e "$d" "$model-pipe-$pipe" "$P/validator" "$c" 5 | tee -a "$E" || echo "$model pipeline=$pipe at $c: failed"
      done
    done
  done
fi

echo "== 2. the accuracy policy over HTTP"
H="$OUT/http.jsonl"; : > "$H"
for run in ${RUNS:-cuda-before cuda cpu}; do
  [[ ",${STEPS:-e2e,http}," == *",http,"* ]] || break
  bin="$P/bin/cascade"; pol="$P/pol-$run"
  if [ "$run" = cuda-before ]; then bin="$P/bin/cascade-before"; pol="$P/pol-before"; fi
  CASCADE_GPU_TRACE=1 "$bin" serve --listen 127.0.0.1:0 --policies "$pol" --components "$P/components" --no-watch \
    > "$OUT/serve-$run.out" 2> "$OUT/serve-$run.log" &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$OUT/serve-$run.out" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  url=$(sed -n 's/^listening on //p' "$OUT/serve-$run.out" | head -1)
  [ -n "$url" ] || { echo "$run: the server did not start"; tail -5 "$OUT/serve-$run.log"; continue; }
  for hk in ${LOADS:-accuracy accuracy-all}; do
    for c in ${LEVELS:-1 8 32 128}; do
      secs=6; [ "$run" = cpu ] && [ "$hk" = accuracy-all ] && secs=10
      curl -s "$url/metrics" > "$OUT/m0"
      row=$("$P/bin/gpu-bench" http "$url/v1/predict/$hk" "$P/validator" "$c" "$secs" 2>>"$OUT/client-$run.log" || echo '{}')
      curl -s "$url/metrics" > "$OUT/m1"
      python3 - "$row" "$run" "$hk" "$OUT/m0" "$OUT/m1" <<'PY' | tee -a "$H"
import json, re, sys
row, run, hk, m0, m1 = json.loads(sys.argv[1] or "{}"), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def read(p):
    out = {}
    for l in open(p):
        m = re.match(r'cascade_model_(runs|items|busy_seconds|expired)_total\{model="(\w+)"\} (\S+)', l)
        if m: out[(m.group(1), m.group(2))] = float(m.group(3))
    return out
a, b = read(m0), read(m1)
d = lambda k, mdl: b.get((k, mdl), 0) - a.get((k, mdl), 0)
models = {}
for mdl in ("roadwork", "ocr", "detector"):
    runs = d("runs", mdl)
    models[mdl] = {"runs": int(runs), "mean_batch": round(d("items", mdl) / runs, 1) if runs else 0,
                   "busy_ms_per_run": round(d("busy_seconds", mdl) * 1e3 / runs, 2) if runs else 0, "expired": int(d("expired", mdl))}
print(json.dumps({"run": run, "policy": hk, "concurrency": row.get("concurrency"), "rps": round(row.get("rps", 0), 1),
                  "p50_ms": round(row.get("p50_ms", 0), 1), "p99_ms": round(row.get("p99_ms", 0), 1), "errors": row.get("errors"), "models": models}))
PY
    done
  done
  kill $pid; wait $pid 2>/dev/null || true
done

echo "== where CUDA batches' time goes"
for run in cuda-before cuda; do
  [ -f "$OUT/serve-$run.log" ] || continue
  echo "-- $run"
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
PY
done
grep -ihE "warn|error" "$OUT"/serve-*.log | grep -v "gpu batch" | sort | uniq -c | sort -rn | head -8 || true

echo "== tables"
python3 - "$E" "$H" <<'PY'
import json, sys
e = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
if e:
    print("| model | in flight | pipeline | images/s | p50 ms | p99 ms | mean batch | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in e:
        name, _, pipe = r["model"].rpartition("-pipe-")
        print(f"| {name} | {r['concurrency']} | {pipe} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('mean_batch', 0):.1f} | {r['errors']} |")
h = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
if h:
    print("\n| run | policy | conc. | req/s | p50 ms | p99 ms | errors | classifier runs / batch / busy ms | OCR runs / busy ms | detector runs / batch / busy ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in h:
        m = r["models"]
        f = lambda k: f"{m[k]['runs']} / {m[k]['mean_batch']} / {m[k]['busy_ms_per_run']}"
        print(f"| {r['run']} | {r['policy']} | {r['concurrency']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {f('roadwork')} | {m['ocr']['runs']} / {m['ocr']['busy_ms_per_run']} | {f('detector')} |")
PY
