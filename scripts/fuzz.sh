#!/usr/bin/env bash
# Open-ended fuzzing: every fuzz target of tests/fuzz/ under libFuzzer with AddressSanitizer, for a set
# time each, with a corpus per target that grows from run to run, so that runs on a schedule
# (slurm/fuzz.sbatch; its header shows scrontab and a self-resubmitting job) go on where the last one
# stopped. The CTest runs (cpu.fuzz_*, a few seconds each with adapt's own mutator) stay in every test
# run; this is the long, coverage-guided search beside them.
#
#   1. clang and clang++ must be there (CLANG, CLANGXX); otherwise the script says so and exits 77
#      before configuring anything.
#   2. The first run of a target seeds its corpus, CORPUS/<target>/, from adapt's writers: the driver
#      build of the target (SEED_BUILD, default <repo>/build-fuzz-seeds, configured when absent with
#      the default compiler) writes them (`fuzz_<target> --write-seeds`).
#   3. Configures BUILD_DIR (default <repo>/build-fuzz) for libFuzzer (-DADAPT_FUZZ=libfuzzer,
#      -fsanitize=fuzzer-no-link,address, RelWithDebInfo, no CUDA) and builds the targets.
#   4. Runs each target for MINUTES (default 10) on its corpus, JOBS at a time, with -rss_limit_mb=4096
#      and a 30 s timeout per input; what an input breaks (crash-*, leak-*, timeout-*, oom-*) is kept in
#      CORPUS/findings/<target>/, and each run's libFuzzer log in CORPUS/logs/.
#   5. Prints one markdown table: target, inputs run, coverage (edges), corpus size, new findings.
#
# Usage: scripts/fuzz.sh [--minutes M] [--jobs J] [--targets LIST] [--corpus DIR] [--build-dir DIR]
#                        [--seed-build DIR] [-h|--help]
#   --minutes M       minutes per target (default 10; a decimal such as 0.5 is fine)
#   --jobs J          targets at a time (default: half the cores, at least 1)
#   --targets LIST    comma-separated names among: TARGETS_LIST (default: all)
#   --corpus DIR      corpora, findings and logs (default: <repo>/fuzz-corpus)
#   --build-dir DIR   the libFuzzer build (default: <repo>/build-fuzz)
#   --seed-build DIR  the driver build that writes the seeds (default: <repo>/build-fuzz-seeds)
#
# A finding is reproduced with the target of either build: `BUILD_DIR/tests/fuzz_<target> FILE` (libFuzzer,
# with the sanitizer's report) or `SEED_BUILD/tests/fuzz_<target> FILE --runs 0` (tests/fuzz/README.md).
#
# Exit status: 0 every target ran and found nothing new; 1 a target found an input (or stopped for
# another reason: its log says why); 2 configure or build failed; 64 bad usage; 77 no clang.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mapfile -t all_targets < <(grep -o '^adapt_add_fuzz([a-z_]*' "$repo/tests/fuzz/CMakeLists.txt" | sed 's/adapt_add_fuzz(//')

usage() {
  sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//' |
    sed "s/TARGETS_LIST/$(IFS=,; echo "${all_targets[*]}" | sed 's/,/, /g')/"
  sed -n '/^# Exit status/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' | tail -n +2
}
die_usage() { echo "scripts/fuzz.sh: $*; run scripts/fuzz.sh --help" >&2; exit 64; }

minutes=10
cores=$(nproc 2>/dev/null || echo 2)
jobs=$(( cores / 2 > 0 ? cores / 2 : 1 ))
targets=""
corpus="$repo/fuzz-corpus"
build="$repo/build-fuzz"
seed_build="$repo/build-fuzz-seeds"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --minutes|--jobs|--targets|--corpus|--build-dir|--seed-build)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      case "$1" in
        --minutes) minutes=$2 ;;
        --jobs) jobs=$2 ;;
        --targets) targets=$2 ;;
        --corpus) corpus=$2 ;;
        --build-dir) build=$2 ;;
        --seed-build) seed_build=$2 ;;
      esac
      shift 2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v m="$minutes" 'BEGIN { exit !(m > 0) }' ||
  die_usage "--minutes $minutes: give a positive number of minutes"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs $jobs: give a positive integer"
if [ -z "$targets" ]; then
  selected=("${all_targets[@]}")
else
  IFS=, read -r -a selected <<<"$targets"
  for t in "${selected[@]}"; do
    printf '%s\n' "${all_targets[@]}" | grep -qx "$t" ||
      die_usage "--targets: no fuzz target '$t' (there are: $(IFS=,; echo "${all_targets[*]}" | sed 's/,/, /g'))"
  done
fi
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60 + 0.5); print (s < 1 ? 1 : s) }')

clang=${CLANG:-clang}
clangxx=${CLANGXX:-clang++}
if ! command -v "$clang" >/dev/null 2>&1 || ! command -v "$clangxx" >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: skipped: libFuzzer needs clang and clang++ ('$clang', '$clangxx' not found; set CLANG and" \
       "CLANGXX, or install the clang package); nothing was built" >&2
  exit 77
fi

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
build_targets=()
for t in "${selected[@]}"; do build_targets+=(--target "fuzz_$t"); done
log_build="$corpus/logs/build.log"
mkdir -p "$corpus/logs" "$corpus/findings"
build_or_die() {  # DIR WHAT CONFIGURE_ARGS...
  local dir=$1 what=$2; shift 2
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    echo "configuring $what in $dir" >&2
    cmake -S "$repo" -B "$dir" "${generator[@]}" "$@" >>"$log_build" 2>&1 ||
      { echo "scripts/fuzz.sh: configuring $what failed; see $log_build" >&2; exit 2; }
  fi
  echo "building $what (${#selected[@]} target(s))" >&2
  cmake --build "$dir" -j "$cores" "${build_targets[@]}" >>"$log_build" 2>&1 ||
    { echo "scripts/fuzz.sh: building $what failed; see $log_build" >&2; exit 2; }
}
build_or_die "$seed_build" "the seed writers (driver build)" -DCMAKE_BUILD_TYPE=Release -DADAPT_TESTS=ON \
  -DADAPT_CUDA=OFF
build_or_die "$build" "the libFuzzer targets" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DADAPT_TESTS=ON \
  -DADAPT_CUDA=OFF -DADAPT_FUZZ=libfuzzer -DCMAKE_C_COMPILER="$clang" -DCMAKE_CXX_COMPILER="$clangxx" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
files_in() {  # files in folder $1 (0 when it is not there)
  if [ -d "$1" ]; then find "$1" -maxdepth 1 -type f | wc -l; else echo 0; fi
}
last_stat() {  # LOG PATTERN: the number after PATTERN on its last match in LOG, or nothing
  { grep -o "$2 [0-9]*" "$1" 2>/dev/null || true; } | tail -1 | awk '{print $NF}'
}
run_one() {  # TARGET: one libFuzzer run; its exit status is the run's
  local t=$1 dir="$corpus/$1" found="$corpus/findings/$1"
  mkdir -p "$dir" "$found"
  if [ "$(files_in "$dir")" = 0 ]; then
    "$seed_build/tests/fuzz_$t" --write-seeds "$dir" >/dev/null 2>&1 ||
      { echo "fuzz_$t --write-seeds failed" >"$corpus/logs/$t-$stamp.log"; return 1; }
  fi
  (cd "$corpus/logs" && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$build/tests/fuzz_$t" "$dir" \
     -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
     -artifact_prefix="$found/" >"$corpus/logs/$t-$stamp.log" 2>&1)
}
echo "fuzzing ${#selected[@]} target(s) for $seconds s each, $jobs at a time; corpora in $corpus" >&2
declare -A before
for t in "${selected[@]}"; do before[$t]=$(files_in "$corpus/findings/$t"); done
running=0
for t in "${selected[@]}"; do
  (run_one "$t"; echo $? >"$corpus/logs/$t-$stamp.rc") &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

echo "## fuzzing, $(date -u '+%Y-%m-%d %H:%M UTC'), $seconds s per target, commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| target | inputs | coverage (edges) | corpus | new findings | exit |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
bad=0
for t in "${selected[@]}"; do
  log="$corpus/logs/$t-$stamp.log"
  rc=$(cat "$corpus/logs/$t-$stamp.rc" 2>/dev/null || echo 1)
  runs=$(last_stat "$log" 'stat::number_of_executed_units:')
  cov=$(last_stat "$log" 'cov:')
  size=$(files_in "$corpus/$t")
  new=$(( $(files_in "$corpus/findings/$t") - ${before[$t]} ))
  echo "| fuzz_$t | ${runs:-?} | ${cov:-?} | $size | $new | $rc |"
  if [ "$rc" != 0 ] || [ "$new" -gt 0 ]; then bad=1; fi
done
echo
if [ "$bad" = 1 ]; then
  echo "a target found an input or stopped early: its log in $corpus/logs/, the input in $corpus/findings/" >&2
  exit 1
fi
