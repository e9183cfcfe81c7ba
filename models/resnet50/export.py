#!/usr/bin/python3
"""ResNet-50 for 10 classes on 3x32x32 images: torchvision.models.resnet50(weights=None, num_classes=10).

Guarantees: --full is exactly torchvision's resnet50 (23,528,522 parameters); --small (the default, committed as
models/resnet50/resnet50_small.onnx with models/resnet50/reference.rvt) is torchvision's ResNet class and Bottleneck
block with the same graph structure per stage (a down-sampling block then an identity block in each of the four
stages) and channels 4/8/16/32 instead of 64/128/256/512. BatchNorm stays in training mode. Both are seeded with
torch.manual_seed(0). See models/zoo.py for the export and fixture conventions.

Usage: /usr/bin/python3 models/resnet50/export.py [--small | --full --out PATH] [--eval-out PATH]
"""
import os
import sys

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

BATCH = 8


class NarrowResNet(ResNet):
    """torchvision's ResNet with stage widths `widths` (torchvision hard-codes 64/128/256/512); forward is ResNet's."""

    def __init__(self, layers, widths, num_classes):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, widths[0], layers[0])
        self.layer2 = self._make_layer(Bottleneck, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(Bottleneck, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(Bottleneck, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build(small):
    torch.manual_seed(0)
    if small:
        return NarrowResNet([2, 2, 2, 2], [4, 8, 16, 32], num_classes=10)
    return torchvision.models.resnet50(weights=None, num_classes=10)


def example(small):
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


if __name__ == "__main__":
    zoo.run_main("resnet50", build, example, __doc__)
