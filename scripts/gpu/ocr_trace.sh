#!/usr/bin/env bash
# Where an OCR call's time goes, CUDA against the same host's CPU: the OCR engine alone on the
# validator-style JPEGs (gpu-bench e2e, 1 and 8 in flight), with CASCADE_GPU_TRACE=1's per-call
# lines (detection with its pre- and post-processing, cropping, orientation, recognition) and
# the detection session's own run time. Runs on the GPU machine after `bash .ortgpu/p4/unpack`,
# with target/gpu-pack.tar.xz carried (scripts/gpu/pack.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/gpu-out}
P=/tmp/gpu
rm -rf "$P" && mkdir -p "$P" "$OUT"
tar -xJf target/gpu-pack.tar.xz -C "$P"
m=$P/models/ocr
for dev in cuda:0 cpu; do
  d=$P/ocr-${dev%%:*}
  mkdir -p "$d"
  cat > "$d/models.toml" <<TOML
[[model]]
name = "ocr"
kind = "ocr"
file = "$m/ch_PP-OCRv4_det_infer.onnx"
device = "$dev"
threads = 4
ocr = { rec = "$m/ch_PP-OCRv4_rec_infer.onnx", cls = "$m/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 480 }
TOML
  for c in 1 8; do
    CASCADE_GPU_TRACE=1 "$P/bin/gpu-bench" e2e "$d" ocr "$P/validator" "$c" 4 > "$OUT/${dev%%:*}-$c.json" 2> "$OUT/${dev%%:*}-$c.log" || true
  done
done
python3 - "$OUT" <<'PY'
import glob, json, os, re, statistics, sys
print("| device | in flight | calls/s | p50 ms | lines | detection (run) ms | crop ms | orientation ms | recognition ms |")
print("|---|---|---|---|---|---|---|---|---|")
for log in sorted(glob.glob(os.path.join(sys.argv[1], "*.log"))):
    calls, runs = [], []
    for l in open(log):
        l = re.sub(r"\x1b\[[0-9;]*m", "", l)
        f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", l)}
        if "ocr call" in l: calls.append(f)
        elif "ocr detection run" in l: runs.append(f["run_us"])
    r = json.loads(open(log[:-4] + ".json").read() or "{}")
    med = lambda k: statistics.median(c[k] for c in calls) / 1e3 if calls else float("nan")
    name = os.path.basename(log)[:-4].split("-")
    print(f"| {name[0]} | {name[1]} | {r.get('rps', 0):.1f} | {r.get('p50_ms', 0):.1f} | {statistics.median(c['lines'] for c in calls) if calls else 0} | "
          f"{med('det_us'):.1f} ({statistics.median(runs) / 1e3 if runs else float('nan'):.1f}) | {med('crop_us'):.1f} | {med('cls_us'):.1f} | {med('rec_us'):.1f} |")
PY
