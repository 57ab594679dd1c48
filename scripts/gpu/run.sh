#!/usr/bin/env bash
# Runs on the GPU machine after `bash .ortgpu/p4/unpack` (see ../shared/docs/GPU.md), with
# target/gpu-pack.tar.xz carried (scripts/gpu/pack.sh). Steps (STEPS=a,b,… runs a subset):
#   torch   export ViT-B/16 and time the PyTorch peers (eager fp32/fp16, torch.compile fp16)
#           (every run converts roadwork and ViT to fp16 with scripts/fp16.py: *16 models)
#   agree   CUDA vs CPU agreement of the models and the engine's ViT vs torchvision, within
#           bounds (AGREE_FP32 2e-3, AGREE_FP16 2e-2, AGREE_PEER 2e-2); GPU vs CPU pre-processing
#   engine  model-only throughput through the engine at batch 1/8/64
#   e2e     JPEG bytes → score under load, cascade: in process (fp32/fp16, one or two sessions)
#           and over HTTP
#   peer    the same for the Python miner pipeline (PIL/torchvision workers + PyTorch fp16)
#   serve   the accuracy policy's single-request latency on GPU vs CPU; /metrics (memory,
#           batch sizes) of a loaded CUDA server
# Results go to $OUT. Exits non-zero when an agreement check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
STEPS=${STEPS:-torch,agree,engine,e2e,peer,serve}   # a subset re-runs a part
step() { [[ ",$STEPS," == *",$1,"* ]]; }
unpack_pack
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== exporting ViT-B/16 and timing the PyTorch peers"
if step torch; then
  python3 scripts/gpu/torch_peer.py "$P/vit_b16.onnx" | tee "$OUT/torch_peer.jsonl"
else
  python3 scripts/gpu/export_vit.py "$P/vit_b16.onnx"
fi
echo "== fp16 conversions (scripts/fp16.py)"
python3 scripts/fp16.py "$P/models/efficientnet_lite0.onnx" "$P/roadwork16.onnx" 2>&1 | tee "$OUT/fp16.txt"
python3 scripts/fp16.py "$P/vit_b16.onnx" "$P/vit16.onnx" --transformer vit --heads 12 --hidden 768 2>&1 | tee -a "$OUT/fp16.txt" \
  || { echo "transformer optimiser failed; plain fp16 conversion" | tee -a "$OUT/fp16.txt"; python3 scripts/fp16.py "$P/vit_b16.onnx" "$P/vit16.onnx" 2>&1 | tee -a "$OUT/fp16.txt"; }

vit_model() {  # NAME FILE DEVICE -> a ViT-B/16 [[model]] entry
  cat <<TOML
[[model]]
name = "$1"
kind = "classifier"
file = "$2"
input = { width = 224, height = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }
device = "$3"
max_batch = 64
max_delay_us = 3000
threads = 4
TOML
}
registry() {  # DEVICE -> models.toml
  local dev=$1 m=$P/models
  roadwork_model roadwork "$m/efficientnet_lite0.onnx" "$dev"
  echo
  vit_model vit "$P/vit_b16.onnx" "$dev"
  echo
  detector_model "$dev"
  echo
  ocr_model "$dev"
}
registry16() {  # -> models.toml of the fp16 conversions, and roadwork on two sessions (CUDA)
  local m=$P/models
  # name file workers arena_extend prefer_nhwc
  for spec in "roadwork16 $P/roadwork16.onnx 1 same_as_requested false" "roadwork16w2 $P/roadwork16.onnx 2 same_as_requested false" \
      "roadwork16w2d $P/roadwork16.onnx 2 power_of_two false" "roadwork16n $P/roadwork16.onnx 1 same_as_requested true" \
      "roadwork16nw2 $P/roadwork16.onnx 2 same_as_requested true" "roadwork32w2 $m/efficientnet_lite0.onnx 2 same_as_requested false"; do
    set -- $spec
    echo
    roadwork_model "$1" "$2" cuda:0 "$(printf 'workers = %s\ncuda = { arena_extend = "%s", prefer_nhwc = %s }' "$3" "$4" "$5")"
  done
  if [[ -z ${NO_VIT16:-} ]]; then
    echo
    vit_model vit16 "$P/vit16.onnx" cuda:0
  fi
}
for dev in cpu cuda:0; do
  d="$P/pol-${dev%%:*}"
  mkdir -p "$d"
  registry "$dev" > "$d/models.toml"
  # the shipped calibrations name the shipped head; these registries run others
  for hk in speed accuracy; do sed '/^calibration = /d' "policies/$hk.toml" > "$d/$hk.toml"; done
  rw_policy rw roadwork > "$d/rw.toml"
done
mkdir -p "$P/pol-cuda16" "$P/pol-http"
registry16 > "$P/pol-cuda16/models.toml"
# the HTTP run's server: roadwork16n (fp16, NHWC convolutions) alone (every other model's load would only slow its start)
python3 - "$P/pol-cuda16/models.toml" > "$P/pol-http/models.toml" <<'PY'
import sys
print("\n".join(b for b in open(sys.argv[1]).read().split("\n\n") if 'name = "roadwork16n"\n' in b))
PY
rw_policy rw16 roadwork16n > "$P/pol-http/rw16.toml"
if ! "$P/bin/cascade" infer --policies "$P/pol-cuda16" --model vit16 "$P"/validator/00.jpg > "$OUT/vit16-check.txt" 2>&1; then
  echo "vit16 does not load or run on CUDA here (see vit16-check.txt); left out"
  NO_VIT16=1 registry16 > "$P/pol-cuda16/models.toml"
fi
fail=0

echo "== CUDA vs CPU agreement"
step agree && for m in roadwork vit detector ocr; do
  for dev in cpu cuda; do
    "$P/bin/cascade" infer --policies "$P/pol-$dev" --model "$m" --repeat 3 "$P"/test-images/*.jpg > "$OUT/infer-$m-$dev.jsonl"
  done
done
step agree && for m in roadwork16 vit16; do
  "$P/bin/cascade" infer --policies "$P/pol-cuda16" --model "$m" --repeat 3 "$P"/test-images/*.jpg > "$OUT/infer-$m-cuda.jsonl" || true
done
# the verdicts: CUDA against the CPU, and the engine against PyTorch, within stated bounds
# (AGREE_* override them; figures and bounds go to $OUT/agree.json). fp32 models run with TF32
# on CUDA, fp16 conversions are compared with the fp32 model on the CPU.
if step agree; then
  python3 - "$OUT" <<'PY' || fail=1
import json, os, sys
out = sys.argv[1]
env = lambda k, d: float(os.environ.get(k, d))
BOUND = {"fp32": env("AGREE_FP32", 2e-3), "fp16": env("AGREE_FP16", 2e-2), "peer": env("AGREE_PEER", 2e-2)}
rows = lambda f: [json.loads(l) for l in open(f)] if os.path.exists(f) and os.path.getsize(f) else None
report, bad = {"bounds": BOUND}, []
for m, ref in (("roadwork", "roadwork"), ("vit", "vit"), ("detector", "detector"), ("ocr", "ocr"), ("roadwork16", "roadwork"), ("vit16", "vit")):
    cpu, gpu = rows(f"{out}/infer-{ref}-cpu.jsonl"), rows(f"{out}/infer-{m}-cuda.jsonl")
    if gpu is None:
        print(f"{m}: no CUDA results"); report[m] = None
        if m in ("roadwork", "vit", "detector", "ocr"):
            bad.append(f"{m}: no CUDA results")
        continue
    if m == "detector":
        same = sum([d["label"] for d in a["result"]] == [d["label"] for d in b["result"]] for a, b in zip(cpu, gpu))
        report[m] = {"same_labels": same, "of": len(cpu)}
        if same < len(cpu): bad.append(f"{m}: labels differ on {len(cpu) - same} of {len(cpu)} images")
    elif m == "ocr":
        same = sum(" ".join(x["text"] for x in a["result"]) == " ".join(x["text"] for x in b["result"]) for a, b in zip(cpu, gpu))
        report[m] = {"same_text": same, "of": len(cpu)}
        if same < len(cpu): bad.append(f"{m}: text differs on {len(cpu) - same} of {len(cpu)} images")
    else:
        d = max(abs(a["result"]["score"] - b["result"]["score"]) for a, b in zip(cpu, gpu))
        bound = BOUND["fp16" if m.endswith("16") else "fp32"]
        report[m] = {"max_score_difference": d, "bound": bound}
        if not d <= bound: bad.append(f"{m} (cuda) vs {ref} (cpu): |score difference| {d:.2e} over {bound:g}")
    print(f"{m}: {report[m]}")
# the engine's ViT on CUDA against torchvision's module (export_vit.reference) on the same
# 224x224 JPEGs, prepared as the entry says (the stretch is the identity at that size)
import numpy as np, torch
from PIL import Image
sys.path.insert(0, "scripts/gpu")
from export_vit import reference
net = reference().cuda()
eng = rows(f"{out}/infer-vit-cuda.jsonl") or []
mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
worst, same = 0.0, 0
for r in eng:
    im = Image.open(r["image"]).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = ((np.asarray(im, np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
    with torch.no_grad():
        p = torch.softmax(net(torch.from_numpy(x).cuda()).float(), -1)[0].cpu().numpy()
    top = r["result"]["top"]
    same += int(top[0][0]) == int(p.argmax())
    worst = max(worst, float(abs(r["result"]["score"] - p[-1])), *(float(abs(q - p[int(k)])) for k, q in top))
report["vit_vs_pytorch"] = {"same_top1": same, "of": len(eng), "max_probability_difference": worst, "bound": BOUND["peer"]}
print(f"vit (engine, cuda) vs torchvision (cuda): {report['vit_vs_pytorch']}")
if not eng or same < len(eng) or not worst <= BOUND["peer"]:
    bad.append(f"vit vs PyTorch: top-1 on {same}/{len(eng)}, |probability difference| {worst:.2e} (bound {BOUND['peer']:g})")
json.dump(report, open(f"{out}/agree.json", "w"), indent=2)
for b in bad: print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
fi

echo "== GPU vs CPU pre-processing (the same images, each model's input spec)"
if step agree; then
  for m in roadwork vit detector; do
    "$P/bin/gpu-bench" prep "$P/pol-cuda" "$m" "$P"/photos/*.png "$P"/validator/0*.jpg | tee -a "$OUT/prep.jsonl"
  done
  # tolerance: 1 level of 8 bits (float vs fixed-point filter weights may round one way or the other)
  python3 - "$OUT/prep.jsonl" <<'PY' || fail=1
import json, sys
bad = [r for r in map(json.loads, open(sys.argv[1])) if r["max_levels"] > 1.01]
for r in bad: print("FAIL: GPU pre-processing differs by more than one level:", r)
sys.exit(1 if bad else 0)
PY
fi

echo "== model-only throughput through the engine"
if step engine; then
  for m in vit roadwork; do "$P/bin/gpu-bench" model "$P/pol-cuda" "$m" 1,8,64 4; done
  for m in vit16 roadwork16 roadwork16n; do "$P/bin/gpu-bench" model "$P/pol-cuda16" "$m" 1,8,64 4 || echo "$m: failed"; done
  "$P/bin/gpu-bench" model "$P/pol-cpu" vit 1 3
fi

serve() {  # DEV -> sets $pid and $url
  "$P/bin/cascade" serve --listen 127.0.0.1:0 --policies "$P/pol-$1" --components "$P/components" --no-watch > "$OUT/serve-$1.out" 2> "$OUT/serve-$1.log" &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$OUT/serve-$1.out" 2>/dev/null && break; sleep 0.2; done
  url=$(sed -n 's/^listening on //p' "$OUT/serve-$1.out" | head -1)
}

table() {  # e2e.jsonl -> a markdown table
  python3 - "$1" <<'PY'
import json, sys
print("| side | model | load | images/s | p50 ms | p99 ms | errors | mean batch | GPU MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in map(json.loads, open(sys.argv[1])):
    load = f"closed, {r['concurrency']} in flight" if r["mode"] == "closed" else f"open, {r['rate']:.0f}/s"
    extra = f"{r['mean_batch']:.1f} | {r['gpu_mib']}" if "mean_batch" in r else "– | –"
    print(f"| {r['side']} | {r['model']} | {load} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {extra} |")
PY
}
E="$OUT/e2e.jsonl"
: > "$E"
echo "== end to end under load: JPEG bytes -> score (cascade)"
if step e2e; then
  # equal load = the same number of requests in flight on both sides (closed loop)
  e2e() { "$P/bin/gpu-bench" e2e "$P/$1" "$2" "$P/validator" "$3" 6 | tee -a "$E" || echo "$2 at $3: failed"; }
  e2e pol-cuda roadwork 256
  for c in 8 64 256; do e2e pol-cuda16 roadwork16 $c; done
  e2e pol-cuda16 roadwork16n 256
  e2e pol-cuda16 roadwork32w2 256
  for m in roadwork16w2 roadwork16w2d roadwork16nw2; do e2e pol-cuda16 $m 64; done
  e2e pol-cuda vit 256
  e2e pol-cuda16 vit16 256
  serve http
  for c in 8 64 256; do "$P/bin/gpu-bench" http "$url/v1/predict/rw16" "$P/validator" $c 6 | tee -a "$E"; done
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '/metrics').read().decode())" "$url" | grep -E '^cascade_model_(runs|items|gpu_memory_bytes|loaded|cpu_preprocess)' | tee "$OUT/metrics-under-load.txt" || true
  kill $pid; wait $pid 2>/dev/null || true
fi

echo "== end to end under load: the Python miner pipeline"
if step peer; then
  # how late a 3 ms timed wait wakes here (batchers on both sides rely on such waits at low load)
  python3 - <<'PY'
import threading, time
ev, late = threading.Event(), []
for _ in range(300):
    t = time.perf_counter(); ev.wait(0.003); late.append((time.perf_counter() - t - 0.003) * 1e3)
late.sort()
print(f"timer check: a 3 ms timed wait wakes late by p50 {late[150]:.2f} ms, p99 {late[296]:.2f} ms, max {late[-1]:.2f} ms")
PY
  peer() { timeout 150 python3 scripts/gpu/miner_peer.py --onnx "$P/models/efficientnet_lite0.onnx" --head "$P/models/roadwork-effnet.json" --jpegs "$P/validator" --seconds 6 "$@" | tee -a "$E"; }
  timeout 120 python3 scripts/gpu/miner_peer.py --onnx "$P/models/efficientnet_lite0.onnx" --head "$P/models/roadwork-effnet.json" --jpegs "$P/validator" --scores > "$OUT/peer-scores.json"
  "$P/bin/cascade" infer --policies "$P/pol-cuda" --model roadwork "$P"/validator/*.jpg > "$OUT/cascade-scores.jsonl"
  python3 - "$OUT/peer-scores.json" "$OUT/cascade-scores.jsonl" <<'PY'
import json, os, sys
peer = json.load(open(sys.argv[1]))
ours = {os.path.basename(r["image"]): r["result"]["score"] for r in map(json.loads, open(sys.argv[2]))}
d = max(abs(peer[k] - ours[k]) for k in peer)
print(f"the peer computes cascade's model: max |score torch fp16 - score cascade| = {d:.2e} over {len(peer)} images")
PY
  # the peer's GPU part alone (batch 64, no pool, no queues): what its pipeline could reach
  (cd scripts/gpu && python3 - <<'PY'
import time, torch, miner_peer as mp
for layout in ("nchw", "nhwc"):
    run = mp.build("roadwork", "/tmp/gpu/models/efficientnet_lite0.onnx", "/tmp/gpu/models/roadwork-effnet.json", layout)
    with torch.inference_mode():
        g = mp.graphed(run, [64], 224)
        x = torch.zeros(64, 224, 224, 3, dtype=torch.uint8, device="cuda")
        for name, f in (("eager", run), ("CUDA graph", g)):
            for _ in range(5): f(x)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(50): f(x)
            torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 50
            print(f"the peer's GPU part alone: torch fp16 roadwork {layout} {name}, batch 64 in {dt*1e3:.2f} ms = {64/dt:.0f} images/s", flush=True)
PY
  ) || true
  for wc in 16:256 8:256 16:64 16:8; do peer --model roadwork --workers ${wc%:*} --concurrency ${wc#*:} || true; done
  peer --model roadwork --workers 16 --concurrency 256 --no-graphs || true
  peer --model roadwork --workers 16 --prep-only || true
  peer --model vit --workers 16 --concurrency 256 || true
fi
[ -s "$E" ] && table "$E"

echo "== accuracy policy, single requests, GPU vs CPU"
step serve && for dev in cpu cuda; do
  serve "$dev"
  python3 - "$url" "$dev" "$P/test-images" <<'PY'
import glob, sys, time, urllib.request, concurrent.futures as cf
url, dev, d = sys.argv[1], sys.argv[2], sys.argv[3]
imgs = [open(p, "rb").read() for p in sorted(glob.glob(d + "/*.jpg"))]
def one(i):
    t = time.perf_counter()
    r = urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict/accuracy", data=imgs[i % len(imgs)], headers={"Content-Type": "image/jpeg"}))
    r.read()
    return (time.perf_counter() - t) * 1e3
for i in range(10): one(i)
with cf.ThreadPoolExecutor(32) as ex:
    list(ex.map(one, range(320)))  # warm-up under load: the batch shapes a busy server runs
lat = sorted(one(i) for i in range(200))
with cf.ThreadPoolExecutor(32) as ex:
    t = time.perf_counter(); n = 640; list(ex.map(one, range(n))); rps = n / (time.perf_counter() - t)
print(f"accuracy on {dev}: single-request p50 {lat[100]:.1f} ms p99 {lat[197]:.1f} ms; 32 concurrent: {rps:.1f} req/s")
PY
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '/metrics').read().decode())" "$url" | grep -E '^cascade_(model_(runs|items|busy|failures|expired)|stage|primitive)' > "$OUT/metrics-accuracy-$dev.txt" || true
  kill $pid
done
exit $fail
