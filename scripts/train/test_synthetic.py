"""synthetic.py with a tiny Stable Diffusion XL pipeline and a tiny BLIP captioner, both randomly
initialised from configs (no download): t2i and i2i images with their labels and prompts, the
validators' sampler rule on the source images, and refusals.

    .cache/train-venv/bin/python -m unittest discover -s scripts/train -p 'test_*.py'
"""

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import synthetic  # noqa: E402
from testsupport import quiet, tiny_clip_tokenizer  # noqa: E402


def tiny_sdxl(folder):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80, cross_attention_dim=64,
        norm_num_groups=1)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                   timestep_spacing="leading")
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=1)
    tc = CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=32, intermediate_size=37,
                        num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, projection_dim=32)
    tok = tiny_clip_tokenizer(folder)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(tc), tokenizer=tok,
                                     text_encoder_2=CLIPTextModelWithProjection(tc), tokenizer_2=tok, unet=unet,
                                     scheduler=sched)
    pipe.save_pretrained(folder)
    return folder


def tiny_blip(folder):
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    os.makedirs(folder, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "road", "with", "cars", "street", "town"]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    tok = BertTokenizer(os.path.join(folder, "vocab.txt"), bos_token="[DEC]")
    cfg = BlipConfig(text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=37, encoder_hidden_size=32, bos_token_id=5, pad_token_id=0,
                                      sep_token_id=3),
                     vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                        image_size=32, patch_size=8),
                     projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(folder)
    return folder


class SyntheticTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from PIL import Image

        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.dir = cls.tmp.name
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            cls.sdxl = tiny_sdxl(os.path.join(d, "sdxl"))
            cls.blip = tiny_blip(os.path.join(d, "blip"))
        os.makedirs(os.path.join(d, "real"))
        rows = [["path", "label", "scene_description"]]
        # the validators' sampler rule: label 1 needs a description, label 0 must have none
        for i, (label, scene) in enumerate([(1, "Photorealistic dashcam footage of cones on a wet road."), (0, ""),
                                            (1, ""), (0, "a stray description")]):
            size = (48, 40) if i == 0 else (80 + 10 * i, 60)  # one smaller than --size, kept by img2img
            Image.new("RGB", size, (40 * i, 120, 200 - 40 * i)).save(os.path.join(d, "real", f"{i}.jpg"))
            rows.append([f"real/{i}.jpg", str(label), scene])
        cls.manifest = os.path.join(d, "manifest.csv")
        with open(cls.manifest, "w", newline="") as f:
            csv.writer(f).writerows(rows)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def generate(self, out, *extra):
        return quiet(synthetic.main, ["--manifest", self.manifest, "--out", out, "--model", self.sdxl, "--steps", "2",
                                      "--size", "64", "--device", "cpu", "--dtype", "fp32", "--json", *extra])

    def rows(self, out):
        with open(os.path.join(out, "manifest.csv"), newline="") as f:
            return list(csv.DictReader(f))

    def test_captioned_t2i_and_i2i_images_keep_their_labels(self):
        out = os.path.join(self.dir, "caption")
        rc, text, err = self.generate(out, "--n", "6", "--prompts", "caption", "--captioner", self.blip)
        self.assertEqual(rc, 0, text + err)
        rows = self.rows(out)
        self.assertEqual(len(rows), 6)
        self.assertEqual({r["task"] for r in rows}, {"t2i", "i2i"}, "both tasks drawn")
        for r in rows:
            from PIL import Image

            with Image.open(os.path.join(out, r["path"])) as im, Image.open(r["from"]) as src:
                self.assertEqual(im.format, "PNG")
                if r["task"] == "t2i":
                    self.assertEqual(im.size, (64, 64))
                elif max(src.size) > 64:  # as validators: a larger source goes to --size square
                    self.assertEqual(im.size, (64, 64))
                else:  # img2img keeps a smaller source's size
                    self.assertEqual(im.size, (48, 40))
            self.assertTrue(r["path"].startswith(f"sdxl_{r['task']}/"))
            self.assertTrue(r["prompt"].startswith("Photorealistic dashcam footage of "), r["prompt"])
            # only the images the validators' sampler serves are started from
            self.assertIn(os.path.basename(r["from"]), {"0.jpg", "1.jpg"})
            self.assertEqual(int(r["label"]), 1 if r["from"].endswith("0.jpg") else 0)
            self.assertEqual(("active roadwork" in r["prompt"]), r["label"] == "1", r["prompt"])
        summary = json.loads(text.strip().splitlines()[-1])
        self.assertEqual((summary["images"], summary["t2i"] + summary["i2i"]), (6, 6))
        self.assertGreater(summary["seconds_per_1000"], 0)

    def test_scene_prompts_come_from_the_dataset(self):
        out = os.path.join(self.dir, "scene")
        rc, text, err = self.generate(out, "--n", "4", "--prompts", "scene", "--i2i-share", "0")
        self.assertEqual(rc, 0, text + err)
        for r in self.rows(out):
            self.assertEqual(r["task"], "t2i")
            if r["label"] == "1":
                self.assertEqual(r["prompt"], "Photorealistic dashcam footage of cones on a wet road.")

    def test_refusals(self):
        out = os.path.join(self.dir, "bad")
        rc, _, err = quiet(synthetic.main, ["--manifest", self.manifest, "--out", out, "--n", "1", "--model",
                                            self.blip, "--device", "cpu", "--dtype", "fp32"])
        self.assertEqual(rc, 2)
        self.assertIn("not a Stable Diffusion XL pipeline this command can load", err)
        bad = os.path.join(self.dir, "bad.csv")
        with open(bad, "w") as f:
            f.write("path,label\nreal/0.jpg,1\n")
        rc, _, err = quiet(synthetic.main, ["--manifest", bad, "--out", out, "--n", "1", "--model", self.sdxl])
        self.assertEqual(rc, 2)
        self.assertIn("the manifests have no usable image of label 0 to start from", err)
        rc, _, err = self.generate(out, "--n", "1", "--prompts", "caption", "--captioner", self.sdxl)
        self.assertEqual(rc, 2)
        self.assertIn("not an image-to-text model this command can load", err)
        self.assertFalse(os.path.exists(os.path.join(out, "manifest.csv")))


if __name__ == "__main__":
    unittest.main()
