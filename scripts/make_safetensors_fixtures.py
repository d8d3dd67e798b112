#!/usr/bin/env python3
"""Make the safetensors golden fixtures with Python's reference `safetensors` package (not adapt).

Purpose: adapt's reader (src/io) is tested against files that the reference writer produced, and its
writer is tested byte for byte against them (tests/unit/io/safetensors_golden_test.cpp). Writes, under
tests/golden/data/safetensors/:
  dtypes.safetensors  tensors of every dtype adapt reads (F32, F16, BF16, I32, I64, U8), with
                      special values (+-0, +-Inf, NaN, subnormals), a scalar and zero-size tensors
  others.safetensors  dtypes adapt has no DType for (F64, I8, I16, U16, U32, U64, BOOL, F8_E4M3)
  model/              a tiny Llama-shaped BF16 model split into shards by huggingface_hub's
                      split_state_dict_into_shards_factory, plus model.safetensors.index.json
                      formatted as transformers' save_pretrained writes it
  expected.json       per file and tensor: dtype, shape, data_offsets, sha256 of the tensor bytes, the
                      first values (and bit patterns for 16-bit floats), sha256 of row/column slices
                      cut with numpy; the model's weight map; huggingface_hub's split of several
                      synthetic size lists; package versions, seed and git commit.

Invocation (from the repository root; needs network access to PyPI the first time):
    python3 scripts/make_safetensors_fixtures.py [--out tests/golden/data/safetensors]
                                                 [--venv ~/.cache/adapt/venv-safetensors]
The script creates the virtual environment if needed, pip-installs the pinned packages
(scripts/requirements-test.txt plus huggingface_hub, below) into it and re-runs itself there. The
tensor files are deterministic (fixed seed): rerunning rewrites them identically.
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRA_PINS = ["huggingface_hub==0.26.2"]  # only the fixture generator needs it
SEED = 20260521
FILENAME_PATTERN = "model{suffix}.safetensors"  # huggingface_hub's default


def pins():
    lines = (ROOT / "scripts" / "requirements-test.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")] + EXTRA_PINS


def ensure_venv(venv: Path):
    """Re-runs this script inside `venv` with the pinned packages installed."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    subprocess.check_call([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins()])
    os.execv(str(py), [str(py), __file__, "--in-venv", *sys.argv[1:]])


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def git_commit():
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "scripts"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def json_value(x):
    """A numpy scalar as JSON: ints exact, floats as Python floats, non-finite as strings."""
    import numpy as np
    if isinstance(x, (np.integer, np.bool_)):
        return int(x)
    f = float(x)
    if f != f:
        return "nan"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    return f


def st_dtype_name(a):
    """The dtype string the Python binding's serialize() takes."""
    import ml_dtypes
    import numpy as np
    if a.dtype == ml_dtypes.bfloat16:
        return "bfloat16"
    if a.dtype == ml_dtypes.float8_e4m3fn:
        return "float8_e4m3fn"
    return {np.dtype(np.bool_): "bool"}.get(a.dtype, a.dtype.name)


def save(path: Path, tensors: dict):
    """Writes with the reference serializer; metadata is only {"format": "pt"} so the header is
    deterministic (the reference writes a multi-key metadata map in hash order)."""
    from safetensors import serialize_file
    flat = {k: {"dtype": st_dtype_name(v), "shape": list(v.shape), "data": v.tobytes()} for k, v in tensors.items()}
    serialize_file(flat, str(path), metadata={"format": "pt"})


def describe(path: Path, tensors: dict) -> dict:
    """What the C++ golden test checks for one file, read back with safetensors' own reader."""
    import numpy as np
    from safetensors import safe_open
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {"size_bytes": len(raw), "sha256": sha256(raw), "header_bytes": n,
           "metadata": header.get("__metadata__", {}), "tensors": {}}
    with safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors), "reader and writer disagree on the tensor names"
    for name, a in tensors.items():
        h = header[name]
        data = raw[8 + n + h["data_offsets"][0]:8 + n + h["data_offsets"][1]]
        assert data == a.tobytes(), f"{name}: stored bytes differ from the array"
        flat = a.reshape(-1)
        t = {"dtype": h["dtype"], "shape": h["shape"], "data_offsets": h["data_offsets"], "sha256": sha256(data)}
        if h["dtype"] in ("F32", "F16", "BF16", "I32", "I64", "U8"):
            t["values"] = [json_value(x) for x in flat[:8]]
        if h["dtype"] in ("F16", "BF16"):
            t["bits"] = [int(x) for x in flat[:8].view(np.uint16)]
        if a.ndim >= 1 and a.shape[0] >= 3:
            t["rows"] = {"begin": 1, "n": 2, "sha256": sha256(np.ascontiguousarray(a[1:3]).tobytes())}
        if a.ndim == 2 and a.shape[1] >= 5:
            t["cols"] = {"begin": 2, "n": 3, "sha256": sha256(np.ascontiguousarray(a[:, 2:5]).tobytes())}
        out["tensors"][name] = t
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / "data" / "safetensors")
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "adapt" / "venv-safetensors")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.in_venv:
        ensure_venv(args.venv)

    import huggingface_hub
    import ml_dtypes
    import numpy as np
    import safetensors
    from huggingface_hub import split_state_dict_into_shards_factory

    rng = np.random.default_rng(SEED)
    bf16, f8 = ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn
    out = args.out
    (out / "model").mkdir(parents=True, exist_ok=True)

    dtypes = {
        "f32.matrix": rng.standard_normal((3, 5)).astype(np.float32),
        "f16.matrix": rng.standard_normal((4, 6)).astype(np.float16),
        "bf16.tensor3": rng.standard_normal((3, 3, 4)).astype(np.float32).astype(bf16),
        "bf16.weight": rng.standard_normal((8, 12)).astype(np.float32).astype(bf16),
        "bf16.special": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 3.3895e38, 1.0],
                                 dtype=np.float32).astype(bf16),
        "f16.special": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, 65504.0, -1.0], dtype=np.float16),
        "i32.vector": np.array([0, 1, -1, 2**31 - 1, -2**31, 123456, -7], dtype=np.int32),
        "i64.matrix": np.array([[2**40 + 1, -2**62, 0], [2**63 - 1, -2**63, 42]], dtype=np.int64),
        "u8.vector": np.array([0, 1, 2, 127, 128, 200, 254, 255, 3, 9], dtype=np.uint8),
        "f32.scalar": np.array(3.25, dtype=np.float32),
        "f32.empty": np.zeros((2, 0), dtype=np.float32),
        "bf16.empty": np.zeros((0,), dtype=np.float32).astype(bf16),
    }
    others = {
        "f64.matrix": rng.standard_normal((3, 2)),
        "i8.vector": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
        "i16.vector": np.array([-32768, -2, 2, 32767], dtype=np.int16),
        "u16.vector": np.array([0, 1, 65535], dtype=np.uint16),
        "u32.vector": np.array([0, 4294967295], dtype=np.uint32),
        "u64.vector": np.array([0, 18446744073709551615], dtype=np.uint64),
        "bool.mask": np.array([True, False, False, True]),
        "f8.values": np.array([0.0, 1.0, -2.5, 448.0], dtype=np.float32).astype(f8),
    }
    save(out / "dtypes.safetensors", dtypes)
    save(out / "others.safetensors", others)

    # A tiny Llama-shaped model (V=64, H=16, I=32, L=2, k/v projections of 8 rows), in HF state-dict order.
    V, H, I, KV = 64, 16, 32, 8
    model = {"model.embed_tokens.weight": (V, H)}
    for layer in range(2):
        p = f"model.layers.{layer}."
        model.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                      p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                      p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                      p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
                      p + "post_attention_layernorm.weight": (H,)})
    model.update({"model.norm.weight": (H,), "lm_head.weight": (V, H)})
    model = {k: (rng.standard_normal(s) * 0.02).astype(np.float32).astype(bf16) for k, s in model.items()}
    max_shard_size = 2000  # embed_tokens and lm_head (2048 bytes) are larger: each gets its own shard
    split = split_state_dict_into_shards_factory(model, get_storage_size=lambda a: a.nbytes,
                                                 filename_pattern=FILENAME_PATTERN, max_shard_size=max_shard_size)
    for old in (out / "model").iterdir():
        old.unlink()
    for filename, names in split.filename_to_tensors.items():
        save(out / "model" / filename, {k: model[k] for k in names})
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (out / "model" / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def split_case(sizes, limit):
        d = {f"t{i}": s for i, s in enumerate(sizes)}
        s = split_state_dict_into_shards_factory(d, get_storage_size=lambda x: x, filename_pattern=FILENAME_PATTERN,
                                                 max_shard_size=limit)
        return {"sizes": sizes, "max_shard_size": limit,
                "shards": [[int(k[1:]) for k in names] for names in s.filename_to_tensors.values()]}

    expected = {
        "generator": "scripts/make_safetensors_fixtures.py",
        "git_commit": git_commit(),
        "seed": SEED,
        "versions": {"python": platform.python_version(), "safetensors": safetensors.__version__,
                     "numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__,
                     "huggingface_hub": huggingface_hub.__version__},
        "files": {"dtypes.safetensors": describe(out / "dtypes.safetensors", dtypes),
                  "others.safetensors": describe(out / "others.safetensors", others)},
        "model": {
            "dir": "model",
            "max_shard_size": max_shard_size,
            "total_size": split.metadata["total_size"],
            "order": list(model),
            "shards": {f: describe(out / "model" / f, {k: model[k] for k in names})
                       for f, names in split.filename_to_tensors.items()},
            "weight_map": split.tensor_to_filename,
            "index_sha256": sha256((out / "model" / "model.safetensors.index.json").read_bytes()),
        },
        "split_cases": [split_case([6, 6, 2, 6, 2, 2], 10), split_case([3, 12, 3, 3, 12, 1], 10),
                        split_case([5, 5, 5], 5), split_case([0, 0, 4, 0], 4), split_case([1], 10),
                        split_case([11], 10), split_case([4, 4, 11, 4], 10)],
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total} bytes) with safetensors {safetensors.__version__}, seed {SEED}")


if __name__ == "__main__":
    main()
