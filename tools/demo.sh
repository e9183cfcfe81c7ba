#!/usr/bin/env bash
# The demo: compile the Fashion-MNIST CNN into 2 pipeline stages, run them as
# two local processes talking over TCP, train one epoch with a progress line,
# and print the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${RAVNEST_BUILD_DIR:-build}
OUT=${RAVNEST_DEMO_DIR:-$BUILD_DIR/demo-bundles}
rm -rf "$OUT"
"$BUILD_DIR/tools/ravnestc" compile models/cnn/cnn.onnx -o "$OUT" --stages 2 --batch 64 --microbatches 4 \
  --lr 0.01 --momentum 0.9 --epochs 1
"$BUILD_DIR/tools/ravnest-launch" "$OUT"
