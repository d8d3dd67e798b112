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
# The peer: llama.cpp (built from source once, bench_llamacpp in bench_common.sh) through its Python
# bindings on the same weights (scripts/make_gguf.py, F32 GGUF; its KV cache in f16, its default) and the same
# prompt token ids (adapt's tokenizer), greedy, 16 new tokens, one prompt at a time (the bindings run one sequence), in both of its
# modes: with its prefix reuse (Llama.generate keeps the KV cache of the longest prefix the new prompt
# shares with what the context holds, as llama.cpp's server does per slot) and with the context reset
# before each prompt. Its wall time is the whole process's, model load included, as adapt_gen's is. Its
# texts (its ids decoded by adapt's tokenizer) are compared with adapt's.
#
# Usage: scripts/bench_prefix.sh [BUILD_DIR (default build)] [ROUNDS (default 3)] [TOKENS (default 2000)]
#                                [PROMPTS (default 8)] [BATCH (default 4)] [VENV (default ~/.cache/adapt/venv-llama)]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-3}"
tokens="${3:-2000}"
n_prompts="${4:-8}"
batch="${5:-4}"
venv="${6:-$HOME/.cache/adapt/venv-llama}"
threads="$(nproc)"

bench_build "$root" "$build" bench_prefix app_adapt_gen app_adapt_model app_adapt_tokenize
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

# ---- the llama.cpp peer ---------------------------------------------------------------------------
bench_llamacpp_gguf "$venv" "$work" "$work/model" "$work/model.gguf"
if [[ -z "$llamacpp_skip" ]]; then
  # Each prompt's ids as adapt_gen feeds them (BOS, then the text), one line each.
  python3 - "$work/job.toml" "$work/prompts" <<'PY'
import pathlib, sys, tomllib
job = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())
out = pathlib.Path(sys.argv[2])
out.mkdir()
for i, p in enumerate(job["prompts"]):
    (out / f"{i:04d}.txt").write_text(p["text"])
PY
  for f in "$work"/prompts/*.txt; do
    "$build/bin/adapt_tokenize" --tokenizer "$work/model" --bos <"$f"
  done >"$work/prompt_ids.txt"
  cat >"$work/llamacpp_prefix.py" <<'PY'
# The prompts one at a time, greedy, 16 new tokens each; prints `key value` lines and each prompt's ids.
import sys, time
from llama_cpp import Llama

model, ids_path, threads, reuse, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", 16
prompts = [[int(x) for x in l.split()] for l in open(ids_path) if l.strip()]
llm = Llama(model_path=model, n_ctx=max(map(len, prompts)) + new_tokens + 8, n_batch=512, n_threads=threads,
            verbose=False)
ttft, cached, outs = 0.0, 0, []
for ids in prompts:
    if reuse:  # what generate() keeps: the longest prefix of the context that the prompt (but its last id) starts with
        held = list(llm._input_ids[: llm.n_tokens])
        n = 0
        while n < min(len(held), len(ids) - 1) and held[n] == ids[n]:
            n += 1
        cached += n
    else:
        llm.reset()
    t0 = time.perf_counter()
    toks = []
    for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        if not toks:
            ttft += time.perf_counter() - t0
        toks.append(tok)
        if len(toks) == new_tokens:
            break
    outs.append(toks)
print(f"ttft_s {ttft:.4f}\ncached {cached}\nprompt_tokens {sum(map(len, prompts))}")
for i, toks in enumerate(outs):
    print(f"ids{i} " + " ".join(map(str, toks)))
PY
fi
declare -A peer_ttft peer_wall peer_cached peer_same
run_llamacpp() {  # mode (reuse | reset)
  local mode="$1" start same
  start="$(date +%s.%N)"
  if ! env LLAMA_CPP_LIB_PATH="$llamacpp_bin" PYTHONPATH="$llamacpp_src" "$peer_py" "$work/llamacpp_prefix.py" \
      "$work/model.gguf" "$work/prompt_ids.txt" "$threads" "$([[ $mode == reuse ]] && echo 1 || echo 0)" \
      >"$work/llamacpp_$mode.txt" 2>"$work/llamacpp_$mode.err"; then
    llamacpp_skip="the llama.cpp peer failed: $(tail -1 "$work/llamacpp_$mode.err")"
    return
  fi
  peer_wall[$mode]="$(bench_min "${peer_wall[$mode]:-}" "$(bench_elapsed "$start")")"
  peer_ttft[$mode]="$(bench_min "${peer_ttft[$mode]:-}" "$(sed -n 's/^ttft_s //p' "$work/llamacpp_$mode.txt")")"
  peer_cached[$mode]="$(sed -n 's/^cached //p' "$work/llamacpp_$mode.txt")"
  # Its replies as text (adapt's tokenizer decodes the ids, special tokens left out as in adapt's results),
  # against adapt's (sharing on): the same when llama.cpp's 16 tokens start with adapt's reply (adapt's may
  # end sooner, at the model's end token).
  same="$(python3 - "$build/bin/adapt_tokenize" "$work/model" "$work/on.texts" "$work/llamacpp_$mode.txt" <<'PY'
import json, subprocess, sys
tool, model, texts, peer = sys.argv[1:5]
adapt = dict(json.load(open(texts)))
same = 0
for line in open(peer):
    if line.startswith("ids"):
        key, ids = line.split(" ", 1)
        text = subprocess.run([tool, "--tokenizer", model, "--decode", "--skip-special"], input=ids.encode(), capture_output=True,
                              check=True).stdout.decode("utf-8", "replace")
        same += text.startswith(adapt["p" + key[3:]])
print(same)
PY
)" || same="? (decoding failed)"
  peer_same[$mode]="$same"
}
if [[ -z "$llamacpp_skip" ]]; then
  for ((r = 1; r <= rounds; ++r)); do
    for mode in reset reuse; do
      [[ -z "$llamacpp_skip" ]] && run_llamacpp "$mode"
    done
  done
fi
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
echo
if [[ -n "$llamacpp_skip" ]]; then
  echo "llama.cpp peer: skipped: $llamacpp_skip"
else
  echo "peer: $llamacpp_version through llama-cpp-python's bindings, F32 GGUF of the same weights, its KV cache in f16 (its default), the same prompt ids, one prompt at a time, $threads threads; best of $rounds round(s)"
  printf "%-40s %14s %22s %11s %22s\n" "llama.cpp" "cached tokens" "sum of first-token s" "job wall s" "texts equal to adapt's"
  for mode in reset reuse; do
    printf "%-40s %14s %22.3f %11.3f %22s\n" \
      "$([[ $mode == reuse ]] && echo "prefix reuse (Llama.generate)" || echo "context reset before each prompt")" \
      "${peer_cached[$mode]}" "${peer_ttft[$mode]}" "${peer_wall[$mode]}" "${peer_same[$mode]} of $n_prompts"
  done
  awk -v a="${peer_ttft[reuse]}" -v b="${best_ttft[on]}" -v c="${peer_wall[reuse]}" -v d="${best_wall[on]}" \
    'BEGIN { printf "adapt (sharing on) vs llama.cpp (prefix reuse): %.2fx the first-token sum, %.2fx the job wall time\n", a / b, c / d }'
fi
bench_footer "$build" "$load_start" "$load_end" "$threads"
