"""What the validators' synthetic recipe costs on one GPU: Stable Diffusion XL base 1.0's
architecture (UNet, VAE, both text encoders at their published sizes), randomly initialised in
fp16 on the device (the weights are not reachable from the GPU machine; the arithmetic, and so
the time, does not depend on them), run through diffusers' SDXL pipelines as
`scripts/train/synthetic.py` runs them: t2i at 1024x1024 and i2i at strength 0.7 from a
1024x1024 image, guidance 8 (two UNet passes per step), 25 steps. Prints seconds per image and
per 1,000 images, and the peak GPU memory.

    PYTHONPATH=<transformers+diffusers wheels> OUT=$OUT python3 cost.py
"""

import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "train"))


def main():
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from PIL import Image
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    import synthetic
    from testsupport import tiny_clip_tokenizer

    dev, dt = torch.device("cuda"), torch.float16
    t0 = time.time()
    with torch.device(dev):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816).to(dt)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=1024,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            scaling_factor=0.13025, force_upcast=False).to(dt)
        te1 = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                           num_hidden_layers=12, vocab_size=49408, projection_dim=768,
                                           hidden_act="quick_gelu")).to(dt)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                         num_attention_heads=20, num_hidden_layers=32,
                                                         vocab_size=49408, projection_dim=1280, hidden_act="gelu")).to(dt)
    params = sum(p.numel() for m in (unet, vae, te1, te2) for p in m.parameters())
    tok = tiny_clip_tokenizer(tempfile.mkdtemp())
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                   timestep_spacing="leading")
    t2i = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok,
                                    unet=unet, scheduler=sched)
    i2i = StableDiffusionXLImg2ImgPipeline(**t2i.components)
    for p in (t2i, i2i):
        p.set_progress_bar_config(disable=True)
    build = time.time() - t0
    prompt = synthetic.template(1, "a city street with parked cars")
    real = Image.new("RGB", (1024, 1024), (90, 110, 130))
    args = dict(prompt=prompt, negative_prompt=synthetic.NEGATIVE, guidance_scale=8.0, num_inference_steps=25)
    t2i(height=1024, width=1024, **args)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    res = {}
    for task, call in (("t2i", lambda: t2i(height=1024, width=1024, **args)),
                       ("i2i", lambda: i2i(image=real, strength=0.7, **args))):
        ts = []
        for _ in range(int(os.environ.get("RUNS", "8"))):
            s = time.time()
            call()
            torch.cuda.synchronize()
            ts.append(time.time() - s)
        ts_sorted = sorted(ts)
        res[task] = {"seconds": (ts_sorted[(len(ts) - 1) // 2] + ts_sorted[len(ts) // 2]) / 2, "min": ts_sorted[0], "max": ts_sorted[-1], "runs": ts}
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "params": params, "build_s": build,
           "t2i_s": res["t2i"]["seconds"], "i2i_s": res["i2i"]["seconds"],
           "per_1000_s_half_and_half": 500 * (res["t2i"]["seconds"] + res["i2i"]["seconds"]),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "runs": res}
    print(json.dumps(out, indent=2))
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "cost.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
