#!/usr/bin/python3
"""A BERT-style encoder classifier: token + position embeddings, embedding LayerNorm, post-LN
nn.TransformerEncoderLayer(activation='gelu', batch_first=True) layers, BERT's pooler (Linear + Tanh on the first
token) and a Linear classification head.

Guarantees: --full has 4 layers, d=256, 4 heads, feed-forward 1024, vocabulary 8192, 128 positions, dropout 0.1,
2 classes, on sequences of 128 tokens; --small (the default, committed as models/bert/bert_small.onnx with
models/bert/reference.rvt) has 2 layers, d=32, 2 heads, feed-forward 64, vocabulary 128, 16 positions, 4 classes,
dropout 0 (the Dropout nodes stay, ratio 0), on 16 tokens. GELU is exact (it exports as the Erf form). Positions come
from an int64 buffer sliced to the sequence length. Seeded with torch.manual_seed(0).

Usage: /usr/bin/python3 models/bert/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

SMALL = dict(layers=2, d=32, heads=2, ff=64, vocab=128, positions=16, classes=4, dropout=0.0, seq=16, batch=4)
FULL = dict(layers=4, d=256, heads=4, ff=1024, vocab=8192, positions=128, classes=2, dropout=0.1, seq=128, batch=8)


class Bert(nn.Module):
    def __init__(self, layers, d, heads, ff, vocab, positions, classes, dropout, **_):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(positions, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList([nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=dropout,
                                                                 activation="gelu", batch_first=True)
                                      for _ in range(layers)])
        self.pooler = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)
        self.register_buffer("position_ids", torch.arange(positions, dtype=torch.int64).unsqueeze(0))

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(self.position_ids[:, :tokens.size(1)])
        x = self.drop(self.ln(x))
        for layer in self.encoder:
            x = layer(x)
        return self.head(torch.tanh(self.pooler(x[:, 0])))


def build(small):
    torch.manual_seed(0)
    return Bert(**(SMALL if small else FULL))


def example(small):
    c = SMALL if small else FULL
    x = zoo.random_tokens((c["batch"], c["seq"]), c["vocab"], seed=1)
    y = zoo.random_tokens((c["batch"],), c["classes"], seed=2)
    return x, y


if __name__ == "__main__":
    zoo.run_main("bert", build, example, __doc__)
