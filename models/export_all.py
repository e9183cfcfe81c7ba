#!/usr/bin/python3
"""Regenerates every committed file of the target-model zoo: for each model, models/<name>/<name>_small.onnx (the
TRAINING export with its loss) and models/<name>/reference.rvt (PyTorch float64 gradients and float32 errors), plus
the two EVAL-mode fixtures of tests/frontend/eval_export_test.cc (models/gpt_sorter/gpt_sorter_small_eval.onnx and
models/resnet50/resnet50_small_eval.onnx).

Guarantees: runs each models/<name>/export.py --small in its own process (the scripts seed themselves) and stops at
the first failure with that script's exit status. models/cnn is not touched (models/cnn/export.py and
make_reference.py).

Usage: /usr/bin/python3 models/export_all.py [name ...]   (default: all)
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["resnet50", "inception_v3", "bert", "gpt_sorter", "llama_block", "gpt2_small"]
EVAL_FIXTURES = {"gpt_sorter", "resnet50"}


def main():
    names = sys.argv[1:] or MODELS
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {MODELS}")
    for name in names:
        cmd = [sys.executable, os.path.join(HERE, name, "export.py"), "--small"]
        if name in EVAL_FIXTURES:
            cmd += ["--eval-out", os.path.join(HERE, name, f"{name}_small_eval.onnx")]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            sys.exit(rc)


if __name__ == "__main__":
    main()
