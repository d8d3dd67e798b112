#!/usr/bin/env bash
# The demo on the embedded default: builds adapt (CPU backend), makes the tiny random Llama model with
# its own byte-level BPE tokenizer, validates the folder and prints its summary.
#
#   ./scripts/demo.sh [output folder, default demo/]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}

./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
cmake --build build -j "$(nproc)" --target app_adapt_model

echo "== making the tiny model in $out/tiny-model"
./build/bin/adapt_model make --preset tiny --out "$out/tiny-model" --seed 1 --force
echo "== checking it"
./build/bin/adapt_model check "$out/tiny-model"
