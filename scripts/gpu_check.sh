#!/usr/bin/env bash
# The GPU check: one command, on a machine with an NVIDIA GPU, that builds the CUDA backend for sm_80 and
# sm_90, runs the GPU tests and the GPU benchmarks, and prints one markdown report for docs/PERFORMANCE.md
# (date, device, driver, CUDA, commit; then the tables).
#
#   1. nvidia-smi must list a GPU; otherwise the script prints why and exits 77 (the skip code the GPU
#      tests use; CTest reads 77 as "skipped"), before configuring anything.
#   2. Configures BUILD_DIR (default build-gpu-check) with Ninja (when installed), Release, -DADAPT_CUDA=ON,
#      -DADAPT_CUDA_ARCHS="80;90", tests on, and builds the GPU test executables (the tests labelled `gpu`,
#      mpiexec-launched ones included), tests/gpu_ops_bench, tests/adapt_model_gpu_bench, tests/offload_bench,
#      adapt_model and adapt_train.
#   3. ctest -L gpu: one row per test (passed / failed / skipped, seconds).
#   4. tests/gpu_ops_bench (tests/bench/gpu_ops_bench.cpp): every op at Llama-3.1-8B shapes (T = 4096)
#      as GB/s or TFLOP/s against a device-to-device copy and a cuBLASLt bf16 GEMM at 8192³ measured in
#      the same run, with the fraction of the ceiling; decode attention at batch 1 and 16 over 4k and
#      32k contexts against the HBM bound.
#   5. Model level, at Llama-3.1-8B shapes with LAYERS (default 4) layers, seq 4096, batch 1:
#        - tests/adapt_model_gpu_bench: adapt's training step on the GPU (LoRA r16 on all 7 projections;
#          bottleneck 64 after each layer) as tokens/s, TFLOP/s and MFU against the nominal peak and the
#          GEMM ceiling; greedy decode at batch 1 and 16 against the HBM bound (weights + KV bytes per step
#          / the device-to-device copy bandwidth it measures);
#        - the same training step through HF transformers + peft (scripts/bench_train_hf_gpu.py, torch's
#          SDPA attention, bf16; the model made by `adapt_model make --preset llama-3.1-8b --layers LAYERS
#          --dtype bf16`), with adapt's tokens/s beside it and the ratio, when PYTHON can import torch,
#          transformers and peft and torch sees the GPU: tokens/s, model TFLOP/s, MFU against the GPU's
#          nominal dense bf16 peak (H100/H200 989.4, A100 312) and against the GEMM ceiling of step 4.
#          Nothing is installed: a machine without them gets a row saying so.
#   6. tests/offload_bench: the optimizer phase of a step with the AdamW state on the device and with it
#      in pinned host RAM (optim.offload), for LoRA r16 at 8B and 70B adapter sizes.
#   7. scripts/bench_offload.sh: adapt_train's whole step on the GPU (the 8B-shaped model of step 5, bf16,
#      seq 4096, batch 1, LoRA r16) with optim.offload = false, with offload and the host update after
#      the step (optim.overlap = false), with it overlapped with the next step (the default), and with
#      that and every layer's base weights streamed from host RAM (runtime.weights_device_layers = 0); the
#      step-time ratios against the aim (offload at most 1.10x).
#   8. Only when asked (--only sanitize, or with others): compute-sanitizer's memcheck, racecheck and
#      synccheck over the single-process kernel tests (cast, attention, rms_norm, rope, swiglu, embedding,
#      cross_entropy, adamw, kernels_misc, adapters_cuda, ops_cuda), up to 300 s each: the shared-memory
#      races and barrier misuse that the CPU emulator cannot see, and a fault named at its kernel (memcheck
#      sees overruns past a caching-allocator block, not into a neighbouring tensor of the same block).
#      ADAPT_CUDA_SYNC_CHECK=1 (kernels/common/check.cuh) does the latter in any run, without the tool.
#
# Usage: scripts/gpu_check.sh [--build-dir DIR] [--jobs N] [--layers N] [--quick] [--no-build] [--no-hf]
#                             [--only LIST] [--tests REGEX] [--python PY] [--deps DIR] [--out FILE]
#                             [--preset NAME] [--gemm N] [--offload-params LIST] [-h|--help]
#   --build-dir DIR  build folder (default: <repo>/build-gpu-check)
#   --jobs N         build jobs (default: nproc)
#   --layers N       layers of the 8B-shaped model (2-4; default 4)
#   --quick          smoke run: gpu_ops_bench --quick (T = 512), 2 + 3 HF steps instead of 3 + 10
#   --no-build       use BUILD_DIR as it is (configured and built before)
#   --no-hf          skip the HF + peft peer
#   --only LIST      run only these sections, comma-separated: tests (3), ops (4), model (5, with the HF
#                    peer), offload (6), step (7), sanitize (8); default all but sanitize. Lets a machine lent for short calls split the
#                    check, e.g. `--only tests` and then `--no-build --only ops,model,offload,step`
#   --tests REGEX    with the tests section: only the GPU tests whose names match (ctest -R)
#   --python PY      the Python for the HF peer (default: $ADAPT_GPU_CHECK_PYTHON, else python3)
#   --deps DIR       build and run against the packages of DIR, made by `scripts/deps_bundle.sh fetch DIR`
#                    on a Debian 12 machine, for a GPU machine without Open MPI, HDF5, OpenBLAS, fmt,
#                    toml++, nlohmann-json or doctest and no registry to install them from; unpacked once
#                    into BUILD_DIR-deps (default: <repo>/.deps when that folder exists, else none)
#   --out FILE       also write the report to FILE (default: BUILD_DIR/gpu_check.md)
#   --preset NAME    the model shape of sections 4, 5 and 7 (adapt_model's preset names; default
#                    llama-3.1-8b)
#   --gemm N         the GEMM ceiling's size, N x N x N (default 8192)
#   --offload-params LIST  adapter parameters per rank of section 6, comma-separated (default
#                    42000000,207000000: LoRA r16 on Llama 3.1 8B and 70B)
# Rehearsal without a GPU: an ADAPT_CUDA=EMU build (tests/cuda_emu/) and tests/cuda_emu/nvidia-smi, which
# names the emulated device, run every section end to end at a small shape; that checks the script and
# the benchmarks' harness, not speed:
#   NVIDIA_SMI=tests/cuda_emu/nvidia-smi scripts/gpu_check.sh --build-dir build-emu --no-build --no-hf
#     --quick --preset tiny --gemm 256 --offload-params 100000 --only ops,model,offload,step
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
preset=llama-3.1-8b
gemm=8192
offload_params=42000000,207000000
only=",tests,ops,model,offload,step,"
tests_regex=""
deps=""
[[ -d "$root/.deps/core" ]] && deps="$root/.deps"

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
    --only) [[ $# -ge 2 ]] || die_usage "--only needs a value"; only=",$2,"; shift 2 ;;
    --tests) [[ $# -ge 2 ]] || die_usage "--tests needs a value"; tests_regex="$2"; shift 2 ;;
    --deps) [[ $# -ge 2 ]] || die_usage "--deps needs a value"; deps="$(realpath -m "$2")"; shift 2 ;;
    --preset) [[ $# -ge 2 ]] || die_usage "--preset needs a value"; preset="$2"; shift 2 ;;
    --gemm) [[ $# -ge 2 ]] || die_usage "--gemm needs a value"; gemm="$2"; shift 2 ;;
    --offload-params) [[ $# -ge 2 ]] || die_usage "--offload-params needs a value"; offload_params="$2"; shift 2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[[ "$layers" =~ ^[1-9][0-9]*$ ]] || die_usage "--layers must be a positive integer, not '$layers'"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs must be a positive integer, not '$jobs'"
[[ "$gemm" =~ ^[1-9][0-9]*$ ]] || die_usage "--gemm must be a positive integer, not '$gemm'"
[[ "$offload_params" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  die_usage "--offload-params must be comma-separated positive integers, not '$offload_params'"
[[ "$preset" =~ ^[a-z0-9.-]+$ ]] || die_usage "--preset takes one of adapt_model's preset names, not '$preset'"
for section in $(echo "$only" | tr ',' ' '); do
  case "$section" in
    tests|ops|model|offload|step|sanitize) ;;
    *) die_usage "--only takes tests, ops, model, offload, step and sanitize, not '$section'" ;;
  esac
done
want() { [[ "$only" == *",$1,"* ]]; }

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
# The tests that run 2-4 ranks on one GPU need its Default compute mode (an exclusive mode refuses every
# process after the first, which would look like a failure of the code).
compute_mode="$("$nvidia_smi" --query-gpu=compute_mode --format=csv,noheader 2>/dev/null | head -1 | sed 's/^ *//; s/ *$//')"
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
ADAPT_DEPS_CMAKE_ARGS=""
if [[ -n "$deps" ]]; then
  # The bundle's libraries for the build and for every run below (mpiexec, LD_LIBRARY_PATH, OPAL_PREFIX).
  echo "gpu_check: using the dependency bundle $deps (unpacked into $build-deps)" >&2
  deps_env="$("$root/scripts/deps_bundle.sh" env "$deps" "$build-deps")" || {
    echo "gpu_check: could not unpack the dependency bundle $deps" >&2
    exit 2
  }
  eval "$deps_env"
fi
read -ra deps_args <<<"$ADAPT_DEPS_CMAKE_ARGS"
if [[ "$do_build" == 1 ]]; then
  echo "gpu_check: configuring $build (log: $log)" >&2
  generator=(-G Ninja)
  command -v ninja >/dev/null 2>&1 || generator=()  # CMake's default (Makefiles) where Ninja is missing
  [[ -f "$build/CMakeCache.txt" ]] && generator=()   # keep the generator the folder was made with
  if ! cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DADAPT_CUDA=ON -DADAPT_CUDA_ARCHS="80;90" \
       -DADAPT_TESTS=ON "${deps_args[@]}" >>"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "gpu_check: the CUDA configure failed (log: $log)" >&2
    exit 2
  fi
fi
[[ -f "$build/CMakeCache.txt" ]] || { echo "gpu_check: $build is not configured (drop --no-build)" >&2; exit 2; }
# The executables of the GPU tests, the mpiexec-launched ones (mpi2.gpu.nccl, ...) included, as the test
# definitions name them (target name = file name).
gpu_targets=()
[[ -f "$build/tests/gpu/CTestTestfile.cmake" ]] &&
  mapfile -t gpu_targets < <(grep -o '/tests/test_[A-Za-z0-9_]*"' "$build/tests/gpu/CTestTestfile.cmake" |
    sed 's|.*/||; s|"||' | sort -u)
[[ ${#gpu_targets[@]} -gt 0 ]] || { echo "gpu_check: no GPU tests are defined in $build (ADAPT_CUDA=ON?)" >&2; exit 2; }
if [[ "$do_build" == 1 ]]; then
  # Everything any section runs, so that a later --no-build call finds it.
  echo "gpu_check: building ${#gpu_targets[@]} GPU tests, the benchmarks and the apps with $jobs jobs" >&2
  if ! cmake --build "$build" -j "$jobs" --target "${gpu_targets[@]}" gpu_ops_bench adapt_model_gpu_bench offload_bench \
       app_adapt_model app_adapt_train >>"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "gpu_check: the build failed (log: $log)" >&2
    exit 2
  fi
fi

archs="$(sed -n 's/^ADAPT_CUDA_ARCHS:[A-Z]*=//p' "$build/CMakeCache.txt")"
emit "## GPU check $(date -u '+%Y-%m-%d %H:%M UTC')"
emit ""
emit "- device: $gpu_name ($gpu_mem; $n_gpus visible), driver $driver (CUDA ${driver_cuda:-?}), compute mode ${compute_mode:-?}"
if [[ -n "$compute_mode" && "$compute_mode" != "Default" ]]; then
  emit "- warning: compute mode $compute_mode: the tests with several ranks on one GPU (mpi*.gpu.*, gpu.train_app's tp2/pp2/dp2) cannot open it from more than one process"
fi
emit "- CUDA toolkit ${toolkit:-?}, built for CUDA archs ${archs:-?} ($build); commit $commit"
emit "- host: $(nproc) cores; $(uname -sr)${deps:+; Open MPI, HDF5, OpenBLAS, fmt, toml++ from the bundle $deps}"
emit ""

# ---- 3. GPU tests ---------------------------------------------------------------------------------
if want tests; then
echo "gpu_check: ctest -L gpu${tests_regex:+ -R $tests_regex}" >&2
ctest_rc=0
ctest_filter=()
[[ -n "$tests_regex" ]] && ctest_filter=(-R "$tests_regex")
ctest --test-dir "$build" -L gpu "${ctest_filter[@]}" --output-on-failure --timeout 900 >"$work/ctest.txt" 2>&1 ||
  ctest_rc=$?
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
fi

# Runs a benchmark ("$2" with its arguments) into $work/$1.md, its stderr into the log, and emits its
# table, or the exit status and its last words.
run_bench() {
  local tag="$1" rc=0
  shift
  "$@" >"$work/$tag.md" 2>"$work/$tag.err" || rc=$?
  cat "$work/$tag.err" >>"$log"
  if [[ "$rc" == 0 ]]; then
    while IFS= read -r line; do emit "$line"; done <"$work/$tag.md"
  else
    emit "$(basename "$1") did not run to the end (exit $rc): $(tail -2 "$work/$tag.err" | tr '\n' ' ')"
    status=1
  fi
}

# ---- 4. op benchmark ------------------------------------------------------------------------------
if want ops; then
echo "gpu_check: tests/gpu_ops_bench" >&2
bench_args=()
[[ "$quick" == 1 ]] && bench_args=(--quick)
[[ "$preset" != llama-3.1-8b ]] && bench_args+=(--preset "$preset")
[[ "$gemm" != 8192 ]] && bench_args+=(--gemm "$gemm")
emit "### Ops at $preset shapes (tests/gpu_ops_bench${bench_args[*]:+ ${bench_args[*]}})"
emit ""
run_bench ops "$build/tests/gpu_ops_bench" "${bench_args[@]}"
emit ""
fi
# the ceilings, for the model-level rows: the achieved column of the two ceiling rows (empty without ops)
col_of() { awk -F'|' -v op="$1" '$2 ~ op {gsub(/^ +| +$/, "", $6); split($6, a, " "); print a[1]; exit}' "$work/ops.md"; }
bw_gbs="$(col_of 'ceiling: D2D copy' 2>/dev/null || true)"
gemm_tflops="$(col_of 'ceiling: cuBLASLt bf16 GEMM' 2>/dev/null || true)"

# ---- 5. model level -------------------------------------------------------------------------------
if want model; then
echo "gpu_check: tests/adapt_model_gpu_bench" >&2
model_args=(--layers "$layers" --seq "$seq_len")
[[ "$quick" == 1 ]] && model_args=(--quick)
[[ "$preset" != llama-3.1-8b ]] && model_args+=(--preset "$preset")
[[ "$gemm" != 8192 ]] && model_args+=(--gemm "$gemm")
emit "### Model level: $preset shapes (tests/adapt_model_gpu_bench ${model_args[*]})"
emit ""
run_bench model "$build/tests/adapt_model_gpu_bench" "${model_args[@]}"
emit ""
emit "adapt's training rows time llama_train_step (forward + backward, bf16 base weights, f32 activations and"
emit "adapter) on one sequence; the FLOP count is in tests/bench/model_gpu_bench.cpp's header (the frozen base"
emit "has no weight gradient). Decode rows: greedy, logits copied to the host every step."
emit ""
# tokens/s of adapt's row whose first cell starts with $1
adapt_tps() { awk -F'|' -v m="$1" 'index($2, m) == 2 {gsub(/ /, "", $4); print $4; exit}' "$work/model.md" 2>/dev/null; }

hf_skip=""
model_dir="$work/$preset-${layers}l"
hf_python=""
hf_seq="$seq_len" hf_layers="$layers"
[[ "$quick" == 1 ]] && hf_seq=512 hf_layers=2  # what adapt_model_gpu_bench --quick runs
if [[ "$do_hf" == 0 ]]; then
  hf_skip="not run (--no-hf)"
elif ! command -v "$python" >/dev/null 2>&1; then
  hf_skip="not run: no '$python'"
elif ! why="$("$python" -c 'import torch, transformers, peft; assert torch.cuda.is_available(), "torch sees no CUDA device"' 2>&1)"; then
  hf_skip="not run: $python cannot import torch + transformers + peft with CUDA ($(echo "$why" | tail -1))"
else
  hf_python="$python"
  echo "gpu_check: adapt_model make --preset $preset --layers $hf_layers --dtype bf16" >&2
  if ! "$build/bin/adapt_model" make --preset "$preset" --layers "$hf_layers" --dtype bf16 --out "$model_dir" \
       >>"$log" 2>&1; then
    hf_skip="not run: adapt_model make failed ($(tail -1 "$log"))"
    hf_python=""
    status=1
  fi
fi

emit "### The same training step through HF transformers + peft (scripts/bench_train_hf_gpu.py, seq $hf_seq, $hf_layers layers)"
emit ""
emit "| training step | HF + peft tokens/s | model TFLOP/s | MFU (nominal ${peak} TFLOP/s) | of GEMM ceiling | adapt tokens/s | adapt / HF |"
emit "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
hf_row() {  # adapter label adapt-row-prefix
  local adapter="$1" label="$2" ours
  local steps=10 warmup=3
  [[ "$quick" == 1 ]] && steps=3 warmup=2
  ours="$(adapt_tps "$3")"
  if [[ -z "$hf_python" ]]; then
    emit "| $label | $hf_skip | | | | ${ours:--} | |"
    return
  fi
  echo "gpu_check: HF + peft training step ($adapter)" >&2
  local res="$work/hf_$adapter.txt" rc=0
  "$hf_python" "$root/scripts/bench_train_hf_gpu.py" "$model_dir" --adapter "$adapter" --seq "$hf_seq" \
    --rank 16 --bn-size 64 --steps "$steps" --warmup "$warmup" --peak-tflops "$peak" >"$res" 2>>"$log" || rc=$?
  if [[ "$rc" != 0 ]]; then
    emit "| $label | failed (exit $rc; $log) | | | | ${ours:--} | |"
    status=1
    return
  fi
  local tps tfl mfu of_gemm ratio
  tps="$(awk '$1 == "tokens_per_s" {print $2}' "$res")"
  tfl="$(awk '$1 == "model_tflops_per_s" {print $2}' "$res")"
  mfu="$(awk '$1 == "mfu" {printf "%.1f%%", 100 * $2}' "$res")"
  of_gemm="$(awk -v t="$tfl" -v g="$gemm_tflops" 'BEGIN {if (g > 0) printf "%.1f%%", 100 * t / g}')"
  ratio="$(awk -v a="$ours" -v h="$tps" 'BEGIN {if (a > 0 && h > 0) printf "%.2f", a / h}')"
  emit "| $label ($(sed -n 's/^versions //p' "$res")) | $tps | $tfl | ${mfu:--} | ${of_gemm:--} | ${ours:--} | ${ratio:--} |"
}
hf_row lora "LoRA r16 (q, k, v, o, gate, up, down)" "train lora"
hf_row bottleneck "bottleneck 64 after each layer" "train bottleneck"
emit ""
emit "HF's step also clips and applies AdamW to the adapter (a few MB); adapt's row is the forward and backward."
emit ""

fi
# ==== GPU only: the optimizer state in host RAM (optim.offload) ========================================
if want offload; then
# tests/bench/offload_bench.cpp: the optimizer phase of a step with the AdamW state on the device (one
# kernel) and offloaded to pinned host RAM (gradients device->host per bucket, the multithreaded CPU
# AdamW, bf16 weights back), per adapter size per rank: LoRA r16 on every projection of Llama 3.1 8B
# (42M parameters) and 70B (207M; tp8 gives 26M per rank). The step time with optim.offload = true is
# about step + (offloaded - device) without overlap; the aim, at most 1.10x the step without offload,
# needs the training step on the GPU to be measured against.
emit ""
emit "### Optimizer state in host RAM (optim.offload): the optimizer phase, device vs offloaded"
emit ""
offload_reps=5
[[ "$quick" == 1 ]] && offload_reps=2
if [[ "$do_build" == 1 ]] && ! cmake --build "$build" -j "$jobs" --target offload_bench >>"$log" 2>&1; then
  emit "offload_bench did not build (log: $log)"
  status=1
elif [[ ! -x "$build/tests/offload_bench" ]]; then
  emit "offload_bench is not in $build/tests (build it, or run without --no-build)"
  status=1
elif "$build/tests/offload_bench" "$offload_params" 0 "$offload_reps" >"$build/offload_bench.txt" 2>>"$log"; then
  emit "| adapter parameters per rank | CPU threads | device AdamW (ms) | offloaded (ms) | of which D2H (ms) | CPU update + H2D (ms) | extra per step (ms) |"
  emit "|---|---|---|---|---|---|---|"
  while read -r _ n t dev off d2h upd; do
    emit "| $n | $t | $dev | $off | $d2h | $upd | $(awk -v a="$off" -v b="$dev" 'BEGIN { printf "%.1f", a - b }') |"
  done <"$build/offload_bench.txt"
else
  emit "offload_bench failed (log: $log)"
  status=1
fi
emit ""

fi
# ==== GPU only: the whole training step with offload on and off (scripts/bench_offload.sh) ==============
if want step; then
emit "### adapt_train's step with the optimizer state on the GPU and in host RAM (scripts/bench_offload.sh)"
emit ""
offload_steps=4
[[ "$quick" == 1 ]] && offload_steps=2
offload_seq="$seq_len"
[[ "$quick" == 1 ]] && offload_seq=512
if "$root/scripts/bench_offload.sh" "$build" --device cuda --preset "$preset" --layers "$layers" --dtype bf16 \
    --seq "$offload_seq" --micro-batch 1 --adapter lora:16 --steps "$offload_steps" \
    >"$build/bench_offload.txt" 2>>"$log"; then
  emit '```'
  while IFS= read -r line; do emit "$line"; done <"$build/bench_offload.txt"
  emit '```'
else
  emit "bench_offload.sh failed (log: $log); its output:"
  emit '```'
  while IFS= read -r line; do emit "$line"; done <"$build/bench_offload.txt"
  emit '```'
  status=1
fi
emit ""
fi

# ---- 8. compute-sanitizer over the kernel tests -------------------------------------------------------
if want sanitize; then
emit "### compute-sanitizer over the kernel tests"
emit ""
sanitizer="$(command -v compute-sanitizer || echo "$(dirname "$nvcc")/compute-sanitizer")"
if [[ ! -x "$sanitizer" ]]; then
  emit "compute-sanitizer not found (looked on PATH and beside $nvcc): not run"
  status=1
else
  emit "| test | memcheck | racecheck | synccheck |"
  emit "| --- | --- | --- | --- |"
  for t in cast attention rms_norm rope swiglu embedding cross_entropy adamw kernels_misc adapters_cuda ops_cuda; do
    exe="$build/tests/test_$t"
    if [[ ! -x "$exe" ]]; then
      emit "| $t | not built | | |"
      status=1
      continue
    fi
    row="| $t |"
    for tool in memcheck racecheck synccheck; do
      rc=0
      timeout 300 "$sanitizer" --tool "$tool" --error-exitcode 99 "$exe" >"$work/san.txt" 2>&1 || rc=$?
      { echo "== compute-sanitizer --tool $tool $exe: exit $rc"; cat "$work/san.txt"; } >>"$log"
      case "$rc" in
        0) row="$row clean |" ;;
        99) row="$row **errors** ($(grep -c '^========= [A-Z]' "$work/san.txt") lines; log) |"; status=1 ;;
        124) row="$row **not verified** (timed out, 300 s) |"; status=1 ;;
        *) row="$row exit $rc (log) |"; status=1 ;;
      esac
    done
    emit "$row"
  done
fi
emit ""
fi

cp "$report" "$out"
echo "gpu_check: report written to $out (full log: $log); exit $status" >&2
exit "$status"
