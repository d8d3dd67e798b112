#!/usr/bin/env python3
"""Check that files written by adapt's safetensors writer load in Python's reference `safetensors`.

Purpose: the other direction of the safetensors golden tests. Runs adapt's test writer
(tests/unit/io/write_for_python.cpp, built as io_write_for_python) into a temporary folder, then, with
the pinned packages of scripts/requirements-test.txt (safetensors + numpy + ml_dtypes for bf16):
  * loads every tensor with safetensors' numpy API (safe_open) and compares dtype, shape, raw bytes
    and values with the expected.json the writer wrote beside the files;
  * re-serializes the same tensors with safetensors' own writer and requires identical file bytes;
  * opens the sharded folder through its index (each weight_map tensor from its shard), checks
    metadata.total_size and the index formatting (transformers' json.dumps(indent=2, sort_keys=True));
  * opens hand-made valid and broken files (the reference's own test vectors and more) and requires
    Python's reader to accept exactly those adapt accepts, except cases adapt refuses on purpose.

Invocation (CTest runs it as cpu.io_python_check):
    python3 scripts/check_safetensors_written.py --writer build/tests/io_write_for_python
    python3 scripts/check_safetensors_written.py --dir DIR     # check files written earlier into DIR
Exit status: 0 all match, 1 a mismatch, 77 (CTest: skipped) when safetensors/numpy/ml_dtypes cannot be
imported. Before skipping, it re-runs itself with the virtual environment that
scripts/make_safetensors_fixtures.py creates (~/.cache/adapt/venv-safetensors) when that exists.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VENV = Path.home() / ".cache" / "adapt" / "venv-safetensors"
VENV_PYTHON = VENV / "bin" / "python"
NUMPY_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I32": "int32", "I64": "int64",
                "U8": "uint8"}
SERIALIZE_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I32": "int32", "I64": "int64",
                    "U8": "uint8"}

failures = []


def fail(msg):
    failures.append(msg)
    print("MISMATCH:", msg)


def import_or_skip():
    try:
        import ml_dtypes  # noqa: F401  (registers numpy's bfloat16, which safe_open needs)
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV.resolve() and "--no-venv" not in sys.argv:
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-venv", *sys.argv[1:]])
        print(f"skipped: cannot import the reference packages ({e}). Install them with "
              f"'python3 -m pip install -r scripts/requirements-test.txt'.")
        sys.exit(77)


def same_values(arr, expected, name):
    import numpy as np
    flat = arr.reshape(-1)
    if len(flat) != len(expected):
        return fail(f"{name}: {len(flat)} values, expected {len(expected)}")
    for i, (got, want) in enumerate(zip(flat, expected)):
        if isinstance(want, str):
            g = float(got)
            ok = (g != g) if want == "nan" else g == float(want)
        elif np.issubdtype(arr.dtype, np.integer):
            ok = int(got) == want
        else:
            ok = float(got) == want and (want != 0 or np.signbit(float(got)) == np.signbit(want))
        if not ok:
            return fail(f"{name}[{i}] = {got!r}, expected {want!r}")


def check_tensor(f, name, exp, where):
    arr = f.get_tensor(name)
    if str(arr.dtype) != NUMPY_DTYPES[exp["dtype"]]:
        fail(f"{where}: {name}: numpy dtype {arr.dtype}, expected {NUMPY_DTYPES[exp['dtype']]}")
    if list(arr.shape) != exp["shape"]:
        fail(f"{where}: {name}: shape {list(arr.shape)}, expected {exp['shape']}")
    if arr.tobytes().hex() != exp["hex"]:
        fail(f"{where}: {name}: bytes differ")
    same_values(arr, exp["values"], f"{where}: {name}")
    return arr


def check_file(path: Path, exp: dict):
    import safetensors
    from safetensors import safe_open
    arrays = {}
    with safe_open(str(path), framework="numpy") as f:
        if sorted(f.keys()) != sorted(exp["tensors"]):
            fail(f"{path.name}: tensors {sorted(f.keys())}, expected {sorted(exp['tensors'])}")
        if (f.metadata() or {}) != exp["metadata"]:
            fail(f"{path.name}: metadata {f.metadata()}, expected {exp['metadata']}")
        for name, t in exp["tensors"].items():
            arrays[name] = check_tensor(f, name, t, path.name)
    # The reference writer, given the same tensors, must produce the same bytes.
    flat = {k: {"dtype": SERIALIZE_DTYPES[exp["tensors"][k]["dtype"]], "shape": list(a.shape), "data": a.tobytes()}
            for k, a in arrays.items()}
    ref = safetensors.serialize(flat, metadata=exp["metadata"])
    if bytes(ref) != path.read_bytes():
        fail(f"{path.name}: differs from safetensors.serialize of the same tensors "
             f"({len(path.read_bytes())} vs {len(ref)} bytes)")


def check_sharded(folder: Path, exp: dict):
    from safetensors import safe_open
    index_path = folder / "model.safetensors.index.json"
    text = index_path.read_text()
    index = json.loads(text)
    if text != json.dumps(index, indent=2, sort_keys=True) + "\n":
        fail("index: not formatted as transformers' json.dumps(index, indent=2, sort_keys=True) + '\\n'")
    if index["metadata"]["total_size"] != exp["total_size"]:
        fail(f"index: total_size {index['metadata']['total_size']}, expected {exp['total_size']}")
    if sorted(set(index["weight_map"].values())) != sorted(exp["shards"]):
        fail(f"index: shards {sorted(set(index['weight_map'].values()))}, expected {exp['shards']}")
    if sorted(index["weight_map"]) != sorted(exp["tensors"]):
        fail(f"index: tensors {sorted(index['weight_map'])}, expected {sorted(exp['tensors'])}")
    total = 0
    for name, shard in index["weight_map"].items():
        with safe_open(str(folder / shard), framework="numpy") as f:
            if f.metadata() != {"format": "pt"}:
                fail(f"{shard}: metadata {f.metadata()}, expected {{'format': 'pt'}}")
            total += check_tensor(f, name, exp["tensors"][name], shard).nbytes
    if total != index["metadata"]["total_size"]:
        fail(f"index: total_size {index['metadata']['total_size']}, but the tensors hold {total} bytes")
    present = sorted(p.name for p in folder.iterdir())
    if present != sorted(exp["shards"] + ["model.safetensors.index.json"]):
        fail(f"sharded folder holds {present}")


def check_validation(folder: Path, cases: dict):
    """Python's reader must accept exactly the hand-made files adapt accepts (bar deliberate strictness)."""
    from safetensors import safe_open
    notes = []
    for name, c in sorted(cases.items()):
        try:
            with safe_open(str(folder / f"{name}.safetensors"), framework="numpy") as f:
                for k in f.keys():
                    f.get_tensor(k)
            python = "accepted"
        except Exception:  # the Rust reader raises SafetensorError, OSError or similar
            python = "rejected"
        if python == c["adapt"]:
            continue
        if c["stricter"] and c["adapt"] == "rejected":
            notes.append(name)
        else:
            fail(f"validation/{name}: adapt {c['adapt']} it, Python safetensors {python} it")
    if notes:
        print(f"note: adapt refuses on purpose what this safetensors accepts: {', '.join(notes)}")
    return len(cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--writer", type=Path, help="the io_write_for_python executable")
    g.add_argument("--dir", type=Path, help="a folder the writer already filled")
    ap.add_argument("--no-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import_or_skip()
    import numpy
    import safetensors
    print(f"reference: safetensors {safetensors.__version__}, numpy {numpy.__version__}, python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory(prefix="adapt-st-check-") as tmp:
        out = args.dir or Path(tmp)
        if args.writer:
            subprocess.run([str(args.writer), str(out)], check=True)
        exp = json.loads((out / "expected.json").read_text())
        for name, e in exp["files"].items():
            check_file(out / name, e)
        check_sharded(out / "sharded", exp["sharded"])
        n = sum(len(e["tensors"]) for e in exp["files"].values()) + len(exp["sharded"]["tensors"])
        n_cases = check_validation(out / "validation", exp["validation"])
    if failures:
        print(f"FAILED: {len(failures)} mismatches")
        return 1
    print(f"OK: {n} tensors written by adapt load identically in Python safetensors; file bytes equal its "
          f"writer's; {n_cases} hand-made files get the same accept/reject verdict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
