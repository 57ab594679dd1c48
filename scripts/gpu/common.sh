# Shared by the GPU machine's scripts (sourced, not run): run.sh here and the GPU studies under
# experiments/ (cuda-collapse/, ocr-trace/, async-policies/): the ONNX Runtime CUDA build's
# paths, the output folder, the unpacked pack in $P, the roadwork classifier's, OCR and detector
# registry entries, and the one-stage policy of the end-to-end loads.
export ORT_DYLIB_PATH=/tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.1.31.1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/gpu-out}
P=/tmp/gpu

# A fresh $P from target/gpu-pack.tar.xz (scripts/gpu/pack.sh), and $OUT.
unpack_pack() {
  rm -rf "$P" && mkdir -p "$P" "$OUT"
  tar -xJf target/gpu-pack.tar.xz -C "$P"
}

# The PP-OCRv4 entry: DEVICE [WORKERS]
ocr_model() {
  local m=$P/models/ocr
  cat <<TOML
[[model]]
name = "ocr"
kind = "ocr"
file = "$m/ch_PP-OCRv4_det_infer.onnx"
device = "$1"
threads = 4
workers = ${2:-1}
ocr = { rec = "$m/ch_PP-OCRv4_rec_infer.onnx", cls = "$m/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 480 }
TOML
}

# The YOLOX-Nano entry (COCO labels; its batch dimension is fixed at 1): DEVICE [WORKERS]
detector_model() {
  cat <<TOML
[[model]]
name = "detector"
kind = "detector"
file = "$P/models/yolox_nano.onnx"
labels_file = "$PWD/policies/coco_labels.txt"
input = { width = 416, height = 416, color = "bgr", scale = 1.0, resize = "letterbox", pad = 114.0 }
device = "$1"
threads = 4
workers = ${2:-1}
TOML
}

# A roadwork classifier's [[model]] entry (a backbone's embedding and a logistic head):
# NAME FILE HEAD INPUT DEVICE EXTRA
classifier() {
  cat <<TOML
[[model]]
name = "$1"
kind = "classifier"
file = "$2"
output = "embedding"
head = "$3"
activation = "sigmoid"
labels = ["other", "roadwork"]
positive = ["roadwork"]
input = $4
device = "$5"
$6

TOML
}
# EfficientNet-Lite0's input, as the shipped roadwork-effnet head was trained on
EFF_IN='{ width = 224, height = 224, resize = "center_crop", resize_short = 256, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }'

roadwork_model() {  # NAME FILE DEVICE [EXTRA] -> the fp16/fp32 EfficientNet roadwork classifier
  classifier "$1" "$2" "$PWD/policies/heads/roadwork-effnet.json" "$EFF_IN" "$3" \
    $'max_batch = 64\nmax_delay_us = 3000\nthreads = 4'
  if [ -n "${4:-}" ]; then printf '%s\n' "$4"; fi
}

rw_policy() {  # NAME MODEL -> a one-stage policy: the end-to-end load's
  cat <<TOML
name = "$1"
fallback = 0.45
budget_ms = 8000
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "classifier"
classify = ["$2"]
on_error = "fail"
TOML
}
