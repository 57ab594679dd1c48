#!/usr/bin/env bash
# Where an OCR call's time goes, CUDA against the same host's CPU: the OCR engine alone on the
# validator-style JPEGs (gpu-bench e2e, 1 and 8 in flight), with CASCADE_GPU_TRACE=1's per-call
# lines (detection with its pre- and post-processing, cropping, orientation, recognition) and
# the detection session's own run time. Runs on the GPU machine after `bash .ortgpu/p4/unpack`,
# with target/gpu-pack.tar.xz carried (scripts/gpu/pack.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
unpack_pack
for dev in cuda:0 cpu; do
  d=$P/ocr-${dev%%:*}
  mkdir -p "$d"
  ocr_model "$dev" > "$d/models.toml"
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
