"""Fashion-MNIST IDX reader and the normalisation every Ravnest component uses (see models/README.md).

Guarantees: load() returns uint8 images N x 28 x 28 and uint8 labels N from the (gzipped or plain) IDX files,
checking magic numbers, sizes and that image and label counts agree; normalize() computes, in float32,
    x = (float32(p) / 255 - 0.2860) / 0.3530
in exactly the order runtime/data/mnist_idx.cc does, so both give bit-identical batches; permutation() is a port of
rt::Sampler::permutation (splitmix64 + Fisher-Yates, documented in runtime/data/mnist_idx.h) and returns the same
order for the same (count, seed, epoch).
"""
import gzip
import os
import struct

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
MEAN = np.float32(0.2860)
STD = np.float32(0.3530)


def _read_idx(path, magic, ndim):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install the `dataset-fashion-mnist` package with apt-get, "
                                f"or pass the folder that holds the IDX files")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        buf = f.read()
    got = struct.unpack(">I", buf[:4])[0]
    if got != magic:
        raise ValueError(f"{path}: magic {got}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", buf[4:4 + 4 * ndim])
    n = int(np.prod(dims))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != n:
        raise ValueError(f"{path}: header says {dims} = {n} bytes of data, file has {data.size}")
    return data.reshape(dims)


def load(train, directory=DEFAULT_DIR):
    """(images uint8 N x 28 x 28, labels uint8 N) of the train (60000) or test (10000) split."""
    prefix = "train" if train else "t10k"
    images_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    images = _read_idx(images_path, 2051, 3)
    labels = _read_idx(labels_path, 2049, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    return images, labels


def normalize(images_u8):
    """uint8 N x R x C -> float32 N x 1 x R x C, the Ravnest normalisation."""
    x = images_u8.astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return x[:, None, :, :].astype(np.float32)


_M64 = (1 << 64) - 1


def permutation(count, seed, epoch):
    """The epoch's order of [0, count), identical to rt::Sampler(count, seed).permutation(epoch)."""
    p = list(range(count))
    state = (seed ^ (0xD1B54A32D192ED03 * (epoch + 1))) & _M64

    def splitmix64():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    for i in range(count - 1, 0, -1):
        bound = i + 1
        threshold = ((1 << 64) - bound) % bound  # reject the low outputs that would bias r % bound
        r = splitmix64()
        while r < threshold:
            r = splitmix64()
        j = r % bound
        p[i], p[j] = p[j], p[i]
    return np.array(p, dtype=np.int64)
