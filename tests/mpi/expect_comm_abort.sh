#!/usr/bin/env bash
# Runs a job that must abort (comm_timeout_main): passes when the launcher exits non-zero, in time, and
# stderr carries the expected "rank R: <collective> timed out after Ns in group G" line. A job whose
# ranks exit 77 saying "skipped: <why>" (a GPU test without its GPUs) is passed on as skipped (77).
# Invocation: expect_comm_abort.sh "<expected message>" mpiexec -n 2 ... test_comm_timeout MODE
set -u
expected="$1"
shift
output=$("$@" 2>&1)
status=$?
if [[ $status -eq 77 ]] && grep -q "^skipped: " <<<"$output"; then
  grep "^skipped: " <<<"$output" | head -1
  exit 77
fi
if [[ $status -eq 0 ]]; then
  echo "FAIL: the job exited with 0; expected an abort. Output:"
  echo "$output"
  exit 1
fi
if ! grep -qF -- "$expected" <<<"$output"; then
  echo "FAIL: exit status $status, but the output lacks: $expected"
  echo "$output"
  exit 1
fi
echo "ok: exit status $status and the message: $(grep -F -- "$expected" <<<"$output" | head -1)"
