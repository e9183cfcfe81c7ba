#!/usr/bin/python3
"""minGPT's sorting demo: a causal decoder (models/zoo.py Gpt: explicit causal mask, LayerNorm, Tanh-GELU MLP)
that learns to sort 6 digits in 0..2.

The task (minGPT's SortDataset): a sample is 6 random digits followed by the same digits sorted; the model reads
the first 11 tokens and predicts the next token at each position; the labels are the 11 next tokens with the first
5 set to -1 (no loss on the prompt), so the loss is cross-entropy over the 6 sorted digits.

Guarantees: --full is minGPT's 'gpt-nano' (3 layers, 3 heads, d=48, dropout 0.1); --small (the default, committed as
models/gpt_sorter/gpt_sorter_small.onnx with models/gpt_sorter/reference.rvt) has 2 layers, 2 heads, d=16, dropout 0
(the Dropout nodes stay, ratio 0). Vocabulary 3, block 11, untied LM head. Seeded with torch.manual_seed(0); the
samples come from sort_batch(n, seed).

Usage: /usr/bin/python3 models/gpt_sorter/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

LENGTH = 6
DIGITS = 3
BLOCK = 2 * LENGTH - 1
BATCH = 8


def sort_batch(n, seed):
    """(input [n, 11], labels [n, 11]) of the sorting task, as minGPT's SortDataset builds them."""
    g = torch.Generator().manual_seed(seed)
    inp = torch.randint(DIGITS, (n, LENGTH), generator=g, dtype=torch.int64)
    cat = torch.cat((inp, torch.sort(inp, dim=1)[0]), dim=1)
    x, y = cat[:, :-1].clone(), cat[:, 1:].clone()
    y[:, :LENGTH - 1] = zoo.IGNORE_INDEX
    return x, y


def build(small):
    torch.manual_seed(0)
    if small:
        return zoo.Gpt(vocab=DIGITS, block=BLOCK, layers=2, heads=2, d=16, dropout=0.0, tie=False)
    return zoo.Gpt(vocab=DIGITS, block=BLOCK, layers=3, heads=3, d=48, dropout=0.1, tie=False)


def example(small):
    return sort_batch(BATCH, seed=1)


if __name__ == "__main__":
    zoo.run_main("gpt_sorter", build, example, __doc__)
