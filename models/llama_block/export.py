#!/usr/bin/python3
"""A Llama-style decoder: token embedding, pre-norm blocks of RMSNorm -> causal attention with rotary position
embedding (q, k, v, o Linear without bias, an additive causal mask) -> RMSNorm -> SwiGLU MLP
(w2(silu(w1 x) * w3 x)), a final RMSNorm and an untied LM head, trained as a language model.

Guarantees: --full has 4 layers, d=512, 8 heads, MLP hidden 1408, vocabulary 4096, 256 positions, on sequences of
128 tokens; --small (the default, committed as models/llama_block/llama_block_small.onnx with
models/llama_block/reference.rvt) has 2 layers, d=32, 4 heads, hidden 64, vocabulary 128, 32 positions, on 16
tokens. No dropout (as Llama). The rotary angles are computed in the graph (positions from an int64 buffer sliced to
the sequence length, Cast, times the inverse frequencies, Cos and Sin); RMSNorm computes x * 1/sqrt(mean(x^2) + eps)
* weight. Labels are the inputs shifted by one, the last position -1. Seeded with torch.manual_seed(0).

Usage: /usr/bin/python3 models/llama_block/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

SMALL = dict(layers=2, d=32, heads=4, hidden=64, vocab=128, positions=32, seq=16, batch=4)
FULL = dict(layers=4, d=512, heads=8, hidden=1408, vocab=4096, positions=256, seq=128, batch=8)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, d, heads, positions):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        mask = torch.full((positions, positions), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)  # exported as a Constant, not a parameter

    def forward(self, x, cos, sin):
        B, T, C = x.size()
        hd = C // self.heads
        q = self.q_proj(x).view(B, T, self.heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.heads, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = q @ k.transpose(-2, -1) / math.sqrt(hd) + self.mask[:T, :T]
        y = F.softmax(att, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d, heads, hidden, positions):
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = Attention(d, heads, positions)
        self.post_attention_layernorm = RMSNorm(d)
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, layers, d, heads, hidden, vocab, positions, **_):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d, heads, hidden, positions) for _ in range(layers)])
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        hd = d // heads
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd)), persistent=False)
        self.register_buffer("position_ids", torch.arange(positions, dtype=torch.int64))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, tokens):
        t = self.position_ids[:tokens.size(1)].to(self.inv_freq.dtype)
        freqs = t.unsqueeze(-1) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build(small):
    torch.manual_seed(0)
    return Llama(**(SMALL if small else FULL))


def example(small):
    c = SMALL if small else FULL
    x = zoo.random_tokens((c["batch"], c["seq"] + 1), c["vocab"], seed=1)
    y = x[:, 1:].clone()
    y[:, -1] = zoo.IGNORE_INDEX
    return x[:, :-1].clone(), y


if __name__ == "__main__":
    zoo.run_main("llama_block", build, example, __doc__)
