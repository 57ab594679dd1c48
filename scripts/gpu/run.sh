#!/usr/bin/env bash
# Runs on the GPU machine after `bash .ortgpu/p4/unpack` (see ../shared/docs/GPU.md), with
# target/gpu-pack.tar.xz carried (scripts/gpu/pack.sh): CUDA vs CPU agreement on the default
# models and a ViT-B/16, model-only throughput at batch 1/8/64 against PyTorch eager and
# torch.compile, and the accuracy policy's latency on GPU vs CPU. Results go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/gpu-out}
STEPS=${STEPS:-torch,agree,engine,e2e}   # a subset re-runs a part
step() { [[ ",$STEPS," == *",$1,"* ]]; }
P=/tmp/gpu
rm -rf "$P" && mkdir -p "$P" "$OUT"
tar -xJf target/gpu-pack.tar.xz -C "$P"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== exporting ViT-B/16 and timing the PyTorch peers"
if step torch; then
  python3 scripts/gpu/torch_peer.py "$P/vit_b16.onnx" | tee "$OUT/torch_peer.jsonl"
else
  python3 - "$P/vit_b16.onnx" <<'PY'
import sys, torch, torchvision
torch.manual_seed(0)
m = torchvision.models.vit_b_16(weights=None).eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), sys.argv[1], input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
PY
fi

registry() {  # DEVICE -> models.toml
  local dev=$1 m=$P/models
  cat <<TOML
[[model]]
name = "roadwork"
kind = "classifier"
file = "$m/efficientnet_lite0.onnx"
output = "embedding"
head = "$PWD/policies/heads/roadwork.json"
activation = "sigmoid"
labels = ["other", "roadwork"]
positive = ["roadwork"]
input = { width = 224, height = 224, resize = "center_crop", resize_short = 256, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }
device = "$dev"
max_batch = 64
max_delay_us = 3000
threads = 4

[[model]]
name = "vit"
kind = "classifier"
file = "$P/vit_b16.onnx"
input = { width = 224, height = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }
device = "$dev"
max_batch = 64
max_delay_us = 3000
threads = 4

[[model]]
name = "ocr"
kind = "ocr"
file = "$m/ocr/ch_PP-OCRv4_det_infer.onnx"
device = "$dev"
threads = 4
ocr = { rec = "$m/ocr/ch_PP-OCRv4_rec_infer.onnx", cls = "$m/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 480 }
TOML
}
for dev in cpu cuda:0; do
  d="$P/pol-${dev%%:*}"
  mkdir -p "$d"
  registry "$dev" > "$d/models.toml"
  for hk in speed accuracy; do cp "policies/$hk.toml" "$d/"; done
done

echo "== CUDA vs CPU agreement"
step agree && for m in roadwork vit ocr; do
  for dev in cpu cuda; do
    "$P/bin/cascade" infer --policies "$P/pol-$dev" --model "$m" --repeat 3 "$P"/test-images/*.jpg > "$OUT/infer-$m-$dev.jsonl"
  done
done
step agree && python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for m in ("roadwork", "vit", "ocr"):
    cpu = [json.loads(l) for l in open(f"{out}/infer-{m}-cpu.jsonl")]
    gpu = [json.loads(l) for l in open(f"{out}/infer-{m}-cuda.jsonl")]
    if m == "ocr":
        same = sum(" ".join(x["text"] for x in a["result"]) == " ".join(x["text"] for x in b["result"]) for a, b in zip(cpu, gpu))
        print(f"{m}: same text on {same}/{len(cpu)}; median ms cpu {sorted(a['ms'] for a in cpu)[len(cpu)//2]:.1f} cuda {sorted(b['ms'] for b in gpu)[len(gpu)//2]:.1f}")
    else:
        d = max(abs(a["result"]["score"] - b["result"]["score"]) for a, b in zip(cpu, gpu))
        print(f"{m}: max |score cpu - score cuda| = {d:.2e}; median ms cpu {sorted(a['ms'] for a in cpu)[len(cpu)//2]:.2f} cuda {sorted(b['ms'] for b in gpu)[len(gpu)//2]:.2f}")
PY

echo "== model-only throughput through the engine"
if step engine; then
  for m in vit roadwork; do
    "$P/bin/gpu-bench" "$P/pol-cuda" "$m" 1,8,64 4
  done
  "$P/bin/gpu-bench" "$P/pol-cpu" vit 1,8 3
fi

echo "== accuracy policy, single requests, GPU vs CPU"
step e2e && for dev in cpu cuda; do
  "$P/bin/cascade" serve --listen 127.0.0.1:0 --policies "$P/pol-$dev" --components "$P/components" --no-watch > "$OUT/serve-$dev.out" 2> "$OUT/serve-$dev.log" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$OUT/serve-$dev.out" 2>/dev/null && break; sleep 0.2; done
  url=$(sed -n 's/^listening on //p' "$OUT/serve-$dev.out" | head -1)
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
  kill $pid
done
