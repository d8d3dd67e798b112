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

With --train-bin (CTest: cpu.checkpoint_train_h5py), a real adapt_train checkpoint instead: adapt_model
makes the tiny preset, adapt_train trains 6 steps of LoRA (r 4 on q, v, down; dropout 0.1, adapter.seed 5;
a cosine schedule with 2 warm-up steps) with checkpoints at steps 3 and 6, and h5py reads them:
  * datasets: exactly /adapter/<p>, /optim/m/<p> and /optim/v/<p> for the LoRA factors of every layer,
    f32, of the shapes config.json gives (lora_a (r, in), lora_b (out, r)); v >= 0; m and v not all 0;
  * /sched: kind, peak_lr, warmup_steps, total_steps, min_lr_ratio as the job set them, and last_lr /
    next_lr equal to the learning rate that transformers' get_cosine_schedule_with_warmup gives at steps
    2 and 3 (its lambda, written out below) and to metrics.jsonl's lr of steps 3 and 4;
  * /rng@dropout_seed = 5; /data@seed, @epoch, @position (6 rows drawn), @n_sequences, @fingerprint as
    int64; /optim@n_steps = 3; /train@adapter_kind = "lora"; /train@loss = metrics.jsonl's loss of step 3;
  * the last checkpoint's /adapter tensors equal, bit for bit, the exported PEFT file's tensors (read by
    the `safetensors` package) under PEFT's names.

Invocation (CTest runs the first form as cpu.checkpoint_h5py_check, label golden):
    python3 scripts/check_checkpoint_h5py.py --writer build/tests/checkpoint_write_for_python
    python3 scripts/check_checkpoint_h5py.py --dir DIR     # check what the writer put in DIR earlier
    python3 scripts/check_checkpoint_h5py.py --train-bin build/bin   # adapt_model and adapt_train there
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


def dataset_names(f):
    """The sorted names of every dataset in the open HDF5 file f."""
    import h5py
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(found)


def run_tool(cmd):
    """Runs one of adapt's programs; on a non-zero exit prints its output, records the failure, False."""
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout)
        fail(f"{Path(cmd[0]).name} exited with {r.returncode}")
    return r.returncode == 0


def hf_cosine_lr(peak, warmup, total, step):
    """transformers.get_cosine_schedule_with_warmup's rate at optimizer step `step` (num_cycles 0.5)."""
    if step < warmup:
        return peak * float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def check_train_checkpoint(bin_dir, tmp):
    """Trains 6 steps with adapt_train and checks its checkpoints with h5py (see the module docstring)."""
    import h5py
    import numpy as np
    from safetensors.numpy import load_file
    tmp = Path(tmp)
    if not run_tool([bin_dir / "adapt_model", "make", "--preset", "tiny", "--out", tmp / "model"]):
        return
    corpus = REPO / "inputs" / "corpus"
    (tmp / "job.toml").write_text(
        f'[model]\npath = "{tmp / "model"}"\n'
        '[adapter]\nkind = "lora"\nseed = 5\n[adapter.lora]\nr = 4\nalpha = 8.0\ndropout = 0.1\n'
        'targets = ["q", "v", "down"]\n'
        f'[data]\ninputs = ["{corpus}"]\nglobs = ["**/*.py"]\nseq_len = 32\ncache_dir = "{tmp / "cache"}"\n'
        '[optim]\nlr = 1e-2\nwarmup_steps = 2\nschedule = "cosine"\n'
        '[train]\nsteps = 6\nmicro_batch = 2\neval_every = 0\n'
        f'[checkpoint]\nevery = 3\nkeep_last = 0\n[run]\ndir = "{tmp / "run"}"\n')
    if not run_tool([bin_dir / "adapt_train", "--config", tmp / "job.toml"]):
        return
    metrics = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    train = {m["step"]: m for m in metrics if m["kind"] == "train"}
    cfg = json.loads((tmp / "model" / "config.json").read_text())
    hidden, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    shapes = {"q": (hidden, hidden), "v": (hidden, cfg["num_key_value_heads"] * head_dim), "down": (inter, hidden)}
    want = {}
    for layer in range(layers):
        for site, (n_in, n_out) in shapes.items():
            want[f"layers.{layer}.{site}.lora_a"] = (4, n_in)
            want[f"layers.{layer}.{site}.lora_b"] = (n_out, 4)
    want_sets = sorted(f"{g}/{p}" for p in want for g in ("adapter", "optim/m", "optim/v"))

    def expect(what, got, value):
        if got != value or type(got) is not type(value):
            fail(f"{what} = {got!r} ({type(got).__name__}), expected {value!r} ({type(value).__name__})")

    ckpts = tmp / "run" / "checkpoints"
    with h5py.File(ckpts / "step_00000003.h5", "r") as f:
        found = dataset_names(f)
        if found != want_sets:
            fail(f"train checkpoint datasets {found[:6]}..., expected {want_sets[:6]}...")
        for p, shape in want.items():
            for g in ("adapter", "optim/m", "optim/v"):
                name = f"{g}/{p}"
                if name not in f:
                    continue
                ds = f[name]
                if ds.dtype != np.float32 or ds.shape != shape or ds.attrs.get("dtype") != "f32":
                    fail(f"/{name}: {ds.dtype} {ds.shape} dtype={ds.attrs.get('dtype')!r}, expected float32 {shape}")
            if f"optim/v/{p}" in f and (f[f"optim/v/{p}"][...] < 0).any():
                fail(f"/optim/v/{p} has negative second moments")
        if not any(np.any(f[f"optim/m/{p}"][...] != 0) for p in want if f"optim/m/{p}" in f):
            fail("every first moment is 0 after 3 steps")
        sched = f["sched"].attrs
        expect("/sched@kind", sched.get("kind"), "cosine")
        expect("/sched@peak_lr", sched.get("peak_lr"), np.float64(1e-2))
        expect("/sched@warmup_steps", sched.get("warmup_steps"), np.int64(2))
        expect("/sched@total_steps", sched.get("total_steps"), np.int64(6))
        expect("/sched@min_lr_ratio", sched.get("min_lr_ratio"), np.float64(0.0))
        for key, step in (("last_lr", 2), ("next_lr", 3)):
            got, hf = float(sched.get(key, float("nan"))), hf_cosine_lr(1e-2, 2, 6, step)
            if not abs(got - hf) <= 1e-15 * hf:
                fail(f"/sched@{key} = {got!r}, transformers' cosine schedule gives {hf!r} at step {step}")
            if got != train[step + 1]["lr"]:
                fail(f"/sched@{key} = {got!r}, metrics.jsonl's lr of step {step + 1} is {train[step + 1]['lr']!r}")
        expect("/rng@dropout_seed", f["rng"].attrs.get("dropout_seed"), np.int64(5))
        data = f["data"].attrs
        for key in ("seed", "epoch", "position", "n_sequences", "fingerprint"):
            if not isinstance(data.get(key), np.int64):
                fail(f"/data@{key} = {data.get(key)!r}, expected an int64")
        if isinstance(data.get("epoch"), np.int64) and isinstance(data.get("n_sequences"), np.int64) and \
                int(data["epoch"]) * int(data["n_sequences"]) + int(data["position"]) != 6:
            fail(f"/data: epoch {data['epoch']} and position {data['position']} of {data['n_sequences']} "
                 "sequences, expected 6 rows drawn")
        expect("/optim@n_steps", f["optim"].attrs.get("n_steps"), np.int64(3))
        expect("/train@adapter_kind", f["train"].attrs.get("adapter_kind"), "lora")
        expect("/train@loss", f["train"].attrs.get("loss"), np.float64(train[3]["loss"]))
        expect("/meta@step", f["meta"].attrs.get("step"), np.int64(3))
    # The last checkpoint's weights are the exported adapter's, bit for bit.
    peft = load_file(str(tmp / "run" / "adapter" / "adapter_model.safetensors"))
    module = {"q": "self_attn.q_proj", "v": "self_attn.v_proj", "down": "mlp.down_proj"}
    with h5py.File(ckpts / "step_00000006.h5", "r") as f:
        for p in want:
            _, layer, site, factor = p.split(".")
            name = f"base_model.model.model.layers.{layer}.{module[site]}.lora_{factor[-1].upper()}.weight"
            if name not in peft:
                fail(f"the exported adapter has no {name}")
            elif not np.array_equal(peft[name], f[f"adapter/{p}"][...]):
                fail(f"the exported {name} differs from the checkpoint's /adapter/{p}")
    if failures:
        return
    n = len(want)
    print(f"OK: h5py reads adapt_train's checkpoints as documented: {n} LoRA factors with their moments, the LR "
          "schedule (transformers' cosine rates), the dropout seed, the loader state and the step; the last "
          f"one's {n} factors equal the exported PEFT file's")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--writer", type=Path, help="the checkpoint_write_for_python executable")
    g.add_argument("--dir", type=Path, help="a folder the writer already filled")
    g.add_argument("--train-bin", type=Path, help="the folder of adapt_model and adapt_train")
    ap.add_argument("--no-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import_or_skip()
    import h5py
    import numpy
    from importlib.metadata import version
    print(f"reference: h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), numpy {numpy.__version__}, "
          f"crc32c {version('crc32c')}, python {sys.version.split()[0]}")
    if args.train_bin:
        try:
            import safetensors  # noqa: F401
        except ImportError as e:
            print(f"skipped: cannot import safetensors ({e}). Install it with './scripts/setup.sh --python'.")
            return EXIT_SKIP
        with tempfile.TemporaryDirectory(prefix="adapt-train-ckpt-check-") as tmp:
            check_train_checkpoint(args.train_bin, tmp)
        if failures:
            print(f"FAILED: {len(failures)} mismatches")
            return 1
        return 0

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
            found = dataset_names(f)
            if found != sorted(exp["tensors"]):
                fail(f"datasets {found}, expected {sorted(exp['tensors'])}")
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
