"""Fine-tune a vision backbone and a roadwork head on labelled manifests, under the validators'
augmentation, then export both as one classifier the engines load.

    .cache/train-venv/bin/python scripts/train/finetune.py --backbone SRC --manifest M [M ...] --out DIR
        [--features cls,mean,mid:8] [--unfreeze 2] [--epochs 6] [--batch 32] [--lr 2e-5]
        [--views 4] [--levels 0-3] [--views-from DIR] [--holdout GROUP[,GROUP]] [--patience 2]
        [--checkpoint DIR [--resume]] [--eval-manifest M] [--cv source] [--device cuda]
    torchrun --nproc_per_node=N scripts/train/finetune.py ...        # several GPUs (DDP)

SRC is a checkpoint folder or Hub id `export_backbone.py` knows (for the shipped DINOv2:
`dinov2_from_onnx.py`'s `target/models/dinov2_vits14_hf`). Training:

- Views: every image is drawn `--views` times through the subnet's augmentation levels by the
  project's port of it (`cascade challenges`, the draws `eval` and `train-head` make; JPEG as a
  validator sends it); each epoch takes one view per image at random, so every epoch sees other
  distortions. Images that already are challenges (`challenge = 1`) are used as read.
  `--views-from` reuses a folder `cascade challenges` wrote (a machine without the binary).
- The head is first fitted on the frozen features (`train-head`'s recipe: standardised
  features, class-balanced logistic loss, L2 0.2, 300 full-batch Adam steps), then the last
  `--unfreeze` blocks (0: the head alone, -1: all) train with it: AdamW, cosine schedule,
  class-balanced loss, bf16 autocast on CUDA.
- Grouped validation: `--holdout` groups (folder = source) are kept out of training; the epoch
  whose held-out loss is lowest is kept and training stops after `--patience` epochs without a
  better one. Without a holdout every epoch trains and the last is kept.
- `--checkpoint DIR` saves each epoch (`last.pt`); `--resume` continues from it. A checkpoint of
  another backbone, feature set or unfreeze depth is refused.
- `--cv source`: leave-one-source-out over the street-level groups (groups in `--always-train`,
  the web cone photos by default, always train) with `--epochs` fixed; prints and writes
  (`--json`) the pooled out-of-fold MCC at 0.5 with a 95 % bootstrap interval, per level and per
  fold, for this setting. Run it with `--unfreeze 0` for the frozen head to compare.

Export (`--out`, not with `--cv`): `OUT/backbone/` (model.onnx with output `embedding`, the
checkpoint's config and processor files), `OUT/head.json` (`cascade-head/1`, recording the
backbone it was trained on) and `OUT/models.toml` (a `roadwork-ft` classifier). The exported
classifier is run by the engine (`cascade infer`) on held-out views and compared with PyTorch;
beyond `--bound` the export is refused, and nothing is moved into OUT before that check passes.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from backbones import BackboneError, Embedder, load, parse_features  # noqa: E402
from engine_input import describe, engine_input  # noqa: E402
from manifests import ManifestError, read as read_manifest, refuse_shared  # noqa: E402
from staging import staged  # noqa: E402


class TrainError(Exception):
    """An expected failure: the message is for the operator."""


# ---------------------------------------------------------------- data


def rank():
    return int(os.environ.get("RANK", "0"))


def say(*a):
    if rank() == 0:
        print("[finetune]", *a, flush=True)


def render_views(manifests, out, views, levels, seed, cascade):
    """`cascade challenges` over the manifests: one folder of views, its manifest's rows."""
    if not os.path.exists(cascade):
        raise TrainError(f"{cascade} is missing (make setup builds it), or pass --views-from a rendered folder")
    cmd = [cascade, "challenges", "--out", out, "--views", str(views), "--levels", levels, "--seed", str(seed)]
    for m in manifests:
        cmd += ["--manifest", m]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TrainError(f"cascade challenges failed: {r.stderr.strip()[-500:]}")
    return os.path.join(out, "manifest.csv")


def items_of(views_manifest):
    """Views grouped by their original image: {original: {label, group, views: [(path, level)]}}."""
    by = {}
    for r in read_manifest(views_manifest):
        g = by.setdefault(r["original"], {"label": r["label"], "group": r["group"], "views": [], "original": r["original"]})
        g["views"].append((r["path"], r["level"]))
    return list(by.values())


class Views(torch.utils.data.Dataset):
    """One view per image: a random one (training) or the first (evaluation, `eval`'s draw)."""

    def __init__(self, items, processor, train, seed=0):
        self.items, self.processor, self.train, self.rng = items, processor, train, random.Random(seed)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        it = self.items[i]
        path, _ = self.rng.choice(it["views"]) if self.train else it["views"][0]
        with Image.open(path) as im:
            x = self.processor(images=[im.convert("RGB")], return_tensors="pt")["pixel_values"][0]
        return x, float(it["label"]), i


# ---------------------------------------------------------------- model


def blocks(model, arch):
    """The backbone's blocks in order, and the modules after them (final norms, heads)."""
    fam = arch.family
    if fam == "convnet":
        return list(model.encoder.stages), [m for n, m in model.named_children() if n not in ("embeddings", "encoder")]
    enc = model.encoder
    layers = getattr(enc, "layer", None) or getattr(enc, "layers", None)
    if layers is None:
        raise TrainError(f"{arch.name}: no encoder layers found to unfreeze")
    return list(layers), [m for n, m in model.named_children() if n not in ("embeddings", "encoder", "pre_layrnorm")]


def set_trainable(model, arch, k):
    for p in model.parameters():
        p.requires_grad = False
    if k == 0:
        return 0
    bs, after = blocks(model, arch)
    chosen = bs if k < 0 else bs[-k:]
    if k < 0:
        chosen = list(model.children())
    for m in list(chosen) + after:
        for p in m.parameters():
            p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Classifier(nn.Module):
    """Embedder, then the head: (x - mean) / std, one linear unit (a logit)."""

    def __init__(self, embedder, dim):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, 1)

    def forward(self, x):
        return self.linear((self.embedder(x) - self.mean) / self.std).squeeze(1)


def balanced(y):
    """Row weights that give both classes the same total and sum to the row count."""
    y = np.asarray(y)
    n, pos = len(y), y.sum()
    if pos == 0 or pos == n:
        raise TrainError(f"training needs both classes: {int(pos)} roadwork of {n}")
    return np.where(y == 1, n / (2 * pos), n / (2 * (n - pos))).astype(np.float32)


@torch.no_grad()
def embed_all(embedder, loader, device, amp):
    embedder.eval()
    out, ys = [], []
    for x, y, _ in loader:
        with autocast(device, amp):
            out.append(embedder(x.to(device)).float().cpu())
        ys.append(y)
    return torch.cat(out), torch.cat(ys)


def linear_probe(clf, F, y, l2=0.2, steps=300):
    """train-head's recipe on frozen features: standardise, class-balanced BCE, L2, full-batch Adam."""
    mean, std = F.mean(0), F.std(0).clamp_min(1e-6)
    clf.mean.copy_(mean.to(clf.mean.device))
    clf.std.copy_(std.to(clf.std.device))
    X = ((F - mean) / std).to(clf.linear.weight.device)
    Y = y.to(X.device)
    W = torch.from_numpy(balanced(y.numpy())).to(X.device)
    nn.init.zeros_(clf.linear.weight)
    nn.init.zeros_(clf.linear.bias)
    opt = torch.optim.Adam(clf.linear.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        z = clf.linear(X).squeeze(1)
        loss = (nn.functional.binary_cross_entropy_with_logits(z, Y, reduction="none") * W).mean()
        loss = loss + 0.5 * l2 * (clf.linear.weight ** 2).sum()
        loss.backward()
        opt.step()


def autocast(device, amp):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ---------------------------------------------------------------- metrics


def mcc(p, y, cut=0.5):
    p, y = np.asarray(p) > cut, np.asarray(y) == 1
    tp, tn = float((p & y).sum()), float((~p & ~y).sum())
    fp, fn = float((p & ~y).sum()), float((~p & y).sum())
    d = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / d if d else 0.0


def auc(p, y):
    p, y = np.asarray(p), np.asarray(y)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def boot(p, y, reps=1000, seed=26):
    rng = np.random.default_rng(seed)
    p, y = np.asarray(p), np.asarray(y)
    vals = [mcc(p[i], y[i]) for i in (rng.integers(0, len(p), len(p)) for _ in range(reps))]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


@torch.no_grad()
def predict(clf, loader, device, amp):
    clf.eval()
    ps = []
    for x, _, _ in loader:
        with autocast(device, amp):
            ps.append(torch.sigmoid(clf(x.to(device)).float()).cpu())
    return torch.cat(ps).numpy()


# ---------------------------------------------------------------- training


def loader(items, processor, train, a, seed=0, sampler=None):
    ds = Views(items, processor, train, seed)
    return torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=train and sampler is None, sampler=sampler,
                                       num_workers=a.workers, drop_last=False,
                                       persistent_workers=a.workers > 0)


def identity(a, config):
    return {"backbone": hashlib.sha256(config.to_json_string().encode()).hexdigest()[:16],
            "features": a.features_list, "unfreeze": a.unfreeze}


def fit(a, train_items, val_items, device, checkpoint=None):
    """A Classifier trained on train_items (LP, then FT of the unfrozen blocks); the best epoch on
    val_items when there are any."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    model, config, arch = load(a.backbone)
    torch.manual_seed(a.seed)
    emb = Embedder(model, config, arch, a.features_list)
    with torch.no_grad():
        dim = int(emb(torch.zeros(1, 3, *a.size)).shape[1])
    clf = Classifier(emb, dim).to(device)
    set_trainable(model, arch, 0)
    # every view of every training image (as train-head's --views)
    per_view = [{**it, "views": [v]} for it in train_items for v in it["views"]]
    F, y = embed_all(emb, loader(per_view, a.processor, False, a), device, a.amp)
    linear_probe(clf, F.to(device), y)
    say(f"head fitted on frozen {dim}-d features of {len(per_view)} views of {len(train_items)} images")
    trainable = set_trainable(model, arch, a.unfreeze)
    start, best, best_state, history, stale = 0, float("inf"), None, [], 0
    if a.unfreeze == 0 or a.epochs == 0:
        return clf, history
    params = [{"params": [p for p in emb.parameters() if p.requires_grad], "lr": a.lr},
              {"params": list(clf.linear.parameters()), "lr": a.head_lr}]
    opt = torch.optim.AdamW(params, weight_decay=a.weight_decay)
    steps = a.epochs * math.ceil(len(train_items) / a.batch / max(1, int(os.environ.get("WORLD_SIZE", "1"))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if checkpoint and a.resume and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["identity"] != identity(a, config):
            raise TrainError(f"checkpoint {checkpoint} was trained as {state['identity']}, not {identity(a, config)}: refused")
        clf.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, best, best_state, history, stale = state["epoch"], state["best"], state["best_state"], state["history"], state["stale"]
        say(f"resumed from {checkpoint} after epoch {start}")
    net = clf
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(clf, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=True)
    sampler = torch.utils.data.distributed.DistributedSampler(range(len(train_items)), seed=a.seed) if ddp else None
    W = torch.from_numpy(balanced([it["label"] for it in train_items]))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    say(f"fine-tuning {trainable:,} parameters (last {a.unfreeze if a.unfreeze > 0 else 'all'} blocks) for {a.epochs} "
        f"epochs on {world} process{'es' if world > 1 else ''} ({device.type})")
    for epoch in range(start, a.epochs):
        t0 = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        total, n = 0.0, 0
        for x, yb, idx in loader(train_items, a.processor, True, a, a.seed + epoch, sampler):
            x, yb = x.to(device, non_blocking=True), yb.to(device).float()
            try:
                with autocast(device, a.amp):
                    z = net(x).float()
                loss = (nn.functional.binary_cross_entropy_with_logits(z, yb, reduction="none") * W[idx].to(device)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            except torch.cuda.OutOfMemoryError:
                raise TrainError(f"out of GPU memory at batch {a.batch}: try --batch {max(1, a.batch // 2)}") from None
            total += float(loss) * len(yb)
            n += len(yb)
        rec = {"epoch": epoch + 1, "train_loss": total / max(1, n), "s": round(time.time() - t0, 1)}
        if val_items:
            p = predict(clf, loader(val_items, a.processor, False, a), device, a.amp)
            yv = np.array([it["label"] for it in val_items])
            eps = 1e-6
            wv = balanced(yv) if 0 < yv.sum() < len(yv) else np.ones(len(yv), np.float32)
            rec["val_loss"] = float(-(wv * (yv * np.log(p + eps) + (1 - yv) * np.log(1 - p + eps))).mean())
            rec["val_mcc"], rec["val_auc"] = mcc(p, yv), auc(p, yv)
            if rec["val_loss"] < best:
                best, stale = rec["val_loss"], 0
                best_state = {k: v.detach().clone().cpu() for k, v in clf.state_dict().items()}
            else:
                stale += 1
        history.append(rec)
        say(json.dumps(rec))
        if checkpoint and rank() == 0:
            tmp = checkpoint + ".tmp"
            torch.save({"identity": identity(a, config), "model": clf.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "epoch": epoch + 1, "best": best, "best_state": best_state,
                        "history": history, "stale": stale}, tmp)
            os.replace(tmp, checkpoint)
        if val_items and stale >= a.patience:
            say(f"no better held-out loss for {a.patience} epochs: stopping")
            break
    if best_state is not None:
        clf.load_state_dict(best_state)
    return clf, history


# ---------------------------------------------------------------- export


def export(a, clf, out, check_items):
    import export_backbone

    with staged(out, ".finetune-") as tmp:
        clf = clf.cpu().float().eval()
        bdir = os.path.join(tmp, "backbone")
        os.makedirs(bdir)
        export_backbone.export(clf.embedder, a.size, os.path.join(bdir, "model.onnx"), 17)
        clf.embedder.model.config.save_pretrained(bdir)
        a.processor.save_pretrained(bdir)
        with open(os.path.join(bdir, "preprocessor_config.json")) as f:
            pre = json.load(f)
        dim = int(clf.mean.numel())
        head = {
            "format": "cascade-head/1", "labels": ["other", "roadwork"], "input_dim": dim,
            "mean": clf.mean.tolist(), "std": clf.std.tolist(),
            "layers": [{"weights": clf.linear.weight.detach().tolist(), "bias": clf.linear.bias.detach().tolist(), "relu": False}],
            "backbone": {"model": "roadwork-ft", "file": "model.onnx", "input": describe(engine_input(pre)), "dim": dim},
            "provenance": {"trainer": "scripts/train/finetune.py", "backbone": a.backbone, "features": a.features_list,
                           "unfreeze": a.unfreeze, "epochs": a.epochs, "lr": a.lr, "views": a.views, "levels": a.levels,
                           "manifests": a.manifest, "history": a.history},
        }
        with open(os.path.join(tmp, "head.json"), "w") as f:
            json.dump(head, f)
        with open(os.path.join(tmp, "models.toml"), "w") as f:
            f.write('[[model]]\nname = "roadwork-ft"\nkind = "classifier"\nhf = "backbone"\noutput = "embedding"\n'
                    'head = "head.json"\nactivation = "sigmoid"\nlabels = ["other", "roadwork"]\npositive = ["roadwork"]\n'
                    "threads = 2\nmax_batch = 8\nmax_delay_us = 1000\n")
        diff = engine_check(a, clf, tmp, check_items)
        say(f"engine (cascade infer) vs PyTorch on {min(len(check_items), 16)} held-out views: largest score difference "
            f"{diff:.2e} (bound {a.bound:g})")
        if not diff <= a.bound:
            raise TrainError(f"the exported classifier differs from PyTorch by {diff:.3g} (bound {a.bound:g}): refused, {out} untouched")
    say(f"wrote {out}: backbone/, head.json, models.toml (paste the entry into your registry, paths relative to it)")


def engine_check(a, clf, folder, items):
    """Largest |engine score - PyTorch probability| over the first views of `items`."""
    items = items[:16]
    paths = [it["views"][0][0] for it in items]
    if not os.path.exists(a.cascade):
        raise TrainError(f"{a.cascade} is missing: the export is checked through the engine (make setup builds it)")
    r = subprocess.run([a.cascade, "infer", "--policies", folder, "--model", "roadwork-ft", *paths],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise TrainError(f"the engine refused the export: {r.stderr.strip()[-800:]}")
    got = np.array([json.loads(line)["result"]["score"] for line in r.stdout.splitlines()])
    want = predict(clf, loader(items, a.processor, False, a), torch.device("cpu"), False)
    return float(np.abs(got - want).max())


# ---------------------------------------------------------------- commands


def cv(a, items, device):
    street = sorted({it["group"] for it in items} - set(a.always_train))
    if len(street) < 2:
        raise TrainError(f"--cv source needs two street-level groups; found {street}")
    oof = {}
    folds = []
    for g in street:
        test = [it for it in items if it["group"] == g]
        train = [it for it in items if it["group"] != g]
        t0 = time.time()
        clf, _ = fit(a, train, [], device)
        p = predict(clf, loader(test, a.processor, False, a), device, a.amp)
        y = np.array([it["label"] for it in test])
        for it, pi in zip(test, p):
            oof[it["original"]] = (float(pi), it["label"], it["views"][0][1], g)
        folds.append({"group": g, "n": len(test), "roadwork": int(y.sum()), "acc": float(((p > 0.5) == (y == 1)).mean()),
                      "s": round(time.time() - t0, 1)})
        say(json.dumps(folds[-1]))
    p = np.array([v[0] for v in oof.values()])
    y = np.array([v[1] for v in oof.values()])
    lv = np.array([v[2] for v in oof.values()])
    report = {"setting": {"backbone": a.backbone, "features": a.features_list, "unfreeze": a.unfreeze,
                          "epochs": a.epochs, "lr": a.lr, "views": a.views, "levels": a.levels},
              "pooled": {"n": len(p), "mcc": mcc(p, y), "mcc_ci": boot(p, y), "auc": auc(p, y),
                         "acc": float(((p > 0.5) == (y == 1)).mean())},
              "levels": {str(level): {"n": int((lv == level).sum()), "mcc": mcc(p[lv == level], y[lv == level]),
                                      "mcc_ci": boot(p[lv == level], y[lv == level])}
                         for level in sorted(set(lv))},
              "folds": folds,
              "fold_acc_spread": float(np.std([f["acc"] for f in folds]))}
    if a.oof:
        with open(a.oof, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["original", "label", "level", "group", "p"])
            for k, (pi, yi, li, gi) in oof.items():
                w.writerow([k, yi, li, gi, f"{pi:.6f}"])
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, help="checkpoint folder or Hub id")
    p.add_argument("--manifest", nargs="+", default=[],
                   help="labelled manifests (path,label[,source,challenge]); optional with --views-from")
    p.add_argument("--out", help="folder to export the trained classifier to")
    p.add_argument("--features", help="embedding features (backbones.py; default: the family's)")
    p.add_argument("--unfreeze", type=int, default=2, help="last blocks to train (0: head only, -1: all)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5, help="backbone learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--views", type=int, default=4, help="augmented views per image (cascade challenges)")
    p.add_argument("--levels", default="0-3", help="validator levels the views are drawn from")
    p.add_argument("--views-from", help="a folder cascade challenges wrote, instead of rendering")
    p.add_argument("--holdout", help="groups kept out of training for early stopping (comma-separated)")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--checkpoint", help="folder for last.pt (saved each epoch)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--eval-manifest", help="a held-out manifest; refused if it shares images with training")
    p.add_argument("--cv", choices=["source"], help="leave-one-source-out evaluation instead of one training")
    p.add_argument("--always-train", default="tracon", help="groups never held out by --cv (comma-separated)")
    p.add_argument("--json", help="write the --cv report here")
    p.add_argument("--oof", help="write --cv's out-of-fold scores here (CSV)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 on CUDA (default: bf16 autocast)")
    p.add_argument("--workers", type=int, default=4 if torch.cuda.is_available() else 0)
    p.add_argument("--seed", type=int, default=72)
    p.add_argument("--bound", type=float, default=0.02, help="largest engine-vs-PyTorch score difference accepted")
    p.add_argument("--cascade", default=os.path.join(ROOT, "target", "release", "cascade"))
    a = p.parse_args(argv)
    a.always_train = [g for g in a.always_train.split(",") if g]
    a.history = []
    try:
        return run(a)
    except (TrainError, BackboneError, ManifestError) as e:
        print(f"[finetune] error: {e}", file=sys.stderr)
        return 2


def run(a):
    from transformers import AutoImageProcessor

    if not a.out and not a.cv:
        raise TrainError("nothing to do: pass --out (train and export) or --cv source (evaluate)")
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(a.device)
    if ddp:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _, config, arch = load(a.backbone)
    a.features_list = parse_features(a.features, arch, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.processor = AutoImageProcessor.from_pretrained(a.backbone)
    from backbones import input_size

    a.size = input_size(a.processor.to_dict())
    if not a.manifest and not a.views_from:
        raise TrainError("no data: pass --manifest (and/or --views-from a rendered folder)")
    rows = [r for m in a.manifest for r in read_manifest(m)]
    if a.eval_manifest:
        refuse_shared([r["original"] for r in rows], [r["original"] for r in read_manifest(a.eval_manifest)])
    work = tempfile.mkdtemp(prefix="cascade-views-")
    try:
        vm = os.path.join(a.views_from, "manifest.csv") if a.views_from else render_views(
            a.manifest, os.path.join(work, "views"), a.views, a.levels, a.seed, a.cascade)
        items = items_of(vm)
        say(f"{len(items)} images, {sum(len(it['views']) for it in items)} views, groups "
            f"{sorted({it['group'] for it in items})}")
        if a.cv:
            report = cv(a, items, device)
            say(json.dumps(report["pooled"]))
            if a.json and rank() == 0:
                with open(a.json, "w") as f:
                    json.dump(report, f, indent=2)
            return 0
        hold = set(g for g in (a.holdout or "").split(",") if g)
        missing = hold - {it["group"] for it in items}
        if missing:
            raise TrainError(f"--holdout names groups the manifests do not have: {sorted(missing)}")
        train = [it for it in items if it["group"] not in hold]
        val = [it for it in items if it["group"] in hold]
        ckpt = os.path.join(a.checkpoint, "last.pt") if a.checkpoint else None
        if a.checkpoint:
            os.makedirs(a.checkpoint, exist_ok=True)
        clf, a.history = fit(a, train, val, device, ckpt)
        if rank() == 0:
            export(a, clf, a.out, val or train)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if ddp:
            import torch.distributed as dist

            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
