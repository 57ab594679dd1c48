"""Exports torchvision's ViT-B/16 (random weights from seed 0: for timing only) to ONNX for
cascade, with each block's attention written out as separate query/key/value projections —
the BERT-style graph ONNX Runtime's transformer optimiser fuses into one Attention kernel
(`scripts/fp16.py --transformer vit`). torchvision's packed `nn.MultiheadAttention` exports as a
graph the optimiser does not recognise, which leaves attention as loose MatMul/Softmax ops.
The weights and the arithmetic are the same; the script checks the exported model's function
against torchvision's own module before writing it.

    python3 scripts/gpu/export_vit.py OUT.onnx
"""

import math
import sys

import torch
import torchvision


class SplitAttention(torch.nn.Module):
    """`nn.MultiheadAttention(x, x, x)` with its packed in-projection split into q, k, v."""

    def __init__(self, mha):
        super().__init__()
        d = mha.embed_dim
        self.heads, self.dh = mha.num_heads, d // mha.num_heads
        self.q, self.k, self.v = (torch.nn.Linear(d, d) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
                lin.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
        self.out = mha.out_proj

    def forward(self, x, _k=None, _v=None, need_weights=False):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, self.dh).permute(0, 2, 1, 3)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(ctx.permute(0, 2, 1, 3).reshape(b, n, d)), None


def reference():
    """torchvision's ViT-B/16, random weights from seed 0. torchvision starts the classifier
    head at zero (every logit 0, every score 1/1000), which would make any agreement check
    pass; the head gets random weights too."""
    torch.manual_seed(0)
    m = torchvision.models.vit_b_16(weights=None).eval()
    with torch.no_grad():
        torch.nn.init.normal_(m.heads.head.weight, std=0.05)
    return m


def export(path):
    ref = reference()
    model = reference()
    for block in model.encoder.layers:
        block.self_attention = SplitAttention(block.self_attention)
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        d = (model(x) - ref(x)).abs().max().item()
    assert d < 1e-3, f"split attention differs from torchvision's by {d}"
    print(f"ViT-B/16 with split attention: max |Δ logits| vs torchvision {d:.2e}", file=sys.stderr)
    torch.onnx.export(model, x[:1], path, input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)


if __name__ == "__main__":
    export(sys.argv[1])
