#!/usr/bin/env bash
# Benchmark: f32 GEMM GFLOP/s of adapt's cpu::gemm (the packed AVX-512 kernel where the CPU has it,
# OpenBLAS otherwise) vs OpenBLAS cblas_sgemm vs torch.matmul, in the same run, on the shapes of the
# `bench` model's projections (M = 512 or 2048 tokens), its adapters' products, an attention tile and
# squares, with 1 and 2 threads; plus the CPU's FMA peak.
#
# Each shape, implementation and thread count runs in its own process (one thread pool per process:
# OpenBLAS's pthreads, adapt's OpenMP, torch's OpenMP; torch: one process per thread count and round),
# ROUNDS times; each cell is the best GFLOP/s over the rounds (and within a round the best of >= 3
# timed calls after a warm-up), because other jobs may share the machine. Also prints adapt's largest difference to single-threaded OpenBLAS
# (max |diff| / max |ref|) per shape.
#
# Usage: scripts/bench_gemm.sh [BUILD_DIR (default build)] [ROUNDS (default 3)] [BASELINE]
# BASELINE: optional, a gemm_bench executable linked against an earlier adapt_ops (e.g. built from an
# older commit); its cpu::gemm is shown as "base" columns beside the current one.
# Needs: BUILD_DIR/tests/gemm_bench (ninja -C BUILD_DIR gemm_bench); torch in /usr/bin/python3 for the
# torch columns (Debian: apt-get install python3-torch; skipped with a note when missing).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
rounds="${2:-3}"
baseline="${3:-}"
bin="$build/tests/gemm_bench"
py=/usr/bin/python3
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"

if [[ ! -x "$bin" ]]; then
  echo "error: $bin not found; build it with: ninja -C $build gemm_bench" >&2
  exit 2
fi

forward="512,768,768;512,256,768;512,2048,768;512,768,2048;512,32000,768"
forward+=";2048,768,768;2048,256,768;2048,2048,768;2048,768,2048;2048,32000,768"
squares="1024,1024,1024;2048,2048,2048;4096,4096,4096"
# The backward products of the MLP's down projection (W (768, 2048)): dx = g · W and dW = gᵀ · x; and a
# LoRA r = 16 backward product of few columns.
backward="512,2048,768;2048,2048,768;2048,16,768"
# The adapters' forward products (LoRA r = 16: x · Aᵀ, then (x Aᵀ) · Bᵀ with K = 16; a bottleneck of 64)
# and one attention tile (64 query rows, 64 keys, head width 64).
adapters="2048,16,768;2048,768,16;2048,64,768;2048,768,64;64,64,64"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/results.txt"

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" --fma-peak --threads "$(nproc)"
bench_blas_setup "its peers run"  # sets blas_env: OpenBLAS kernels for the OpenBLAS and torch peers

have_torch=0
if "$py" -c "import torch" 2>/dev/null; then
  have_torch=1
else
  echo "note: torch not importable from $py; torch columns skipped (apt-get install python3-torch)" >&2
fi

torch_bench() {  # threads layout shapes
  # Debian's torch runs its f32 matmul in OpenBLAS (libblas.so.3), whose pthreads torch.set_num_threads
  # does not limit: the environment does.
  env "${blas_env[@]}" OPENBLAS_NUM_THREADS="$1" OMP_NUM_THREADS="$1" "$py" - "$1" "$2" "$3" <<'EOF'
import sys, time, torch
threads, layout, shapes = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(threads)
torch.manual_seed(0)
for s in shapes.split(";"):
    M, N, K = map(int, s.split(","))
    if layout == "nt":   # y = x · Wᵀ (nn.Linear)
        a, b = torch.randn(M, K), torch.randn(N, K)
        f = lambda: torch.nn.functional.linear(a, b)
    elif layout == "nn":  # dx = g · W
        a, b = torch.randn(M, K), torch.randn(K, N)
        f = lambda: torch.matmul(a, b)
    else:                 # dW = gᵀ · x
        a, b = torch.randn(K, M), torch.randn(K, N)
        f = lambda: torch.matmul(a.t(), b)
    f()
    best, total, reps = 1e30, 0.0, 0
    while reps < 3 or total < 0.3:
        t = time.perf_counter(); f(); t = time.perf_counter() - t
        best, total, reps = min(best, t), total + t, reps + 1
    print(f"torch {threads} f32 {layout} {M} {N} {K} {2 * M * N * K / best / 1e9:.1f} {best * 1e3:.3f} 0")
EOF
}

# One process per (shape, implementation, threads), interleaved shape by shape, so that a burst of
# load from other jobs hits all implementations of a shape alike rather than one implementation's run.
run_one() {  # name binary args...: appends one result line, renaming the implementation to `name`
  local name="$1" exe="$2"
  shift 2
  "$exe" "$@" | sed "s/^[a-z]* /$name /" >>"$out"
}
for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds ..." >&2
  for layout in nt nn tn; do
    if [[ $layout == nt ]]; then shapes="$forward;$squares;$adapters"; else shapes="$backward"; fi
    IFS=';' read -ra list <<<"$shapes"
    for shape in "${list[@]}"; do
      for threads in 1 2; do
        common=(--threads "$threads" --layout "$layout" --shapes "$shape")
        run_one openblas env "${blas_env[@]}" "$bin" --impl openblas "${common[@]}"
        run_one adapt "$bin" --impl adapt "${common[@]}"
        [[ -n "$baseline" ]] && run_one base "$baseline" --impl adapt "${common[@]}"
        if [[ $layout == nt && ";$forward;" == *";$shape;"* ]]; then
          run_one adapt "$bin" --impl adapt --dtype bf16 "${common[@]}"
          [[ -n "$baseline" ]] && run_one base "$baseline" --impl adapt --dtype bf16 "${common[@]}"
        fi
      done
    done
  done
  if [[ $have_torch == 1 ]]; then
    for threads in 1 2; do
      torch_bench "$threads" nt "$forward;$squares;$adapters" >>"$out"
      for layout in nn tn; do torch_bench "$threads" "$layout" "$backward" >>"$out"; done
    done
  fi
done

"$py" - "$out" "$have_torch" "${baseline:+1}" <<'EOF'
import sys
rows, have_torch, have_base = {}, sys.argv[2] == "1", sys.argv[3] == "1"
best, diff = {}, {}
order = []
for line in open(sys.argv[1]):
    impl, th, dtype, layout, M, N, K, gf, ms, rel = line.split()
    shape = (layout, int(M), int(N), int(K))
    if shape not in order:
        order.append(shape)
    key = (shape, impl + ("-bf16" if dtype == "bf16" else ""), int(th))
    best[key] = max(best.get(key, 0.0), float(gf))
    if impl == "adapt":
        diff[shape] = max(diff.get(shape, 0.0), float(rel))
def cell(shape, impl, th):
    v = best.get((shape, impl, th))
    return f"{v:.1f}" if v else "–"
def ratio(shape, x, y, th):
    a, b = best.get((shape, x, th)), best.get((shape, y, th))
    return f"{a / b:.2f}" if a and b else "–"
layouts = {"nt": "x·Wᵀ", "nn": "g·W", "tn": "gᵀ·x"}
cols = ["product", "M", "N", "K", "OpenBLAS 1T", "adapt 1T", "adapt/OB 1T", "OpenBLAS 2T", "adapt 2T", "adapt/OB 2T",
        "adapt bf16 W 2T"]
if have_base:
    cols += ["base 1T", "base 2T", "adapt/base 2T", "base bf16 W 2T", "adapt/base bf16 2T"]
if have_torch:
    cols += ["torch 1T", "torch 2T", "adapt/torch 2T"]
cols += ["max rel diff"]
print("GFLOP/s, best of all rounds (1T/2T: threads)")
print("| " + " | ".join(cols) + " |")
print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|")
for shape in order:
    layout, M, N, K = shape
    r = [layouts[layout], str(M), str(N), str(K), cell(shape, "openblas", 1), cell(shape, "adapt", 1),
         ratio(shape, "adapt", "openblas", 1), cell(shape, "openblas", 2), cell(shape, "adapt", 2),
         ratio(shape, "adapt", "openblas", 2), cell(shape, "adapt-bf16", 2)]
    if have_base:
        r += [cell(shape, "base", 1), cell(shape, "base", 2), ratio(shape, "adapt", "base", 2),
              cell(shape, "base-bf16", 2), ratio(shape, "adapt-bf16", "base-bf16", 2)]
    if have_torch:
        r += [cell(shape, "torch", 1), cell(shape, "torch", 2), ratio(shape, "adapt", "torch", 2)]
    r += [f"{diff.get(shape, 0):.1e}"]
    print("| " + " | ".join(r) + " |")
EOF
