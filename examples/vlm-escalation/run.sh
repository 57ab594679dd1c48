#!/usr/bin/env bash
# The shipped roadwork classifier answers the clear cases; the uncertain ones are escalated to a
# vision-language model behind an OpenAI-compatible endpoint. Here the endpoint is the local
# stand-in (tests/standins/openai_chat.py: no VLM runs on this machine; it "sees" orange-red as
# roadwork). Point `url` and `model` at a vLLM / SGLang / llama.cpp server or a hosted API and
# set the key's variable to run the same policy for real.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/policies"
"$root/.venv/bin/python" "$root/tests/standins/openai_chat.py" --port 0 --api-key demo-key > "$work/vlm.out" &
until grep -q listening "$work/vlm.out" 2>/dev/null; do sleep 0.2; done
vlm=$(sed -n 's/^listening on //p' "$work/vlm.out" | head -1)
# the shipped registry (paths made absolute) plus the VLM
sed "s|\"\.\./|\"$root/|g; s|\"heads/|\"$root/policies/heads/|g" "$root/policies/models.toml" > "$work/policies/models.toml"
cat >> "$work/policies/models.toml" <<TOML

[[model]]
name = "vlm"
kind = "vlm"
workers = 4            # requests in flight to the endpoint
vlm = { url = "$vlm", model = "standin-vl", api_key_env = "VLM_API_KEY", image_side = 448, jpeg_quality = 85, max_tokens = 8, timeout_ms = 4000, retries = 1, breaker = { failures = 5, open_ms = 5000 } }
TOML
cp "$root/examples/vlm-escalation/escalate.toml" "$work/policies/"
VLM_API_KEY=demo-key "$root/target/release/cascade" serve --listen 127.0.0.1:0 --policies "$work/policies" \
  > "$work/out" 2> "$work/log" &
until grep -q listening "$work/out" 2>/dev/null; do sleep 0.2; done
url=$(sed -n 's/^listening on //p' "$work/out" | head -1)
shared="$root/../shared/data/roadwork-more"
for f in $(awk -F, 'NR>1 {print $1}' "$shared/manifest.csv" | head -6); do
  curl -s "$url/v1/predict/escalate" -H 'content-type: image/jpeg' --data-binary @"$shared/$f" |
    python3 -c 'import json,sys; a=json.load(sys.stdin); print("%.3f %-10s %s" % (a["prediction"], a["stage"], a["reason"][:110]))'
done
echo "--- VLM calls, retries, fast failures:"
curl -s "$url/metrics" | grep -E '^cascade_model_(items|retries|fast_failures)_total\{model="vlm"\}|breaker_open\{model="vlm"\}'
