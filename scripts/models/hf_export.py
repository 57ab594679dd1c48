"""Export a Hugging Face image-classification checkpoint to a folder `cascade` reads with
`hf = "FOLDER"` in models.toml: model.onnx beside the checkpoint's config.json (labels) and
preprocessor_config.json (size, crop, mean, std).

    # on a machine with internet and: pip install torch transformers (CPU is enough)
    python scripts/models/hf_export.py export REPO_OR_DIR OUT_DIR [--opset 17]
    # anywhere (only the `onnx` package): check an exported folder before serving it
    python scripts/models/hf_export.py check OUT_DIR

`export` loads the checkpoint with `AutoModelForImageClassification` (a Hub repo id such as
`facebook/convnext-tiny-224`, or a local folder holding model.safetensors / pytorch_model.bin
and config.json, as the reference miner pulls them), traces it at the processor's input size
with a dynamic batch axis, writes `logits` as the one output, copies the two JSON files, and
ends with `check`. `check` refuses a folder whose labels do not match the model's outputs, whose
processor size does not match a fixed input, or that lacks a file, and prints the registry
entry to paste.
"""

import argparse
import glob
import json
import os
import sys


def image_files(paths):
    """Image files named by `paths`: files as given, folders searched for JPEG and PNG files."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(f for f in glob.glob(os.path.join(p, "**", "*"), recursive=True)
                          if f.lower().endswith((".jpg", ".jpeg", ".png")))
        else:
            out.append(p)
    return out


class ExportError(Exception):
    pass


def processor_size(pre):
    """(height, width) the processor hands the model, as transformers' processors compute it."""
    crop = pre.get("crop_size") if pre.get("do_center_crop") else None
    size = crop or pre.get("size")
    if size is None:
        raise ExportError("preprocessor_config.json has no size")
    if isinstance(size, int):
        return size, size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ExportError(f"preprocessor_config.json: size {size!r} is not one this script knows")


def read_json(folder, name):
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: {e}") from None


def model_path(folder):
    for p in (os.path.join(folder, "model.onnx"), os.path.join(folder, "onnx", "model.onnx")):
        if os.path.exists(p):
            return p
    raise ExportError(f"{folder} has no model.onnx (nor onnx/model.onnx)")


def check(folder):
    import onnx

    config = read_json(folder, "config.json")
    pre = read_json(folder, "preprocessor_config.json")
    labels = config.get("id2label") or {}
    try:
        ids = sorted(int(k) for k in labels)
    except ValueError:
        raise ExportError(f"config.json: id2label keys {sorted(labels)} are not class numbers") from None
    if ids != list(range(len(ids))) or not ids:
        raise ExportError("config.json: id2label must number the classes 0, 1, ... without gaps")
    h, w = processor_size(pre)
    model = onnx.load(model_path(folder), load_external_data=False)
    inp = model.graph.input[0].type.tensor_type.shape.dim
    out = model.graph.output[0].type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise ExportError(f"the model's input is {dims}, not [batch, 3, height, width]")
    if (dims[2], dims[3]) != (None, None) and (dims[2], dims[3]) != (h, w):
        raise ExportError(f"the model takes {dims[2]}x{dims[3]} but the processor gives {h}x{w}")
    classes = out[-1].dim_value if out and out[-1].HasField("dim_value") else None
    if classes is not None and classes != len(ids):
        raise ExportError(f"the model has {classes} outputs but config.json names {len(ids)} labels")
    names = [labels[str(i)] for i in ids]
    def says_roadwork(n):
        n = n.lower().replace("-", "_").replace(" ", "_")
        negated = n.startswith(("no_", "not_", "non_", "none")) or "_no_" in n
        return ("road" in n or "construction" in n) and not negated

    positive = [n for n in names if says_roadwork(n)] or names[-1:]
    print(f"ok: {folder}: {len(names)} labels {names}, input {h}x{w}")
    print("registry entry (models.toml):\n")
    print("[[model]]\nname = \"hub\"\nkind = \"classifier\"")
    print(f"hf = {json.dumps(os.path.abspath(folder))}")
    print(f"positive = {json.dumps(positive)}")
    return names


def export(source, out, opset):
    try:
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
    except ImportError:
        raise ExportError("export needs torch and transformers: pip install torch transformers") from None
    os.makedirs(out, exist_ok=True)
    config = AutoConfig.from_pretrained(source)
    processor = AutoImageProcessor.from_pretrained(source)
    model = AutoModelForImageClassification.from_pretrained(source).eval()
    config.save_pretrained(out)
    processor.save_pretrained(out)
    h, w = processor_size(read_json(out, "preprocessor_config.json"))
    dummy = torch.zeros(1, 3, h, w)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    torch.onnx.export(
        Logits(model), (dummy,), os.path.join(out, "model.onnx"),
        input_names=["pixel_values"], output_names=["logits"],
        dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset, do_constant_folding=True,
    )
    # the tokenizer-free processors write nothing else that cascade reads
    for extra in ("special_tokens_map.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))
    return check(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="checkpoint (Hub id or folder) to an exported folder")
    e.add_argument("source")
    e.add_argument("out")
    e.add_argument("--opset", type=int, default=17)
    c = sub.add_parser("check", help="check an exported folder and print its registry entry")
    c.add_argument("folder")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "export":
            export(a.source, a.out, a.opset)
        else:
            check(a.folder)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
