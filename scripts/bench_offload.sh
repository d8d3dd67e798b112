#!/usr/bin/env bash
# Benchmark: adapt_train's whole training step with the AdamW state beside the parameters
# (optim.offload = false) and in host RAM (optim.offload = true), with the host-RAM update overlapped
# with the next step's compute (optim.overlap = true, the default) and without (optim.overlap = false).
# The aim for offload: a step at most 1.10x the step without it. On a GPU a fourth row streams every
# layer's base weights from host RAM (runtime.weights_device_layers = 0) on top of the overlapped offload.
#
# One process, one job per row, the same data and seed: the rows train the same adapter (the updates are
# bit for bit the same, which the test suite checks), so only the time differs. Columns: the median
# timed step (metrics.jsonl's step_s), tokens/s, the step time relative to offload = false, and for the
# overlapped row how long a step waited for the previous step's CPU update (optim_wait_s).
#
# Usage: scripts/bench_offload.sh [BUILD_DIR] [--device cpu|cuda] [--preset NAME] [--layers N]
#          [--seq S] [--micro-batch B] [--adapter lora:R|bottleneck:D] [--steps N] [--dtype bf16|f32]
# Defaults: the `bench` preset (8 layers, ~101M parameters, f32) on the CPU, seq 512, micro-batch 4,
# LoRA r16 on q,k,v,o,gate,up,down, 4 timed steps after 1 warm-up. On a GPU (--device cuda) use a real
# shape, e.g. --preset llama-3.1-8b --layers 4 --seq 4096 --micro-batch 1 (scripts/gpu_check.sh does).
# On the CPU the compute and the CPU AdamW share the same cores, so overlap can only hide the copies;
# the row that matters for the aim is the GPU one.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$root/build"
device=cpu preset=bench layers="" seq=512 batch=4 adapter="lora:16" steps=4 dtype=f32
if [[ $# -gt 0 && "$1" != --* ]]; then build="$1"; shift; fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --layers) layers="$2"; shift 2 ;;
    --seq) seq="$2"; shift 2 ;;
    --micro-batch) batch="$2"; shift 2 ;;
    --adapter) adapter="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
build="$(realpath -m "$build")"
warmup=1
case "$adapter" in
  lora:*) adapter_toml="kind = \"lora\"
seed = 1
[adapter.lora]
r = ${adapter#lora:}
alpha = $((2 * ${adapter#lora:})).0
dropout = 0.0
targets = [\"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"]" ;;
  bottleneck:*) adapter_toml="kind = \"bottleneck\"
seed = 1
[adapter.bottleneck]
size = ${adapter#bottleneck:}" ;;
  *) echo "error: --adapter takes lora:R or bottleneck:D, not '$adapter'" >&2; exit 2 ;;
esac

bench_build "$root" "$build" bench_offload app_adapt_train app_adapt_model
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

make_args=(make --preset "$preset" --dtype "$dtype" --out "$work/model")
[[ -n "$layers" ]] && make_args+=(--layers "$layers")
"$build/bin/adapt_model" "${make_args[@]}" >"$work/make.log" 2>&1 || { cat "$work/make.log" >&2; exit 1; }
weights_dtype=bf16
[[ "$dtype" == f32 ]] && weights_dtype=f32
cat >"$work/job.toml" <<EOF
[model]
path = "$work/model"
[adapter]
$adapter_toml
[data]
inputs = ["$root/inputs/corpus"]
globs = ["**/*"]
seq_len = $seq
cross_document_attention = true
cache_dir = "$work/cache"
[optim]
lr = 1e-4
weight_decay = 0.01
schedule = "constant"
max_grad_norm = 1.0
[train]
steps = $((warmup + steps))
micro_batch = $batch
grad_accum = 1
eval_every = 0
[checkpoint]
every = 0
keep_last = 1
[runtime]
device = "$device"
weights_dtype = "$weights_dtype"
[run]
dir = "$work/run"
EOF

status=0
# name, then --set arguments: one job; `key value` lines in $work/<name>.txt.
run_row() {
  local name="$1"
  shift
  echo "$name (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  rm -rf "$work/run"
  if ! "$build/bin/adapt_train" --config "$work/job.toml" "$@" >"$work/$name.log" 2>&1; then
    tail -20 "$work/$name.log" >&2
    echo "adapt_train failed (its log's tail is on stderr)" >"$work/$name.failed"
    status=1
    return
  fi
  python3 - "$work/run/metrics.jsonl" "$warmup" >"$work/$name.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in rows if r.get("kind") == "train"][int(sys.argv[2]):]
med = statistics.median(r["step_s"] for r in train)
times = " ".join("%.4f" % r["step_s"] for r in train)
waits = [r["optim_wait_s"] for r in train if "optim_wait_s" in r]
wait = f"{statistics.median(waits):.5f}" if waits else "-"
print(f"step_s {med:.5f}\ntokens {train[0]['tokens']}\nloss {train[-1]['loss']:.6f}\nwait_s {wait}\nsteps_s {times}")
PY
}
run_row off --set optim.offload=false
run_row offload_sync --set optim.offload=true --set optim.overlap=false
run_row offload_overlap --set optim.offload=true --set optim.overlap=true
# On a GPU also with every layer's base weights in host RAM (runtime.weights_device_layers = 0): what
# streaming them over the host link costs a step.
if [[ "$device" != cpu ]]; then
  run_row streamed --set optim.offload=true --set optim.overlap=true --set runtime.weights_device_layers=0
fi
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" "$device" "$preset" "${layers:-all}" "$seq" "$batch" "$adapter" "$steps" "$warmup" <<'EOF'
import os, sys
work, device, preset, layers, seq, batch, adapter, steps, warmup = sys.argv[1:10]
rows = [("off", "offload = false (AdamW state beside the parameters)"),
        ("offload_sync", "offload = true, overlap = false"),
        ("offload_overlap", "offload = true, overlap = true")]
if device != "cpu":
    rows.append(("streamed", "offload, overlap, base weights in host RAM (layers 0)"))
def read(n):
    p = os.path.join(work, f"{n}.txt")
    return dict(l.split(" ", 1) for l in open(p).read().splitlines()) if os.path.exists(p) else None
res = {n: read(n) for n, _ in rows}
print(f"adapt_train step, {device}: preset {preset} (layers {layers}), {adapter}, micro-batch {batch} x seq {seq}, "
      f"median of {steps} steps after {warmup} warm-up")
print(f"{'optimizer':<52} {'step s':>8} {'tokens/s':>9} {'vs off':>7} {'last loss':>10} {'AdamW wait s':>12}")
base = res["off"]
for n, label in rows:
    r = res[n]
    if r is None:
        print(f"{label:<52} failed: see the log tail above")
        continue
    s = float(r["step_s"])
    ratio = f"{s / float(base['step_s']):>6.3f}x" if base else ""
    print(f"{label:<52} {s:>8.4f} {int(r['tokens']) / s:>9.1f} {ratio:>7} {r['loss']:>10} {r['wait_s']:>12}")
print("aim: offload = true at most 1.10x the step of offload = false; the losses of the rows are the same")
print("AdamW wait s: metrics.jsonl's optim_wait_s (median), how long a step waited for the previous step's")
print("overlapped CPU update; 0 when the compute hid it")
for n, _ in rows:
    if res[n]:
        print(f"{n} step times (s): {res[n]['steps_s']}")
EOF
bench_footer "$build" "$load_start" "$load_end" "$(nproc)"
exit "$status"
