#!/usr/bin/env bash
# rotate_backups.sh - make a compressed, checksummed snapshot of a directory and prune old ones
# with a grandfather-father-son policy: keep the newest N daily, M weekly and K monthly snapshots.
#
# Snapshots are named <prefix>-YYYYmmdd-HHMMSS.tar.gz and written to a temporary name first, so an
# interrupted run never leaves a truncated archive under a real name. A .sha256 file sits beside
# each archive; --verify re-checks all of them.
#
# Usage:
#   rotate_backups.sh [--daily 7] [--weekly 4] [--monthly 6] [--prefix NAME] [--dry-run] SRC DEST
#   rotate_backups.sh --verify DEST
set -euo pipefail

daily=7
weekly=4
monthly=6
prefix=""
dry_run=0
verify_only=0

die() {
    echo "rotate_backups: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
}

log() {
    printf '%s %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --daily) daily=${2:?--daily needs a number}; shift 2 ;;
        --weekly) weekly=${2:?--weekly needs a number}; shift 2 ;;
        --monthly) monthly=${2:?--monthly needs a number}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a name}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --verify) verify_only=1; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) break ;;
    esac
done

for n in "$daily" "$weekly" "$monthly"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "retention counts must be non-negative integers, got '$n'"
done

verify() {
    local dest=$1 bad=0 count=0
    shopt -s nullglob
    for sum in "$dest"/*.tar.gz.sha256; do
        count=$((count + 1))
        if ! (cd "$dest" && sha256sum --quiet --check "$(basename "$sum")"); then
            echo "CORRUPT: ${sum%.sha256}" >&2
            bad=$((bad + 1))
        fi
    done
    log "verified $count snapshot(s), $bad corrupt"
    [[ $bad -eq 0 ]]
}

if [[ $verify_only -eq 1 ]]; then
    [[ $# -eq 1 ]] || usage
    verify "$1"
    exit $?
fi

[[ $# -eq 2 ]] || usage
src=$1
dest=$2
[[ -d "$src" ]] || die "source '$src' is not a directory"
mkdir -p "$dest"
[[ -n "$prefix" ]] || prefix=$(basename "$(cd "$src" && pwd)")

stamp=$(date '+%Y%m%d-%H%M%S')
archive="$dest/$prefix-$stamp.tar.gz"
tmp="$archive.partial"

cleanup() {
    rm -f "$tmp"
}
trap cleanup EXIT

if [[ $dry_run -eq 1 ]]; then
    log "dry run: would write $archive"
else
    log "archiving $src -> $archive"
    # --sort=name and a fixed mtime/owner make archives of unchanged trees byte-identical.
    tar --sort=name --owner=0 --group=0 --numeric-owner \
        -C "$(dirname "$src")" -cf - "$(basename "$src")" | gzip -n -6 > "$tmp"
    mv "$tmp" "$archive"
    (cd "$dest" && sha256sum "$(basename "$archive")" > "$(basename "$archive").sha256")
    log "wrote $(du -h "$archive" | cut -f1) ($(wc -l < <(tar -tzf "$archive")) entries)"
fi

# ---- pruning --------------------------------------------------------------------------------
# Walk snapshots newest first. A snapshot is kept when it is among the first $daily distinct days,
# the first $weekly distinct ISO weeks, or the first $monthly distinct months seen so far.
declare -A seen_day=() seen_week=() seen_month=()
kept=0
removed=0
mapfile -t snapshots < <(find "$dest" -maxdepth 1 -name "$prefix-*.tar.gz" -printf '%f\n' | sort -r)
for name in "${snapshots[@]}"; do
    ts=${name#"$prefix"-}
    ts=${ts%.tar.gz}
    day=${ts%%-*}
    if ! [[ "$day" =~ ^[0-9]{8}$ ]]; then
        log "skipping unrecognised file $name"
        continue
    fi
    week=$(date -d "$day" '+%G-W%V')
    month=${day:0:6}
    keep=0
    if [[ -z "${seen_day[$day]:-}" && ${#seen_day[@]} -lt $daily ]]; then
        seen_day[$day]=1; keep=1
    fi
    if [[ -z "${seen_week[$week]:-}" && ${#seen_week[@]} -lt $weekly ]]; then
        seen_week[$week]=1; keep=1
    fi
    if [[ -z "${seen_month[$month]:-}" && ${#seen_month[@]} -lt $monthly ]]; then
        seen_month[$month]=1; keep=1
    fi
    if [[ $keep -eq 1 ]]; then
        kept=$((kept + 1))
    elif [[ $dry_run -eq 1 ]]; then
        log "dry run: would delete $name"
        removed=$((removed + 1))
    else
        rm -f -- "$dest/$name" "$dest/$name.sha256"
        log "deleted $name"
        removed=$((removed + 1))
    fi
done
log "kept $kept snapshot(s), removed $removed"
