#!/usr/bin/env bash
# Runs on the GPU machine once the parts of bundle.sh are in /tmp/ftparts (README.md). Every
# setting is scored leave-one-source-out over the street-level sources (the web cone photos always
# train), on view 0 of each held-out image (the draw `cascade eval` makes, levels 0-3):
#   frozen  --unfreeze 0: today's recipe, the head on frozen features
#   ft2/ft4 the last 2 / 4 blocks fine-tuned with the head (LP-FT)
# Results (JSON reports, out-of-fold CSVs, the log) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
X=/tmp/ft
if [ ! -d $X/views ]; then
  mkdir -p $X && cat /tmp/ftparts/part_* | tar xf - -C $X
fi
# transformers and its dependencies beside the machine's own PyTorch and numpy
if [ ! -d /tmp/ftsite/transformers ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/ftsite $X/wheels/*.whl
fi
export PYTHONPATH=/tmp/ftsite
PY=python3
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
SETTINGS=${SETTINGS:-frozen:0 ft2:2 ft4:4}
EPOCHS=${EPOCHS:-6}
for s in $SETTINGS; do
  name=${s%%:*}; k=${s##*:}
  /usr/bin/time -v $PY scripts/train/finetune.py --backbone $X/dinov2_vits14_hf --views-from $X/views \
    --features cls,mean,mid:8 --cv source --unfreeze "$k" --epochs "$EPOCHS" --batch 64 --workers 12 \
    --json "$OUT/$name.json" --oof "$OUT/$name.oof.csv" 2>&1 | grep -v Warning | tee "$OUT/$name.log" | grep -E '"group"|"mcc"|error|Elapsed|Maximum resident'
done
