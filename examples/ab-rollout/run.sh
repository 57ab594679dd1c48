#!/usr/bin/env bash
# A candidate policy on 30 % of a hotkey's traffic, then promoted, then rolled back.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$root/policies" "$work/policies"
sed -i "s|\"\.\./|\"$root/|g" "$work/policies/models.toml"
cat >> "$work/policies/speed.toml" <<'TOML'

# the candidate: a stricter first stage
[candidate]
router = { component = "cascade-router@^1", params = { stages = [{ name = "strict", classify = ["roadwork"], exit_low = 0.1, exit_high = 0.9 }, { name = "strict-flip", classify = ["roadwork"], flip = true }] } }

[rollout]
mode = "ab"
share = 30
TOML
"$root/target/release/cascade" serve --listen 127.0.0.1:0 --policies "$work/policies" > "$work/out" 2> "$work/log" &
until grep -q listening "$work/out" 2>/dev/null; do sleep 0.2; done
url=$(sed -n 's/^listening on //p' "$work/out" | head -1)
for i in $(seq 1 40); do
  curl -s "$url/v1/predict/speed" -H 'content-type: image/jpeg' -H "x-request-key: client-$i" \
    --data-binary @"$root/target/test-images/road_closed.jpg" > /dev/null
done
show() {
  curl -s "$url/admin/status" | python3 -c '
import json, sys
r = json.load(sys.stdin)["hotkeys"]["speed"]["rollout"]
print("share", r["candidate_share"], "% | winner", r["winner"], "| stable", r["stable"]["requests"], "| candidate", r["candidate"]["requests"])'
}
show
curl -s -X POST "$url/admin/hotkeys/speed/promote" > /dev/null && echo "promoted:" && show
curl -s -X POST "$url/admin/hotkeys/speed/rollback" > /dev/null && echo "rolled back:" && show
echo "decision kept in $(ls "$work"/policies/*.state.json)"
