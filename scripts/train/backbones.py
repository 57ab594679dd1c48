"""The vision backbones the training path knows, and the embedding each one gives the engines.

A backbone is a Hugging Face checkpoint (a Hub id or a local folder with config.json, the
weights and preprocessor_config.json). `load(src)` returns it with its architecture; `Embedder`
wraps it so that one forward pass gives the `embedding` the engines read: a concatenation of
named features, as the shipped DINOv2 cut has them:

- `cls`   the class token after the final norm (ViT, DINOv2/v3; CLIP's pooled output, which is
          the layer-normalised class token);
- `pool`  the model's own pooled output (SigLIP's attention-pooling head, ConvNeXt's normalised
          global average);
- `mean`  the mean of the patch tokens after the final norm (registers and class token left out);
- `mid:K` the class token (or, without one, the mean token) after block K (1-based, as the
          hidden states count them), layer-normalised without affine (eps 1e-6).
"""

import os
import sys

# no code fetched from the Hub at run time: transformers would swap in "hub kernels" (downloaded
# CUDA code, refused without trust_remote_code on a machine without the network) for layers such
# as GELU; training and export use the model's own PyTorch code
os.environ.setdefault("USE_HUB_KERNELS", "NO")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models"))
from hf_export import ExportError, processor_size  # noqa: E402


class BackboneError(Exception):
    """An expected failure: the message is for the operator."""


class Arch:
    """How a family's outputs become features."""

    def __init__(self, name, loader, family, default, fusion=None):
        self.name, self.loader, self.family, self.default, self.fusion = name, loader, family, default, fusion

    def prefix(self, config):
        """Tokens before the patches: the class token and any registers."""
        return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def _auto(src, **kw):
    from transformers import AutoModel

    return AutoModel.from_pretrained(src, **kw)


def _vit(src, **kw):
    from transformers import ViTModel

    return ViTModel.from_pretrained(src, add_pooling_layer=False, **kw)


def _clip(src, **kw):
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(src, **kw)


def _siglip(src, **kw):
    from transformers import SiglipVisionModel

    return SiglipVisionModel.from_pretrained(src, **kw)


# model_type (config.json) -> how to load it and read its features; `fusion` names ONNX Runtime's
# transformer optimiser model type for the family
ARCHS = {
    "dinov2": Arch("dinov2", _auto, "vit", ["cls", "mean"], "vit"),
    "dinov2_with_registers": Arch("dinov2_with_registers", _auto, "vit", ["cls", "mean"], "vit"),
    "dinov3_vit": Arch("dinov3_vit", _auto, "vit", ["cls", "mean"], None),
    "vit": Arch("vit", _vit, "vit", ["cls", "mean"], "vit"),
    "clip": Arch("clip", _clip, "clip", ["cls", "mean"], "clip"),
    "clip_vision_model": Arch("clip_vision_model", _clip, "clip", ["cls", "mean"], "clip"),
    "siglip": Arch("siglip", _siglip, "siglip", ["pool", "mean"], None),
    "siglip_vision_model": Arch("siglip_vision_model", _siglip, "siglip", ["pool", "mean"], None),
    "convnext": Arch("convnext", _auto, "convnet", ["pool"], None),
    "convnextv2": Arch("convnextv2", _auto, "convnet", ["pool"], None),
    "dinov3_convnext": Arch("dinov3_convnext", _auto, "convnet", ["pool"], None),
}


def supported():
    return ", ".join(sorted(ARCHS))


def config_of(src, revision=None):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src, revision=revision)
    except (OSError, ValueError) as e:
        raise BackboneError(f"{src}: no readable config.json ({e})") from None


def arch_of(config, src="the model"):
    mt = getattr(config, "model_type", None)
    if mt == "siglip2" or mt == "siglip2_vision_model":
        raise BackboneError(
            f"{src}: SigLIP 2 NaFlex (variable resolution) is not a fixed-size input; use a fixed-resolution "
            f"SigLIP 2 checkpoint (model_type siglip, e.g. google/siglip2-base-patch16-224). Supported: {supported()}"
        )
    if mt not in ARCHS:
        raise BackboneError(f"{src}: model_type {mt!r} is not a vision backbone this export knows. Supported: {supported()}")
    return ARCHS[mt]


def load(src, revision=None, eager=False):
    """(model in eval mode, its config, its Arch). `eager` picks the plain attention (matmul,
    softmax, matmul): the export ONNX Runtime's transformer optimiser fuses; SDPA traces to a
    pattern it does not."""
    config = config_of(src, revision)
    arch = arch_of(config, src)
    kw = {"attn_implementation": "eager"} if eager else {}
    try:
        model = arch.loader(src, revision=revision, **kw)
    except (OSError, ValueError) as e:
        raise BackboneError(f"{src}: the weights did not load ({e})") from None
    return model.eval(), model.config, arch


def parse_features(spec, arch, config):
    names = [f.strip() for f in spec.split(",") if f.strip()] if spec else list(arch.default)
    depth = depth_of(config, arch)
    for f in names:
        if f == "cls" and arch.family in ("vit", "clip"):
            continue
        if f == "pool" and arch.family in ("siglip", "convnet", "clip"):
            continue
        if f == "mean" and arch.family != "convnet":
            continue
        if f.startswith("mid:"):
            try:
                k = int(f[4:])
            except ValueError:
                raise BackboneError(f"feature {f!r}: mid:K takes a block number") from None
            if not 1 <= k <= depth:
                raise BackboneError(f"feature {f!r}: {arch.name} has blocks 1..{depth}")
            continue
        raise BackboneError(f"feature {f!r} is not one a {arch.name} gives (cls, pool, mean, mid:K as its family allows)")
    if len(set(names)) != len(names):
        raise BackboneError(f"features {spec!r} name one twice")
    return names


def depth_of(config, arch):
    if arch.family == "convnet":
        return len(getattr(config, "depths", []) or [])
    return int(getattr(config, "num_hidden_layers", 0))


class _FusableAttention(nn.Module):
    """A Dinov2Attention written as the BERT-style graph ONNX Runtime's transformer optimiser fuses
    into one Attention kernel: the same projections, scores divided by sqrt(head size), softmax,
    weighted sum (transformers' own version multiplies by a scale on tensors reshaped with -1,
    which the optimiser does not recognise)."""

    def __init__(self, attn, heads):
        super().__init__()
        self.q, self.k, self.v, self.o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.heads, self.dh = heads, attn.q_proj.out_features // heads

    def forward(self, hidden_states, attention_mask=None, **_):
        b, n, d = hidden_states.shape
        split = lambda t: t.view(b, n, self.heads, self.dh).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = split(self.q(hidden_states)), split(self.k(hidden_states)), split(self.v(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / (self.dh ** 0.5)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o(ctx.permute(0, 2, 1, 3).reshape(b, n, d)), None


def fusable(model, arch, config, size):
    """Rewrites a DINOv2 (a copy: the caller keeps the original to check against) into the graph
    ONNX Runtime fuses for a fixed input size, with the same function: the position embeddings
    interpolated once for `size` (transformers interpolates them in every traced forward: a
    bicubic Resize and shape arithmetic that run on the CPU and keep CUDA graphs out), each
    block's layer scales folded into the output projections that feed them, and the attention
    written BERT-style. Other families are returned as they are. True when rewritten."""
    if arch.name not in ("dinov2", "dinov2_with_registers"):
        return False
    emb = model.embeddings
    h, w = size
    with torch.no_grad():
        probe = torch.zeros(1, (h // emb.patch_size) * (w // emb.patch_size) + 1, config.hidden_size)
        fixed = emb.interpolate_pos_encoding(probe, h, w).detach().clone()
    emb.interpolate_pos_encoding = lambda embeddings, height, width: fixed.to(embeddings.dtype)
    heads = int(config.num_attention_heads)
    for layer in model.encoder.layer:
        with torch.no_grad():
            for scale, lin in ((layer.layer_scale1, layer.attention.o_proj), (layer.layer_scale2, layer.mlp.fc2)):
                lam = scale.lambda1.detach()
                lin.weight.mul_(lam[:, None])
                if lin.bias is not None:
                    lin.bias.mul_(lam)
        layer.layer_scale1, layer.layer_scale2 = nn.Identity(), nn.Identity()
        layer.attention = _FusableAttention(layer.attention, heads)
    return True


def _ln(x):
    # by hand (the shipped cut's nodes): F.layer_norm's shape argument does not trace
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    return xc / torch.sqrt((xc * xc).mean(-1, keepdim=True) + 1e-6)


class Embedder(nn.Module):
    """Backbone -> `embedding` [N, D], the features in the order named."""

    def __init__(self, model, config, arch, features):
        super().__init__()
        self.model, self.arch, self.features = model, arch, list(features)
        self.prefix = arch.prefix(config)
        self.hidden = any(f.startswith("mid:") for f in self.features)

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values, output_hidden_states=self.hidden)
        parts = []
        fam = self.arch.family
        for f in self.features:
            if f == "cls":
                parts.append(out.pooler_output if fam == "clip" else out.last_hidden_state[:, 0])
            elif f == "pool":
                p = out.pooler_output
                parts.append(p.flatten(1))
            elif f == "mean":
                if fam == "clip":
                    toks = getattr(self.model, "vision_model", self.model).post_layernorm(out.last_hidden_state[:, 1:])
                elif fam == "siglip":
                    toks = out.last_hidden_state
                else:
                    toks = out.last_hidden_state[:, self.prefix:]
                parts.append(toks.mean(1))
            else:
                h = out.hidden_states[int(f[4:])]
                if fam == "convnet":
                    parts.append(_ln(h.mean((2, 3))))
                elif fam == "siglip":
                    parts.append(_ln(h.mean(1)))
                else:
                    parts.append(_ln(h[:, 0]))
        return torch.cat(parts, 1)


def input_size(pre):
    """(height, width) the processor hands the model (`hf_export.processor_size`, the
    classifier export's reading of the same file)."""
    try:
        return processor_size(pre)
    except ExportError as e:
        raise BackboneError(str(e)) from None
