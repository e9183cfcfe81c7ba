#!/usr/bin/python3
"""Exports the Fashion-MNIST CNN (421,642 parameters, torch.manual_seed(0) init) to models/cnn/cnn.onnx.

Guarantees: the ONNX file is opset 17, exported in TRAINING mode without constant folding, with a dynamic batch
axis on 'input' and 'logits', and every parameter appears as an initializer named by its PyTorch state_dict name
(e.g. 'conv1.weight'); the script fails if any name is missing or the parameter count differs.

Usage: /usr/bin/python3 models/cnn/export.py [--out models/cnn/cnn.onnx]
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED_PARAMS = 421_642


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(3136, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.view(x.size(0), -1)
        x = self.relu3(self.fc1(x))
        return self.fc2(x)


def make_model():
    """The model with the canonical initial weights (torch.manual_seed(0))."""
    torch.manual_seed(0)
    return Cnn()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "cnn.onnx"))
    args = ap.parse_args()

    import onnx

    model = make_model()
    n = sum(p.numel() for p in model.parameters())
    if n != EXPECTED_PARAMS:
        sys.exit(f"parameter count {n} != expected {EXPECTED_PARAMS}")
    model.train()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, dummy, args.out, opset_version=17, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    m = onnx.load(args.out)
    onnx.checker.check_model(m)
    inits = {t.name: t for t in m.graph.initializer}
    sd = model.state_dict()
    missing = [k for k in sd if k not in inits]
    if missing:
        sys.exit(f"ONNX export lost state_dict names {missing}; initializers are {sorted(inits)}")
    from onnx import numpy_helper
    for k, v in sd.items():
        a = numpy_helper.to_array(inits[k])
        if tuple(a.shape) != tuple(v.shape) or not (a == v.numpy()).all():
            sys.exit(f"initializer {k} differs from the PyTorch parameter")
    print(f"wrote {args.out}: {n} parameters, initializers {sorted(inits)}, "
          f"ops {[nd.op_type for nd in m.graph.node]}")


if __name__ == "__main__":
    main()
