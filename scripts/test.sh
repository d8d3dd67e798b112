#!/usr/bin/env bash
# Installs what is missing, configures an optimised build with runtime checks on, builds on all
# cores, runs every CTest suite and prints the summary (with the reason for every skipped test).
#
#   ./scripts/test.sh [extra ctest arguments, e.g. -L unit or -R safetensors]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/setup.sh --python

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DADAPT_CHECKS=ON -DADAPT_TESTS=ON \
      -DPython3_EXECUTABLE="$root/.venv/bin/python" >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
grep -E "^-- (adapt|  \[)" build-configure.log || true
cmake --build build -j "$jobs"

status=0
ctest --test-dir build --output-on-failure -j "$jobs" "$@" || status=$?

log=build/Testing/Temporary/LastTest.log
if [ -f "$log" ] && grep -q "^skipped:" "$log"; then
  echo "Skipped tests and why:"
  awk '/^[0-9]+\/[0-9]+ Test: /{name=$3} /^skipped:/{print "  " name ": " $0}' "$log"
fi
exit $status
