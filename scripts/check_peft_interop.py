#!/usr/bin/env python3
"""Load adapt's adapter exports with HF `peft` and AdapterHub `adapters` and compare their logits with adapt's.

Purpose: the live half of adapt's interop check (the committed half is tests/golden/train/, which CI
runs without torch). Runs adapt's export tool (tests/golden/train/train_golden_export.cpp, built as
train_golden_export) into a temporary folder; it writes the adapters of interop_cases.h (LoRA with every
target, rsLoRA on a subset, and Houlsby / Pfeiffer / parallel bottleneck adapters, all with non-zero
weights) for the tiny model tests/golden/data/train/model, plus adapt's own logits on fixed token ids.
Then, for every folder:
  * PEFT LoRA:  LlamaForCausalLM.from_pretrained(model, float32) + PeftModel.from_pretrained(folder);
  * AdapterHub: adapters.init(model); model.load_adapter(folder, use_safetensors=True); set_active_adapters;
and the logits of those models must equal adapt's within a relative error of 1e-4 (max |diff| over
max |reference|; f32 against f32, the same bound as tests/golden/llama_forward).

Python environments (made by scripts/make_train_fixtures.py; both see Debian's python3-torch 1.13):
  ~/.cache/adapt/venv-llama     transformers 4.46.3, peft 0.13.2, accelerate 0.34.2
  ~/.cache/adapt/venv-adapters  transformers 4.45.2, adapters 1.0.1 (no AdapterHub release supports
                                transformers 4.46.x: adapters 1.0.1 requires ~=4.45.2, 1.1.0 ~=4.47.1)
Each library's check runs in the environment that has it (this script re-runs itself there).

Invocation (CTest runs it as cpu.train_interop_live):
    python3 scripts/check_peft_interop.py --writer build/tests/train_golden_export
Exit status: 0 every available check passed, 1 a mismatch or an error, 77 (CTest: skipped) when
neither peft nor adapters can be imported anywhere (with a "skipped:" line, which scripts/test.sh's summary
lists); a library that is missing while the other ran is reported with a "skipped <library>:" line.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "tests" / "golden" / "data" / "train" / "model"
CACHE = Path.home() / ".cache" / "adapt"
VENVS = {"peft": CACHE / "venv-llama", "adapters": CACHE / "venv-adapters"}
REL_TOL = 1e-4


def load_base(model_dir):
    import torch
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32,
                                            attn_implementation="eager").eval()


def library_logits(library, model_dir, adapter_dir, ids):
    """Logits (B, T, V) of the base model in model_dir with the adapter folder loaded by `library`."""
    import torch
    model = load_base(model_dir)
    if library == "peft":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    elif library == "adapters":
        import adapters
        adapters.init(model)
        with tempfile.TemporaryDirectory(prefix="adapt-interop-ah-") as tmp:
            name = model.load_adapter(str(adapters_loadable(adapter_dir, Path(tmp))), use_safetensors=True)
        model.set_active_adapters(name)
        model.eval()
    else:
        raise ValueError(library)
    with torch.no_grad():
        return model(input_ids=ids.long()).logits.float().contiguous()


def adapters_loadable(adapter_dir, tmp):
    """adapter_dir, or a copy that AdapterHub's `adapters` before 1.2.0 can load. Those versions crash
    while initialising an "mam_adapter" with ln_before (they call kaiming_uniform_ on adapter_down[0],
    which is then the 1-D LayerNorm weight; fixed in 1.2.0, which needs a newer transformers and torch).
    init_weights only chooses the values that load_adapter then overwrites, so the copy says "bert"."""
    import adapters
    from packaging.version import Version
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    bn = cfg["config"]
    if Version(adapters.__version__) >= Version("1.2.0") or not (bn.get("ln_before") and bn.get("init_weights") == "mam_adapter"):
        return adapter_dir
    copy = tmp / adapter_dir.name
    shutil.copytree(adapter_dir, copy)
    bn["init_weights"] = "bert"
    (copy / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    print(f"  note: {adapter_dir.name}: loaded with init_weights \"bert\" instead of \"mam_adapter\" (adapters "
          f"{adapters.__version__} cannot initialise mam_adapter with ln_before; the loaded weights replace either)")
    return copy


def library_version(library):
    import importlib
    import transformers
    return f"{library} {importlib.import_module(library).__version__}, transformers {transformers.__version__}"


def read_metadata(path):
    """The __metadata__ of a safetensors file (from its JSON header)."""
    with open(path, "rb") as f:
        return json.loads(f.read(int.from_bytes(f.read(8), "little"))).get("__metadata__", {})


def rel_error(ours, ref):
    return float((ours - ref).abs().max() / ref.abs().max())


def compute(args):
    """In an environment that has the library: logits of every case it loads; compared with adapt's
    (--compare) and/or saved (--save)."""
    from safetensors.torch import load_file, save_file
    export = Path(args.dir)
    adapt = load_file(str(export / "adapt_logits.safetensors"))
    cases = json.loads(read_metadata(export / "adapt_logits.safetensors")["cases"])
    ids = adapt["input_ids"]
    print(f"{args.compute}: {library_version(args.compute)}")
    out, bad = {}, 0
    for case, library in cases.items():
        if library != args.compute:
            continue
        logits = library_logits(library, args.model, export / case, ids)
        out[f"logits.{case}"] = logits
        if args.compare:
            err = rel_error(adapt[f"logits.{case}"], logits)
            base_shift = rel_error(load_base(args.model)(input_ids=ids.long()).logits.detach(), logits)
            ok = err <= REL_TOL and base_shift > 1e-2
            bad += not ok
            print(f"  {case}: max |adapt - {library}| / max |{library}| = {err:.2e} (tolerance {REL_TOL:.0e}); "
                  f"the adapter moves the logits by {base_shift:.2e} of their scale{'' if ok else '  MISMATCH'}")
    if args.save:
        save_file(out, args.save, metadata={"library": library_version(args.compute)})
    return 1 if bad else 0


def python_for(library):
    """An interpreter that can import `library` (this one, or its environment's), or None."""
    candidates = [sys.executable, str(VENVS[library] / "bin" / "python")]
    for py in candidates:
        if Path(py).exists() and subprocess.run([py, "-c", f"import {library}, torch, safetensors"],
                                                capture_output=True).returncode == 0:
            return py
    return None


def run_library(library, export_dir, model_dir, save=None, compare=True):
    """Runs the check of one library in its environment; returns its exit status, or None when the
    library is not importable anywhere."""
    py = python_for(library)
    if py is None:
        return None
    cmd = [py, __file__, "--compute", library, "--dir", str(export_dir), "--model", str(model_dir)]
    if save:
        cmd += ["--save", str(save)]
    if compare:
        cmd.append("--compare")
    return subprocess.run(cmd).returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writer", help="adapt's export tool (train_golden_export)")
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--compute", choices=sorted(VENVS), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    ap.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compute:
        return compute(args)
    if not args.writer:
        ap.error("--writer is required")

    missing = [lib for lib in VENVS if python_for(lib) is None]
    if len(missing) == len(VENVS):
        print("skipped: neither peft nor adapters (AdapterHub) is importable with torch; run "
              "scripts/make_train_fixtures.py to create ~/.cache/adapt/venv-llama (peft) and "
              "~/.cache/adapt/venv-adapters (adapters)")
        return 77
    with tempfile.TemporaryDirectory(prefix="adapt-interop-") as tmp:
        res = subprocess.run([args.writer, args.model, tmp], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"FAIL: {args.writer} exited with {res.returncode}:\n{res.stdout}{res.stderr}")
            return 1
        status = 0
        for library in VENVS:
            if library in missing:
                why = (" (no adapters release supports transformers 4.46.x, so AdapterHub gets its own environment "
                       "with adapters 1.0.1 + transformers 4.45.2)" if library == "adapters" else "")
                print(f"skipped {library}: not importable with torch here or in {VENVS[library]}{why}; run "
                      "scripts/make_train_fixtures.py to create it")
                continue
            rc = run_library(library, tmp, args.model)
            if rc != 0:
                print(f"FAIL: the {library} check exited with {rc}")
                status = 1
    print("OK" if status == 0 else "FAILED")
    return status


if __name__ == "__main__":
    sys.exit(main())
