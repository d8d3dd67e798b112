#!/usr/bin/env bash
# Benchmark: host time to draw one token from a vocabulary of Llama 3's size (128,256 logits), for the
# sampling settings a generation job uses, side by side in one run:
#
#   adapt sampler   generate::Sampler: the softmax's denominator in one pass, then a partial sort only
#                   as deep as top-p, min-p and the draw reach; the repetition penalty over the distinct
#                   ids it keeps as the history grows
#   adapt sorting   the sampler as it was before: a sort of the whole vocabulary (top-k: a partial sort)
#                   and of the whole history for every token
#   HF              transformers' logits processors (RepetitionPenalty, Temperature, TopK, TopP, MinP as
#                   generate() chains them), softmax and torch.multinomial, on a (1, V) tensor
#
# Both sides read the same logits (a normal tail and a head of a few dozen likely tokens) and, for the
# penalty, a history of HISTORY tokens growing by one per draw. Each row is the median of REPS draws in
# microseconds, the logits' copy into the sampler's buffer included on every side.
#
# Usage: scripts/bench_sampler.sh [BUILD_DIR (default build)] [REPS (default 200)] [HISTORY (default 100000)]
#                                 [VENV (default ~/.cache/adapt/venv-llama)]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
reps="${2:-200}"
history="${3:-100000}"
venv="${4:-$HOME/.cache/adapt/venv-llama}"
vocab=128256
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bench_build "$root" "$build" bench_sampler sampler_bench
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
"$build/tests/sampler_bench" "$vocab" "$history" "$reps" "$work/logits.bin" >"$work/results.txt"

pins=(transformers==4.46.3 tokenizers==0.20.3 safetensors==0.4.5 huggingface-hub==0.26.2)
bench_find_peer "$venv" "$work" "torch, transformers" "${pins[@]}"
if [[ -n "$peer_py" ]]; then
  OMP_NUM_THREADS=1 "$peer_py" - "$work/logits.bin" "$vocab" "$history" "$reps" >>"$work/results.txt" <<'PY'
import sys, time
import numpy as np
import torch
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

path, V, H, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
raw = np.fromfile(path, dtype=np.uint8)
logits = torch.from_numpy(raw[: 4 * V].view(np.float32).copy()).reshape(1, V)
history = torch.from_numpy(raw[4 * V : 4 * V + 4 * H].view(np.int32).astype(np.int64)).reshape(1, H)
torch.manual_seed(7)
cases = [("greedy", 0.0, 1.0, 0.0, 1.0, 0), ("t0.7", 0.7, 1.0, 0.0, 1.0, 0),
         ("t1.0_top-p0.95", 1.0, 0.95, 0.0, 1.0, 0), ("t0.6_top-k50", 0.6, 1.0, 0.0, 1.0, 50),
         ("t0.8_min-p0.05", 0.8, 1.0, 0.05, 1.0, 0), ("t0.7_top-p0.95_rep1.1", 0.7, 0.95, 0.0, 1.1, 0)]
for name, t, top_p, min_p, rep, top_k in cases:
    procs = LogitsProcessorList()
    if rep != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(rep))
    if t > 0:  # generate()'s order: temperature, top-k, top-p, min-p
        procs.append(TemperatureLogitsWarper(t))
        if top_k > 0:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
        if min_p > 0:
            procs.append(MinPLogitsWarper(min_p))
    times = []
    for i in range(reps + 1):
        ids = history[:, : H - reps - 1 + i] if rep != 1.0 else history[:, :1]
        a = time.perf_counter()
        scores = procs(ids, logits.clone())
        if t > 0:
            tok = torch.multinomial(torch.softmax(scores, dim=-1), 1)
        else:
            tok = torch.argmax(scores, dim=-1)
        int(tok)
        us = (time.perf_counter() - a) * 1e6
        if i > 0:
            times.append(us)
    times.sort()
    print(f"HF {name} transformers {times[len(times) // 2]:.2f}", flush=True)
PY
  hf_version="$("$peer_py" -c 'import torch, transformers; print("transformers", transformers.__version__, "/ torch", torch.__version__)')"
else
  hf_version="not run: $peer_skip"
fi
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "host time per drawn token, vocabulary $vocab, penalty history $history tokens; median of $reps draws; $hf_version (1 thread)"
echo
awk '
  { key = $2; us[$1 " " $3, key] = $4; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key } }
  END {
    printf "| %-24s | %16s | %16s | %16s | %14s | %14s |\n", "sampling", "adapt sampler us", "adapt sorting us", "HF us", "vs sorting", "vs HF"
    printf "|%s|%s|%s|%s|%s|%s|\n", "--------------------------", "------------------", "------------------", "------------------", "----------------", "----------------"
    for (k = 1; k <= nk; k++) {
      a = us["adapt sampler", keys[k]]; s = us["adapt sorting", keys[k]]; h = us["HF transformers", keys[k]]
      printf "| %-24s | %16.1f | %16.1f | %16s | %13.1fx | %14s |\n", keys[k], a, s, h == "" ? "-" : sprintf("%.1f", h),
        s / a, h == "" ? "-" : sprintf("%.1fx", h / a)
    }
  }' "$work/results.txt"
echo
bench_footer "$build" "$load_start" "$load_end" "$(nproc)"
