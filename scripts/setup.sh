#!/usr/bin/env bash
# Installs what adapt needs to build and test on Debian 12, and nothing that is already there.
# Idempotent and quiet when everything is installed.
#
#   ./scripts/setup.sh            Debian packages (compilers, CMake, Open MPI with PMIx, parallel HDF5,
#                                 toml++, fmt, doctest, nlohmann-json, OpenBLAS)
#   ./scripts/setup.sh --python   also what the tests use: clang-format (scripts/check_format.py) and a
#                                 Python virtual environment in .venv with the pinned packages of
#                                 scripts/requirements-test.txt (tests that compare against Python's
#                                 safetensors and tokenizers)
#
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not a Debian package: install NVIDIA's toolkit yourself
# (or use the container in containers/); without it adapt builds the CPU backend only. The container
# recipes (containers/Dockerfile, containers/adapt.def) install the same packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3 python3-venv
  libopenmpi-dev openmpi-bin libpmix-dev libhdf5-openmpi-dev libtomlplusplus-dev libfmt-dev doctest-dev
  nlohmann-json3-dev libopenblas-dev
)

if [ "${1:-}" = "--python" ]; then
  PACKAGES+=(clang-format)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--python" ]; then
  req=scripts/requirements-test.txt
  stamp=.venv/.requirements-installed
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    echo "setup: installing Python test packages from $req into .venv"
    if .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"; then
      cp "$req" "$stamp"
    else
      echo "setup: warning: pip could not install $req; tests that compare against those packages will be skipped" >&2
    fi
  fi
fi
