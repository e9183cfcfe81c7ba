#!/usr/bin/python3
"""GPT-2 small's shape: models/zoo.py Gpt with 12 layers, 12 heads, d=768, vocabulary 50257, 1024 positions,
Tanh-GELU, dropout 0.1, and the LM head tied to the token embedding (one initializer, read by the first Gather and
the last MatMul).

Guarantees: --full is that model (124,439,808 parameters; the ONNX file is about 550 MB: write it outside the
repository) on sequences of 128 tokens; --small (the default, committed as models/gpt2_small/gpt2_small_small.onnx
with models/gpt2_small/reference.rvt) has 2 layers, 2 heads, d=64, vocabulary 512, 64 positions, dropout 0 (the
Dropout nodes stay, ratio 0), on 16 tokens, still tied. Labels are the inputs shifted by one, the last position -1.
Seeded with torch.manual_seed(0).

Usage: /usr/bin/python3 models/gpt2_small/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

SMALL = dict(vocab=512, block=64, layers=2, heads=2, d=64, dropout=0.0, seq=16, batch=2)
FULL = dict(vocab=50257, block=1024, layers=12, heads=12, d=768, dropout=0.1, seq=128, batch=2)


def build(small):
    torch.manual_seed(0)
    c = SMALL if small else FULL
    return zoo.Gpt(vocab=c["vocab"], block=c["block"], layers=c["layers"], heads=c["heads"], d=c["d"],
                   dropout=c["dropout"], tie=True)


def example(small):
    c = SMALL if small else FULL
    x = zoo.random_tokens((c["batch"], c["seq"] + 1), c["vocab"], seed=1)
    y = x[:, 1:].clone()
    y[:, -1] = zoo.IGNORE_INDEX
    return x[:, :-1].clone(), y


if __name__ == "__main__":
    zoo.run_main("gpt2_small", build, example, __doc__)
