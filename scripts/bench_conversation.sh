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
# Usage: scripts/bench_conversation.sh [BUILD_DIR (default build)] [ROUNDS (default 3)] [TOKENS (default 4000)]
#                                      [KV_DTYPE (f32 or bf16, default f32)]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-3}"
tokens="${3:-4000}"
kv_dtype="${4:-f32}"
threads="$(nproc)"

bench_build "$root" "$build" bench_conversation app_adapt_gen app_adapt_model
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
(work / "turn2.toml").write_text(head + "[[prompts]]\nid = \"t2\"\nconversation = \"c\"\nmax_new_tokens = 16\n"
                                 "text = \"\\n// Now the same with a hash map:\\n\"\n")
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
bench_footer "$build" "$load_start" "$load_end" "$threads"
