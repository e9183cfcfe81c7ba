#!/usr/bin/python3
"""Inception-V3 for 200 classes on 3x75x75 images: torchvision.models.inception_v3(weights=None, aux_logits=False,
init_weights=True, num_classes=200).

Guarantees: --full is exactly torchvision's model (dropout 0.5 before the classifier); --small (the default,
committed as models/inception_v3/inception_v3_small.onnx with models/inception_v3/reference.rvt) is torchvision's own
Inception3 class with every one of its blocks (stem, 3x InceptionA, B, 4x C, D, 2x E), so the graph has the same
nodes and attributes, with every channel count divided by 16 (torchvision's counts are all multiples of 16; the
3 input channels stay), its own 128 -> 200 classifier, and dropout 0 (the Dropout node stays, ratio 0) so the
fixture is deterministic. BatchNorm stays in training mode. Seeded with torch.manual_seed(0).

Usage: /usr/bin/python3 models/inception_v3/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import functools
import os
import sys

import torch
import torch.nn as nn
import torchvision
from torchvision.models import inception as tvi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

BATCH = 8
SHRINK = 16


def narrow_conv(in_channels, out_channels, **kwargs):
    def narrow(c):
        return c if c == 3 else c // SHRINK
    return tvi.BasicConv2d(narrow(in_channels), narrow(out_channels), **kwargs)


def build(small):
    torch.manual_seed(0)
    if not small:
        return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=200)
    blocks = [narrow_conv] + [functools.partial(b, conv_block=narrow_conv) for b in
                              (tvi.InceptionA, tvi.InceptionB, tvi.InceptionC, tvi.InceptionD, tvi.InceptionE,
                               tvi.InceptionAux)]
    model = tvi.Inception3(num_classes=200, aux_logits=False, inception_blocks=blocks, init_weights=True, dropout=0.0)
    model.fc = nn.Linear(2048 // SHRINK, 200)
    nn.init.trunc_normal_(model.fc.weight, mean=0.0, std=0.1, a=-2, b=2)  # torchvision's init_weights rule
    return model


def example(small):
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 75, 75, generator=g), torch.randint(0, 200, (BATCH,), generator=g)


if __name__ == "__main__":
    zoo.run_main("inception_v3", build, example, __doc__)
