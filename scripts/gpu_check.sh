#!/usr/bin/env bash
# The GPU check: one command, on a machine with an NVIDIA GPU, that builds the CUDA backend for sm_80 and
# sm_90, runs the GPU tests and the GPU benchmarks, and prints one markdown report for docs/PERFORMANCE.md
# (date, device, driver, CUDA, commit; then the tables).
#
#   1. nvidia-smi must list a GPU; otherwise the script prints why and exits 77 (the skip code the GPU
#      tests use; CTest reads 77 as "skipped"), before configuring anything.
#   2. Configures BUILD_DIR (default build-gpu-check) with Ninja (when installed), Release, -DADAPT_CUDA=ON,
#      -DADAPT_CUDA_ARCHS="80;90", tests on, and builds the GPU test executables (the tests labelled `gpu`),
#      tests/gpu_ops_bench and adapt_model.
#   3. ctest -L gpu: one row per test (passed / failed / skipped, seconds).
#   4. tests/gpu_ops_bench (tests/bench/gpu_ops_bench.cpp): every op at Llama-3.1-8B shapes (T = 4096)
#      as GB/s or TFLOP/s against a device-to-device copy and a cuBLASLt bf16 GEMM at 8192³ measured in
#      the same run, with the fraction of the ceiling; decode attention at batch 1 and 16 over 4k and
#      32k contexts against the HBM bound.
#   5. Model level, on an 8B-shaped model of LAYERS (default 4) layers made by `adapt_model make --preset
#      llama-3.1-8b --layers 4 --dtype bf16`, seq 4096, batch 1:
#        - adapt's training step (LoRA r16, bottleneck) and decode at batch 1 and 16: printed as "not
#          available yet" rows, because the model does not run on the CUDA backend yet (its weights,
#          activations and adapters stay on the host); the decode rows still give the HBM bound
#          (the bytes one step must read / the copy bandwidth measured in step 4);
#        - the same training step through HF transformers + peft (scripts/bench_train_hf_gpu.py, torch's
#          SDPA attention, bf16) when PYTHON can import torch, transformers and peft and torch sees the
#          GPU: tokens/s, model TFLOP/s, MFU against the GPU's nominal dense bf16 peak (H100/H200 989.4,
#          A100 312) and against the GEMM ceiling of step 4. Nothing is installed: a machine without them
#          gets a row saying so.
#
# Usage: scripts/gpu_check.sh [--build-dir DIR] [--jobs N] [--layers N] [--quick] [--no-build] [--no-hf]
#                             [--python PY] [--out FILE] [-h|--help]
#   --build-dir DIR  build folder (default: <repo>/build-gpu-check)
#   --jobs N         build jobs (default: nproc)
#   --layers N       layers of the 8B-shaped model (2-4; default 4)
#   --quick          smoke run: gpu_ops_bench --quick (T = 512), 2 + 3 HF steps instead of 3 + 10
#   --no-build       use BUILD_DIR as it is (configured and built before)
#   --no-hf          skip the HF + peft peer
#   --python PY      the Python for the HF peer (default: $ADAPT_GPU_CHECK_PYTHON, else python3)
#   --out FILE       also write the report to FILE (default: BUILD_DIR/gpu_check.md)
# Environment: NVIDIA_SMI overrides the nvidia-smi that is run (the unit test points it at a fake to take
# the no-GPU path on any machine).
# Exit status: 0 when everything ran and no GPU test failed; 1 when a GPU test or a benchmark failed (the
# report is still printed); 2 when the configure or the build failed; 64 for a usage error; 77 when no
# GPU is visible (nothing was built).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-gpu-check"
jobs="$(nproc)"
layers=4
quick=0
do_build=1
do_hf=1
python="${ADAPT_GPU_CHECK_PYTHON:-python3}"
out=""
seq_len=4096
nvidia_smi="${NVIDIA_SMI:-nvidia-smi}"

usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
die_usage() { echo "gpu_check: $1" >&2; usage >&2; exit 64; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --build-dir) [[ $# -ge 2 ]] || die_usage "--build-dir needs a value"; build="$(realpath -m "$2")"; shift 2 ;;
    --jobs) [[ $# -ge 2 ]] || die_usage "--jobs needs a value"; jobs="$2"; shift 2 ;;
    --layers) [[ $# -ge 2 ]] || die_usage "--layers needs a value"; layers="$2"; shift 2 ;;
    --python) [[ $# -ge 2 ]] || die_usage "--python needs a value"; python="$2"; shift 2 ;;
    --out) [[ $# -ge 2 ]] || die_usage "--out needs a value"; out="$(realpath -m "$2")"; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-build) do_build=0; shift ;;
    --no-hf) do_hf=0; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[[ "$layers" =~ ^[1-9][0-9]*$ ]] || die_usage "--layers must be a positive integer, not '$layers'"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs must be a positive integer, not '$jobs'"

# ---- 1. a GPU? ------------------------------------------------------------------------------------
if ! command -v "$nvidia_smi" >/dev/null 2>&1; then
  echo "gpu_check: skipped: no GPU: '$nvidia_smi' is not installed (no NVIDIA driver on this machine)." >&2
  echo "gpu_check: run this on a machine with an NVIDIA GPU; nothing was built. Exit 77 (skip)." >&2
  exit 77
fi
if ! gpus="$("$nvidia_smi" --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)" ||
   [[ -z "$gpus" ]]; then
  echo "gpu_check: skipped: no GPU: '$nvidia_smi' lists none: $(echo "$gpus" | head -3)" >&2
  echo "gpu_check: run this on a machine with an NVIDIA GPU; nothing was built. Exit 77 (skip)." >&2
  exit 77
fi
gpu_name="$(echo "$gpus" | head -1 | cut -d, -f1 | sed 's/^ *//; s/ *$//')"
driver="$(echo "$gpus" | head -1 | cut -d, -f2 | sed 's/^ *//; s/ *$//')"
gpu_mem="$(echo "$gpus" | head -1 | cut -d, -f3 | sed 's/^ *//; s/ *$//')"
n_gpus="$(echo "$gpus" | wc -l)"
driver_cuda="$("$nvidia_smi" 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
toolkit="$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
n_dirty="$(git -C "$root" status --porcelain -- src kernels cmake tests scripts CMakeLists.txt 2>/dev/null | wc -l)"
[[ "$n_dirty" != 0 ]] && commit="$commit + uncommitted changes in $n_dirty file(s)"
case "$gpu_name" in  # nominal dense bf16 tensor-core peak, TFLOP/s (vendor data sheets; SXM parts)
  *H200*|*H100*SXM*|*"H100 80GB HBM3"*) peak=989.4 ;;
  *H100*PCIe*|*"H100 PCIe"*) peak=756.0 ;;
  *H100*) peak=989.4 ;;
  *A100*) peak=312.0 ;;
  *) peak=0 ;;
esac

mkdir -p "$build"
[[ -n "$out" ]] || out="$build/gpu_check.md"
log="$build/gpu_check.log"
: >"$log"
report="$(mktemp)"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$report"' EXIT
emit() { printf '%s\n' "$*" >>"$report"; printf '%s\n' "$*"; }
status=0

# ---- 2. configure and build -----------------------------------------------------------------------
if [[ "$do_build" == 1 ]]; then
  echo "gpu_check: configuring $build (log: $log)" >&2
  generator=(-G Ninja)
  command -v ninja >/dev/null 2>&1 || generator=()  # CMake's default (Makefiles) where Ninja is missing
  [[ -f "$build/CMakeCache.txt" ]] && generator=()   # keep the generator the folder was made with
  if ! cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DADAPT_CUDA=ON -DADAPT_CUDA_ARCHS="80;90" \
       -DADAPT_BUILD_TESTS=ON >>"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "gpu_check: the CUDA configure failed (log: $log)" >&2
    exit 2
  fi
fi
[[ -f "$build/CMakeCache.txt" ]] || { echo "gpu_check: $build is not configured (drop --no-build)" >&2; exit 2; }
gpu_targets=()
while read -r t; do gpu_targets+=("test_$t"); done < <(ctest --test-dir "$build" -N -L gpu |
  sed -n 's/^ *Test *#[0-9]*: gpu\.\(.*\)$/\1/p')
if [[ "$do_build" == 1 ]]; then
  echo "gpu_check: building ${#gpu_targets[@]} GPU tests, gpu_ops_bench and adapt_model with $jobs jobs" >&2
  if ! cmake --build "$build" -j "$jobs" --target "${gpu_targets[@]}" gpu_ops_bench app_adapt_model >>"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "gpu_check: the build failed (log: $log)" >&2
    exit 2
  fi
fi

archs="$(sed -n 's/^ADAPT_CUDA_ARCHS:[A-Z]*=//p' "$build/CMakeCache.txt")"
emit "## GPU check $(date -u '+%Y-%m-%d %H:%M UTC')"
emit ""
emit "- device: $gpu_name ($gpu_mem; $n_gpus visible), driver $driver (CUDA ${driver_cuda:-?})"
emit "- CUDA toolkit ${toolkit:-?}, built for CUDA archs ${archs:-?} ($build); commit $commit"
emit "- host: $(nproc) cores; $(uname -sr)"
emit ""

# ---- 3. GPU tests ---------------------------------------------------------------------------------
echo "gpu_check: ctest -L gpu" >&2
ctest_rc=0
ctest --test-dir "$build" -L gpu --output-on-failure --timeout 900 >"$work/ctest.txt" 2>&1 || ctest_rc=$?
cat "$work/ctest.txt" >>"$log"
emit "### GPU tests (ctest -L gpu)"
emit ""
emit "| test | result | seconds |"
emit "| --- | --- | ---: |"
n_pass=0 n_fail=0 n_skip=0
while IFS='|' read -r name result secs; do
  case "$result" in
    Passed) n_pass=$((n_pass + 1)) ;;
    Skipped) n_skip=$((n_skip + 1)) ;;
    *) n_fail=$((n_fail + 1)) ;;
  esac
  emit "| $name | $result | $secs |"
done < <(sed -n 's/^ *[0-9]*\/[0-9]* *Test *#[0-9]*: \([^ ]*\) \.*[ *]*\(.*[^ ]\)  *\([0-9.][0-9.]*\) sec$/\1|\2|\3/p' \
           "$work/ctest.txt")
emit ""
emit "$n_pass passed, $n_fail failed, $n_skip skipped (ctest exit $ctest_rc; failures' output: $log)"
emit ""
if [[ "$ctest_rc" != 0 || "$n_fail" != 0 ]]; then status=1; fi

# ---- 4. op benchmark ------------------------------------------------------------------------------
echo "gpu_check: tests/gpu_ops_bench" >&2
bench_args=()
[[ "$quick" == 1 ]] && bench_args=(--quick)
emit "### Ops at Llama-3.1-8B shapes (tests/gpu_ops_bench${bench_args[*]:+ ${bench_args[*]}})"
emit ""
bench_rc=0
"$build/tests/gpu_ops_bench" "${bench_args[@]}" >"$work/ops.md" 2>"$work/ops.err" || bench_rc=$?
cat "$work/ops.err" >>"$log"
if [[ "$bench_rc" == 0 ]]; then
  while IFS= read -r line; do emit "$line"; done <"$work/ops.md"
else
  emit "gpu_ops_bench did not run to the end (exit $bench_rc): $(tail -2 "$work/ops.err" | tr '\n' ' ')"
  status=1
fi
emit ""
# the ceilings, for the model-level rows: the achieved column of the two ceiling rows
col_of() { awk -F'|' -v op="$1" '$2 ~ op {gsub(/^ +| +$/, "", $6); split($6, a, " "); print a[1]; exit}' "$work/ops.md"; }
bw_gbs="$(col_of 'ceiling: D2D copy' 2>/dev/null || true)"
gemm_tflops="$(col_of 'ceiling: cuBLASLt bf16 GEMM' 2>/dev/null || true)"

# ---- 5. model level -------------------------------------------------------------------------------
emit "### Model level: Llama-3.1-8B shapes, $layers layers, seq $seq_len, batch 1"
emit ""
emit "| what | implementation | tokens/s | model TFLOP/s | MFU (nominal ${peak} TFLOP/s) | of GEMM ceiling | vs HF + peft |"
emit "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
not_yet="not available yet: the model does not run on the CUDA backend (weights, activations and adapters stay on the host)"

hf_skip=""
model_dir="$work/llama-8b-${layers}l"
hf_python=""
if [[ "$do_hf" == 0 ]]; then
  hf_skip="not run (--no-hf)"
elif ! command -v "$python" >/dev/null 2>&1; then
  hf_skip="not run: no '$python'"
elif ! why="$("$python" -c 'import torch, transformers, peft; assert torch.cuda.is_available(), "torch sees no CUDA device"' 2>&1)"; then
  hf_skip="not run: $python cannot import torch + transformers + peft with CUDA ($(echo "$why" | tail -1))"
else
  hf_python="$python"
  echo "gpu_check: adapt_model make --preset llama-3.1-8b --layers $layers --dtype bf16" >&2
  if ! "$build/bin/adapt_model" make --preset llama-3.1-8b --layers "$layers" --dtype bf16 --out "$model_dir" \
       >>"$log" 2>&1; then
    hf_skip="not run: adapt_model make failed ($(tail -1 "$log"))"
    hf_python=""
    status=1
  fi
fi

hf_row() {  # adapter label
  local adapter="$1" label="$2" steps=10 warmup=3
  [[ "$quick" == 1 ]] && steps=3 warmup=2
  if [[ -z "$hf_python" ]]; then
    emit "| training step, $label | HF + peft | $hf_skip | | | | |"
    return
  fi
  echo "gpu_check: HF + peft training step ($adapter)" >&2
  local res="$work/hf_$adapter.txt" rc=0
  "$hf_python" "$root/scripts/bench_train_hf_gpu.py" "$model_dir" --adapter "$adapter" --seq "$seq_len" \
    --steps "$steps" --warmup "$warmup" --peak-tflops "$peak" >"$res" 2>>"$log" || rc=$?
  if [[ "$rc" != 0 ]]; then
    emit "| training step, $label | HF + peft | failed (exit $rc; $log) | | | | |"
    status=1
    return
  fi
  local tps tfl mfu of_gemm
  tps="$(awk '$1 == "tokens_per_s" {print $2}' "$res")"
  tfl="$(awk '$1 == "model_tflops_per_s" {print $2}' "$res")"
  mfu="$(awk '$1 == "mfu" {printf "%.1f%%", 100 * $2}' "$res")"
  of_gemm="$(awk -v t="$tfl" -v g="$gemm_tflops" 'BEGIN {if (g > 0) printf "%.1f%%", 100 * t / g}')"
  emit "| training step, $label | HF + peft ($(sed -n 's/^versions //p' "$res")) | $tps | $tfl | ${mfu:--} | ${of_gemm:--} | 1.00 |"
}

for pair in "lora:LoRA r16 (q, k, v, o, gate, up, down)" "bottleneck:bottleneck 256 after each MLP"; do
  adapter="${pair%%:*}" label="${pair#*:}"
  emit "| training step, $label | adapt | $not_yet | | | | |"
  hf_row "$adapter" "$label"
done

# decode: the HBM bound of one step = (the weights one token reads + B KV caches of CTX tokens) / copy bandwidth
decode_ctx=4096
for batch in 1 16; do
  bound="$(awk -v L="$layers" -v B="$batch" -v ctx="$decode_ctx" -v bw="$bw_gbs" 'BEGIN {
    C = 4096; F = 14336; kv = 8 * 128; V = 128256
    w = L * (C * C + 2 * kv * C + C * C + 3 * C * F) + V * C   # projections + LM head, bf16; embedding: B rows
    bytes = 2 * w + B * L * 2 * kv * ctx * 2
    if (bw > 0) printf "%.0f tokens/s (%.2f GB per step at %.0f GB/s)", B / (bytes / (bw * 1e9)), bytes / 1e9, bw
  }')"
  emit "| decode, batch $batch, context ${decode_ctx} | adapt | $not_yet; HBM bound: ${bound:-unknown (no bandwidth measured)} | | | | |"
done
emit ""
emit "Model FLOPs (MFU): 4 · base linear weights per token (forward + input gradient; the frozen base has no"
emit "weight gradient) + 6 · adapter weights per token + causal attention (forward 2·T²·H·D per layer, backward"
emit "2.5x); see scripts/bench_train_hf_gpu.py. Ratios against HF + peft follow once adapt's rows exist."

cp "$report" "$out"
echo "gpu_check: report written to $out (full log: $log); exit $status" >&2
exit "$status"
