#!/usr/bin/env bash
# Benchmark: prompts that share a long preamble, with runtime.share_prefixes on and off, side by side on
# the `bench` preset's shape (8 layers, hidden 768, 12/4 heads, f32; made here by adapt_model with the
# vocabulary of its byte-level tokenizer, 1,024 tokens), adapt_gen on the CPU.
#
# The job: PROMPTS raw-text prompts, each the same preamble of about TOKENS tokens (source files of
# inputs/corpus, concatenated) followed by its own short request, 16 greedy new tokens each,
# runtime.batch_size = BATCH. It runs ROUNDS times in each mode, interleaved, into fresh output folders.
# Reported per mode: the prompt tokens of the job, those taken from another prompt's cache row
# (cached_prompt_tokens), the sum of the prompts' times to first token and the job's wall time (best of
# the rounds), the ratios to sharing off; and whether every text is the same in both modes.
#
# Usage: scripts/bench_prefix.sh [BUILD_DIR (default build)] [ROUNDS (default 3)] [TOKENS (default 2000)]
#                                [PROMPTS (default 8)] [BATCH (default 4)]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-3}"
tokens="${3:-2000}"
n_prompts="${4:-8}"
batch="${5:-4}"
threads="$(nproc)"

bench_build "$root" "$build" bench_prefix app_adapt_gen app_adapt_model
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

bench_vocab_model "$build" "$work"
bench_corpus_text "$root" "$tokens" "$work/preamble.txt"

python3 - "$work" "$n_prompts" "$batch" <<'PY'
import json, pathlib, sys
work, n_prompts, batch = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
text = (work / "preamble.txt").read_text()
job = f"""[model]
path = "{work}/model"
[output]
dir = "out"
[defaults]
temperature = 0.0
max_new_tokens = 16
[runtime]
batch_size = {batch}
"""
for i in range(n_prompts):
    ask = f"\n// Part {i + 1}: write the function that handles case {i + 1} of the parser above.\n"
    job += f"[[prompts]]\nid = \"p{i}\"\ntext = {json.dumps(text + ask)}\n"
(work / "job.toml").write_text(job)
PY

declare -A best_ttft best_wall prompt_tokens cached
for ((r = 1; r <= rounds; ++r)); do
  for mode in off on; do
    share=false
    [[ "$mode" == on ]] && share=true
    rm -rf "$work/$mode"
    wall="$(bench_timed_gen "$build" "$work/$mode.log" --input "$work/job.toml" --set "output.dir=$work/$mode" \
      --set "runtime.share_prefixes=$share")"
    read -r ttft ptok ctok < <(python3 -c '
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
print(sum(r["time_to_first_token_s"] for r in rs), sum(r["prompt_tokens"] for r in rs),
      sum(r["cached_prompt_tokens"] for r in rs))' "$work/$mode/results.jsonl")
    prompt_tokens[$mode]="$ptok"
    cached[$mode]="$ctok"
    python3 -c '
import json, sys
rs = sorted((json.loads(l) for l in open(sys.argv[1])), key=lambda r: r["id"])
json.dump([[r["id"], r["text"]] for r in rs], open(sys.argv[2], "w"))' "$work/$mode/results.jsonl" "$work/$mode.texts"
    best_ttft[$mode]="$(bench_min "${best_ttft[$mode]:-}" "$ttft")"
    best_wall[$mode]="$(bench_min "${best_wall[$mode]:-}" "$wall")"
  done
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "bench shape, f32 weights and KV cache, CPU, $threads threads; $n_prompts prompts of one ~$tokens-token preamble + their own request, 16 greedy new tokens each, batch_size $batch; best of $rounds round(s)"
printf "%-28s %13s %14s %22s %9s %11s %9s\n" "runtime.share_prefixes" "prompt tokens" "cached tokens" "sum of first-token s" "vs off" "job wall s" "vs off"
for mode in off on; do
  printf "%-28s %13s %14s %22.3f %9s %11.3f %9s\n" "$([[ $mode == on ]] && echo "true (default)" || echo false)" \
    "${prompt_tokens[$mode]}" "${cached[$mode]}" "${best_ttft[$mode]}" \
    "$(awk -v a="${best_ttft[off]}" -v b="${best_ttft[$mode]}" 'BEGIN { printf "%.2fx", a / b }')" "${best_wall[$mode]}" \
    "$(awk -v a="${best_wall[off]}" -v b="${best_wall[$mode]}" 'BEGIN { printf "%.2fx", a / b }')"
done
if cmp -s "$work/off.texts" "$work/on.texts"; then
  echo "texts: the same in both modes"
else
  echo "texts differ between the modes (a near-tie of the logits: the shared positions were computed in other prefill pieces)"
fi
bench_footer "$build" "$load_start" "$load_end" "$threads"
