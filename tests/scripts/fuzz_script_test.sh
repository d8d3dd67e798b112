#!/usr/bin/env bash
# scripts/fuzz.sh and slurm/fuzz.sbatch without running a fuzzer: their syntax (bash -n), --help (usage,
# every target named, the exit status), usage errors (exit 64, naming the option or the target), and the
# no-clang exit: 77 with a message saying why, before anything is configured, built or created.
# Usage: fuzz_script_test.sh SOURCE_DIR
set -euo pipefail
src=$1
script="$src/scripts/fuzz.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

bash -n "$script" || fail "bash -n $script"
bash -n "$src/slurm/fuzz.sbatch" || fail "bash -n slurm/fuzz.sbatch"

"$script" --help >"$tmp/help" 2>&1 || fail "--help exited $?"
grep -q "Usage: scripts/fuzz.sh" "$tmp/help" || fail "--help prints no usage: $(head -3 "$tmp/help")"
grep -q "Exit status" "$tmp/help" || fail "--help does not document the exit status"
for t in $(grep -o '^adapt_add_fuzz([a-z_]*' "$src/tests/fuzz/CMakeLists.txt" | sed 's/adapt_add_fuzz(//'); do
  grep -q "$t" "$tmp/help" || fail "--help does not name the target $t"
done

expect_usage_error() {  # WHAT MESSAGE ARGS...
  local what=$1 msg=$2; shift 2
  local rc=0
  "$script" "$@" >"$tmp/bad" 2>&1 || rc=$?
  [ "$rc" = 64 ] || fail "$what exited $rc, not 64"
  grep -q -- "$msg" "$tmp/bad" || fail "$what: no message '$msg': $(head -2 "$tmp/bad")"
}
expect_usage_error "an unknown option" "unknown argument '--no-such-option'" --no-such-option
expect_usage_error "an unknown target" "no fuzz target 'bogus'" --targets tokenizer,bogus
expect_usage_error "--minutes 0" "give a positive number of minutes" --minutes 0
expect_usage_error "--minutes x" "give a positive number of minutes" --minutes x
expect_usage_error "--jobs 0" "give a positive integer" --jobs 0
expect_usage_error "--corpus without a value" "--corpus needs a value" --corpus

rc=0; CLANGXX="$tmp/none/clang++" "$script" --corpus "$tmp/corpus" --build-dir "$tmp/b" --seed-build "$tmp/s" \
  >"$tmp/out" 2>&1 || rc=$?
[ "$rc" = 77 ] || fail "without clang++ the exit status is $rc, not 77: $(cat "$tmp/out")"
grep -q "skipped: libFuzzer needs clang and clang++" "$tmp/out" || fail "unclear message: $(cat "$tmp/out")"
grep -q "nothing was built" "$tmp/out" || fail "the message does not say that nothing was built"
for d in corpus b s; do [ ! -e "$tmp/$d" ] || fail "$tmp/$d was created without clang"; done
echo "fuzz.sh and fuzz.sbatch: ok"
