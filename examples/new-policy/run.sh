#!/usr/bin/env bash
# Drop in a new policy component while the server runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$root/policies" "$work/policies"
sed -i "s|\"\.\./|\"$root/|g" "$work/policies/models.toml"
mkdir -p "$work/components"
cp "$root"/target/components/*.wasm "$work/components/"

"$root/target/release/cascade" serve --listen 127.0.0.1:0 --policies "$work/policies" --components "$work/components" > "$work/out" 2> "$work/log" &
until grep -q listening "$work/out" 2>/dev/null; do sleep 0.2; done
url=$(sed -n 's/^listening on //p' "$work/out" | head -1)
img="$root/target/test-images/road_work_ahead.jpg"
echo "before: $(curl -s "$url/v1/predict/speed" -H 'content-type: image/jpeg' --data-binary @"$img" | head -c 160)"

# 1. a new component: the template under another name, built for wasm32-wasip2
mkdir -p "$work/my-router/src"
sed -e 's/"template-router"/"my-router"/' -e "s|\.\./\.\./wit/v1.0.0|$root/wit/v1.0.0|" \
  "$root/plugins/template/src/lib.rs" > "$work/my-router/src/lib.rs"
cat > "$work/my-router/Cargo.toml" <<'TOML'
[package]
name = "my-router"
version = "1.0.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc"] }
serde = { version = "1", default-features = false, features = ["derive", "alloc"] }
serde_json = { version = "1", default-features = false, features = ["alloc"] }

[workspace]

[profile.release]
opt-level = "s"
lto = true
panic = "abort"
strip = true
TOML
(cd "$work/my-router" && cargo build --quiet --release --target wasm32-wasip2)
cp "$work/my-router/target/wasm32-wasip2/release/my_router.wasm" "$work/components/"

# 2. point the hotkey at it: the server compiles, validates, smoke-tests and swaps
cat > "$work/policies/speed.toml" <<TOML
name = "speed"
fallback = 0.45
[router]
component = "my-router@^1"
params = { model = "roadwork" }
TOML
sleep 1
echo "after:  $(curl -s "$url/v1/predict/speed" -H 'content-type: image/jpeg' --data-binary @"$img" | head -c 160)"
curl -s "$url/admin/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("speed now runs", s["hotkeys"]["speed"]["router"]["component"], s["hotkeys"]["speed"]["router"]["version"])'
