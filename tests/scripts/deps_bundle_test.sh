#!/usr/bin/env bash
# scripts/deps_bundle.sh without a registry: its syntax, --help, usage errors (exit 64), and `env` on a
# bundle of small packages built here with dpkg-deb in the layout of Debian's (the MPI wrappers named
# *.openmpi, OpenBLAS's and HDF5's headers and libraries in their subfolders, one support library the
# machine lacks and one it has): the unpacked prefix gets plain mpicc / cblas.h / hdf5.h / libhdf5.so
# names, the fallback folder holds only the missing soname, the printed exports point at them, a second
# call reuses the prefix, and a folder that is no bundle is refused.
# Usage: deps_bundle_test.sh SOURCE_DIR
set -euo pipefail
src=$1
script="$src/scripts/deps_bundle.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

bash -n "$script" || fail "bash -n $script"
"$script" --help >"$tmp/help" 2>&1 || fail "--help exited $?"
grep -q "deps_bundle.sh fetch" "$tmp/help" || fail "--help does not describe fetch: $(head -3 "$tmp/help")"
rc=0; "$script" bogus >/dev/null 2>&1 || rc=$?
[ "$rc" = 64 ] || fail "an unknown command exited $rc, not 64"
mkdir "$tmp/empty"
rc=0; "$script" env "$tmp/empty" "$tmp/p0" >"$tmp/err" 2>&1 || rc=$?
[ "$rc" = 64 ] || fail "env on a folder that is no bundle exited $rc, not 64"
grep -q "is not a bundle" "$tmp/err" || fail "unclear message: $(cat "$tmp/err")"

if ! command -v dpkg-deb >/dev/null; then
  echo "skipped the unpack checks: dpkg-deb is not installed (they need it to build the test packages)"
  exit 0
fi
a=x86_64-linux-gnu
deb() {  # deb PART NAME FILE...: a package holding empty files (or soname links to them) at these paths
  local part=$1 name=$2
  local root="$tmp/pkg/$name"
  shift 2
  mkdir -p "$root/DEBIAN" "$tmp/bundle/$part"
  printf 'Package: %s\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n' "$name" \
    >"$root/DEBIAN/control"
  for f in "$@"; do mkdir -p "$root/$(dirname "$f")"; : >"$root/$f"; done
  [ ! -d "$root/usr/bin" ] || chmod +x "$root"/usr/bin/*
  dpkg-deb --build -Zgzip "$root" "$tmp/bundle/$part/$name.deb" >/dev/null
}
# awk reads all of ldconfig's output: an early exit would kill ldconfig with SIGPIPE and, under pipefail, the script.
libc_soname=$(ldconfig -p | awk '$1 ~ /^libc\.so\.[0-9]+$/ && !seen {print $1; seen = 1}')
[ -n "$libc_soname" ] || fail "ldconfig -p lists no libc.so.N"
deb core fake-mpi usr/bin/mpicc.openmpi usr/bin/mpicxx.openmpi usr/bin/mpic++.openmpi usr/bin/mpiexec.openmpi \
  usr/bin/mpirun.openmpi
deb core fake-blas usr/include/$a/openblas-pthread/cblas.h usr/lib/$a/openblas-pthread/libopenblas.so
deb core fake-hdf5 usr/include/hdf5/serial/hdf5.h usr/lib/$a/hdf5/serial/libhdf5.so
deb support fake-support usr/lib/$a/libadaptfake.so.7 usr/lib/$a/$libc_soname

"$script" env "$tmp/bundle" "$tmp/prefix" >"$tmp/env" 2>"$tmp/env.err" || fail "env exited $?: $(cat "$tmp/env.err")"
p="$tmp/prefix"
for f in view/bin/mpicc view/bin/mpiexec view/include/cblas.h hdf5/include/hdf5.h hdf5/lib/libhdf5.so \
         view/lib/libopenblas.so fallback/libadaptfake.so.7; do
  [ -e "$p/$f" ] || fail "$f is missing from the unpacked prefix"
done
[ ! -e "$p/fallback/$libc_soname" ] || fail "the fallback folder shadows the machine's own $libc_soname"
grep -q "^export OPAL_PREFIX=\"$p/core/usr\"" "$tmp/env" || fail "no OPAL_PREFIX export: $(cat "$tmp/env")"
grep -q "^export LD_LIBRARY_PATH=.*$p/fallback" "$tmp/env" || fail "LD_LIBRARY_PATH misses the fallback folder"
grep -q -- "-DHDF5_ROOT=$p/hdf5 " "$tmp/env" || fail "ADAPT_DEPS_CMAKE_ARGS misses HDF5_ROOT: $(cat "$tmp/env")"
grep -q -- "-DMPI_C_COMPILER=$p/view/bin/mpicc " "$tmp/env" || fail "ADAPT_DEPS_CMAKE_ARGS misses the MPI wrapper"
(eval "$(cat "$tmp/env")" && [ "$(command -v mpicc)" = "$p/view/bin/mpicc" ]) || fail "the exports do not put mpicc first on PATH"

touch "$p/marker"
"$script" env "$tmp/bundle" "$tmp/prefix" >/dev/null 2>&1 || fail "a second env exited $?"
[ -e "$p/marker" ] || fail "a second env unpacked the same bundle again"
echo "deps_bundle.sh: usage, refusals, unpack, fallback and exports checked"
