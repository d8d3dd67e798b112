#!/usr/bin/env bash
# Benchmark: CPU AdamW throughput (parameters updated per second) of adapt against torch.optim.AdamW on
# the CPU, side by side in one run, for each size and thread count.
#
# The update: fp32 weights, gradients and both moments, lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight
# decay 0.01, the state cut into tensors of TENSOR_ELEMS elements (default 65536 = a LoRA factor of rank 16
# on a 4096-wide projection; the last tensor takes the rest). Each row is the median over REPS timed steps
# after one untimed step, in one process per side.
#
#   adapt offload(ISA)   optim::OffloadAdamW's update (optim.offload = true): worker threads over chunks,
#                        AVX-512 or AVX2 intrinsics (each this CPU has); the update alone, without the
#                        gradient and weight copies (memcpys on the CPU backend).
#   adapt AdamW(openmp)  optim::AdamW::step, the plain path (optim.offload = false): the same vectorised
#                        update (the best of AVX-512 / AVX2 this CPU has), on chunks of 32Ki elements spread
#                        over OpenMP threads.
#   torch foreach=...    torch.optim.AdamW(foreach=True / False) with torch.set_num_threads(THREADS).
#
# The ratio column divides each row's parameters/s by the faster torch row's at the same size and
# threads (> 1: faster than torch).
#
# Usage: scripts/bench_adamw.sh [BUILD_DIR (default build)] [SIZES (default 10000000,100000000)]
#                               [THREADS (default 1,2)] [REPS (default 5)] [TENSOR_ELEMS (default 65536)]
#                               [VENV (default ~/.cache/adapt/venv-llama)]
# Builds BUILD_DIR's adamw_bench (configuring BUILD_DIR with Ninja, Release, when it has no CMakeCache.txt;
# needs ADAPT_TESTS=ON). The torch peer is the venv of scripts/bench_train.sh (Debian's
# python3-torch 1.13 through --system-site-packages); without torch its rows are skipped with the reason.
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
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bench_build "$root" "$build" bench_adamw adamw_bench
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

"$build/tests/adamw_bench" "$sizes" "$threads" "$reps" "$tensor_elems" >"$work/results.txt"

bench_find_peer "$venv" "$work" "torch"
if [[ -n "$peer_py" ]]; then
  OMP_WAIT_POLICY=PASSIVE "$peer_py" - "$sizes" "$threads" "$reps" "$tensor_elems" >>"$work/results.txt" <<'PY'
import sys, time
import torch

sizes = [int(s) for s in sys.argv[1].split(",")]
threads = [int(t) for t in sys.argv[2].split(",")]
reps, tensor_elems = int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
for n in sizes:
    for t in threads:
        torch.set_num_threads(t)
        for foreach in (True, False):
            params = []
            for at in range(0, n, tensor_elems):
                p = torch.nn.Parameter(torch.randn(min(tensor_elems, n - at)))
                p.grad = torch.randn_like(p)
                params.append(p)
            opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                                    foreach=foreach)
            opt.step()  # untimed: creates the moments
            times = []
            for _ in range(reps):
                a = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - a)
            times.sort()
            print(f"torch foreach={foreach} {n} {t} {times[len(times) // 2]:.6f}", flush=True)
            del opt, params
PY
  torch_version="$("$peer_py" -c 'import torch; print(torch.__version__)')"
else
  torch_version="not run: $peer_skip"
fi
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "CPU AdamW, parameters updated per second (median of $reps steps; tensors of $tensor_elems elements)"
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); torch $torch_version"
echo
awk '
  { impl = $1 " " $2; key = $3 " " $4; sec[impl, key] = $5; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
    if (!(impl in iseen)) { iseen[impl] = 1; impls[++ni] = impl }
    if ($1 == "torch" && (best[key] == "" || $5 < best[key])) best[key] = $5 }
  END {
    printf "| %-12s | %-7s | %-22s | %10s | %14s | %12s |\n", "parameters", "threads", "implementation", "ms / step", "Mparams / s", "vs torch"
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
bench_footer "$build" "$load_start" "$load_end" "$(nproc)"
