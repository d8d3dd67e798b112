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

printf 'preset = "bench"\ndtype = "f32"\nseed = 1\n[shape]\nvocab_size = 1024\n' >"$work/recipe.toml"
"$build/bin/adapt_model" make --recipe "$work/recipe.toml" --out "$work/model" >"$work/make.log" 2>&1 ||
  { cat "$work/make.log" >&2; exit 1; }

# ~2.3 bytes a token with this 1,024-token vocabulary.
python3 - "$root/inputs/corpus" "$tokens" "$work" "$n_prompts" "$batch" <<'PY'
import json, pathlib, sys
corpus, tokens, work = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
n_prompts, batch = int(sys.argv[4]), int(sys.argv[5])
text = ""
for f in sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix not in (".md",)):
    text += f.read_text(errors="replace") + "\n"
    if len(text) > tokens * 2.3:
        break
text = text[: int(tokens * 2.3)]
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

run_gen() {  # run_gen OUT_DIR SHARE LOG
  local start end
  start="$(date +%s.%N)"
  "$build/bin/adapt_gen" --input "$work/job.toml" --set "output.dir=$1" --set "runtime.share_prefixes=$2" >"$3" 2>&1 ||
    { cat "$3" >&2; exit 1; }
  end="$(date +%s.%N)"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}

declare -A best_ttft best_wall prompt_tokens cached
for ((r = 1; r <= rounds; ++r)); do
  for mode in off on; do
    share=false
    [[ "$mode" == on ]] && share=true
    rm -rf "$work/$mode"
    wall="$(run_gen "$work/$mode" "$share" "$work/$mode.log")"
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
    if [[ -z "${best_ttft[$mode]:-}" ]] || awk -v a="$ttft" -v b="${best_ttft[$mode]}" 'BEGIN { exit !(a < b) }'; then
      best_ttft[$mode]="$ttft"
    fi
    if [[ -z "${best_wall[$mode]:-}" ]] || awk -v a="$wall" -v b="${best_wall[$mode]}" 'BEGIN { exit !(a < b) }'; then
      best_wall[$mode]="$wall"
    fi
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
