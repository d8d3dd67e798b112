#!/usr/bin/env bash
# Benchmark: greedy generation speed of adapt vs Hugging Face transformers (torch, CPU) and llama.cpp on
# the `bench` preset (8 layers, hidden 768, 12/4 heads, vocab 32000: ~101M parameters), side by side in
# one run.
#
# For an f32 and a bf16 checkpoint (made here by `adapt_model make --preset bench`): batch 1, a prompt
# of 512 random token ids (fixed seed), prefill, then 128 greedy decode steps with end-of-sequence
# stopping off on both sides. Reports prefill tokens/s, time to first token (prefill + the pick of the
# first token) and decode tokens/s (128 steps / their time), and each row's ratio to HF in f32 on the
# same checkpoint (for adapt rows: adapt / HF). Under the table: whether decode reaches the aim of
# 3x HF, and the product brief's reference figures for this machine (llama.cpp, PyTorch).
#
#   adapt  build/tests/gen_bench (tests/bench/): llama_forward through the KV cache + the greedy
#          generate::Sampler, i.e. Generator::run without detokenisation. Weights as adapt_gen holds
#          them (`as-stored`: bf16 matrices stay bf16 and are widened to f32 inside the GEMMs). On the bf16
#          checkpoint also with bf16 products (runtime.cpu_matmul_dtype = "bf16": activations rounded to
#          bf16 for the products by the weights, f32 sums, AVX512_BF16 where the CPU has it; with adapt_gen's
#          defaults that also means attention in bf16 products over a bf16 KV cache); its greedy tokens
#          are compared with adapt's f32-math tokens under the table.
#   HF     LlamaForCausalLM in a manual loop: one forward over the prompt (num_logits_to_keep=1, as
#          adapt computes only the last position's logits), then one forward per token with use_cache
#          and a DynamicCache (what generate() does, without its logits-processor overhead), argmax.
#          Computes in float32 for both checkpoints (bf16 weights are widened exactly at load), so the
#          arithmetic is adapt's: CPU bf16 compute in torch 1.13 rounds activations to bf16 and is not
#          an f32 peer. It is also measured on the bf16 checkpoint (torch_dtype=bfloat16), for context.
#   llama.cpp  `llama-bench` on each checkpoint written as GGUF by scripts/make_gguf.py (the same
#          tensors, F32 or BF16), in its defaults (f16 KV cache, weights repacked for this CPU) with
#          flash attention on and off, the faster of the two for each figure (on is faster for prefill,
#          off for decoding, here): pp512 for prefill, and tg128 at depth 512 for decoding (128 tokens
#          after a 512-token context, as adapt and HF decode). llama-bench does not time the first token,
#          so the TTFT column stays empty. Its greedy tokens (through llama-cpp-python's bindings on the same
#          library) are compared with adapt's: the GGUF holds the same model only when they agree.
#          llama.cpp is built from source once (bench_llamacpp in bench_common.sh); without it the rows
#          are skipped with the reason.
#
# Long context (the first round only; BENCH_GEN_LONG=N sets the prompt, default 8192, 0 skips it): on the
# bf16 checkpoint, adapt with bf16 products and a bf16 KV cache (so attention in bf16 products too, as
# adapt_gen's runtime.attention_dtype = "auto" gives) against llama.cpp (f16 KV cache): prefill of N random
# ids, then 64 decode steps after them (llama-bench: pp N, tg64 at depth N).
#
# Threads: every side gets as many threads as there are cores (nproc); each runs in its best setup.
# HF runs with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep): Debian's torch calls the pthreads
# build of OpenBLAS from inside its OpenMP pool, and with libgomp's default spin-waiting the two pools
# fight over the cores (decode ~11 tokens/s instead of ~35 on idle cores, 2-3 under load). adapt runs
# as adapt_gen does, with libgomp's default policy, which is fastest on idle cores (spinning threads
# pick up the many short parallel regions of a decode step at once); it is also shown with PASSIVE,
# which costs ~35% of decode on idle cores but keeps it fast when another process shares the cores
# (the default then collapses: decode 3-50 tokens/s instead of ~125 with one core taken by another job).
#
# Each measurement runs ROUNDS times (default 3; rounds interleave the implementations so both sides
# see the same machine load), each after one untimed warm-up in the same process; the best value of
# each column counts; on a shared machine more rounds give a better chance of a quiet window. The
# greedy tokens of adapt and HF (f32) are compared and the agreement is printed (random weights give
# small top-1 margins, so a late divergence is summation order, not a bug). The load average is
# printed at the start and the end: with other jobs on the cores both sides slow down, adapt with the
# default wait policy by far the most (see above).
#
# Usage: scripts/bench_gen.sh [BUILD_DIR (default build)] [ROUNDS (default 3)]
#                            [VENV (default ~/.cache/adapt/venv-llama)]
# Builds BUILD_DIR's targets gen_bench and app_adapt_model (configuring BUILD_DIR with Ninja, Release,
# when it has no CMakeCache.txt). The Python peer is the venv scripts/make_llama_fixtures.py uses:
# Debian's python3-torch 1.13 (apt, seen through --system-site-packages) plus transformers 4.46.3
# from PyPI; it is created here when missing. Without torch the HF rows are skipped with the reason.
# llama.cpp is built once into ~/.cache/adapt/llama.cpp (from PyPI's llama-cpp-python sdist, with that
# venv's pip); GGUF conversion uses that venv's numpy.
# Exit status: 0 when adapt ran (with or without the peer), else that of the failing step.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
bench_blas_setup "the torch peer runs"  # sets blas_env: OpenBLAS kernels for the torch peer
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-3}"
venv="${3:-$HOME/.cache/adapt/venv-llama}"
prompt_tokens=512
decode_steps=128
long_tokens="${BENCH_GEN_LONG:-8192}"
long_decode=64
seed=20261121
threads="$(nproc)"
pins=(transformers==4.46.3 tokenizers==0.20.3 safetensors==0.4.5 huggingface-hub==0.26.2)

# ---- build ----------------------------------------------------------------------------------------
bench_build "$root" "$build" bench_gen gen_bench app_adapt_model
gen_bench="$build/tests/gen_bench"
adapt_model="$build/bin/adapt_model"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- models and prompt ----------------------------------------------------------------------------
for dt in f32 bf16; do
  "$adapt_model" make --preset bench --dtype "$dt" --out "$work/bench-$dt" >"$work/make-$dt.log" 2>&1 ||
    { cat "$work/make-$dt.log" >&2; exit 1; }
done
for ids in "ids $prompt_tokens" "ids_long $long_tokens"; do
  python3 - "$work/bench-f32/config.json" "$seed" "${ids#* }" >"$work/${ids% *}.txt" <<'EOF'
import json, random, sys
vocab = json.load(open(sys.argv[1]))["vocab_size"]
rng = random.Random(int(sys.argv[2]))
print(" ".join(str(rng.randrange(vocab)) for _ in range(int(sys.argv[3]))))
EOF
done

# ---- the Python peer ------------------------------------------------------------------------------
bench_find_peer "$venv" "$work" "torch, transformers" "${pins[@]}"
bench_llamacpp "$peer_py" "$work"
if [[ -z "$llamacpp_skip" ]]; then
  for dt in f32 bf16; do
    "$peer_py" "$root/scripts/make_gguf.py" "$work/bench-$dt" "$work/bench-$dt.gguf" \
      --gguf-py "$llamacpp_src/vendor/llama.cpp/gguf-py" >"$work/gguf-$dt.log" 2>&1 ||
      { llamacpp_skip="make_gguf.py failed: $(tail -1 "$work/gguf-$dt.log")"; break; }
  done
fi

cat >"$work/llamacpp_greedy.py" <<'EOF'
# llama.cpp's greedy tokens on a GGUF (the prompt, then DECODE tokens after the first), to a file.
import sys
from llama_cpp import Llama

model, ids_path, decode, threads, tokens_out = sys.argv[1:6]
ids = [int(x) for x in open(ids_path).read().split()]
llm = Llama(model_path=model, n_ctx=len(ids) + int(decode) + 8, n_batch=512, n_threads=int(threads), verbose=False)
tokens = []
for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
    tokens.append(tok)
    if len(tokens) == int(decode) + 1:
        break
with open(tokens_out, "w") as f:
    f.write(" ".join(map(str, tokens)) + "\n")
EOF

cat >"$work/hf_bench.py" <<'EOF'
# The HF side: prints the same `key value` lines as gen_bench; tokens of the timed run to a file.
import sys, time
import torch
import transformers
from transformers import DynamicCache, LlamaForCausalLM

model_dir, dtype_name, ids_path, decode, threads, tokens_out = sys.argv[1:7]
decode, threads = int(decode), int(threads)
torch.set_num_threads(threads)
dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
t = time.perf_counter()
model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=dtype).eval()
load_s = time.perf_counter() - t
prompt = torch.tensor([[int(x) for x in open(ids_path).read().split()]], dtype=torch.long)


def run(steps):
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=prompt, past_key_values=DynamicCache(), use_cache=True, num_logits_to_keep=1)
        prefill = time.perf_counter() - t0
        nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # first maximum, as adapt's greedy pick
        tokens = [int(nxt)]
        ttft = time.perf_counter() - t0
        cache = out.past_key_values
        t1 = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True, num_logits_to_keep=1)
            cache = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            tokens.append(int(nxt))
        return prefill, ttft, time.perf_counter() - t1, tokens


run(min(decode, 8))  # warm-up
prefill, ttft, dec, tokens = run(decode)
with open(tokens_out, "w") as f:
    f.write(" ".join(map(str, tokens)) + "\n")
n = prompt.shape[1]
print(f"load_s {load_s:.4f}\nprompt_tokens {n}\ndecode_steps {decode}\nprefill_s {prefill:.6f}\n"
      f"prefill_tok_s {n / prefill:.2f}\nttft_s {ttft:.6f}\ndecode_s {dec:.6f}\ndecode_tok_s {decode / dec:.3f}")
print(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
      f"attention {model.config._attn_implementation}\ntorch_threads {torch.get_num_threads()}")
EOF

# ---- measurements ---------------------------------------------------------------------------------
# Results go to $work/<name>.<round>.txt (`key value` lines), greedy tokens to $work/<name>.tokens.
run_adapt() {  # name checkpoint round [PASSIVE|DEFAULT: OMP_WAIT_POLICY] [gen_bench options...]
  local policy=(-u OMP_WAIT_POLICY)
  [[ "${4:-}" == PASSIVE ]] && policy=(OMP_WAIT_POLICY=PASSIVE)
  env "${policy[@]}" OMP_NUM_THREADS="$threads" \
    "$gen_bench" "$work/bench-$2" --ids "$work/ids.txt" --decode "$decode_steps" --reps 1 --warmup 1 "${@:5}" \
    --tokens-out "$work/$1.tokens" >"$work/$1.$3.txt" 2>"$work/$1.$3.err" ||
    { cat "$work/$1.$3.err" >&2; echo "error: gen_bench failed on the $2 checkpoint" >&2; exit 1; }
}
run_hf() {  # name checkpoint compute-dtype round
  env "${blas_env[@]}" OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" OMP_WAIT_POLICY=PASSIVE \
    "$peer_py" "$work/hf_bench.py" "$work/bench-$2" "$3" "$work/ids.txt" "$decode_steps" "$threads" \
    "$work/$1.tokens" >"$work/$1.$4.txt" 2>"$work/$1.$4.err"
}
try_hf() {  # like run_hf; a failure is recorded in $work/<name>.failed (the row then says why)
  [[ -n "$peer_py" && ! -f "$work/$1.failed" ]] || return 0
  run_hf "$@" || tail -1 "$work/$1.${*: -1}.err" >"$work/$1.failed"
}
run_adapt_long() {  # name round: the long-context run, bf16 checkpoint, bf16 products and KV cache
  OMP_NUM_THREADS="$threads" "$gen_bench" "$work/bench-bf16" --ids "$work/ids_long.txt" --decode "$long_decode" \
    --reps 1 --warmup 0 --kv-dtype bf16 --cpu-matmul-dtype bf16 >"$work/$1.$2.txt" 2>"$work/$1.$2.err" ||
    { cat "$work/$1.$2.err" >&2; echo "error: gen_bench failed on the long prompt" >&2; exit 1; }
}
try_llamacpp() {  # name checkpoint round [PROMPT DECODE]: llama-bench's pp and tg runs (flash attention on
                  # and off, the faster of each kept), as `key value` lines; a failure goes to
                  # $work/<name>.failed. The greedy tokens of the short prompt are taken in the first round.
  [[ -z "$llamacpp_skip" && ! -f "$work/$1.failed" ]] || return 0
  local prompt="${4:-$prompt_tokens}" decode="${5:-$decode_steps}"
  local bench=("$llamacpp_bin/llama-bench" -m "$work/bench-$2.gguf" -t "$threads" -r 1 -fa "on,off" -o jsonl)
  if ! { "${bench[@]}" -p "$prompt" -n 0 && "${bench[@]}" -p 0 -n "$decode" -d "$prompt"; } \
      >"$work/$1.$3.jsonl" 2>"$work/$1.$3.err"; then
    tail -1 "$work/$1.$3.err" >"$work/$1.failed"; return 0
  fi
  python3 - "$work/$1.$3.jsonl" >"$work/$1.$3.txt" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
pp = max((r for r in runs if r["n_prompt"] > 0), key=lambda r: r["avg_ts"])
tg = max((r for r in runs if r["n_gen"] > 0), key=lambda r: r["avg_ts"])
fa = {1: "on", 0: "off", -1: "auto"}
print(f"prompt_tokens {pp['n_prompt']}\nprefill_tok_s {pp['avg_ts']:.2f}\nttft_s nan\ndecode_steps {tg['n_gen']}\n"
      f"decode_depth {tg['n_depth']}\ndecode_tok_s {tg['avg_ts']:.3f}\nkv_cache {pp['type_k']}/{pp['type_v']}\n"
      f"prefill_fa {fa.get(pp['flash_attn'], pp['flash_attn'])}\ndecode_fa {fa.get(tg['flash_attn'], tg['flash_attn'])}\n"
      f"build {pp['build_commit']}")
EOF
  if [[ "$3" == 1 && "$prompt" == "$prompt_tokens" ]]; then
    env LLAMA_CPP_LIB_PATH="$llamacpp_bin" PYTHONPATH="$llamacpp_src" "$peer_py" "$work/llamacpp_greedy.py" \
      "$work/bench-$2.gguf" "$work/ids.txt" "$decode_steps" "$threads" "$work/$1.tokens" 2>"$work/$1.greedy.err" ||
      echo "llama.cpp greedy tokens on the $2 checkpoint failed: $(tail -1 "$work/$1.greedy.err")" >&2
  fi
}
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  run_adapt adapt_f32 f32 "$round"
  try_hf hf_f32 f32 f32 "$round"
  run_adapt adapt_f32_passive f32 "$round" PASSIVE
  run_adapt adapt_bf16 bf16 "$round"
  try_hf hf_bf16_as_f32 bf16 f32 "$round"
  run_adapt adapt_bf16_passive bf16 "$round" PASSIVE
  if [[ "$("$gen_bench" 2>&1 || true)" == *cpu-matmul-dtype* ]]; then
    run_adapt adapt_bf16_products bf16 "$round" DEFAULT --cpu-matmul-dtype bf16
  fi
  try_hf hf_bf16 bf16 bf16 "$round"
  try_llamacpp llamacpp_f32 f32 "$round"
  try_llamacpp llamacpp_bf16 bf16 "$round"
  if [[ "$round" == 1 && "$long_tokens" -gt 0 ]]; then
    echo "long context: $long_tokens-token prompt, $long_decode decode steps" >&2
    run_adapt_long adapt_long "$round"
    try_llamacpp llamacpp_long bf16 "$round" "$long_tokens" "$long_decode"
  fi
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report ---------------------------------------------------------------------------------------
torch_pkg="$(bench_torch_source "$peer_py")"
python3 - "$work" "$rounds" "$peer_skip" "$prompt_tokens" "$decode_steps" "$seed" "$threads" "$torch_pkg" \
  "$llamacpp_skip" "$llamacpp_version" "$long_tokens" "$long_decode" <<'EOF'
import math, os, sys
work, rounds, peer_skip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prompt_tokens, decode_steps, seed, threads, torch_pkg, llamacpp_skip, llamacpp_version = sys.argv[4:11]
long_tokens, long_decode = int(sys.argv[11]), int(sys.argv[12])

def best(name):
    runs = []
    for r in range(1, rounds + 1):
        p = os.path.join(work, f"{name}.{r}.txt")
        if os.path.exists(p) and os.path.getsize(p) and not os.path.exists(os.path.join(work, f"{name}.failed")):
            runs.append(dict(l.split(" ", 1) for l in open(p).read().splitlines() if " " in l))
    if not runs:
        return None
    b = dict(runs[0])
    b["prefill_tok_s"] = max(float(x["prefill_tok_s"]) for x in runs)
    b["decode_tok_s"] = max(float(x["decode_tok_s"]) for x in runs)
    b["ttft_s"] = min(float(x["ttft_s"]) for x in runs)
    b["n"] = len(runs)
    return b

def tokens(name):
    p = os.path.join(work, f"{name}.tokens")
    return open(p).read().split() if os.path.exists(p) else None

def agreement(a, b):  # how far two runs' greedy tokens agree
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return f"all {len(a)} identical" if k is None else f"identical up to token {k} of {len(a)}"

def why_skipped(name):  # the peer's setup failure, else the run's own error
    failed = os.path.join(work, f"{name}.failed")
    skip = llamacpp_skip if name.startswith("llamacpp") else peer_skip
    return skip or (open(failed).read().strip() if os.path.exists(failed) else "did not run")

def speedup(a, p):  # row a against row p
    return f"prefill {a['prefill_tok_s'] / p['prefill_tok_s']:.2f}x, decode {a['decode_tok_s'] / p['decode_tok_s']:.2f}x"

names = ["adapt_f32", "adapt_f32_passive", "hf_f32", "llamacpp_f32", "adapt_bf16", "adapt_bf16_passive",
         "adapt_bf16_products", "hf_bf16_as_f32", "hf_bf16", "llamacpp_bf16", "adapt_long", "llamacpp_long"]
res = {n: best(n) for n in names}
hf = res["hf_f32"] or res["hf_bf16_as_f32"] or res["hf_bf16"]
hf_name = f"HF {hf['transformers']} / torch {hf['torch']}" if hf else "HF"
# weights, implementation, result, the HF f32 row of the same checkpoint (ratio = this row / that row)
rows = [
    ("f32", "adapt", "adapt_f32", "hf_f32"),
    ("f32", "adapt, OMP_WAIT_POLICY=PASSIVE", "adapt_f32_passive", "hf_f32"),
    ("f32", f"{hf_name}, f32", "hf_f32", "hf_f32"),
    ("f32", "llama.cpp (llama-bench, F32 GGUF)", "llamacpp_f32", "hf_f32"),
    ("bf16", "adapt (bf16 kept, f32 math)", "adapt_bf16", "hf_bf16_as_f32"),
    ("bf16", "adapt (bf16 kept), OMP_WAIT_POLICY=PASSIVE", "adapt_bf16_passive", "hf_bf16_as_f32"),
    ("bf16", "adapt, bf16 products (cpu_matmul_dtype)", "adapt_bf16_products", "hf_bf16_as_f32"),
    ("bf16", f"{hf_name}, widened to f32", "hf_bf16_as_f32", "hf_bf16_as_f32"),
    ("bf16", f"{hf_name}, bf16 compute", "hf_bf16", "hf_bf16_as_f32"),
    ("bf16", "llama.cpp (llama-bench, BF16 GGUF)", "llamacpp_bf16", "hf_bf16_as_f32"),
]
print(f"bench preset, batch 1, prompt {prompt_tokens} random ids (seed {seed}), {decode_steps} greedy decode steps, "
      f"{threads} threads, best of {rounds}")
print(f"{'weights':<8} {'implementation':<46} {'prefill tok/s':>13} {'TTFT ms':>8} {'decode tok/s':>12}"
      f"   {'prefill / HF f32':>16} {'decode / HF f32':>15}")
for ckpt, label, name, peer in rows:
    r = res[name]
    if r is None:
        print(f"{ckpt:<8} {label:<46} skipped: {why_skipped(name)}")
        continue
    ratio = ""
    if res[peer]:
        p = res[peer]
        ratio = f"   {r['prefill_tok_s'] / p['prefill_tok_s']:>15.2f}x {r['decode_tok_s'] / p['decode_tok_s']:>14.2f}x"
    ttft = "" if math.isnan(float(r["ttft_s"])) else f"{1e3 * float(r['ttft_s']):.0f}"
    print(f"{ckpt:<8} {label:<46} {r['prefill_tok_s']:>13.0f} {ttft:>8} {r['decode_tok_s']:>12.1f}{ratio}")

for adapt, peer in [("adapt_f32", "hf_f32"), ("adapt_bf16", "hf_bf16_as_f32")]:
    a, h = tokens(adapt), tokens(peer)
    if a and h:
        print(f"greedy tokens, {adapt.split('_')[1]} checkpoint, adapt vs HF f32: {agreement(a, h)} "
              f"({len(set(a))} distinct ids)")
for adapt, peer in [("adapt_f32", "llamacpp_f32"), ("adapt_bf16", "llamacpp_bf16"),
                    ("adapt_bf16_products", "llamacpp_bf16")]:
    a, b = tokens(adapt), tokens(peer)
    if a and b:
        what = "bf16 products" if adapt.endswith("products") else "f32 math"
        print(f"greedy tokens, {peer.split('_')[1]} checkpoint, llama.cpp vs adapt ({what}): {agreement(a, b)}")
for adapt, peer in [("adapt_f32", "llamacpp_f32"), ("adapt_bf16_products", "llamacpp_bf16")]:
    a, p = res[adapt], res[peer]
    if a and p:
        print(f"adapt vs llama.cpp, {peer.split('_')[1]} checkpoint ({adapt.replace('_', ' ')}): {speedup(a, p)}")
for name in ("llamacpp_f32", "llamacpp_bf16"):
    if res[name]:
        c = res[name]
        print(f"llama.cpp: {llamacpp_version}; KV cache {c['kv_cache']}, decode timed at depth {c['decode_depth']}, "
              f"{threads} threads; flash attention (the faster of on/off): prefill {c['prefill_fa']}, "
              f"decode {c['decode_fa']}")
        break
if long_tokens > 0:
    a, p = res["adapt_long"], res["llamacpp_long"]
    print(f"long context, bf16 checkpoint: prompt of {long_tokens} random ids, then {long_decode} decode steps "
          f"(first round only)")
    print(f"  {'implementation':<52} {'prefill tok/s':>13} {'decode tok/s':>12}")
    if a:
        print(f"  {'adapt, bf16 products and KV cache, bf16 attention':<52} {a['prefill_tok_s']:>13.0f} "
              f"{a['decode_tok_s']:>12.1f}")
    if p:
        label = f"llama.cpp, {p['kv_cache']} KV cache, flash attn {p['prefill_fa']}/{p['decode_fa']}"
        print(f"  {label:<52} {p['prefill_tok_s']:>13.0f} {p['decode_tok_s']:>12.1f}")
    else:
        print(f"  llama.cpp skipped: {why_skipped('llamacpp_long')}")
    if a and p:
        print(f"  adapt vs llama.cpp: {speedup(a, p)}")
a, b = tokens("adapt_bf16"), tokens("adapt_bf16_products")
if a and b:
    print(f"greedy tokens, bf16 checkpoint, adapt bf16 products vs adapt f32 math: {agreement(a, b)}")
if res["hf_f32"] and res["hf_bf16_as_f32"]:
    worst = min(res["adapt_f32"]["decode_tok_s"] / res["hf_f32"]["decode_tok_s"],
                res["adapt_bf16"]["decode_tok_s"] / res["hf_bf16_as_f32"]["decode_tok_s"])
    print(f"aim: decode >= 3x HF transformers (f32 peer): {'met' if worst >= 3 else 'not met'} "
          f"(lower of the two ratios: {worst:.2f}x)")
if hf:
    print(f"HF: attention '{hf['attention']}', torch threads {hf['torch_threads']}, OpenBLAS threads {threads}, "
          f"OMP_WAIT_POLICY=PASSIVE; torch from {torch_pkg}. adapt: {threads} OpenMP threads")
print("reference (product brief, same machine and shape; not measured by this script): "
      "llama.cpp decodes 144 tokens/s (fp32), PyTorch prefills 2,459 tokens/s")
EOF
bench_footer "$build" "$load_start" "$load_end" "$threads"
