#!/usr/bin/env python3
"""Check that adapter folders exported by adapt are what PEFT and AdapterHub expect, using Python only.

Purpose: an independent reading of adapt's PEFT LoRA and AdapterHub bottleneck exports. Runs adapt's
test writer (tests/unit/adapters/write_for_python.cpp, built as adapters_write_for_python) into a
temporary folder, then, with Python's `safetensors` (numpy API) and `json`:
  * derives the expected tensor names and shapes from the model dimensions and SPEC-llama.md
    (§5.3: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in] / lora_B [out, r];
    §6.4: model.layers.{i}.{attention,output}_adapters.adapters.<name>.adapter_down.{0,1}..., adapter_up...)
    and requires exactly those in each file, with dtype F32, metadata {"format": "pt"}, and the
    per-parameter value sums adapt recorded;
  * checks adapter_config.json: PEFT's field set and values; AdapterHub's BnConfig fields, among them
    that int(hidden_size // reduction_factor) in Python's own float arithmetic gives the width m and
    that `scaling` is a float (AdapterHub rejects an int);
  * when `peft` or `adapters` can be imported, also parses the configs with them (skipped otherwise).

Invocation (CTest runs it as cpu.adapters_python_check):
    python3 scripts/check_adapter_files.py --writer build/tests/adapters_write_for_python
    python3 scripts/check_adapter_files.py --dir DIR     # check folders written earlier into DIR
Exit status: 0 all match, 1 a mismatch, 77 (CTest: skipped) when safetensors/numpy cannot be imported.
Before skipping, it re-runs itself with the virtual environment that scripts/make_safetensors_fixtures.py
creates (~/.cache/adapt/venv-safetensors) when that exists.
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

failures = []


def fail(msg):
    failures.append(msg)
    print("MISMATCH:", msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def import_or_skip():
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV.resolve() and "--no-venv" not in sys.argv:
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-venv", *sys.argv[1:]])
        print(f"skipped: cannot import the reference packages ({e}). Install them with "
              f"'python3 -m pip install -r scripts/requirements-test.txt'.")
        sys.exit(77)


def read_file(path):
    """Tensors (name -> numpy array), dtypes and metadata of a safetensors file."""
    from safetensors import safe_open
    tensors, dtypes = {}, {}
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    # The dtype strings, from the header itself.
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    for name, info in header.items():
        if name != "__metadata__":
            dtypes[name] = info["dtype"]
    return tensors, dtypes, metadata


def check_tensors(path, expected_shapes, sums_by_tensor):
    tensors, dtypes, metadata = read_file(path)
    check(metadata == {"format": "pt"}, f"{path}: metadata {metadata}, expected {{'format': 'pt'}}")
    missing = sorted(set(expected_shapes) - set(tensors))
    extra = sorted(set(tensors) - set(expected_shapes))
    check(not missing, f"{path}: missing tensors {missing}")
    check(not extra, f"{path}: unexpected tensors {extra}")
    for name, shape in expected_shapes.items():
        if name not in tensors:
            continue
        check(list(tensors[name].shape) == list(shape), f"{path}: {name} has shape {list(tensors[name].shape)}, "
                                                        f"expected {list(shape)}")
        check(dtypes[name] == "F32", f"{path}: {name} has dtype {dtypes[name]}, expected F32")
        if name in sums_by_tensor:
            got = float(tensors[name].astype("float64").sum())
            want = sums_by_tensor[name]
            check(abs(got - want) <= 1e-6 * max(1.0, abs(want)), f"{path}: {name} sums to {got}, adapt wrote {want}")


def proj_dims(model, proj):
    C, F = model["hidden_size"], model["intermediate_size"]
    q = model["num_attention_heads"] * model["head_dim"]
    kv = model["num_key_value_heads"] * model["head_dim"]
    return {"q_proj": (C, q), "k_proj": (C, kv), "v_proj": (C, kv), "o_proj": (q, C),
            "gate_proj": (C, F), "up_proj": (C, F), "down_proj": (F, C)}[proj]


def check_lora(root, model, e):
    d = root / e["dir"]
    r = e["r"]
    shapes, sums = {}, {}
    short = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
             "down_proj": "down"}
    for i in e["layers"]:
        for proj in e["targets"]:
            block = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            fin, fout = proj_dims(model, proj)
            a = f"base_model.model.model.layers.{i}.{block}.{proj}.lora_A.weight"
            b = f"base_model.model.model.layers.{i}.{block}.{proj}.lora_B.weight"
            shapes[a], shapes[b] = (r, fin), (fout, r)
            sums[a] = e["param_sums"][f"layers.{i}.{short[proj]}.lora_a"]
            sums[b] = e["param_sums"][f"layers.{i}.{short[proj]}.lora_b"]
    check_tensors(d / "adapter_model.safetensors", shapes, sums)

    cfg = json.loads((d / "adapter_config.json").read_text())
    fields = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "r", "lora_alpha",
              "lora_dropout", "target_modules", "bias", "fan_in_fan_out", "use_rslora", "use_dora",
              "init_lora_weights", "modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern",
              "alpha_pattern"}
    check(set(cfg) == fields, f"{d}: adapter_config.json keys {sorted(cfg)}, expected {sorted(fields)}")
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "adapt-tiny", "r": r,
            "lora_alpha": e["lora_alpha"], "bias": "none", "use_dora": False, "modules_to_save": None,
            "fan_in_fan_out": False, "inference_mode": True, "layers_to_transform": e["layers"]}
    for k, v in want.items():
        check(cfg.get(k) == v, f"{d}: {k} = {cfg.get(k)!r}, expected {v!r}")
    check(sorted(cfg["target_modules"]) == sorted(e["targets"]), f"{d}: target_modules {cfg['target_modules']}")
    text = (d / "adapter_config.json").read_text()
    check(text == json.dumps(cfg, indent=2, sort_keys=True),
          f"{d}: adapter_config.json is not laid out as json.dumps(indent=2, sort_keys=True)")
    try:
        from peft import LoraConfig
    except ImportError:
        print("note: peft not importable; PEFT's own config parsing skipped")
    else:
        pc = LoraConfig.from_pretrained(str(d))
        check(pc.r == r and pc.lora_alpha == e["lora_alpha"], f"{d}: peft parsed r={pc.r}, alpha={pc.lora_alpha}")
        check(set(pc.target_modules) == set(e["targets"]), f"{d}: peft parsed target_modules {pc.target_modules}")


def check_bottleneck(root, model, e):
    d = root / e["dir"]
    C, m, name = model["hidden_size"], e["m"], e["name"]
    placement = e["placement"]
    sites = [("attention_adapters", "attn"), ("output_adapters", "mlp")] if placement == "houlsby" else \
        [("output_adapters", "mlp")]
    shapes, sums = {}, {}
    for i in e["layers"]:
        for hub_site, site in sites:
            p = f"model.layers.{i}.{hub_site}.adapters.{name}."
            ours = f"layers.{i}.{site}_adapter."
            lin = "adapter_down.0."
            if e["ln_before"]:
                for t in ("weight", "bias"):
                    shapes[p + "adapter_down.0." + t] = (C,)
                    shapes[p + "adapter_norm_before." + t] = (C,)
                    sums[p + "adapter_down.0." + t] = e["param_sums"][ours + "ln." + t]
                    sums[p + "adapter_norm_before." + t] = e["param_sums"][ours + "ln." + t]
                lin = "adapter_down.1."
            shapes[p + lin + "weight"], shapes[p + lin + "bias"] = (m, C), (m,)
            shapes[p + "adapter_up.weight"], shapes[p + "adapter_up.bias"] = (C, m), (C,)
            sums[p + lin + "weight"] = e["param_sums"][ours + "down.weight"]
            sums[p + lin + "bias"] = e["param_sums"][ours + "down.bias"]
            sums[p + "adapter_up.weight"] = e["param_sums"][ours + "up.weight"]
            sums[p + "adapter_up.bias"] = e["param_sums"][ours + "up.bias"]
    check_tensors(d / "adapter.safetensors", shapes, sums)

    full = json.loads((d / "adapter_config.json").read_text())
    check(set(full) == {"config", "hidden_size", "model_class", "model_name", "model_type", "name", "version"},
          f"{d}: adapter_config.json keys {sorted(full)}")
    for k, v in {"hidden_size": C, "model_class": "LlamaForCausalLM", "model_name": "adapt-tiny",
                 "model_type": "llama", "name": name, "version": "adapters.1.2.0"}.items():
        check(full.get(k) == v, f"{d}: {k} = {full.get(k)!r}, expected {v!r}")
    cfg = full["config"]
    want = {"mh_adapter": placement == "houlsby", "output_adapter": True, "is_parallel": placement == "parallel",
            "original_ln_before": placement == "pfeiffer", "original_ln_after": True, "ln_before": e["ln_before"],
            "ln_after": False, "init_weights": "mam_adapter", "non_linearity": e["non_linearity"],
            "scaling": e["scaling"], "use_gating": False, "residual_before_ln": True, "phm_layer": False,
            "inv_adapter": None, "dropout": 0.0,
            "leave_out": [i for i in range(model["num_hidden_layers"]) if i not in e["layers"]]}
    for k, v in want.items():
        check(cfg.get(k) == v, f"{d}: config.{k} = {cfg.get(k)!r}, expected {v!r}")
    check(isinstance(cfg["scaling"], float), f"{d}: config.scaling must be a JSON float, got {cfg['scaling']!r}")
    width = max(1, int(C // cfg["reduction_factor"]))  # AdapterHub's BottleneckLayer.add_adapter
    check(width == m, f"{d}: int({C} // {cfg['reduction_factor']!r}) = {width} in Python, but the adapter has m = {m}")
    text = (d / "adapter_config.json").read_text()
    check(text == json.dumps(full, indent=2, sort_keys=True),
          f"{d}: adapter_config.json is not laid out as json.dumps(indent=2, sort_keys=True)")
    try:
        from adapters import AdapterConfig
    except ImportError:
        print("note: adapters (AdapterHub) not importable; its own config parsing skipped")
    else:
        ac = AdapterConfig.load(cfg)
        check(ac["is_parallel"] == (placement == "parallel"), f"{d}: AdapterHub parsed {ac}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", help="path of the adapters_write_for_python binary")
    ap.add_argument("--dir", help="check folders written earlier into DIR")
    ap.add_argument("--no-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.writer and not args.dir:
        ap.error("give --writer or --dir")
    import_or_skip()
    with tempfile.TemporaryDirectory(prefix="adapt-adapters-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        if args.writer:
            subprocess.run([args.writer, str(root)], check=True)
        expected = json.loads((root / "expected.json").read_text())
        check_lora(root, expected["model"], expected["lora"])
        for e in expected["bottleneck"]:
            check_bottleneck(root, expected["model"], e)
    if failures:
        print(f"{len(failures)} mismatch(es)")
        return 1
    print("adapter folders match PEFT's and AdapterHub's layout (names, shapes, dtypes, values, configs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
