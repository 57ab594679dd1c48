#!/usr/bin/env bash
# Packs what the GPU run needs into target/gpu-pack.tar.xz (one transfer, < 64 MiB): the
# stripped binaries, the components, the default models, the rendered test images.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --release --bin cascade -p cascade-host
cargo build --quiet --release --bin gpu-bench -p cascade-bench
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/bin" "$w/models/ocr"
strip -o "$w/bin/cascade" target/release/cascade
strip -o "$w/bin/gpu-bench" target/release/gpu-bench
cp -r target/components "$w/components"
cp target/models/efficientnet_lite0.onnx "$w/models/"
cp target/models/ocr/*.onnx "$w/models/ocr/"
cp -r target/test-images "$w/test-images"
tar -C "$w" -cJf target/gpu-pack.tar.xz .
du -h target/gpu-pack.tar.xz
