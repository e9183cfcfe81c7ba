"""Reader and writer of the Ravnest tensor file (.rvt), exactly as docs/bundle-format.md specifies.

Guarantees: write() produces little-endian files with magic b"RVNTENS1", a u32 count, then per tensor
u32 name_len, UTF-8 name (<= 4096 bytes), i32 ONNX dtype code, u32 rank (<= 8), i64 dims, u64 nbytes, raw data;
tensors are written in the order given. read() checks every length against the file size before it
allocates, and raises ValueError naming the file and the tensor on any violation.

Usage:
    import rvt
    rvt.write("x.rvt", {"input": np.zeros((2, 3), np.float32)})
    tensors = rvt.read("x.rvt")   # dict name -> numpy array (insertion order = file order)
"""
import os
import struct

import numpy as np

MAGIC = b"RVNTENS1"
MAX_NAME = 4096
MAX_RANK = 8

# ONNX TensorProto data type codes <-> numpy (the DType enum of common/dtype.h).
_CODE_TO_NP = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
}
_NP_TO_CODE = {np.dtype(v): k for k, v in _CODE_TO_NP.items()}


def dtype_code(dtype):
    """ONNX code of a numpy dtype; ValueError for a dtype the format does not carry."""
    d = np.dtype(dtype)
    if d not in _NP_TO_CODE:
        raise ValueError(f"rvt: dtype {d} has no ONNX code we support; use one of "
                         f"{sorted(str(np.dtype(v)) for v in _CODE_TO_NP.values())}")
    return _NP_TO_CODE[d]


def write(path, tensors):
    """Writes a dict (or list of pairs) name -> numpy array to `path`, atomically (temp file + rename)."""
    items = list(tensors.items()) if hasattr(tensors, "items") else list(tensors)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(items)))
        for name, arr in items:
            a = np.asarray(arr)
            code = dtype_code(a.dtype)
            nb = name.encode("utf-8")
            if len(nb) > MAX_NAME:
                raise ValueError(f"rvt: tensor name '{name[:64]}...' is {len(nb)} bytes, the limit is {MAX_NAME}")
            if a.ndim > MAX_RANK:
                raise ValueError(f"rvt: tensor '{name}' has rank {a.ndim}, the limit is {MAX_RANK}")
            data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<iI", code, a.ndim))
            f.write(struct.pack(f"<{a.ndim}q", *a.shape))
            f.write(struct.pack("<Q", len(data)))
            f.write(data)
    os.replace(tmp, path)


def read(path):
    """Reads `path` into a dict name -> numpy array (little-endian dtypes, file order)."""
    with open(path, "rb") as f:
        buf = f.read()
    size = len(buf)
    pos = 0

    def take(n, what):
        nonlocal pos
        if n < 0 or n > size - pos:
            raise ValueError(f"rvt: {path}: {what} needs {n} bytes at offset {pos}, only {size - pos} of the "
                             f"file's {size} remain (truncated or corrupt)")
        out = buf[pos:pos + n]
        pos += n
        return out

    if take(8, "magic") != MAGIC:
        raise ValueError(f"rvt: {path}: bad magic, not a Ravnest tensor file (expected {MAGIC!r})")
    (count,) = struct.unpack("<I", take(4, "count"))
    out = {}
    for i in range(count):
        (name_len,) = struct.unpack("<I", take(4, f"tensor #{i} name length"))
        if name_len > MAX_NAME:
            raise ValueError(f"rvt: {path}: tensor #{i} name length {name_len} exceeds {MAX_NAME}")
        name = take(name_len, f"tensor #{i} name").decode("utf-8")
        code, rank = struct.unpack("<iI", take(8, f"tensor '{name}' dtype and rank"))
        if code not in _CODE_TO_NP:
            raise ValueError(f"rvt: {path}: tensor '{name}' has unsupported dtype code {code}")
        if rank > MAX_RANK:
            raise ValueError(f"rvt: {path}: tensor '{name}' rank {rank} exceeds {MAX_RANK}")
        dims = struct.unpack(f"<{rank}q", take(8 * rank, f"tensor '{name}' dims"))
        if any(d < 0 for d in dims):
            raise ValueError(f"rvt: {path}: tensor '{name}' has a negative dim {dims}")
        (nbytes,) = struct.unpack("<Q", take(8, f"tensor '{name}' nbytes"))
        dt = np.dtype(_CODE_TO_NP[code]).newbyteorder("<")
        numel = 1
        for d in dims:
            numel *= d
        if nbytes != numel * dt.itemsize:
            raise ValueError(f"rvt: {path}: tensor '{name}' nbytes {nbytes} != numel {numel} * {dt.itemsize}")
        data = take(nbytes, f"tensor '{name}' data")
        if name in out:
            raise ValueError(f"rvt: {path}: tensor name '{name}' appears twice")
        out[name] = np.frombuffer(data, dtype=dt).reshape(dims).copy()
    if pos != size:
        raise ValueError(f"rvt: {path}: {size - pos} trailing bytes after {count} tensors")
    return out
