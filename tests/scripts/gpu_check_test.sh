#!/usr/bin/env bash
# scripts/gpu_check.sh without a GPU: its syntax (bash -n), --help, usage errors (exit 64), and the no-GPU
# exit: 77 (the skip code of the GPU tests) with a message saying why, before anything is configured or
# built. A missing nvidia-smi and one that finds no device are both tried, through NVIDIA_SMI, so the test
# takes the no-GPU path on machines with a GPU too. Also checks that scripts/bench_train_hf_gpu.py parses
# and answers --help without torch, and that bad values of --gemm, --offload-params and --preset are usage errors.
# Usage: gpu_check_test.sh PYTHON SOURCE_DIR
set -euo pipefail
py=$1; src=$2
script="$src/scripts/gpu_check.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

bash -n "$script" || fail "bash -n $script"

"$script" --help >"$tmp/help" 2>&1 || fail "--help exited $?"
grep -q "Usage: scripts/gpu_check.sh" "$tmp/help" || fail "--help prints no usage: $(head -3 "$tmp/help")"
grep -q "Exit status" "$tmp/help" || fail "--help does not document the exit status"

rc=0; "$script" --no-such-option >"$tmp/bad" 2>&1 || rc=$?
[ "$rc" = 64 ] || fail "an unknown option exited $rc, not 64"
grep -q "unknown argument '--no-such-option'" "$tmp/bad" || fail "no message for an unknown option: $(head -2 "$tmp/bad")"

rc=0; "$script" --only tests,bogus >"$tmp/only" 2>&1 || rc=$?
[ "$rc" = 64 ] || fail "--only with an unknown section exited $rc, not 64"
grep -q "not 'bogus'" "$tmp/only" || fail "no message for an unknown --only section: $(head -2 "$tmp/only")"
grep -q -- "--only LIST" "$tmp/help" || fail "--help does not document --only"
grep -q -- "sanitize (8)" "$tmp/help" || fail "--help does not document the compute-sanitizer section"
for bad in "--gemm 0" "--offload-params 1,,2" "--preset ../x"; do
  rc=0; "$script" $bad >"$tmp/bad_value" 2>&1 || rc=$?
  [ "$rc" = 64 ] || fail "'$bad' exited $rc, not 64"
  grep -q -- "^gpu_check: ${bad%% *} " "$tmp/bad_value" || fail "no message naming ${bad%% *}: $(head -2 "$tmp/bad_value")"
done
grep -q "Rehearsal without a GPU" "$tmp/help" || fail "--help does not say how to rehearse on the emulator"

# no nvidia-smi at all
rc=0; NVIDIA_SMI="$tmp/none/nvidia-smi" "$script" --build-dir "$tmp/b1" >"$tmp/out1" 2>&1 || rc=$?
[ "$rc" = 77 ] || fail "without nvidia-smi the exit status is $rc, not 77: $(cat "$tmp/out1")"
grep -q "skipped: no GPU: .* is not installed" "$tmp/out1" || fail "unclear message: $(cat "$tmp/out1")"
[ ! -e "$tmp/b1" ] || fail "the build folder was created without a GPU"

# an nvidia-smi that finds no device (the driver's own message)
cat >"$tmp/nvidia-smi" <<'SMI'
#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
SMI
chmod +x "$tmp/nvidia-smi"
rc=0; NVIDIA_SMI="$tmp/nvidia-smi" "$script" --build-dir "$tmp/b2" >"$tmp/out2" 2>&1 || rc=$?
[ "$rc" = 77 ] || fail "with a failing nvidia-smi the exit status is $rc, not 77: $(cat "$tmp/out2")"
grep -q "couldn't communicate with the NVIDIA driver" "$tmp/out2" || fail "the driver's reason is not shown: $(cat "$tmp/out2")"
grep -q "nothing was built" "$tmp/out2" || fail "the message does not say that nothing was built"
[ ! -e "$tmp/b2" ] || fail "the build folder was created without a GPU"

# the HF peer: valid Python, --help without importing torch
"$py" -c "import ast, sys; ast.parse(open(sys.argv[1]).read())" "$src/scripts/bench_train_hf_gpu.py" ||
  fail "scripts/bench_train_hf_gpu.py does not parse"
"$py" "$src/scripts/bench_train_hf_gpu.py" --help >"$tmp/hf_help" 2>&1 || fail "bench_train_hf_gpu.py --help exited $?"
grep -q -- "--adapter" "$tmp/hf_help" || fail "bench_train_hf_gpu.py --help lists no --adapter"
echo "gpu_check script ok"
