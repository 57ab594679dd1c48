"""What the training tools' tests (and the synthetic-cost experiment) share: running a command's
`main` with its output captured, and a tiny CLIP tokenizer for pipelines built from configs (no
download)."""

import contextlib
import io
import json
import os
import warnings


def quiet(fn, *a):
    """(exit code, stdout, stderr) of `fn(*a)`, warnings silenced."""
    err, out = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        warnings.simplefilter("ignore")
        rc = fn(*a)
    return rc, out.getvalue(), err.getvalue()


def tiny_clip_tokenizer(folder):
    """A CLIP tokenizer over single characters (ids below 70), written into `folder`."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for ch in "abcdefghijklmnopqrstuvwxyz,.:'":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=77)
