#!/usr/bin/env bash
# sweep.sh - run a command over every combination of parameter values, a few jobs at a time,
# with one log file per run and a summary table at the end.
#
# Parameters are given as NAME=v1,v2,v3; the command template refers to them as {NAME}. Each
# combination runs once; its exit status, wall time and last output line go into summary.tsv.
# Runs whose log already ends in a "sweep: ok" marker are skipped, so an interrupted sweep can be
# restarted with the same arguments and only the missing runs execute.
#
# Example:
#   sweep.sh -j 4 -o runs/lr-sweep lr=1e-4,3e-4,1e-3 rank=8,16 -- \
#       ./train --lr {lr} --lora-rank {rank} --steps 200
set -uo pipefail

jobs=2
outdir="sweep-$(date +%Y%m%d-%H%M%S)"
declare -a names=() values=()

die() { echo "sweep: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -j) jobs=${2:?-j needs a number}; shift 2 ;;
        -o) outdir=${2:?-o needs a directory}; shift 2 ;;
        --) shift; break ;;
        *=*) names+=("${1%%=*}"); values+=("${1#*=}"); shift ;;
        *) die "expected NAME=v1,v2 or --, got '$1'" ;;
    esac
done
[[ $# -gt 0 ]] || die "no command given after --"
[[ ${#names[@]} -gt 0 ]] || die "no parameters given"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "-j must be a positive integer"
template=("$@")
mkdir -p "$outdir/logs"

# Build the cartesian product as lines of "name=value<TAB>name=value...".
combos=("")
for i in "${!names[@]}"; do
    IFS=',' read -r -a vals <<< "${values[$i]}"
    next=()
    for c in "${combos[@]}"; do
        for v in "${vals[@]}"; do
            next+=("${c:+$c$'\t'}${names[$i]}=$v")
        done
    done
    combos=("${next[@]}")
done
echo "sweep: ${#combos[@]} run(s), $jobs at a time, logs in $outdir/logs"

# Substitute {name} placeholders in every word of the command template.
expand() {
    local combo=$1 word pair
    local -a out=()
    for word in "${template[@]}"; do
        IFS=$'\t' read -r -a pairs <<< "$combo"
        for pair in "${pairs[@]}"; do
            word=${word//\{${pair%%=*}\}/${pair#*=}}
        done
        out+=("$word")
    done
    printf '%s\0' "${out[@]}"
}

run_one() {
    local combo=$1 tag log start status
    tag=$(tr '\t=' '_-' <<< "$combo")
    log="$outdir/logs/$tag.log"
    if [[ -f "$log" ]] && tail -n 1 "$log" | grep -q '^sweep: ok'; then
        echo "skip  $tag (already done)"
        return 0
    fi
    local -a cmd=()
    mapfile -d '' -t cmd < <(expand "$combo")
    start=$(date +%s.%N)
    {
        echo "# $(printf '%q ' "${cmd[@]}")"
        "${cmd[@]}"
    } > "$log" 2>&1
    status=$?
    local elapsed
    elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if [[ $status -eq 0 ]]; then
        echo "sweep: ok ($elapsed s)" >> "$log"
        echo "done  $tag in ${elapsed}s"
    else
        echo "sweep: failed with status $status ($elapsed s)" >> "$log"
        echo "FAIL  $tag (status $status, see $log)"
    fi
    return "$status"
}

failures=0
running=0
for combo in "${combos[@]}"; do
    run_one "$combo" &
    running=$((running + 1))
    if [[ $running -ge $jobs ]]; then
        wait -n || failures=$((failures + 1))
        running=$((running - 1))
    fi
done
while [[ $running -gt 0 ]]; do
    wait -n || failures=$((failures + 1))
    running=$((running - 1))
done

# Summary: one row per run with its parameters, status and the last line the command printed.
{
    printf '%s\t' "${names[@]}"
    printf 'status\tlast_line\n'
    for combo in "${combos[@]}"; do
        tag=$(tr '\t=' '_-' <<< "$combo")
        log="$outdir/logs/$tag.log"
        status=$(tail -n 1 "$log" | sed -n 's/^sweep: \([a-z]*\).*/\1/p')
        last=$(tail -n 2 "$log" | head -n 1 | tr '\t' ' ')
        IFS=$'\t' read -r -a pairs <<< "$combo"
        for pair in "${pairs[@]}"; do printf '%s\t' "${pair#*=}"; done
        printf '%s\t%s\n' "${status:-missing}" "$last"
    done
} > "$outdir/summary.tsv"
column -t -s $'\t' "$outdir/summary.tsv"
echo "sweep: $failures failure(s)"
[[ $failures -eq 0 ]]
