#!/usr/bin/env bash
# Packs what the GPU run needs into target/gpu-pack.tar.xz (one transfer, < 64 MiB): the
# stripped binaries (and, with BEFORE=path, an earlier cascade binary as bin/cascade-before for
# before/after runs such as experiments/cuda-collapse/collapse.sh), the components, the default
# models but DINOv2, the rendered test images.
# DINOv2 (88 MB) travels apart in two parts, .gpucheck/dino/p1 and p2 (made here too); there:
#   mkdir -p /tmp/dino && cp .gpucheck/dino/p1/* /tmp/dino/          (first call)
#   cp .gpucheck/dino/p2/* /tmp/dino/ && bash /tmp/dino/join          (second call)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --release --bin cascade -p cascade-cli
cargo build --quiet --release --bin gpu-bench -p cascade-bench
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/bin" "$w/models/ocr" "$w/validator" "$w/photos"
# 64 validator-style JPEGs of dev images (centre crop, 224x224, quality 75) for the end-to-end
# load, and a few dev photos at their own sizes for the GPU vs CPU pre-processing check; they
# travel with the pack only, never into the repository
.venv/bin/python - ../shared/data/roadwork-dev "$w" <<'PY'
import csv, os, random, sys
from PIL import Image
root, out = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"))))
random.Random(7).shuffle(rows)
for i, r in enumerate(rows[:64]):
    im = Image.open(os.path.join(root, r["path"])).convert("RGB")
    s = min(im.size)
    l, t = (im.width - s) // 2, (im.height - s) // 2
    im.crop((l, t, l + s, t + s)).resize((224, 224), Image.BICUBIC).save(f"{out}/validator/{i:02d}.jpg", quality=75)
big = sorted(rows, key=lambda r: -int(r["width"]) * int(r["height"]))
for i, r in enumerate(big[:3] + rows[64:67]):
    Image.open(os.path.join(root, r["path"])).convert("RGB").save(f"{out}/photos/{i}.png")
PY
cp policies/heads/roadwork-effnet.json ../shared/models/yolox_nano/yolox_nano.onnx "$w/models/"
strip -o "$w/bin/cascade" target/release/cascade
strip -o "$w/bin/gpu-bench" target/release/gpu-bench
if [ -n "${BEFORE:-}" ]; then strip -o "$w/bin/cascade-before" "$BEFORE"; fi
rm -rf .gpucheck/dino && mkdir -p .gpucheck/dino/p1 .gpucheck/dino/p2
split -n 2 -d target/models/dinov2_vits14.onnx .gpucheck/dino/part
mv .gpucheck/dino/part00 .gpucheck/dino/p1/ && mv .gpucheck/dino/part01 .gpucheck/dino/p2/
sum=$(sha256sum target/models/dinov2_vits14.onnx | cut -d' ' -f1)
printf 'set -e\ncd /tmp/dino\ncat part00 part01 > dinov2_vits14.onnx\necho "%s  dinov2_vits14.onnx" | sha256sum -c\n' "$sum" > .gpucheck/dino/p2/join
cp -r target/components "$w/components"
cp target/models/efficientnet_lite0.onnx "$w/models/"
cp target/models/ocr/*.onnx "$w/models/ocr/"
cp -r target/test-images "$w/test-images"
tar -C "$w" -cJf target/gpu-pack.tar.xz .
du -h target/gpu-pack.tar.xz
