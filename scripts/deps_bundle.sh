#!/usr/bin/env bash
# adapt's build dependencies for a machine that has a C++ compiler, CMake and the CUDA toolkit but not
# the Debian packages scripts/setup.sh installs, and no package registry to get them from (a bare GPU
# node image, a machine lent for a benchmark). Fetch the packages on a Debian 12 machine, copy the folder
# over, and unpack it there into a prefix that the build and the tests use:
#
#   scripts/deps_bundle.sh fetch [DIR]           on Debian 12 with apt: downloads into DIR (default .deps,
#                                                25–30 MB) the .deb files of Open MPI 4.1, serial HDF5 1.10,
#                                                OpenBLAS, fmt, toml++, nlohmann-json and doctest, and of
#                                                the libraries they load
#   eval "$(scripts/deps_bundle.sh env DIR [PREFIX])"
#                                                on the other machine: unpacks DIR into PREFIX (default
#                                                /tmp/adapt-deps; once, then reused) and prints the exports
#                                                that make the build and the runs use it: PATH (mpiexec,
#                                                mpicc), LD_LIBRARY_PATH, CPATH (cblas.h), OPAL_PREFIX and
#                                                PMIX_INSTALL_PREFIX (Open MPI relocated), CMAKE_PREFIX_PATH,
#                                                and ADAPT_DEPS_CMAKE_ARGS (MPI, HDF5, OpenBLAS and, when
#                                                the CUDA toolkit has none, NCCL from Python's nvidia-nccl
#                                                package) for the configure
#
# The libraries adapt links (Open MPI and its transports, HDF5, OpenBLAS, fmt, toml++) always come from the
# bundle. The general-purpose libraries they load in turn (libcurl and its TLS/Kerberos chain, libnuma,
# libibverbs, libgfortran, ...) are used only where the machine lacks that soname (ldconfig -p), so that
# the machine's own, usually newer, copies win. scripts/gpu_check.sh --deps DIR does all of this itself.
# Exit status: 0; 1 on a failed download or unpack; 64 for a usage error.
set -euo pipefail

# Linked by adapt, or parts of Open MPI: always taken from the bundle.
CORE=(
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2 libpsm-infinipath1
  libhdf5-dev libhdf5-103-1 libsz2 libaec0
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread
  libfmt-dev libfmt9 libtomlplusplus-dev libtomlplusplus3 nlohmann-json3-dev doctest-dev
)
# Loaded by the above; the machine's own copy of a soname wins over these.
SUPPORT=(
  libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libnuma1 libmunge2 libgfortran5 libquadmath0
  libcurl4 libbrotli1 libgssapi-krb5-2 libidn2-0 libldap-2.5-0 libnghttp2-14 libpsl5 librtmp1 libssh2-1
  libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libsasl2-2 libsasl2-modules-db libdb5.3
  libgnutls30 libhogweed6 libnettle8 libgmp10 libp11-kit0 libtasn1-6 libunistring2 libffi8
)
ARCH=x86_64-linux-gnu

usage() { sed -n '2,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "deps_bundle: $1" >&2; exit "${2:-1}"; }

fetch() {
  local dir="$1"
  command -v apt-get >/dev/null || die "fetch needs apt-get (Debian 12); run it there and copy '$dir' over"
  grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null ||
    echo "deps_bundle: warning: not Debian 12 (bookworm); the package names above are bookworm's" >&2
  mkdir -p "$dir/core" "$dir/support"
  for part in core support; do
    local -n list=$([[ $part == core ]] && echo CORE || echo SUPPORT)
    # apt-get download writes into the current folder; as root it warns that _apt cannot write there.
    (cd "$dir/$part" && apt-get download -q "${list[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' |
      grep -v '^Get:' || true)
    local n
    n=$(find "$dir/$part" -name '*.deb' | wc -l)
    [[ "$n" -ge "${#list[@]}" ]] || die "only $n of the ${#list[@]} $part packages were downloaded into $dir/$part"
  done
  echo "deps_bundle: $(find "$dir" -name '*.deb' | wc -l) packages, $(du -sh "$dir" | cut -f1), in $dir" >&2
}

extract() {  # extract DEB DEST: dpkg-deb where there is one, else ar and tar
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2"
  else
    command -v ar >/dev/null || die "neither dpkg-deb nor ar is installed: cannot unpack $1"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && ar x "$1" && tar -xf data.tar.* -C "$2")
    rm -rf "$tmp"
  fi
}

unpack() {  # unpack DIR PREFIX (skipped when PREFIX/.complete names the same bundle)
  local dir="$1" prefix="$2"
  local stamp
  stamp="$(cd "$dir" && find . -name '*.deb' | sort | md5sum | cut -d' ' -f1)"
  [[ -f "$prefix/.complete" && "$(cat "$prefix/.complete")" == "$stamp" ]] && return 0
  rm -rf "$prefix"
  mkdir -p "$prefix/core" "$prefix/support" "$prefix/view/bin" "$prefix/view/include" "$prefix/view/lib" \
    "$prefix/hdf5/include" "$prefix/hdf5/lib" "$prefix/fallback"
  local f
  for f in "$dir"/core/*.deb; do extract "$(realpath "$f")" "$prefix/core"; done
  for f in "$dir"/support/*.deb; do extract "$(realpath "$f")" "$prefix/support"; done
  local u="$prefix/core/usr"
  # Debian names the MPI wrappers after the implementation (mpicc.openmpi; /usr/bin/mpicc is an
  # alternatives link), and installs OpenBLAS's and HDF5's headers in subfolders found through
  # alternatives and the h5cc wrapper: plain names for them here.
  for t in mpicc mpicxx mpic++ mpiexec mpirun; do ln -s "$u/bin/$t.openmpi" "$prefix/view/bin/$t"; done
  for h in "$u/include/$ARCH/openblas-pthread/"*.h; do ln -s "$h" "$prefix/view/include/"; done
  for h in "$u/include/hdf5/serial/"*; do ln -s "$h" "$prefix/hdf5/include/"; done
  ln -s "$u/lib/$ARCH/hdf5/serial/libhdf5.so" "$prefix/hdf5/lib/libhdf5.so"
  ln -s "$u/lib/$ARCH/openblas-pthread/libopenblas.so" "$prefix/view/lib/libopenblas.so"
  # The support libraries whose soname the machine lacks (their soname links: lib*.so.N).
  local have lib
  have="$(ldconfig -p 2>/dev/null | awk '{print $1}' | sort -u)"
  while IFS= read -r lib; do
    grep -qxF "$(basename "$lib")" <<<"$have" || ln -sf "$lib" "$prefix/fallback/"
  done < <(find "$prefix/support" -name 'lib*.so.*' | grep -E '\.so\.[0-9]+$')
  echo "$stamp" >"$prefix/.complete"
}

nccl_root() {  # Python's nvidia-nccl package, when the CUDA toolkit has no nccl.h
  local nvcc
  nvcc="$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)"
  [[ -f "$(dirname "$nvcc")/../include/nccl.h" || -f /usr/include/nccl.h ]] && return 0
  local root
  root="$("${ADAPT_DEPS_PYTHON:-python3}" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)" ||
    return 0
  [[ -f "$root/include/nccl.h" ]] && ls "$root"/lib/libnccl.so* >/dev/null 2>&1 && echo "$root"
  return 0
}

env_cmd() {
  local dir="$1" prefix="$2"
  [[ -d "$dir/core" && -d "$dir/support" ]] || die "'$dir' is not a bundle made by 'deps_bundle.sh fetch'" 64
  unpack "$dir" "$prefix"
  local u="$prefix/core/usr"
  local ld="$prefix/view/lib:$u/lib/$ARCH:$u/lib/$ARCH/openblas-pthread:$u/lib/$ARCH/hdf5/serial:$u/lib/$ARCH/pmix2/lib:$prefix/fallback"
  local nccl="" root
  root="$(nccl_root)"
  if [[ -n "$root" ]]; then
    nccl=" -DADAPT_NCCL_INCLUDE_DIR=$root/include -DADAPT_NCCL_LIBRARY=$(ls "$root"/lib/libnccl.so* | head -1)"
    ld="$ld:$root/lib"
  fi
  cat <<EOF
export PATH="$prefix/view/bin:$u/bin:\$PATH"
export LD_LIBRARY_PATH="$ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CPATH="$prefix/view/include\${CPATH:+:\$CPATH}"
export OPAL_PREFIX="$u"
export PMIX_INSTALL_PREFIX="$u/lib/$ARCH/pmix2"
export CMAKE_PREFIX_PATH="$u\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
EOF
  # mpiexec opens its ssh launcher even for ranks on this machine, and stops when there is no ssh.
  if ! command -v ssh >/dev/null && ! command -v rsh >/dev/null; then
    echo 'export OMPI_MCA_plm_rsh_agent="${OMPI_MCA_plm_rsh_agent:-false}"'
  fi
  # Sandboxed machines often refuse cross-process memory access (CMA) and hide the CPU topology: ranks
  # on one machine then exchange through plain shared memory and are not bound to cores.
  echo 'export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"'
  echo 'export OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}"'
  cat <<EOF
export ADAPT_DEPS_CMAKE_ARGS="-DMPI_C_COMPILER=$prefix/view/bin/mpicc -DMPI_CXX_COMPILER=$prefix/view/bin/mpicxx -DMPIEXEC_EXECUTABLE=$prefix/view/bin/mpiexec -DHDF5_ROOT=$prefix/hdf5 -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON -DBLAS_openblas_LIBRARY=$prefix/view/lib/libopenblas.so$nccl"
EOF
}

case "${1:-}" in
  fetch) [[ $# -le 2 ]] || die "fetch takes one folder" 64; fetch "${2:-.deps}" ;;
  env) [[ $# -ge 2 && $# -le 3 ]] || die "env takes the bundle folder and an optional prefix" 64
       env_cmd "$(realpath "$2")" "$(realpath -m "${3:-/tmp/adapt-deps}")" ;;
  -h|--help) usage ;;
  *) usage >&2; exit 64 ;;
esac
