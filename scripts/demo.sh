#!/usr/bin/env bash
# The demo on the embedded default (CPU backend, under a minute once built): builds adapt, makes the tiny
# random Llama model with its own byte-level BPE tokenizer, trains a LoRA adapter and a bottleneck
# adapter on inputs/corpus/ (the eval loss falls below the base model's), and generates from
# inputs/prompts.toml with the LoRA adapter. Training and generation run as 4 MPI ranks
# (tensor-parallel 2 × data-parallel 2 for the LoRA, data-parallel 4 for the bottleneck adapter,
# 2 generation replicas of tp 2), one OpenMP thread each; DEMO_RANKS=1 runs everything in one process.
#
#   ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
cmake --build build -j "$(nproc)" --target app_adapt_model app_adapt_train app_adapt_gen app_adapt_eval

echo "== 1. the tiny model (demo/tiny-model)"
./build/bin/adapt_model make --recipe inputs/models/tiny.toml --out demo/tiny-model --force
./build/bin/adapt_model check demo/tiny-model

ranks=${DEMO_RANKS:-4}
on_ranks() {  # run a command as $ranks MPI ranks (oversubscribed: this may be a 2-core machine)
  if [ "$ranks" -le 1 ]; then "$@"; return; fi
  local root=()
  [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
  OMP_NUM_THREADS=1 mpiexec -n "$ranks" --oversubscribe --bind-to none "${root[@]}" "$@"
}
tp=2; [ "$ranks" -ge 2 ] || tp=1

rm -rf runs/train-lora runs/train-bottleneck runs/prompts
echo "== 2. LoRA on inputs/corpus (inputs/train.toml), $ranks rank(s), tp $tp"
on_ranks ./build/bin/adapt_train --config inputs/train.toml --set parallel.tp=$tp
echo "== 3. a bottleneck adapter (size 64, after the MLP) on the same data, $ranks data-parallel rank(s)"
on_ranks ./build/bin/adapt_train --config inputs/train.toml --set adapter.kind=bottleneck \
  --set run.dir=runs/train-bottleneck --set optim.lr=3e-3

summary() {  # first and last eval loss of a run
  python3 - "$1" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' in l]
print(f"  eval loss: base model {ev[0]['eval_loss']:.4f} -> adapted {ev[-1]['eval_loss']:.4f} after step {ev[-1]['step']}")
PY
}
echo "== 4. results"
echo "LoRA:";       summary runs/train-lora/metrics.jsonl
echo "bottleneck:"; summary runs/train-bottleneck/metrics.jsonl
echo "(plot them: python3 scripts/plot_metrics.py runs/*/metrics.jsonl -o curves.png, with matplotlib)"

echo "== 5. generation with the LoRA adapter (inputs/prompts.toml)"
on_ranks ./build/bin/adapt_gen --input inputs/prompts.toml --set model.adapter=runs/train-lora/adapter \
  --set parallel.tp=$tp
echo "results: runs/prompts/results.jsonl"
