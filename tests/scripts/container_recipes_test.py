"""The container recipes and scripts/setup.sh name the same dependencies.

containers/Dockerfile and containers/adapt.def must install exactly the Debian/Ubuntu packages of
scripts/setup.sh's PACKAGES list (compilers, CMake, Open MPI with PMIx, parallel HDF5, toml++, fmt,
doctest, nlohmann-json, OpenBLAS), plus NCCL (libnccl2, libnccl-dev) from NVIDIA's repository; both
must start from the same NVIDIA CUDA development image, and the Dockerfile's base must be replaceable
with --build-arg BASE=... (for building where no registry is reachable).

    python3 tests/scripts/container_recipes_test.py SOURCE_DIR
"""
import re
import sys
from pathlib import Path

NCCL = {"libnccl2", "libnccl-dev"}
REQUIRED = {"libopenmpi-dev", "openmpi-bin", "libpmix-dev", "libhdf5-openmpi-dev", "libtomlplusplus-dev",
            "libfmt-dev", "doctest-dev", "nlohmann-json3-dev", "libopenblas-dev", "cmake"}


def install_lists(text):
    """Every package list of an `apt-get install ... --no-install-recommends` command (continued lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    lists = []
    for m in re.finditer(r"apt-get install -y --no-install-recommends ([^\n;&|>]*)", joined):
        lists.append(set(m.group(1).split()))
    return lists


def setup_packages(text):
    m = re.search(r"^PACKAGES=\(\n(.*?)^\)", text, re.S | re.M)
    assert m, "scripts/setup.sh: no PACKAGES=( ... ) list"
    return set(m.group(1).split())


def main():
    root = Path(sys.argv[1])
    failures = []
    setup = setup_packages((root / "scripts/setup.sh").read_text())
    missing = REQUIRED - setup
    if missing:
        failures.append(f"scripts/setup.sh lacks {sorted(missing)}")
    images = {}
    for name in ("containers/Dockerfile", "containers/adapt.def"):
        text = (root / name).read_text()
        lists = install_lists(text)
        if len(lists) != 2:
            failures.append(f"{name}: expected 2 apt-get install commands (packages, NCCL), found {len(lists)}")
            continue
        packages, nccl = lists
        if packages != setup:
            failures.append(f"{name}: packages differ from scripts/setup.sh: only in {name}: "
                            f"{sorted(packages - setup)}, only in setup.sh: {sorted(setup - packages)}")
        if nccl != NCCL:
            failures.append(f"{name}: NCCL install is {sorted(nccl)}, expected {sorted(NCCL)}")
        if name.endswith("Dockerfile"):
            m = re.search(r"^ARG BASE=(\S+)\nFROM \$\{BASE\}$", text, re.M)
            if not m:
                failures.append(f"{name}: expected 'ARG BASE=<image>' followed by 'FROM ${{BASE}}'")
            else:
                images[name] = m.group(1)
        else:
            m = re.search(r"^Bootstrap: docker\nFrom: (\S+)$", text, re.M)
            if not m:
                failures.append(f"{name}: expected 'Bootstrap: docker' and 'From: <image>'")
            else:
                images[name] = m.group(1)
    for name, image in images.items():
        if not re.fullmatch(r"nvidia/cuda:[0-9.]+-devel-(ubuntu|debian)[0-9.]+", image):
            failures.append(f"{name}: base image {image} is not an nvidia/cuda devel image")
    if len(set(images.values())) > 1:
        failures.append(f"the recipes start from different images: {images}")
    for f in failures:
        print("FAILED:", f)
    if not failures:
        print(f"container recipes and scripts/setup.sh agree: {len(setup)} packages + NCCL on {images['containers/Dockerfile']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
