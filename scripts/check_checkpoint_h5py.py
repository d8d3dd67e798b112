#!/usr/bin/env python3
"""Check that a checkpoint written by adapt is plain HDF5 that h5py reads as src/checkpoint/README.md says.

Purpose: the outside view of adapt's checkpoint schema. Runs adapt's test writer
(tests/unit/checkpoint/write_for_h5py.cpp, built as checkpoint_write_for_python) into a temporary
folder; it saves a checkpoint holding every dtype (with NaN payloads, signalling NaNs, -0,
subnormals, integer extremes), a rank-0 and an empty tensor, a strided view, a multi-chunk tensor,
strings (one above HDF5's 64 KiB compact-attribute limit), ints and floats, plus expected.json.
Then, with h5py (pinned in scripts/requirements-test.txt), it checks:
  * /meta attributes: format_version, step, complete == 1 (numpy int64), created_by,
    base_model_fingerprint, world_layout, config_toml, n_tensors;
  * every dataset: numpy dtype (bf16 as uint16 with attribute dtype = "bf16"), shape, raw bytes,
    values (bf16 widened by a 16-bit shift, f16 as numpy float16), the `dtype` attribute, and a
    Fletcher-32 filter on every chunked dataset; no dataset more or less than expected;
  * scalars: attribute `b` of group `/a` for key "a/b" (root attributes for keys without '/'):
    str for strings, int64 for ints, float64 for floats, bit-exact;
  * the `latest` pointer names the file, and no .tmp file is left;
  * the seal: h5py reports a 512-byte user block holding magic "ADAPTCKP", seal version 1, the file's
    size and the CRC-32C of bytes 512.. and of the seal's other bytes, as computed by the crc32c
    package (pinned in scripts/requirements-test.txt); a copy with one flipped bit is told apart.

Invocation (CTest runs the first form as cpu.checkpoint_h5py_check, label golden):
    python3 scripts/check_checkpoint_h5py.py --writer build/tests/checkpoint_write_for_python
    python3 scripts/check_checkpoint_h5py.py --dir DIR     # check what the writer put in DIR earlier
Exit status: 0 all match, 1 a mismatch, 77 (CTest: skipped) when h5py or numpy cannot be imported.
Before skipping, it re-runs itself with the repository's .venv (scripts/setup.sh --python) when that
exists and is not the running interpreter.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

EXIT_SKIP = 77
REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

failures = []


def fail(msg):
    failures.append(msg)
    print("MISMATCH:", msg)


def import_or_skip():
    try:
        import crc32c  # noqa: F401
        import h5py  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve() \
                and "--no-venv" not in sys.argv:
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-venv", *sys.argv[1:]])
        print(f"skipped: cannot import h5py/numpy/crc32c ({e}). Install them with "
              f"'python3 -m pip install -r scripts/requirements-test.txt' or './scripts/setup.sh --python'.")
        sys.exit(EXIT_SKIP)


def same_value(got, want):
    """want: a number, or "nan"/"inf"/"-inf" (JSON has no NaN); -0 must stay -0."""
    if isinstance(want, str):
        return math.isnan(got) if want == "nan" else got == float(want)
    return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


def float_values(arr, adapt_dtype):
    import numpy as np
    with np.errstate(invalid="ignore"):  # signalling NaNs in the sample
        return _float_values(arr, adapt_dtype)


def _float_values(arr, adapt_dtype):
    import numpy as np
    if adapt_dtype == "bf16":
        # bf16 is the upper half of an f32: widen by a 16-bit shift.
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float64).reshape(-1)
    return arr.astype(np.float64).reshape(-1)


def check_meta(f, meta):
    import numpy as np
    if "meta" not in f:
        return fail("no /meta group")
    attrs = f["meta"].attrs
    for key, want in meta.items():
        if key not in attrs:
            fail(f"/meta has no attribute {key}")
            continue
        got = attrs[key]
        if isinstance(want, int):
            if not isinstance(got, np.int64) or int(got) != want:
                fail(f"/meta {key} = {got!r} ({type(got).__name__}), expected int64 {want}")
        elif not isinstance(got, str) or got != want:
            fail(f"/meta {key} = {str(got)[:60]!r}... ({type(got).__name__}), expected str of {len(want)} chars")
    extra = set(attrs) - set(meta)
    if extra:
        fail(f"/meta has unexpected attributes {sorted(extra)}")


def check_tensor(ds, name, exp):
    import numpy as np
    where = f"/{name}"
    if ds.dtype != np.dtype(exp["numpy_dtype"]).newbyteorder("<"):
        fail(f"{where}: numpy dtype {ds.dtype}, expected {exp['numpy_dtype']} (little-endian)")
    if list(ds.shape) != exp["shape"]:
        fail(f"{where}: shape {list(ds.shape)}, expected {exp['shape']}")
    if ds.attrs.get("dtype") != exp["dtype"]:
        fail(f"{where}: attribute dtype = {ds.attrs.get('dtype')!r}, expected {exp['dtype']!r}")
    if bool(ds.fletcher32) != exp["chunked"] or (ds.chunks is not None) != exp["chunked"]:
        fail(f"{where}: fletcher32={ds.fletcher32}, chunks={ds.chunks}; expected chunked with Fletcher-32: "
             f"{exp['chunked']}")
    arr = ds[()]
    arr = np.asarray(arr)
    if exp.get("arange_mod_1000_times_0_25"):
        n = int(np.prod(exp["shape"]))
        want = ((np.arange(n) % 1000) * 0.25).astype(np.float32).reshape(exp["shape"])
        if not np.array_equal(arr, want):
            fail(f"{where}: values differ from (i % 1000) * 0.25")
        return
    if arr.tobytes().hex() != exp["hex"]:
        fail(f"{where}: raw bytes differ")
    if exp["dtype"] in ("i32", "i64"):
        got = [int(v) for v in arr.reshape(-1)]
        if got != exp["values"]:
            fail(f"{where}: values {got[:8]}..., expected {exp['values'][:8]}...")
        return
    values = float_values(arr, exp["dtype"]) if exp["dtype"] != "u8" else arr.reshape(-1).astype(np.float64)
    if len(values) != len(exp["values"]):
        return fail(f"{where}: {len(values)} values, expected {len(exp['values'])}")
    for i, (got, want) in enumerate(zip(values, exp["values"])):
        if not same_value(float(got), want):
            return fail(f"{where}[{i}] = {got!r}, expected {want!r}")


def check_seal(path, userblock_size):
    """The 512-byte header adapt writes in the HDF5 user block (src/checkpoint/checkpoint_seal.h)."""
    import crc32c
    data = path.read_bytes()
    if userblock_size != 512:
        return fail(f"h5py reports a user block of {userblock_size} bytes, expected 512")
    magic, version, seal_bytes, file_bytes, body_crc, seal_crc = struct.unpack_from("<8sIIQII", data, 0)
    if magic != b"ADAPTCKP" or version != 1 or seal_bytes != 512:
        return fail(f"seal starts {magic!r}, version {version}, {seal_bytes} bytes; expected b'ADAPTCKP', 1, 512")
    if file_bytes != len(data):
        fail(f"seal records {file_bytes} bytes, the file has {len(data)}")
    if crc32c.crc32c(data[512:]) != body_crc:
        fail(f"seal CRC-32C of bytes 512.. is {body_crc:08x}, crc32c computes {crc32c.crc32c(data[512:]):08x}")
    want = crc32c.crc32c(data[32:512], crc32c.crc32c(data[:28]))
    if want != seal_crc:
        fail(f"seal CRC-32C of bytes 0..27 and 32..511 is {seal_crc:08x}, crc32c computes {want:08x}")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x04
    if crc32c.crc32c(bytes(flipped[512:])) == body_crc:
        fail("one flipped bit leaves the CRC-32C unchanged")


def location(key):
    group, _, attr = key.rpartition("/")
    return "/" + group, attr


def check_scalars(f, exp):
    import numpy as np
    expected_attrs = {}
    for kind in ("strings", "ints", "floats"):
        for key, want in exp[kind].items():
            group, attr = location(key)
            expected_attrs.setdefault(group, set()).add(attr)
            if group not in f:
                fail(f"{kind} {key}: no group {group}")
                continue
            if attr not in f[group].attrs:
                fail(f"{kind} {key}: group {group} has no attribute {attr}")
                continue
            got = f[group].attrs[attr]
            if kind == "strings":
                if not isinstance(got, str) or got != want:
                    fail(f"string {key} = {got!r}, expected {want!r}")
            elif kind == "ints":
                if not isinstance(got, np.int64) or int(got) != want:
                    fail(f"int {key} = {got!r} ({type(got).__name__}), expected int64 {want}")
            else:
                bits = struct.unpack("<Q", struct.pack("<d", float(got)))[0]
                if not isinstance(got, np.float64) or f"{bits:016x}" != want["bits"]:
                    fail(f"float {key} = {got!r} (bits {bits:016x}), expected bits {want['bits']}")
    # No other attributes on groups (besides /meta, checked above).
    def visit(name, obj):
        import h5py
        if isinstance(obj, h5py.Group) and name != "meta":
            extra = set(obj.attrs) - expected_attrs.get("/" + name, set())
            if extra:
                fail(f"group /{name} has unexpected attributes {sorted(extra)}")
    visit("", f)
    f.visititems(visit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--writer", type=Path, help="the checkpoint_write_for_python executable")
    g.add_argument("--dir", type=Path, help="a folder the writer already filled")
    ap.add_argument("--no-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import_or_skip()
    import h5py
    import numpy
    from importlib.metadata import version
    print(f"reference: h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), numpy {numpy.__version__}, "
          f"crc32c {version('crc32c')}, python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory(prefix="adapt-ckpt-check-") as tmp:
        out = args.dir or Path(tmp)
        if args.writer:
            subprocess.run([str(args.writer), str(out)], check=True)
        exp = json.loads((out / "expected.json").read_text())
        path = out / exp["file"]
        folder = path.parent
        latest = (folder / "latest").read_text()
        if latest != path.name + "\n":
            fail(f"latest holds {latest!r}, expected {path.name!r} + newline")
        leftovers = [p.name for p in folder.iterdir() if ".tmp" in p.name]
        if leftovers:
            fail(f"temporary files left: {leftovers}")
        with h5py.File(path, "r") as f:
            check_seal(path, f.userblock_size)
            check_meta(f, exp["meta"])
            found = []
            f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
            if sorted(found) != sorted(exp["tensors"]):
                fail(f"datasets {sorted(found)}, expected {sorted(exp['tensors'])}")
            for name, t in exp["tensors"].items():
                if name in f:
                    check_tensor(f[name], name, t)
            check_scalars(f, exp)
    if failures:
        print(f"FAILED: {len(failures)} mismatches")
        return 1
    n_scalars = sum(len(exp[k]) for k in ("strings", "ints", "floats"))
    print(f"OK: h5py reads {len(exp['tensors'])} tensors (f32, bf16 as uint16, f16, i32, i64, u8), {n_scalars} scalars, "
          f"the /meta attributes and the seal of {path.name} exactly as adapt wrote them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
