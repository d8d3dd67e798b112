#!/usr/bin/env bash
# Benchmark: training-step speed of adapt vs Hugging Face transformers + peft (torch, CPU) on the `bench`
# preset (8 layers, hidden 768, 12/4 heads, MLP 2048, vocab 32000: ~101M parameters, f32), side by side in
# one run.
#
# The step: a micro-batch of 4 rows x 512 tokens, forward, cross-entropy over every position, backward,
# global gradient-norm clipping at 1.0 and one AdamW update (lr 1e-4, no weight decay). The base model is
# frozen (no gradient for any base weight on either side); trained are LoRA r = 16, alpha = 32 on q, k, v,
# o, gate, up and down of every layer and a bottleneck adapter of width 64 after every MLP (Pfeiffer
# placement, ReLU, no LayerNorm, scaling 1): 2,529,792 parameters on both sides. Attention is causal over
# the whole row on both sides (adapt: data.cross_document_attention = true). Reports the median step time
# over the steps after the warm-up as tokens/s (2,048 tokens per step), the process's peak RSS, and each
# row's ratio to HF + peft with tcmalloc.
#
#   adapt  build/bin/adapt_train on a job written here (adapter.kind = "lora+bottleneck"), data from
#          inputs/corpus packed into rows of 512+1 tokens; the step time is metrics.jsonl's step_s (data
#          loading of the step, the forward/backward, clipping and AdamW; no eval, one checkpoint at the
#          end, outside the timed steps). While an adapt_train that does not accept "lora+bottleneck" is
#          measured, the adapt row is LoRA only and says so.
#   HF     LlamaForCausalLM (transformers 4.46.3, eager attention), peft 0.13.2 get_peft_model with
#          LoraConfig(r=16, lora_alpha=32, lora_dropout=0, target_modules=all seven projections); the
#          bottleneck is a small torch module (down 768 -> 64, ReLU, up 64 -> 768, up initialised to 0)
#          applied to each decoder layer's output through a forward hook: out = o + up(relu(down(o))) with
#          o = h + MLP(h), i.e. Pfeiffer after the MLP, as adapt computes it. torch.optim.AdamW over the
#          adapter parameters, clip_grad_norm_(1.0). Random token ids (fixed seed), labels = the next id.
#   lean   (reference, not a peer) the same step with a hand-written LoRA wrapper instead of peft's, to
#          show what peft's wrapper costs.
#   adapt, bf16 products: the same job with runtime.cpu_matmul_dtype = "bf16" (the base weights rounded to
#          bf16 at load, the activations and gradients they multiply rounded to bf16, f32 sums: the GPU
#          path's arithmetic, on AVX512_BF16 where the CPU has it; attention follows, as
#          runtime.attention_dtype = "auto" says: its tile products round q, k, v, the probabilities and
#          the gradients they multiply). Not the f32 numbers: the report gives the largest relative
#          difference of its per-step losses to the f32 run's.
#
# Threads: both sides get nproc threads. The torch side runs with OMP_WAIT_POLICY=PASSIVE and
# OPENBLAS_NUM_THREADS=nproc (Debian's torch calls the pthreads build of OpenBLAS from inside its OpenMP
# pool; with spinning OpenMP threads the two pools fight over the cores, see bench_gen.sh). adapt runs as
# shipped (libgomp's default wait policy) and also with PASSIVE, the setting for cores shared with other jobs.
# Allocator: torch's step allocates its activations on every step, so it is measured with tcmalloc
# (LD_PRELOAD of Debian's libtcmalloc-minimal4, installed here when missing and root) and with glibc
# malloc; adapt allocates nothing per step once warm (workspaces), so it runs with glibc malloc only.
#
# Each implementation runs ROUNDS times (default 1; rounds interleave the implementations); a run is
# WARMUP (default 2) untimed steps then STEPS (default 8) timed ones in one process; the best of the
# rounds' medians counts. The load average is printed at the start and the end: other jobs on the cores
# slow both sides, adapt with the default wait policy the most.
#
# Usage: scripts/bench_train.sh [BUILD_DIR (default build)] [ROUNDS (default 1)] [STEPS (default 8)]
#                               [WARMUP (default 2)] [VENV (default ~/.cache/adapt/venv-llama)]
# Builds BUILD_DIR's app_adapt_train and app_adapt_model (configuring BUILD_DIR with Ninja, Release, when it
# has no CMakeCache.txt). The Python peer is the venv scripts/make_llama_fixtures.py uses (Debian's
# python3-torch 1.13 seen through --system-site-packages, transformers 4.46.3) plus peft 0.13.2 and
# accelerate 0.34.2 (the last peft before it needs a newer torch API), installed here when missing.
# Without torch the HF rows are skipped with the reason. Exit status: 0 when adapt ran, else that of the
# failing step.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
bench_blas_setup "the torch peer runs"  # sets blas_env: OpenBLAS kernels for the torch peer
build="$(realpath -m "${1:-$root/build}")"
rounds="${2:-1}"
steps="${3:-8}"
warmup="${4:-2}"
venv="${5:-$HOME/.cache/adapt/venv-llama}"
batch=4
seq_len=512
rank=16
alpha=32
bn_size=64
lr=1e-4
threads="$(nproc)"
pins=(transformers==4.46.3 tokenizers==0.20.3 safetensors==0.4.5 huggingface-hub==0.26.2 peft==0.13.2
      accelerate==0.34.2)

# ---- build ----------------------------------------------------------------------------------------
bench_build "$root" "$build" bench_train app_adapt_train app_adapt_model
adapt_train="$build/bin/adapt_train"
adapt_model="$build/bin/adapt_model"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- model and the adapt job ----------------------------------------------------------------------
"$adapt_model" make --preset bench --dtype f32 --out "$work/bench" >"$work/make.log" 2>&1 ||
  { cat "$work/make.log" >&2; exit 1; }
kind=lora
kind_note="LoRA only: this adapt_train does not accept adapter.kind = \"lora+bottleneck\" yet"
if [[ "$("$adapt_train" --help 2>&1 || true)" == *'"lora+bottleneck"'* ]]; then
  kind="lora+bottleneck"
  kind_note=""
fi
cat >"$work/job.toml" <<EOF
[model]
path = "$work/bench"
[adapter]
kind = "$kind"
seed = 1
[adapter.lora]
r = $rank
alpha = $alpha.0
dropout = 0.0
targets = ["q", "k", "v", "o", "gate", "up", "down"]
[adapter.bottleneck]
size = $bn_size
placement = "pfeiffer"
activation = "relu"
[data]
inputs = ["$root/inputs/corpus"]
globs = ["**/*"]
seq_len = $seq_len
cross_document_attention = true
cache_dir = "$work/cache"
[optim]
lr = $lr
weight_decay = 0.0
schedule = "constant"
max_grad_norm = 1.0
[train]
steps = $((warmup + steps))
micro_batch = $batch
eval_every = 0
[checkpoint]
every = 0
keep_last = 1
[run]
dir = "$work/run"
EOF
{ cat "$work/job.toml"; printf '[runtime]\ncpu_matmul_dtype = "bf16"\n'; } >"$work/job_bf16.toml"

# ---- the Python peer ------------------------------------------------------------------------------
bench_find_peer "$venv" "$work" "torch, transformers, peft" "${pins[@]}"
bench_tcmalloc "$work"

cat >"$work/hf_train.py" <<'EOF'
# The HF side: prints `key value` lines (median step time over the timed steps, peak RSS, versions).
import resource, statistics, sys, time
import torch
import transformers
from transformers import LlamaForCausalLM
from torch_peers import attach_bottlenecks, attach_lora

model_dir, mode = sys.argv[1:3]
batch, seq, steps, warmup, threads, rank, bn_size = map(int, sys.argv[3:10])
alpha, lr = float(sys.argv[10]), float(sys.argv[11])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
model.requires_grad_(False)  # the frozen base: no weight gradient
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
if mode == "peft":
    import peft
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                             target_modules=targets, task_type="CAUSAL_LM"))
    layers = model.base_model.model.model.layers
    peft_version = peft.__version__
else:  # lean: a hand-written LoRA wrapper, y = W x + s * B (A x)
    attach_lora(model.model.layers, rank, alpha)
    layers = model.model.layers
    peft_version = "-"


adapters = attach_bottlenecks(layers, model.config.hidden_size, bn_size) if bn_size > 0 else torch.nn.ModuleList()
params = [p for p in model.parameters() if p.requires_grad] + list(adapters.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
model.train()
ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(20261121))
x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def step():
    opt.zero_grad(set_to_none=True)
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return float(loss)


times = []
for _ in range(warmup + steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
med = statistics.median(times[warmup:])
print(f"step_s {med:.4f}\ntokens_per_s {batch * seq / med:.1f}\nsteps_s {' '.join(f'{t:.2f}' for t in times)}\n"
      f"peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}\n"
      f"trainable {sum(p.numel() for p in params)}\nloss {loss:.4f}\n"
      f"versions torch {torch.__version__}, transformers {transformers.__version__}, peft {peft_version}\n"
      f"torch_threads {torch.get_num_threads()}")
EOF

# ---- measurements ---------------------------------------------------------------------------------
# Results go to $work/<name>.<round>.txt (`key value` lines).
run_adapt() {  # name round [PASSIVE|DEFAULT] [JOB (default job.toml)]
  local policy=(-u OMP_WAIT_POLICY)
  [[ "${3:-}" == PASSIVE ]] && policy=(OMP_WAIT_POLICY=PASSIVE)
  rm -rf "$work/run"
  env "${policy[@]}" OMP_NUM_THREADS="$threads" /usr/bin/time -f "peak_rss_kb %M" -o "$work/$1.$2.time" \
    "$adapt_train" --config "$work/${4:-job.toml}" >"$work/$1.$2.log" 2>&1 ||
    { tail -20 "$work/$1.$2.log" >&2; echo "error: adapt_train failed" >&2; exit 1; }
  python3 - "$work/run/metrics.jsonl" "$warmup" "$batch" "$seq_len" "$work/$1.$2.time" >"$work/$1.$2.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
times = [r["step_s"] for r in rows if r.get("kind") == "train"]
med = statistics.median(times[int(sys.argv[2]):])
rss_kb = int(open(sys.argv[5]).read().split()[-1])
losses = [r["loss"] for r in rows if r.get("kind") == "train"]
print(f"step_s {med:.4f}\ntokens_per_s {int(sys.argv[3]) * int(sys.argv[4]) / med:.1f}\n"
      f"steps_s {' '.join(f'{t:.2f}' for t in times)}\npeak_rss_mb {rss_kb / 1024:.0f}\n"
      f"losses {' '.join(repr(x) for x in losses)}")
PY
  grep -o 'adapter [a-z+]*: [0-9,]* parameters' "$work/$1.$2.log" | head -1 | sed 's/^/params /' >>"$work/$1.$2.txt" || true
}
run_hf() {  # name mode round [tcmalloc]
  local preload=()
  [[ "${4:-}" == tcmalloc ]] && preload=(LD_PRELOAD="$tcmalloc")
  env "${preload[@]}" "${blas_env[@]}" OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$root/scripts" \
    "$peer_py" "$work/hf_train.py" "$work/bench" "$2" "$batch" "$seq_len" "$steps" "$warmup" "$threads" "$rank" \
    "$bn_size" "$alpha" "$lr" >"$work/$1.$3.txt" 2>"$work/$1.$3.err" || tail -1 "$work/$1.$3.err" >"$work/$1.failed"
}
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  run_adapt adapt "$round"
  if [[ -n "$peer_py" ]]; then
    [[ -n "$tcmalloc" ]] && run_hf hf_peft_tc peft "$round" tcmalloc
    run_hf hf_peft peft "$round"
  fi
  run_adapt adapt_passive "$round" PASSIVE
  if [[ "$("$adapt_train" --help 2>&1 || true)" == *cpu_matmul_dtype* ]]; then
    run_adapt adapt_bf16 "$round" DEFAULT job_bf16.toml
  fi
  [[ -n "$peer_py" && -n "$tcmalloc" ]] && run_hf lean_tc lean "$round" tcmalloc
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report ---------------------------------------------------------------------------------------
torch_pkg="$(bench_torch_source "$peer_py")"
python3 - "$work" "$rounds" "$peer_skip" "$threads" "$torch_pkg" "$kind" "$kind_note" "$tcmalloc" \
  "$steps" "$warmup" <<'EOF'
import os, sys
work, rounds, peer_skip, threads, torch_pkg, kind, kind_note, tcmalloc, steps, warmup = sys.argv[1:11]
rounds = int(rounds)

def best(name):
    if os.path.exists(os.path.join(work, f"{name}.failed")):
        return None
    runs = []
    for r in range(1, rounds + 1):
        p = os.path.join(work, f"{name}.{r}.txt")
        if os.path.exists(p) and os.path.getsize(p):
            runs.append(dict(l.split(" ", 1) for l in open(p).read().splitlines() if " " in l))
    return max(runs, key=lambda x: float(x["tokens_per_s"])) if runs else None

res = {n: best(n) for n in ["adapt", "adapt_passive", "adapt_bf16", "hf_peft_tc", "hf_peft", "lean_tc"]}
peer = res["hf_peft_tc"] or res["hf_peft"]
versions = (peer or res["lean_tc"] or {}).get("versions", "")
adapter = "LoRA r16 (7 projections) + bottleneck 64 (Pfeiffer)" if kind == "lora+bottleneck" else "LoRA r16 only"
rows = [
    ("adapt", f"adapt ({adapter})", "glibc"),
    ("adapt_passive", "adapt, OMP_WAIT_POLICY=PASSIVE", "glibc"),
    ("adapt_bf16", "adapt, bf16 products (runtime.cpu_matmul_dtype)", "glibc"),
    ("hf_peft_tc", "HF + peft (LoRA r16 + bottleneck 64 hook)", "tcmalloc"),
    ("hf_peft", "HF + peft (LoRA r16 + bottleneck 64 hook)", "glibc"),
    ("lean_tc", "reference: torch, own LoRA wrapper (no peft)", "tcmalloc"),
]
print(f"bench preset f32, batch 4 x 512 tokens, LoRA r16 on q,k,v,o,gate,up,down + bottleneck 64 after each MLP, "
      f"AdamW, {threads} threads; median of {steps} steps after {warmup} warm-up, best of {rounds} round(s)")
print(f"{'implementation':<60} {'malloc':<9} {'tokens/s':>9} {'step s':>7} {'peak RSS MB':>11} {'vs HF+peft':>10}")
for name, label, alloc in rows:
    r = res[name]
    if r is None:
        failed = os.path.join(work, f"{name}.failed")
        why = open(failed).read().strip() if os.path.exists(failed) else (peer_skip or
              ("libtcmalloc_minimal.so.4 not found" if alloc == "tcmalloc" and not tcmalloc else "did not run"))
        print(f"{label:<60} {alloc:<9} skipped: {why}")
        continue
    ratio = f"{float(r['tokens_per_s']) / float(peer['tokens_per_s']):>9.2f}x" if peer else ""
    print(f"{label:<60} {alloc:<9} {float(r['tokens_per_s']):>9.1f} {float(r['step_s']):>7.3f} "
          f"{float(r['peak_rss_mb']):>11.0f} {ratio:>10}")
if kind_note:
    print(f"note: adapt row is {kind_note}")
if res["adapt"] and res["adapt_bf16"]:
    f32 = [float(x) for x in res["adapt"]["losses"].split()]
    b16 = [float(x) for x in res["adapt_bf16"]["losses"].split()]
    rel = max(abs(a - b) / abs(a) for a, b in zip(f32, b16))
    print(f"bf16 products: per-step losses within {rel:.2e} (relative) of the f32 run's; first step "
          f"{f32[0]:.6f} (f32) vs {b16[0]:.6f} (bf16)")
for name in ["adapt", "hf_peft_tc"]:
    if res[name]:
        extra = f", {res[name]['params']}" if "params" in res[name] else (
            f", trainable {res[name]['trainable']}" if "trainable" in res[name] else "")
        print(f"{name} step times (s, warm-up first): {res[name]['steps_s']}{extra}")
if peer:
    print(f"HF: {versions}, eager attention, torch threads {peer['torch_threads']}, OpenBLAS threads {threads}, "
          f"OMP_WAIT_POLICY=PASSIVE; torch from {torch_pkg}; tcmalloc: {tcmalloc or 'not found'}")
print(f"adapt: {threads} OpenMP threads, glibc malloc (no per-step allocation once warm)")
EOF
bench_footer "$build" "$load_start" "$load_end" "$threads"
