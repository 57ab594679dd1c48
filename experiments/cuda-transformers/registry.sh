# shellcheck shell=bash disable=SC2034
# Sourced by final.sh and async.sh (in the project's root): the engine's registry entries for
# ViT-B/16 and the DINOv2 classifier as those runs load them.
entry() {  # NAME FILE INPUT CUDA_OPTIONS EXTRA -> a [[model]] entry
  printf '[[model]]\nname = "%s"\nkind = "classifier"\nfile = "%s"\n%s\ninput = %s\ndevice = "cuda:0"\nmax_batch = 64\nmax_delay_us = 3000\ncuda = { %s }\n\n' "$1" "$2" "$5" "$3" "$4"
}
VIT_IN='{ width = 224, height = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }'
DINO_IN='{ width = 224, height = 224, resize = "center_crop", resize_short = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }'
DINO_HEAD="output = \"embedding\"
head = \"$PWD/policies/heads/roadwork.json\"
activation = \"sigmoid\"
labels = [\"other\", \"roadwork\"]
positive = [\"roadwork\"]"
