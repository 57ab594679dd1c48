#!/usr/bin/env bash
# The whole suite, one profile (release, as built by set-up): unit tests of every crate,
# the components' own tests, then the integration tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CASCADE_SHARED="${CASCADE_SHARED:-$(cd .. && pwd)/shared}"
# the style gates: rustfmt and clippy (warnings are errors) for both workspaces
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
cargo clippy --quiet --release --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --quiet --release --workspace --all-targets --target wasm32-wasip2 -- -D warnings)
.venv/bin/python tests/models/make_test_models.py target/test-models
.venv/bin/python tests/models/render_signs.py target/test-images
# an fp16 conversion of the default backbone (the engines feed fp16 models in their own type)
[ -f target/test-models/efficientnet_lite0_fp16.onnx ] || .venv/bin/python scripts/fp16.py target/models/efficientnet_lite0.onnx target/test-models/efficientnet_lite0_fp16.onnx
bash scripts/bt_venv.sh
bash scripts/mlserver_venv.sh
# the status page is tested in a real headless browser: Debian's Chromium
if ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing chromium (Debian) for the status page test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# the chain programs (metagraph sync, announce) against the SDK's mock subtensor
.cache/bt-venv/bin/python -m unittest discover -s scripts/chain -p 'test_*.py'
# the deployment files (deploy/): promtool config/rules/unit tests, amtool, dashboard, compose
# config, hadolint, shellcheck, systemd-analyze, PM2, the entrypoint's exit 78
bash scripts/deploy_checks.sh
# the validators' dataset command: parquet shards in their schema, a stand-in hub, and the
# validator's own extract and sampler run on the same shards
.venv/bin/python -m unittest discover -s scripts/data -p 'test_*.py'
# the int8 DINOv2 set-up product: refused past its drift bound, pinned bytes within it
.venv/bin/python -m unittest discover -s scripts/models -p 'test_*.py'
# the training tools (PyTorch, transformers): every backbone family exported from random
# weights and read by the engine; the shipped DINOv2 converted and exported back; fine-tuning
# (held-out early stopping, export checked through the engine, resume, leave-one-source-out,
# two processes under torchrun)
bash scripts/train_venv.sh
.cache/train-venv/bin/python -m unittest discover -s scripts/train -p 'test_*.py'
# the converted backbone must reproduce the reference network's ImageNet answers
.venv/bin/python scripts/models/verify_efficientnet.py target/models/efficientnet_lite0.onnx
(cd plugins && cargo test --quiet --release --target x86_64-unknown-linux-gnu -p keywords -p cascade-router -p weighted)
cargo test --release --workspace
# the libFuzzer targets built by cargo-fuzz (stable, no sanitizer), 30 s each from the corpus
bash scripts/fuzz.sh
