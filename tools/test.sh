#!/usr/bin/env bash
# The whole test suite: set up, build, run every test (CTest, 2 jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${RAVNEST_BUILD_DIR:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2 --timeout 1200
