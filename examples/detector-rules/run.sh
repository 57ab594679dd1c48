#!/usr/bin/env bash
# The shipped classifier plus a detector stage with count rules (objects.toml), on street
# frames: the detector is the YOLOX-Nano fixture from ../shared (COCO classes).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
shared="$root/../shared"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/policies"
sed "s|\"\.\./models/detector.onnx\"|\"$shared/models/yolox_nano/yolox_nano.onnx\"|; s|\"\.\./|\"$root/|g; s|\"heads/|\"$root/policies/heads/|g; s|\"coco_labels.txt\"|\"$root/policies/coco_labels.txt\"|" \
  "$root/policies/models.toml" > "$work/policies/models.toml"
cp "$root/examples/detector-rules/objects.toml" "$work/policies/"
"$root/target/release/cascade" serve --listen 127.0.0.1:0 --policies "$work/policies" > "$work/out" 2> "$work/log" &
until grep -q listening "$work/out" 2>/dev/null; do sleep 0.2; done
url=$(sed -n 's/^listening on //p' "$work/out" | head -1)
for f in $(awk -F, 'NR>1 && $3 ~ /Mi3-Lab/ {print $1}' "$shared/data/roadwork-dev/manifest.csv" | head -4); do
  curl -s "$url/v1/predict/objects" -H 'content-type: image/jpeg' --data-binary @"$shared/data/roadwork-dev/$f" |
    python3 -c 'import json,sys; a=json.load(sys.stdin); print("%.3f %-10s %s" % (a["prediction"], a["stage"], a["reason"][:120]))'
done
