"""Labelled synthetic images made the way validators make their synthetic half, for training.

    .cache/train-venv/bin/python scripts/train/synthetic.py --manifest data/validator/manifest.csv \\
        --out data/synthetic --n 1000 [--model stabilityai/stable-diffusion-xl-base-1.0] \\
        [--prompts caption|scene|template] [--captioner Salesforce/blip-image-captioning-large] \\
        [--i2i-share 0.5] [--steps 25] [--guidance 8.0] [--strength 0.7] [--size 1024] [--seed 72]

What validators do (the subnet's `natix/synthetic_data_generation/`, `natix/validator/config.py`):
for each image a label is drawn 50/50, a real image of that label is taken from their cache,
captioned (BLIP-2) and the caption rewritten by an instruction model into a "photorealistic
dashcam footage" description with roadwork added (label 1) or a clear, normal road (label 0);
SDXL base 1.0 then draws it from the text alone (t2i, 1024x1024) or from the real image at
strength 0.7 (i2i, the image no larger than 1024 a side), guidance 8, 25 steps, with a negative
prompt against cartoons, renders, aerial and indoor views and blur. The generated image keeps
the label.

This command does the same with `diffusers` (StableDiffusionXLPipeline and the img2img pipeline
sharing its weights), alternating t2i and i2i (`--i2i-share`). Prompts (`--prompts`):
- `caption` (default): the real image captioned by `--captioner` (a transformers
  image-text-to-text model; the validators' BLIP-2 is `Salesforce/blip2-opt-2.7b-coco`), then put
  into the validators' form by a fixed template per label (no second model: the instruction
  model's rewrite is what the template stands for);
- `scene`: the manifest's `scene_description` (the validators' dataset has one for roadwork
  rows) for label 1, the template for label 0;
- `template`: the templates alone.
Images go to OUT/sdxl_t2i/ and OUT/sdxl_i2i/ as PNG (the folder is the group the grouped folds
hold out together) with OUT/manifest.csv (`path,label,source,challenge,task,prompt,model,seed,
from`), written last; `--json` prints the timings (seconds per image, per 1,000).
"""

import argparse
import csv
import json
import os
import random
import sys
import time
import warnings

os.environ.setdefault("USE_HUB_KERNELS", "NO")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import manifests  # noqa: E402

# the validators' negative prompt in intent: no drawings or renders, no aerial, indoor or
# surveillance views, no portraits, no exotic colour or optics, no blur
NEGATIVE = ("cartoon, anime, painting, drawing, illustration, sketch, stylized, 3d render, cgi, video game, unrealistic, "
            "aerial view, bird's eye view, top-down view, drone footage, satellite view, security camera, cctv, indoor "
            "scene, interior, portrait, close-up face, selfie, oversaturated, neon, night vision, thermal image, fisheye, "
            "motion blur, blurry, out of focus")
ROADWORK = ("orange traffic cones, construction barriers, a lane closure sign, construction vehicles and road workers in "
            "safety vests")


class SynthError(Exception):
    pass


def say(*a):
    print("[synthetic]", *a, flush=True)


def template(label, caption=None):
    scene = (caption or "a street seen from a car").rstrip(". ")
    if label == 1:
        return f"Photorealistic dashcam footage of {scene}, with active roadwork: {ROADWORK}."
    return f"Photorealistic dashcam footage of {scene}, a clear road with normal traffic and no roadwork."


def read_rows(paths):
    return [r for m in paths for r in manifests.read(m)]


def pipelines(model, revision, device, dtype):
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    td = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t2i = StableDiffusionXLPipeline.from_pretrained(model, revision=revision, torch_dtype=td)
    except (OSError, ValueError, TypeError, EnvironmentError) as e:
        raise SynthError(f"{model}: not a Stable Diffusion XL pipeline this command can load ({e})") from None
    t2i = t2i.to(device)
    i2i = StableDiffusionXLImg2ImgPipeline(**t2i.components)
    for p in (t2i, i2i):
        p.set_progress_bar_config(disable=True)
    return t2i, i2i


def captioner(name, device):
    """An image -> caption function over any image-text-to-text model (BLIP, BLIP-2, ...)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proc = AutoProcessor.from_pretrained(name)
            model = AutoModelForImageTextToText.from_pretrained(name).to(device).eval()
    except (OSError, ValueError, KeyError) as e:
        raise SynthError(f"{name}: not an image-to-text model this command can load ({e})") from None

    def run(img):
        import torch

        inputs = proc(images=img, return_tensors="pt").to(device)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=40)
        return proc.batch_decode(ids, skip_special_tokens=True)[0].strip()

    return run


def run(a):
    import torch
    from PIL import Image

    if a.n < 1:
        raise SynthError("--n must be at least 1")
    rows = read_rows(a.manifest)
    # the validators' sampler never serves label 0 with a scene description, nor label 1 without
    # one, where the data says (a manifest without the column keeps every row)
    has_scene = any(r["scene"] for r in rows)
    pool = {lab: [r for r in rows if r["label"] == lab and (not has_scene or bool(r["scene"]) == (lab == 1))]
            for lab in (0, 1)}
    for lab in (0, 1):
        if not pool[lab]:
            raise SynthError(f"the manifests have no usable image of label {lab} to start from")
    if a.prompts == "scene" and not has_scene:
        raise SynthError("--prompts scene needs a scene_description column (the validators' dataset has one)")
    device = a.device
    t2i, i2i = pipelines(a.model, a.revision, device, a.dtype)
    cap = captioner(a.captioner, device) if a.prompts == "caption" else None
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for task in ("sdxl_t2i", "sdxl_i2i"):
        os.makedirs(os.path.join(a.out, task), exist_ok=True)
    out_rows, times = [], {"t2i": [], "i2i": [], "caption": []}
    for k in range(a.n):
        label = rng.choice([0, 1])
        src = rng.choice(pool[label])
        task = "i2i" if rng.random() < a.i2i_share else "t2i"
        try:
            with Image.open(src["path"]) as im:
                real = im.convert("RGB")
        except OSError as e:
            raise SynthError(f"{src['path']}: {e}") from None
        t0 = time.time()
        if a.prompts == "caption":
            prompt = template(label, cap(real))
            times["caption"].append(time.time() - t0)
        elif a.prompts == "scene" and label == 1:
            prompt = src["scene"]
        else:
            prompt = template(label)
        seed = rng.randrange(2**31)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        args = dict(prompt=prompt, negative_prompt=NEGATIVE, guidance_scale=a.guidance, num_inference_steps=a.steps,
                    generator=gen)
        t1 = time.time()
        try:
            if task == "t2i":
                img = t2i(height=a.size, width=a.size, **args).images[0]
            else:
                if max(real.size) > a.size:  # as validators: larger images go to size x size
                    real = real.resize((a.size, a.size), Image.Resampling.LANCZOS)
                img = i2i(image=real, strength=a.strength, **args).images[0]
        except torch.cuda.OutOfMemoryError:
            raise SynthError(f"out of GPU memory at {a.size} px: try --size {a.size // 2} or --dtype fp16") from None
        times[task].append(time.time() - t1)
        rel = os.path.join(f"sdxl_{task}", f"{k:06d}.png")
        img.save(os.path.join(a.out, rel))
        out_rows.append({"path": rel, "label": label, "source": f"sdxl_{task}", "challenge": 0, "task": task,
                         "prompt": prompt, "model": a.model, "seed": seed, "from": src["path"]})
        say(f"{k + 1}/{a.n} {task} label {label}: {times[task][-1]:.1f} s")
    tmp = os.path.join(a.out, ".manifest.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    os.replace(tmp, os.path.join(a.out, "manifest.csv"))
    mean = lambda v: sum(v) / len(v) if v else None
    summary = {"images": len(out_rows), "roadwork": sum(r["label"] for r in out_rows),
               "t2i": len(times["t2i"]), "i2i": len(times["i2i"]),
               "seconds_per_image": {k: mean(v) for k, v in times.items()},
               "seconds_per_1000": 1000 * (mean(times["t2i"] + times["i2i"]) + (mean(times["caption"]) or 0.0)),
               "size": a.size, "steps": a.steps, "device": device, "dtype": a.dtype}
    say(f"wrote {len(out_rows)} images ({summary['roadwork']} roadwork) and {os.path.join(a.out, 'manifest.csv')}")
    if a.json:
        print(json.dumps(summary))
    return 0


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", nargs="+", required=True, help="real labelled images to start from")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, required=True, help="images to make")
    p.add_argument("--model", default="stabilityai/stable-diffusion-xl-base-1.0", help="an SDXL pipeline (Hub id or folder)")
    p.add_argument("--revision")
    p.add_argument("--prompts", choices=["caption", "scene", "template"], default="caption")
    p.add_argument("--captioner", default="Salesforce/blip-image-captioning-large", help="an image-to-text model")
    p.add_argument("--i2i-share", type=float, default=0.5, help="share of images drawn from a real one (img2img)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=8.0)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=72)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--json", action="store_true", help="print the timings as JSON at the end")
    a = p.parse_args(argv)
    try:
        return run(a)
    except (SynthError, manifests.ManifestError) as e:
        print(f"[synthetic] error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
