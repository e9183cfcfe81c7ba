#!/usr/bin/python3
"""Writes models/cnn/reference.rvt: the PyTorch reference loss and gradients of the CNN on a fixed batch.

Guarantees: the weights are read from models/cnn/cnn.onnx (via onnx.numpy_helper), so the fixture and the checked-in
model agree; the batch is the FIRST 16 images of the real Fashion-MNIST TEST set, normalised as models/README.md says
(fashion_mnist.normalize); the loss is the mean cross-entropy over the batch, computed in float64 (model.double() on
the float32 input widened to float64).

Tensors in the file (in this order):
  input              float32 16x1x28x28   normalised images
  labels             int64   16
  logits             float64 16x10        forward output, float64
  loss               float64 scalar       mean cross-entropy, float64
  grad/<param name>  float64              d loss / d param, for every state_dict name (conv1.weight, ...)

It also prints, per parameter, how far the float32 gradient is from the float64 one (max|g32-g64| / max|g64|), which
is the tolerance scale a float32 implementation should be held to.

Usage: /usr/bin/python3 models/cnn/make_reference.py [--onnx models/cnn/cnn.onnx] [--out models/cnn/reference.rvt]
"""
import argparse
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import export  # noqa: E402
import fashion_mnist  # noqa: E402
import rvt  # noqa: E402

BATCH = 16


def load_weights_from_onnx(model, onnx_path):
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer}
    sd = {}
    for name, p in model.state_dict().items():
        if name not in inits:
            sys.exit(f"{onnx_path} has no initializer '{name}'; re-run models/cnn/export.py")
        sd[name] = torch.from_numpy(inits[name].copy())
    model.load_state_dict(sd)


def loss_and_grads(model, x, y):
    model.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", default=os.path.join(HERE, "cnn.onnx"))
    ap.add_argument("--out", default=os.path.join(HERE, "reference.rvt"))
    ap.add_argument("--data", default=fashion_mnist.DEFAULT_DIR)
    args = ap.parse_args()

    images, labels = fashion_mnist.load(train=False, directory=args.data)
    x32 = fashion_mnist.normalize(images[:BATCH])
    y = labels[:BATCH].astype(np.int64)

    model = export.Cnn()
    load_weights_from_onnx(model, args.onnx)
    model.train()

    logits32, loss32, g32 = loss_and_grads(model, torch.from_numpy(x32), torch.from_numpy(y))
    model.double()
    logits64, loss64, g64 = loss_and_grads(model, torch.from_numpy(x32).double(), torch.from_numpy(y))

    print(f"loss fp64 {loss64.item():.17g}  fp32 {loss32.item():.9g}  "
          f"rel err {abs(loss32.item() - loss64.item()) / abs(loss64.item()):.3e}")
    print(f"logits max rel err {(logits32.double() - logits64).abs().max() / logits64.abs().max():.3e}")
    print("per-tensor fp32-vs-fp64 gradient error, max|g32-g64|/max|g64|:")
    for name in g64:
        ref = g64[name]
        err = (g32[name].double() - ref).abs().max() / ref.abs().max()
        print(f"  {name:14s} {str(tuple(ref.shape)):18s} max|g64| {ref.abs().max():.3e}  rel err {err:.3e}")

    tensors = {"input": x32, "labels": y, "logits": logits64.numpy(), "loss": np.float64(loss64.item())}
    for name, g in g64.items():
        tensors[f"grad/{name}"] = g.numpy()
    rvt.write(args.out, tensors)

    back = rvt.read(args.out)
    for k, v in tensors.items():
        v = np.asarray(v)
        if back[k].dtype != v.dtype or back[k].shape != v.shape or not np.array_equal(back[k], v):
            sys.exit(f"round trip of '{k}' through {args.out} failed")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
