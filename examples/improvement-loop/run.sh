#!/usr/bin/env bash
# The improvement loop end to end on the dev images, as an operator runs it week by week:
#   week 0  the `speed` hotkey serves with a head trained on roadwork-dev only (web cone photos
#           and a few dash-cam frames), logging what it answers;
#   traffic A  street frames from Germany and the UK (gtsdb, camvid) — the uncertain band is
#           exported as hard cases and labelled (here from the data set's own labels);
#   traffic B  street frames from other sources (Cityscapes, Australian night work zones, web
#           weather, BDD), logged with every image, never used for training or tuning;
#   week 1  the head retrained on dev + the labelled hard cases, `speed`'s thresholds tuned
#           (leave-one-source-out), the candidate replayed over traffic B with labels, and
#           rolled out as a canary that waits for that labelled evidence, then promoted.
# Needs `make setup` (the models, the components, target/release/cascade) and ../shared.
# Everything happens in a scratch folder; the repository is not modified. Prints each step's
# figures; the frontier picture is kept at $OUT/frontier.svg (OUT defaults to /tmp/cascade-loop).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
shared=$(cd "$root/../shared" && pwd)
OUT=${OUT:-/tmp/cascade-loop}
rm -rf "$OUT" && mkdir -p "$OUT/policies/heads" "$OUT/cand"
PY="$root/.venv/bin/python"
C="$root/target/release/cascade"
export ORT_DYLIB_PATH="$root/target/ort/libonnxruntime.so"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
step() { printf '\n== %s\n' "$*"; }

step "week 0: a head trained on roadwork-dev only"
"$C" train-head --policies "$root/policies" --backbone dino-embed \
  --manifest "$shared/data/roadwork-dev/manifest.csv" --levels 0-3 --views 3 --calibrate --l2 0.2 \
  --out "$OUT/policies/heads/week0.json" 2>/dev/null | tail -1
sed "s|\"\.\./|\"$root/|g; s|\"heads/roadwork.json\"|\"heads/week0.json\"|; s|\"heads/|\"$OUT/policies/heads/|g; s|\"coco_labels.txt\"|\"$root/policies/coco_labels.txt\"|" \
  "$root/policies/models.toml" > "$OUT/policies/models.toml"
# week 0 serves its own head: the shipped calibration names the shipped head and would be refused
sed '/^calibration = /d' "$root/policies/speed.toml" > "$OUT/policies/speed.toml"
printf '\n[log]\ndir = "logs-a"\nimages = "uncertain"\nuncertain = [0.2, 0.8]\n' >> "$OUT/policies/speed.toml"
"$C" serve --listen 127.0.0.1:0 --policies "$OUT/policies" > "$OUT/serve.out" 2> "$OUT/serve.log" &
until grep -q listening "$OUT/serve.out" 2>/dev/null; do sleep 0.2; done
url=$(sed -n 's/^listening on //p' "$OUT/serve.out" | head -1)

# street frames of some sources, as the validator sends them (level-0 view: 224², JPEG q75)
send() {
  "$PY" - "$shared/data/roadwork-more" "$url" "$@" <<'PYEOF'
import csv, io, sys, urllib.request
from PIL import Image
base, url, sources = sys.argv[1], sys.argv[2], set(sys.argv[3:])
rows = [r for r in csv.DictReader(open(f"{base}/manifest.csv")) if r["path"].split("/")[0] in sources]
for r in rows:
    im = Image.open(f"{base}/{r['path']}").convert("RGB")
    s = min(im.size); l, t = (im.width - s) // 2, (im.height - s) // 2
    buf = io.BytesIO(); im.crop((l, t, l + s, t + s)).resize((224, 224)).save(buf, "JPEG", quality=75)
    req = urllib.request.Request(f"{url}/v1/predict/speed", buf.getvalue(), {"content-type": "image/jpeg"})
    urllib.request.urlopen(req).read()
print(f"sent {len(rows)} frames of {', '.join(sorted(sources))}")
PYEOF
}
# the validator's view of every street frame, by content, with its label (for "labelling")
"$PY" - "$shared/data/roadwork-more" "$OUT/labels.csv" <<'PYEOF'
import csv, hashlib, io, sys
from PIL import Image
base, out = sys.argv[1:]
with open(out, "w") as f:
    f.write("sha256,label,source\n")
    for r in csv.DictReader(open(f"{base}/manifest.csv")):
        im = Image.open(f"{base}/{r['path']}").convert("RGB")
        s = min(im.size); l, t = (im.width - s) // 2, (im.height - s) // 2
        buf = io.BytesIO(); im.crop((l, t, l + s, t + s)).resize((224, 224)).save(buf, "JPEG", quality=75)
        f.write(f"{hashlib.sha256(buf.getvalue()).hexdigest()},{r['label']},{r['path'].split('/')[0]}\n")
PYEOF

step "traffic A (logged; images kept in the uncertain band)"
send gtsdb_germany camvid_uk
sleep 1
"$C" log list --log "$OUT/policies/logs-a" | tail -1

step "hard cases: the uncertain band exported and labelled"
"$C" log export --log "$OUT/policies/logs-a" --band 0.2-0.8 --out "$OUT/hard"
"$PY" - "$OUT/hard" "$OUT/labels.csv" <<'PYEOF'
import csv, sys
out, labels = sys.argv[1:]
lab = {r["sha256"]: r["label"] for r in csv.DictReader(open(labels))}
rows = list(csv.DictReader(open(f"{out}/manifest.csv")))
with open(f"{out}/labelled.csv", "w") as f:
    f.write("path,label\n")
    for r in rows:
        f.write(f"{r['path']},{lab[r['image']]}\n")
print(f"labelled {len(rows)} hard cases: {sum(lab[r['image']] == '1' for r in rows)} roadwork")
PYEOF

step "traffic B (other sources; every image kept): the evaluation set"
sed -i 's/dir = "logs-a"/dir = "logs-b"/; s/images = "uncertain"/images = "all"/' "$OUT/policies/speed.toml"
sleep 2
send cityscapes_pix2pix pranav_au_night kagan94_web_weather bdd100k_yolop
sleep 1
"$C" log list --log "$OUT/policies/logs-b" | tail -1

step "week 1: the head retrained on dev + the labelled hard cases"
"$C" train-head --policies "$root/policies" --backbone dino-embed \
  --manifest "$shared/data/roadwork-dev/manifest.csv" --manifest "$OUT/hard/labelled.csv" \
  --levels 0-3 --views 3 --calibrate --l2 0.2 --out "$OUT/policies/heads/week1.json" 2>/dev/null | tail -1
# the registry gains the week-1 classifier (a live reload), the candidate folder its copy
"$PY" - "$OUT/policies/models.toml" <<'PYEOF'
import re, sys
p = sys.argv[1]; t = open(p).read()
m = re.search(r'\[\[model\]\]\nname = "roadwork"\n.*?(?=\n\[\[model\]\]|\Z)', t, re.S).group(0)
open(p, "a").write("\n" + m.replace('name = "roadwork"', 'name = "roadwork-w1"').replace("week0.json", "week1.json") + "\n")
PYEOF
cp "$OUT/policies/models.toml" "$OUT/cand/models.toml"
sed 's/"roadwork"/"roadwork-w1"/; s/roadwork = 1.0, "roadwork:flip"/"roadwork-w1" = 1.0, "roadwork-w1:flip"/; /^\[log\]/,$d' "$OUT/policies/speed.toml" > "$OUT/cand/speed.toml"

step "tune the week-1 policy's thresholds (leave one source out)"
"$C" tune --policies "$OUT/cand" --hotkey speed \
  --manifest "$shared/data/roadwork-dev/manifest.csv" --manifest "$OUT/hard/labelled.csv" --levels 0-3 \
  --out "$OUT/tuned-speed.toml" --svg "$OUT/frontier.svg" 2>/dev/null

step "replay the tuned candidate over traffic B, with labels"
"$PY" "$root/examples/improvement-loop/candidate.py" stable "$OUT/tuned-speed.toml" "$OUT/cand/tuned.toml" tuned
"$PY" - "$OUT/labels.csv" "$OUT/policies/logs-b" "$OUT/b-labelled.csv" <<'PYEOF'
import csv, os, sys
labels, logdir, out = sys.argv[1:]
lab = {r["sha256"]: r["label"] for r in csv.DictReader(open(labels))}
with open(out, "w") as f:
    f.write("path,label\n")
    for name in sorted(os.listdir(f"{logdir}/images")):
        f.write(f"{logdir}/images/{name},{lab[name.split('.')[0]]}\n")
PYEOF
"$C" replay --policies "$OUT/cand" --hotkey tuned --log "$OUT/policies/logs-b" --labels "$OUT/b-labelled.csv" 2>/dev/null

step "canary: the tuned candidate, promoted or rolled back on the labelled evidence"
"$PY" "$root/examples/improvement-loop/candidate.py" canary "$OUT/tuned-speed.toml" "$OUT/policies/speed.toml"
sleep 2
# the evidence the canary waits for: a labelled replay made once this rollout began (an older
# report would be about another candidate and is ignored)
"$C" replay --policies "$OUT/cand" --hotkey tuned --log "$OUT/policies/logs-b" --labels "$OUT/b-labelled.csv" --json 2>/dev/null | tail -1 > "$OUT/policies/replay.json"
send cityscapes_pix2pix bdd100k_yolop
sleep 2
curl -s "$url/admin/status" | "$PY" -c 'import json,sys; r=json.load(sys.stdin)["hotkeys"]["speed"]["rollout"] or {}; print("winner:", r.get("winner")); [print("  ", h) for h in r.get("history", [])]'
echo "frontier picture: $OUT/frontier.svg"
