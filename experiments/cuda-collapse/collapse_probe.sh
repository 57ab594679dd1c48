#!/usr/bin/env bash
# A probe of the CUDA collapse (issue 16): the `accuracy` policy at 32 requests in flight on
# CUDA, in variants (intra-op threads, batching delay), sampling which server threads burn CPU
# while batches run (/proc per-thread CPU time), to tell CPU work from waiting. Run after
# experiments/cuda-collapse/collapse.sh on the same machine (it reuses /tmp/gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
[ -x "$P/bin/cascade" ] || { echo "no $P/bin/cascade: run experiments/cuda-collapse/collapse.sh first on this machine"; exit 1; }
variant() {  # NAME THREADS DELAY_US EXTRA
  local d="$P/pol-$1"; mkdir -p "$d"
  sed -e "s/^threads = 4$/threads = $2/" -e "s/^max_delay_us = .*/max_delay_us = $3/" "$P/pol-cuda/models.toml" > "$d/models.toml"
  # an extra line for the roadwork entry (the only one with max_batch = 64)
  [ -n "${4:-}" ] && sed -i "s/^max_batch = 64$/max_batch = 64\n$4/" "$d/models.toml"
  cp "$P/pol-cuda/accuracy.toml" "$d/"
  CASCADE_GPU_TRACE=1 ${PRE:-} "$P/bin/cascade" serve --listen 127.0.0.1:0 --policies "$d" --components "$P/components" \
    --no-watch --stage-cache-mb 0 > "$OUT/v-$1.out" 2> "$OUT/v-$1.log" &
  local pid=$!
  for _ in $(seq 150); do grep -q listening "$OUT/v-$1.out" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  local url; url=$(sed -n 's/^listening on //p' "$OUT/v-$1.out" | head -1)
  python3 - "$url" "$1" "$P/validator" "$pid" <<'PY'
import glob, os, sys, time, threading, urllib.request, concurrent.futures as cf
url, name, d, pid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
imgs = [open(p, "rb").read() for p in sorted(glob.glob(d + "/*.jpg"))]
def one(i):
    urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict/accuracy", data=imgs[i % len(imgs)], headers={"Content-Type": "image/jpeg"})).read()
for i in range(8): one(i)
def cpu():
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            f = s[s.rindex(")") + 2:].split()
            out[t] = (comm, int(f[11]) + int(f[12]), f[0])
        except OSError:
            pass
    return out
n = 256
t0 = time.perf_counter(); a = cpu()
with cf.ThreadPoolExecutor(32) as ex: list(ex.map(one, range(n)))
took = time.perf_counter() - t0; b = cpu()
use = {}
for t, (comm, ticks, _) in b.items():
    d = ticks - a.get(t, (comm, 0, ""))[1]
    use[comm] = use.get(comm, 0) + d
top = sorted(use.items(), key=lambda kv: -kv[1])[:6]
hz = os.sysconf("SC_CLK_TCK")
print(f"{name}: {n / took:.1f} req/s; server CPU s by thread name: " + ", ".join(f"{k}={v / hz:.2f}" for k, v in top), flush=True)
PY
  kill $pid; wait $pid 2>/dev/null
  python3 - "$OUT/v-$1.log" "$1" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", l))) for l in open(sys.argv[1]) if "gpu batch" in l]
run = sorted(int(r["run_us"]) for r in rows)
if run: print(f"  {sys.argv[2]}: {len(run)} batches, run_us p50 {run[len(run)//2]} p90 {run[int(len(run)*.9)]}")
PY
}
PRE=""
variant base 4 3000
variant threads1 1 3000
variant delay0 4 0
variant nhwc 4 3000 'cuda = { prefer_nhwc = true }'
PRE="taskset -c 0-7" variant pinned 4 3000
