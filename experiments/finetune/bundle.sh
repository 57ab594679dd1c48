#!/usr/bin/env bash
# Builds what the GPU machine needs for the fine-tuning study (issue 26 part 3), in parts of at
# most 62 MB under target/finetune-bundle/c1..cN (one `run` call carries at most 64 MiB; all
# ignored by git):
# - the views: both labelled data sets drawn 4 times each through the validators' levels 0-3 by
#   `cascade challenges` (seed 72), as JPEGs a validator sends: the machine has no cascade binary;
# - the shipped DINOv2 ViT-S/14 as a checkpoint folder (scripts/train/dinov2_from_onnx.py);
# - the TraCon images with their cone boxes (../box-head);
# - transformers 5.25.0 and its pure-Python dependencies as wheels for the machine's Python 3.12
#   (it has PyTorch, numpy, onnx and onnxruntime, and no network).
# Needs `make setup` and `make train-setup` first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$(cd "$ROOT/../shared" && pwd)
# shellcheck source=../../scripts/gpu/parts.sh
source "$ROOT/scripts/gpu/parts.sh"
B=$ROOT/target/finetune-bundle
rm -rf "$B" && mkdir -p "$B/x/wheels"
"$ROOT/target/release/cascade" challenges --manifest "$SHARED/data/roadwork-dev/manifest.csv" \
  --manifest "$SHARED/data/roadwork-more/manifest.csv" --views 4 --levels 0-3 --seed 72 --out "$B/x/views"
[ -f "$ROOT/target/models/dinov2_vits14_hf/model.safetensors" ] ||
  "$ROOT/.cache/train-venv/bin/python" "$ROOT/scripts/train/dinov2_from_onnx.py"
cp -r "$ROOT/target/models/dinov2_vits14_hf" "$B/x/dinov2_vits14_hf"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 transformers==5.25.0 safetensors==0.8.0 -d "$B/x/wheels"
rm -f "$B/x/wheels"/numpy-*.whl
# the TraCon images and their cone boxes, for ../box-head/exp_box.py
cp -r "$SHARED/data/roadwork-dev/tracon" "$B/x/tracon"
tar cf - -C "$B/x" wheels views dinov2_vits14_hf tracon | to_parts "$B"
n=$(cat "$B/parts")
rm -rf "$B/x"
echo "$n parts: carry c1 .. c$n in order (experiments/finetune/README.md)"
du -sh "$B"/c*
