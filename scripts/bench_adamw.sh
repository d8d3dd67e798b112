#!/usr/bin/env bash
# Benchmark: CPU AdamW throughput (parameters updated per second) of adapt against torch.optim.AdamW and
# DeepSpeed's CPU Adam (the update of ZeRO-Offload) on the CPU, side by side in one run, for each size and
# thread count.
#
# The update: fp32 weights, gradients and both moments, lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight
# decay 0.01, the state cut into tensors of TENSOR_ELEMS elements (default 65536 = a LoRA factor of rank 16
# on a 4096-wide projection; the last tensor takes the rest). Each row is the median over REPS timed steps
# after one untimed step, in one process per side; the sides take turns for ROUNDS rounds and each row
# keeps its best round (a shared VM's memory bandwidth moves by up to 2x between minutes).
#
#   adapt offload(ISA)   optim::OffloadAdamW's update (optim.offload = true): worker threads over chunks,
#                        AVX-512 or AVX2 intrinsics (each this CPU has); the update alone, without the
#                        gradient and weight copies (memcpys on the CPU backend).
#   adapt AdamW(openmp)  optim::AdamW::step, the plain path (optim.offload = false): the same vectorised
#                        update (the best of AVX-512 / AVX2 this CPU has), on chunks of 32Ki elements spread
#                        over OpenMP threads.
#   torch foreach=...    torch.optim.AdamW(foreach=True / False) with torch.set_num_threads(THREADS).
#   deepspeed CPUAdam    deepspeed.ops.adam.DeepSpeedCPUAdam(adamw_mode=True), its C++ op built for this
#                        CPU (AVX-512 or AVX2, OpenMP; OMP_NUM_THREADS = THREADS) on the first use, untimed.
#                        It gets the state as one flat tensor, as ZeRO-Offload hands it its partition.
#                        Its update is checked against torch.optim.AdamW's (one step, printed below).
#
# The ratio column divides each row's parameters/s by the fastest peer row's (torch or DeepSpeed) at the
# same size and threads (> 1: faster than every peer).
#
# Usage: scripts/bench_adamw.sh [BUILD_DIR (default build)] [SIZES (default 10000000,100000000)]
#                               [THREADS (default 1,2)] [REPS (default 5)] [TENSOR_ELEMS (default 65536)]
#                               [VENV (default ~/.cache/adapt/venv-llama)] [ROUNDS (default 3)]
# Builds BUILD_DIR's adamw_bench (configuring BUILD_DIR with Ninja, Release, when it has no CMakeCache.txt;
# needs ADAPT_TESTS=ON). The torch peer is the venv of scripts/bench_train.sh (Debian's
# python3-torch 1.13 through --system-site-packages); without torch its rows are skipped with the reason.
# DeepSpeed (DEEPSPEED_VERSION, default 0.19.8, and its small dependencies) is installed into that venv
# from PyPI when missing; its op needs a C++ compiler, ninja, Python's headers (python3-dev) and torch's
# C++ headers, which PyPI's torch wheel has and Debian's python3-torch does not; without them its rows
# are skipped with the compiler's reason.
# Memory: about 16 bytes per parameter on each side (plus torch's foreach temporaries), one side at a time.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
build="$(realpath -m "${1:-$root/build}")"
sizes="${2:-10000000,100000000}"
threads="${3:-1,2}"
reps="${4:-5}"
tensor_elems="${5:-65536}"
venv="${6:-$HOME/.cache/adapt/venv-llama}"
rounds="${7:-3}"
deepspeed_version="${DEEPSPEED_VERSION:-0.19.8}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bench_build "$root" "$build" bench_adamw adamw_bench
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

bench_find_peer "$venv" "$work" "torch"
torch_skip="$peer_skip"
ds_skip="$peer_skip"
if [[ -n "$peer_py" ]]; then
  torch_version="$("$peer_py" -c 'import torch; print(torch.__version__)')"
  # One script for both peers: `torch SIZES THREADS REPS TENSOR_ELEMS`, or `deepspeed N THREADS REPS
  # [check]` (one flat tensor; with "check", its first step compared with torch.optim.AdamW's).
  cat >"$work/adamw_peer.py" <<'PY'
import sys, time
import torch

AdamW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def median_step(opt, reps):
    opt.step()  # untimed: creates the moments
    times = []
    for _ in range(reps):
        a = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - a)
    times.sort()
    return times[len(times) // 2]


torch.manual_seed(0)
if sys.argv[1] == "torch":
    sizes = [int(s) for s in sys.argv[2].split(",")]
    threads = [int(t) for t in sys.argv[3].split(",")]
    reps, tensor_elems = int(sys.argv[4]), int(sys.argv[5])
    for n in sizes:
        for t in threads:
            torch.set_num_threads(t)
            for foreach in (True, False):
                params = []
                for at in range(0, n, tensor_elems):
                    p = torch.nn.Parameter(torch.randn(min(tensor_elems, n - at)))
                    p.grad = torch.randn_like(p)
                    params.append(p)
                opt = torch.optim.AdamW(params, foreach=foreach, **AdamW)
                print(f"torch foreach={foreach} {n} {t} {median_step(opt, reps):.6f}", flush=True)
                del opt, params
else:
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    n, t, reps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(t)
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn_like(p)
    opt = DeepSpeedCPUAdam([p], adamw_mode=True, **AdamW)
    if len(sys.argv) > 5:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        torch.optim.AdamW([q], **AdamW).step()
        opt.step()
        d = (p.detach() - q.detach()).abs().max().item()
        print(f"check: DeepSpeedCPUAdam after one step vs torch.optim.AdamW on {n} parameters: max |w - w_torch| = "
              f"{d:.3g}, largest |w| {q.detach().abs().max().item():.3g}", file=sys.stderr)
    print(f"deepspeed CPUAdam {n} {t} {median_step(opt, reps):.6f}", flush=True)
PY
  # DeepSpeed without its heavy optional dependencies (its own torch pin among them): the op builder needs
  # only these. The first import builds the op (~1 min, cached in ~/.cache/torch_extensions).
  if ! "$peer_py" -c "import deepspeed" >/dev/null 2>&1; then
    "$peer_py" -m pip install --quiet --disable-pip-version-check --no-deps "deepspeed==$deepspeed_version" \
      >"$work/pip-ds.log" 2>&1 &&
      "$peer_py" -m pip install --quiet --disable-pip-version-check hjson msgpack ninja py-cpuinfo "pydantic>=2" \
        psutil tqdm einops packaging numpy >>"$work/pip-ds.log" 2>&1 ||
      ds_skip="pip install deepspeed==$deepspeed_version failed: $(tail -1 "$work/pip-ds.log")"
  fi
  ds_peer() {  # THREADS ARG...: adamw_peer.py's deepspeed mode (the venv's ninja on PATH for the op's build)
    local t="$1"
    shift
    OMP_NUM_THREADS="$t" OMP_WAIT_POLICY=PASSIVE PATH="$(dirname "$peer_py"):$PATH" "$peer_py" "$work/adamw_peer.py" \
      deepspeed "$@"
  }
  if [[ -z "$ds_skip" ]]; then
    # Builds the op once (and checks the update against torch's) before anything is timed.
    if ds_peer 1 1000000 1 1 check >/dev/null 2>"$work/ds-build.log"; then
      grep '^check:' "$work/ds-build.log" >"$work/checks.txt" || true
      ds_version="$("$peer_py" -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
    else
      # The compiler's first error says most (Debian's python3-torch has no C++ headers: torch/extension.h).
      ds_skip="DeepSpeedCPUAdam did not build or run: $(grep -m1 -E 'fatal error|error:' "$work/ds-build.log" ||
        grep -v '^\[' "$work/ds-build.log" | tail -1)"
    fi
  fi
fi
[[ -n "$ds_skip" ]] && ds_version="not run: $ds_skip"
[[ -n "$torch_skip" ]] && torch_version="not run: $torch_skip"

for ((round = 1; round <= rounds; round++)); do
  "$build/tests/adamw_bench" "$sizes" "$threads" "$reps" "$tensor_elems" >>"$work/results.txt"
  if [[ -z "$torch_skip" ]]; then
    OMP_WAIT_POLICY=PASSIVE "$peer_py" "$work/adamw_peer.py" torch "$sizes" "$threads" "$reps" "$tensor_elems" \
      >>"$work/results.txt"
  fi
  if [[ -z "$ds_skip" ]]; then
    for n in ${sizes//,/ }; do
      for t in ${threads//,/ }; do
        # DeepSpeed logs to stdout too: only the result line goes to the table.
        if ! ds_peer "$t" "$n" "$t" "$reps" 2>>"$work/ds-run.log" | grep '^deepspeed CPUAdam ' >>"$work/results.txt"; then
          echo "warning: DeepSpeedCPUAdam failed at $n parameters, $t threads (round $round):" \
            "$(grep -v '^\[' "$work/ds-run.log" | tail -1)" >&2
        fi
      done
    done
  fi
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "CPU AdamW, parameters updated per second (median of $reps steps, best of $rounds rounds; tensors of" \
  "$tensor_elems elements)"
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); torch $torch_version;" \
  "DeepSpeed $ds_version"
echo
awk '
  { impl = $1 " " $2; key = $3 " " $4
    if (sec[impl, key] == "" || $5 < sec[impl, key]) sec[impl, key] = $5
    if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
    if (!(impl in iseen)) { iseen[impl] = 1; impls[++ni] = impl }
    if ($1 != "adapt" && (best[key] == "" || $5 < best[key])) best[key] = $5 }
  END {
    printf "| %-12s | %-7s | %-22s | %10s | %14s | %12s |\n", "parameters", "threads", "implementation", "ms / step", "Mparams / s", "vs best peer"
    printf "|%s|%s|%s|%s|%s|%s|\n", "--------------", "---------", "------------------------", "------------", "----------------", "--------------"
    for (k = 1; k <= nk; k++) {
      split(keys[k], kv, " ")
      for (i = 1; i <= ni; i++) {
        s = sec[impls[i], keys[k]]
        if (s == "") continue
        ratio = best[keys[k]] == "" ? "-" : sprintf("%.2fx", best[keys[k]] / s)
        printf "| %-12s | %-7s | %-22s | %10.1f | %14.0f | %12s |\n", kv[1], kv[2], impls[i], s * 1000, kv[1] / s / 1e6, ratio
      }
    }
  }' "$work/results.txt"
echo
[[ -s "$work/checks.txt" ]] && cat "$work/checks.txt" && echo
bench_footer "$build" "$load_start" "$load_end" "$(nproc)"
