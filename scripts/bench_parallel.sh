#!/usr/bin/env bash
# Benchmark: adapt_train's training step on several layouts of ranks (tp × pp × dp, MPI on the CPU) on
# the `bench` preset (8 layers, hidden 768, 12/4 heads, MLP 2048, vocab 32000: ~101M parameters, f32).
#
# The job: LoRA r = 16, alpha = 32 on q, k, v, o, gate, up and down of every layer; seq_len 512,
# train.micro_batch = 4 (the sequences of one micro-step over all replicas), grad_accum = GRAD_ACCUM
# (default 2: a pipeline of pp stages needs at least pp micro-batches per step to overlap them), so a
# step is 4 × GRAD_ACCUM × 512 tokens on every layout; clipping at 1.0, AdamW (lr 1e-4), ZeRO-1 as
# shipped. Each layout runs WARMUP (1) untimed steps then STEPS (default 4) timed ones in one job.
#
# Layouts: 1×1×1, dp2, tp2 and pp2 (2 ranks); with at least 4 cores also tp2×dp2 and tp2×pp2 (4 ranks),
# with at least 8 tp2×pp2×dp2 (8 ranks); a layout needing more ranks than the machine has cores is
# skipped and says so (ranks oversubscribing the cores measure the scheduler, not the layout). Each rank
# gets OMP_NUM_THREADS = cores / ranks, so ranks × threads = cores on every row; mpiexec does not bind
# (--bind-to none) so a rank's threads may use any core.
#
# Columns: tokens/s of the median timed step (metrics.jsonl's step_s, tokens of the whole step), the
# step's communication (metrics.jsonl's comm_bytes: bytes counted by the tp, pp and dp communicators'
# collectives and messages during the step, summed over all ranks; see src/train/README.md), and
# tokens/s relative to 1×1×1 on the same cores.
#
# The peer: torch's DistributedDataParallel (gloo) on the same model, data shape and step (HF transformers'
# LlamaForCausalLM, eager attention, the hand-written LoRA of scripts/torch_peers.py on the same seven
# projections, grad_accum micro-steps with no_sync() but the last, clipping at 1.0, torch.optim.AdamW),
# as one process of `cores` threads and as dp2 (torchrun, 2 processes of cores / 2 threads), with
# tcmalloc when Debian's libtcmalloc-minimal4 is there (the torch step allocates its activations on every
# step) and OMP_WAIT_POLICY=PASSIVE. Its rows, and adapt's ratios to them, follow the table. torch has no
# tensor or pipeline parallelism for CPU models of this kind, so tp and pp have no peer row.
#
# Usage: scripts/bench_parallel.sh [BUILD_DIR (default build)] [STEPS (default 4)] [GRAD_ACCUM (default 2)]
#                                  [VENV (default ~/.cache/adapt/venv-llama)]
# Builds BUILD_DIR's app_adapt_train and app_adapt_model (configuring BUILD_DIR with Ninja, Release, when it
# has no CMakeCache.txt); MPI must have been found there (mpiexec in CMakeCache.txt's MPIEXEC_EXECUTABLE,
# else on PATH). The peer's venv is scripts/bench_train.sh's (Debian's python3-torch through
# --system-site-packages, transformers from PyPI), made here when missing; without torch the peer rows say
# why they were skipped. Exit status: 0 when every layout that was not skipped ran, else 1.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
steps="${2:-4}"
grad_accum="${3:-2}"
venv="${4:-$HOME/.cache/adapt/venv-llama}"
warmup=1
batch=4
seq_len=512
cores="$(nproc)"

bench_build "$root" "$build" bench_parallel app_adapt_train app_adapt_model
adapt_train="$build/bin/adapt_train"
mpiexec="$(sed -n 's/^MPIEXEC_EXECUTABLE:FILEPATH=//p' "$build/CMakeCache.txt")"
[[ -x "$mpiexec" ]] || mpiexec="$(command -v mpiexec || true)"
[[ -n "$mpiexec" ]] || { echo "error: no mpiexec (MPI was not found for $build)" >&2; exit 2; }
mpi_flags=(--bind-to none)
[[ "$(id -u)" == 0 ]] && mpi_flags+=(--allow-run-as-root)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

"$build/bin/adapt_model" make --preset bench --dtype f32 --out "$work/bench" >"$work/make.log" 2>&1 ||
  { cat "$work/make.log" >&2; exit 1; }
cat >"$work/job.toml" <<EOF
[model]
path = "$work/bench"
[adapter]
kind = "lora"
seed = 1
[adapter.lora]
r = 16
alpha = 32.0
dropout = 0.0
targets = ["q", "k", "v", "o", "gate", "up", "down"]
[data]
inputs = ["$root/inputs/corpus"]
globs = ["**/*"]
seq_len = $seq_len
cross_document_attention = true
cache_dir = "$work/cache"
[optim]
lr = 1e-4
weight_decay = 0.0
schedule = "constant"
max_grad_norm = 1.0
[train]
steps = $((warmup + steps))
micro_batch = $batch
grad_accum = $grad_accum
eval_every = 0
[checkpoint]
every = 0
keep_last = 1
[run]
dir = "$work/run"
EOF

# name tp pp dp: one job; `key value` lines in $work/<name>.txt, or the reason in $work/<name>.skipped.
status=0
run_layout() {
  local name="$1" tp="$2" pp="$3" dp="$4" ranks threads launch=()
  ranks=$((tp * pp * dp))
  if ((ranks > cores)); then
    echo "needs $ranks cores, this machine has $cores" >"$work/$name.skipped"
    return
  fi
  threads=$((cores / ranks))
  ((ranks > 1)) && launch=("$mpiexec" -n "$ranks" "${mpi_flags[@]}")
  echo "$name: $ranks rank(s) x $threads thread(s) (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  rm -rf "$work/run"
  if ! "${launch[@]}" env OMP_NUM_THREADS="$threads" "$adapt_train" --config "$work/job.toml" \
      --set parallel.tp="$tp" --set parallel.pp="$pp" >"$work/$name.log" 2>&1; then
    tail -20 "$work/$name.log" >&2
    echo "adapt_train failed (its log's tail is on stderr)" >"$work/$name.failed"
    status=1
    return
  fi
  python3 - "$work/run/metrics.jsonl" "$warmup" "$ranks" "$threads" >"$work/$name.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in rows if r.get("kind") == "train"][int(sys.argv[2]):]
med = statistics.median(r["step_s"] for r in train)
comm = sorted({r["comm_bytes"] for r in train})
times = " ".join(f"{r['step_s']:.2f}" for r in train)
print(f"ranks {sys.argv[3]}\nthreads {sys.argv[4]}\nstep_s {med:.4f}\ntokens {train[0]['tokens']}\n"
      f"tokens_per_s {train[0]['tokens'] / med:.1f}\ncomm_bytes {comm[-1]}\ncomm_varies {int(len(comm) > 1)}\n"
      f"steps_s {times}")
PY
}
layouts=("1x1x1 1 1 1" "dp2 1 1 2" "tp2 2 1 1" "pp2 1 2 1" "tp2xdp2 2 1 2" "tp2xpp2 2 2 1" "tp2xpp2xdp2 2 2 2")
for l in "${layouts[@]}"; do
  # shellcheck disable=SC2086
  run_layout $l
done

# ---- the torch DDP peer ---------------------------------------------------------------------------
bench_blas_setup "the torch peer runs" >"$work/blas_note.txt"  # sets blas_env
bench_find_peer "$venv" "$work" "torch, transformers" transformers==4.46.3 tokenizers==0.20.3 safetensors==0.4.5 \
  huggingface-hub==0.26.2
bench_tcmalloc "$work"
cat >"$work/ddp_train.py" <<'PY'
# One replica of the DDP peer (torchrun sets RANK and WORLD_SIZE; a plain start is one replica): prints
# `key value` lines on rank 0 (median step time over the timed steps, the step times, versions).
import contextlib, os, statistics, sys, time
import torch
import torch.distributed as dist
import transformers
from transformers import LlamaForCausalLM
from torch_peers import attach_lora

model_dir = sys.argv[1]
batch, accum, seq, steps, warmup, threads, r = map(int, sys.argv[2:9])
alpha, lr = float(sys.argv[9]), float(sys.argv[10])
rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
torch.set_num_threads(threads)
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
model.requires_grad_(False)  # the frozen base
attach_lora(model.model.layers, r, alpha)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
net = model
if world > 1:
    dist.init_process_group("gloo")
    net = torch.nn.parallel.DistributedDataParallel(model)  # averages the LoRA gradients over the replicas
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
rows = batch // world  # a micro-step's sequences, shared out over the replicas as adapt's dp does
vocab = model.config.vocab_size
ids = torch.randint(0, vocab, (accum, rows, seq + 1), generator=torch.Generator().manual_seed(20261121 + rank))


def step():
    opt.zero_grad(set_to_none=True)
    for k in range(accum):
        x, y = ids[k, :, :-1].contiguous(), ids[k, :, 1:].contiguous()
        sync = world == 1 or k == accum - 1
        with contextlib.nullcontext() if sync else net.no_sync():
            logits = net(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab), y.view(-1)) / accum
            loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


times = []
for _ in range(warmup + steps):
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    step()
    if world > 1:
        dist.barrier()
    times.append(time.perf_counter() - t0)
if rank == 0:
    med = statistics.median(times[warmup:])
    print(f"ranks {world}\nthreads {threads}\nstep_s {med:.4f}\ntokens_per_s {batch * accum * seq / med:.1f}\n"
          f"steps_s {' '.join(f'{t:.2f}' for t in times[warmup:])}\n"
          f"versions torch {torch.__version__}, transformers {transformers.__version__}")
PY
run_peer() {  # name ranks
  local name="$1" ranks="$2" threads launch preload=()
  if [[ -z "$peer_py" ]]; then
    echo "$peer_skip" >"$work/$name.skipped"
    return
  fi
  if ((ranks > cores)); then
    echo "needs $ranks cores, this machine has $cores" >"$work/$name.skipped"
    return
  fi
  threads=$((cores / ranks))
  launch=("$peer_py")
  ((ranks > 1)) && launch=("$peer_py" -m torch.distributed.run --standalone --nproc_per_node "$ranks")
  [[ -n "$tcmalloc" ]] && preload=(LD_PRELOAD="$tcmalloc")
  echo "$name: torch, $ranks process(es) x $threads thread(s) (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  if ! env "${preload[@]}" "${blas_env[@]}" OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" \
      OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$root/scripts" "${launch[@]}" "$work/ddp_train.py" "$work/bench" "$batch" \
      "$grad_accum" "$seq_len" "$steps" "$warmup" "$threads" 16 32 1e-4 >"$work/$name.txt" 2>"$work/$name.err"; then
    tail -5 "$work/$name.err" >&2
    echo "the torch peer failed: $(tail -1 "$work/$name.err")" >"$work/$name.failed"
    rm -f "$work/$name.txt"
  fi
}
run_peer torch_1 1
run_peer torch_dp2 2
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

names=()
for l in "${layouts[@]}"; do names+=("${l%% *}"); done
python3 - "$work" "$cores" "$steps" "$warmup" "$grad_accum" "$(bench_torch_source "$peer_py")" "${tcmalloc:-}" \
  "${names[@]}" <<'EOF'
import os, sys
work, cores, steps, warmup, grad_accum, torch_pkg, tcmalloc = sys.argv[1:8]
names = sys.argv[8:]

def read(name):
    p = os.path.join(work, f"{name}.txt")
    if not os.path.exists(p):
        return None
    return dict(l.split(" ", 1) for l in open(p).read().splitlines() if " " in l)

def why_not(name):
    for ext, what in (("skipped", "skipped"), ("failed", "failed")):
        p = os.path.join(work, f"{name}.{ext}")
        if os.path.exists(p):
            return f"{what}: {open(p).read().strip()}"
    return "did not run"

res = {n: read(n) for n in names}
base = res["1x1x1"]
print(f"bench preset f32, LoRA r16 on q,k,v,o,gate,up,down, micro_batch 4 x grad_accum {grad_accum} x 512 tokens "
      f"per step, AdamW, ZeRO-1; {cores} cores, ranks x threads = cores; median of {steps} steps after {warmup} "
      f"warm-up")
print(f"{'layout (tp x pp x dp)':<22} {'ranks':>5} {'threads/rank':>12} {'tokens/s':>9} {'step s':>7} "
      f"{'comm MiB/step':>13} {'vs 1x1x1':>8}")
for n in names:
    r = res[n]
    if r is None:
        print(f"{n:<22} {why_not(n)}")
        continue
    ratio = f"{float(r['tokens_per_s']) / float(base['tokens_per_s']):>7.2f}x" if base else ""
    comm = f"{int(r['comm_bytes']) / 2**20:>13.1f}" + ("*" if r["comm_varies"] == "1" else "")
    print(f"{n:<22} {r['ranks']:>5} {r['threads']:>12} {float(r['tokens_per_s']):>9.1f} {float(r['step_s']):>7.3f} "
          f"{comm} {ratio:>8}")
if any(r and r["comm_varies"] == "1" for r in res.values()):
    print("* comm_bytes differed between the timed steps; the largest is shown")
print("comm MiB/step: metrics.jsonl's comm_bytes (tp, pp and dp communicators, summed over all ranks)")
for n in names:
    if res[n]:
        print(f"{n} step times (s, timed steps): {res[n]['steps_s']}")

peers = [("torch_1", "1x1x1"), ("torch_dp2", "dp2")]
print(f"peer: torch DDP (gloo), the same model, batch, grad_accum, LoRA and AdamW; "
      f"{'tcmalloc' if tcmalloc else 'glibc malloc (libtcmalloc_minimal.so.4 not found)'}, OMP_WAIT_POLICY=PASSIVE")
print(f"{'peer':<22} {'ranks':>5} {'threads/rank':>12} {'tokens/s':>9} {'step s':>7} {'adapt vs peer':>13}")
for name, layout in peers:
    r = read(name)
    if r is None:
        print(f"{'torch ' + layout:<22} {why_not(name)}")
        continue
    ours = res.get(layout)
    ratio = f"{float(ours['tokens_per_s']) / float(r['tokens_per_s']):>12.2f}x" if ours else ""
    print(f"{'torch ' + layout:<22} {r['ranks']:>5} {r['threads']:>12} {float(r['tokens_per_s']):>9.1f} "
          f"{float(r['step_s']):>7.3f} {ratio:>13}")
for name, layout in peers:
    r = read(name)
    if r:
        print(f"torch {layout} step times (s, timed steps): {r['steps_s']}")
        versions = r["versions"]
if any(read(n) for n, _ in peers):
    print(f"peer: {versions}, eager attention; torch from {torch_pkg}")
blas = open(os.path.join(work, "blas_note.txt")).read().strip()
if blas:
    print(blas)
EOF
bench_footer "$build" "$load_start" "$load_end" "$cores"
exit "$status"
