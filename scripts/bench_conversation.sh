#!/usr/bin/env bash
# Benchmark: the second turn of a long conversation with and without output.conversation_kv, side by
# side on the `bench` preset's shape (8 layers, hidden 768, 12/4 heads, f32; made here by adapt_model
# with the vocabulary of its byte-level tokenizer, 1,024 tokens), adapt_gen on the CPU.
#
# Turn 1: a raw-text prompt of about TOKENS tokens (source files of inputs/corpus, concatenated), 32
# greedy new tokens. Turn 2: a short user message, 16 greedy new tokens. Both modes run turn 1 once into
# their own output folder; turn 2 then runs ROUNDS times in each mode, each time on a fresh copy of that
# folder (rounds interleave the modes). Reported per mode: turn 2's prompt tokens, the positions loaded
# from <name>.kv, its time to first token (best of the rounds: the prefill, or the load and the prefill
# of the new message) and the ratio to the plain mode, the .kv file's size and the whole job's wall time;
# and whether turn 2's text is the same in both modes.
#
# The peer: llama.cpp (built from source once, bench_llamacpp in bench_common.sh) through its Python
# bindings on the same weights (scripts/make_gguf.py, F32 GGUF), its KV cache in KV_DTYPE. A first process
# evaluates the conversation's tokens after turn 1 (as adapt stored them in c.json) and writes llama.cpp's
# own session file (llama_state_save_file, what `llama-cli --prompt-cache` keeps); turn 2 (the same ids as
# adapt's: those tokens, then the message) then runs ROUNDS times in a new process in two modes: prefilled
# whole, and from the session file (llama_state_load_file, then the message prefilled). Its first-token time
# starts after the model is loaded, with the file's read, as adapt's does; its wall time is the process's.
# Its reply's text (ids decoded by adapt's tokenizer, special tokens left out) is compared with adapt's.
#
# Usage: scripts/bench_conversation.sh [BUILD_DIR (default build)] [ROUNDS (default 3)] [TOKENS (default 4000)]
#                                      [KV_DTYPE (f32 or bf16, default f32)] [VENV (default ~/.cache/adapt/venv-llama)]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-3}"
tokens="${3:-4000}"
kv_dtype="${4:-f32}"
venv="${5:-$HOME/.cache/adapt/venv-llama}"
threads="$(nproc)"

bench_build "$root" "$build" bench_conversation app_adapt_gen app_adapt_model app_adapt_tokenize
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

bench_vocab_model "$build" "$work"
# The two turns' prompt files: turn 1's text is about `tokens` tokens of source.
bench_corpus_text "$root" "$tokens" "$work/turn1.txt"
python3 - "$work" "$kv_dtype" <<'EOF'
import json, pathlib, sys
work, kv_dtype = pathlib.Path(sys.argv[1]), sys.argv[2]
text = (work / "turn1.txt").read_text()
head = f"""[model]
path = "{work}/model"
[output]
dir = "out"
[defaults]
temperature = 0.0
[runtime]
batch_size = 1
kv_cache_dtype = "{kv_dtype}"
"""
(work / "turn1.toml").write_text(head + "[[prompts]]\nid = \"t1\"\nconversation = \"c\"\nmax_new_tokens = 32\n"
                                 f"text = {json.dumps(text)}\n")
message = "\n// Now the same with a hash map:\n"
(work / "turn2.txt").write_text(message)
(work / "turn2.toml").write_text(head + "[[prompts]]\nid = \"t2\"\nconversation = \"c\"\nmax_new_tokens = 16\n"
                                 f"text = {json.dumps(message)}\n")
EOF

run_gen() {  # run_gen TOML OUT_DIR KEEP_KV LOG: prints the wall time
  bench_timed_gen "$build" "$4" --input "$1" --set "output.dir=$2" --set "output.conversation_kv=$3"
}

for mode in plain kept; do
  keep=false
  [[ "$mode" == kept ]] && keep=true
  run_gen "$work/turn1.toml" "$work/$mode-1" "$keep" "$work/$mode-turn1.log" >/dev/null
done

declare -A best_ttft best_wall loaded prompt_tokens text
for ((r = 1; r <= rounds; ++r)); do
  for mode in plain kept; do
    keep=false
    [[ "$mode" == kept ]] && keep=true
    rm -rf "$work/$mode-2"
    cp -r "$work/$mode-1" "$work/$mode-2"
    wall="$(run_gen "$work/turn2.toml" "$work/$mode-2" "$keep" "$work/$mode-turn2.log")"
    read -r ttft ptok < <(python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
print(r["time_to_first_token_s"], r["prompt_tokens"])' "$work/$mode-2/results.jsonl")
    prompt_tokens[$mode]="$ptok"
    text[$mode]="$(python3 -c 'import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])][-1]["text"]))' "$work/$mode-2/results.jsonl")"
    loaded[$mode]="$(sed -n "s/.*loaded the KV cache of \([0-9]*\) of.*/\1/p" "$work/$mode-turn2.log" | head -1)"
    best_ttft[$mode]="$(bench_min "${best_ttft[$mode]:-}" "$ttft")"
    best_wall[$mode]="$(bench_min "${best_wall[$mode]:-}" "$wall")"
  done
done
kv_bytes="$(stat -c %s "$work/kept-2/conversations/c.kv")"

# ---- the llama.cpp peer ---------------------------------------------------------------------------
bench_llamacpp_gguf "$venv" "$work" "$work/model" "$work/model.gguf"
declare -A peer_ttft peer_wall peer_loaded peer_text
if [[ -z "$llamacpp_skip" ]]; then
  python3 -c 'import json, sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' \
    "$work/plain-1/conversations/c.json" >"$work/conv_ids.txt"
  "$build/bin/adapt_tokenize" --tokenizer "$work/model" <"$work/turn2.txt" >"$work/message_ids.txt"
  cat >"$work/llamacpp_turn.py" <<'PY'
# save: evaluates the conversation and writes llama.cpp's session file. plain | kept: turn 2 (conversation +
# message), 16 greedy tokens, prefilled whole or from the session file; prints `key value` lines.
import ctypes, sys, time
import llama_cpp
from llama_cpp import Llama

model, mode, session, conv_path, message_path, threads, kv = sys.argv[1:8]
conv = [int(x) for x in open(conv_path).read().split()]
prompt = conv + [int(x) for x in open(message_path).read().split()]
kv_type = {"f32": 0, "bf16": 30}[kv]  # GGML_TYPE_F32, GGML_TYPE_BF16
llm = Llama(model_path=model, n_ctx=len(prompt) + 24, n_batch=512, n_threads=int(threads), type_k=kv_type,
            type_v=kv_type, verbose=False)
if mode == "save":
    llm.eval(conv)
    ok = llama_cpp.llama_state_save_file(llm._ctx.ctx, session.encode(), (llama_cpp.llama_token * len(conv))(*conv),
                                         len(conv))
    sys.exit(0 if ok else 1)
t0 = time.perf_counter()
loaded = 0
if mode == "kept":
    out = (llama_cpp.llama_token * len(prompt))()
    n = ctypes.c_size_t(0)
    if not llama_cpp.llama_state_load_file(llm._ctx.ctx, session.encode(), out, len(prompt), ctypes.byref(n)):
        sys.exit("llama_state_load_file failed")
    llm.input_ids[: n.value] = out[: n.value]
    llm.n_tokens = loaded = n.value
toks, ttft = [], 0.0
for tok in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
    if not toks:
        ttft = time.perf_counter() - t0
    toks.append(tok)
    if len(toks) == 16:
        break
print(f"ttft_s {ttft:.4f}\nloaded {loaded}\nprompt_tokens {len(prompt)}\nids " + " ".join(map(str, toks)))
PY
  peer_run() {  # mode: runs llamacpp_turn.py, its output to $work/llamacpp_<mode>.txt
    env LLAMA_CPP_LIB_PATH="$llamacpp_bin" PYTHONPATH="$llamacpp_src" "$peer_py" "$work/llamacpp_turn.py" \
      "$work/model.gguf" "$1" "$work/c.session" "$work/conv_ids.txt" "$work/message_ids.txt" "$threads" "$kv_dtype" \
      >"$work/llamacpp_$1.txt" 2>"$work/llamacpp_$1.err"
  }
  peer_run save || llamacpp_skip="writing llama.cpp's session file failed: $(tail -1 "$work/llamacpp_save.err")"
  for ((r = 1; r <= rounds; ++r)); do
    [[ -z "$llamacpp_skip" ]] || break
    for mode in plain kept; do
      start="$(date +%s.%N)"
      peer_run "$mode" || { llamacpp_skip="llama.cpp's turn 2 ($mode) failed: $(tail -1 "$work/llamacpp_$mode.err")"; break; }
      peer_wall[$mode]="$(bench_min "${peer_wall[$mode]:-}" "$(bench_elapsed "$start")")"
      peer_ttft[$mode]="$(bench_min "${peer_ttft[$mode]:-}" "$(sed -n 's/^ttft_s //p' "$work/llamacpp_$mode.txt")")"
      peer_loaded[$mode]="$(sed -n 's/^loaded //p' "$work/llamacpp_$mode.txt")"
      peer_text[$mode]="$(sed -n 's/^ids //p' "$work/llamacpp_$mode.txt" |
        "$build/bin/adapt_tokenize" --tokenizer "$work/model" --decode --skip-special |
        python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))')"
    done
  done
fi
turn1_tokens="$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["prompt_tokens"])' "$work/plain-1/results.jsonl")"
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "bench shape, f32 weights, KV cache $kv_dtype, CPU, $threads threads; turn 2 of a conversation whose turn 1 was $turn1_tokens tokens of source + 32 generated; best of $rounds round(s)"
printf "%-40s %13s %15s %14s %9s %13s\n" "turn 2" "prompt tokens" "loaded from .kv" "first token s" "vs plain" "job wall s"
printf "%-40s %13s %15s %14.3f %9s %13.3f\n" "whole conversation prefilled (default)" "${prompt_tokens[plain]}" "0" \
  "${best_ttft[plain]}" "1.00x" "${best_wall[plain]}"
printf "%-40s %13s %15s %14.3f %9s %13.3f\n" "output.conversation_kv = true" "${prompt_tokens[kept]}" "${loaded[kept]:-0}" \
  "${best_ttft[kept]}" "$(awk -v a="${best_ttft[plain]}" -v b="${best_ttft[kept]}" 'BEGIN { printf "%.1fx", a / b }')" \
  "${best_wall[kept]}"
echo "c.kv: $kv_bytes bytes ($(awk -v b="$kv_bytes" -v n="${loaded[kept]:-0}" 'BEGIN { if (n > 0) printf "%.1f KB per position", b / n / 1000; else printf "nothing loaded" }'))"
if [[ "${text[plain]}" == "${text[kept]}" ]]; then
  echo "turn 2's text: the same in both modes"
else
  echo "turn 2's text differs: plain ${text[plain]} / kept ${text[kept]} (a near-tie of the logits: the reply's keys and values were computed a token at a time)"
fi
echo
if [[ -n "$llamacpp_skip" ]]; then
  echo "llama.cpp peer: skipped: $llamacpp_skip"
else
  echo "peer: $llamacpp_version through llama-cpp-python's bindings, F32 GGUF of the same weights, KV cache $kv_dtype, turn 2: $(sed -n 's/^prompt_tokens //p' "$work/llamacpp_kept.txt") tokens (adapt's: ${prompt_tokens[kept]}); best of $rounds round(s)"
  printf "%-40s %15s %14s %9s %13s %18s\n" "llama.cpp turn 2" "loaded" "first token s" "vs plain" "job wall s" "text as adapt's"
  for mode in plain kept; do
    printf "%-40s %15s %14.3f %9s %13.3f %18s\n" \
      "$([[ $mode == kept ]] && echo "from its session file" || echo "whole conversation prefilled")" \
      "${peer_loaded[$mode]}" "${peer_ttft[$mode]}" \
      "$(awk -v a="${peer_ttft[plain]}" -v b="${peer_ttft[$mode]}" 'BEGIN { printf "%.1fx", a / b }')" "${peer_wall[$mode]}" \
      "$([[ "${peer_text[$mode]}" == "${text[kept]}" ]] && echo same || echo differs)"
  done
  echo "session file: $(stat -c %s "$work/c.session") bytes"
  awk -v a="${peer_ttft[kept]}" -v b="${best_ttft[kept]}" -v c="${peer_wall[kept]}" -v d="${best_wall[kept]}" \
    'BEGIN { printf "adapt (conversation_kv) vs llama.cpp (session file): %.2fx the first-token time, %.2fx the job wall time\n", a / b, c / d }'
fi
bench_footer "$build" "$load_start" "$load_end" "$threads"
