#!/usr/bin/env python3
"""Make the adapter-training golden fixtures with HF peft, torch autograd and AdapterHub (not adapt).

Purpose: adapt's training math (model/llama_train, adapters/, optim/AdamW) and its adapter files
(adapters/adapter_files.h) are compared with independent implementations in
tests/golden/train/train_golden_test.cpp. Writes, under tests/golden/data/train/:

  model/                    a tiny random HF Llama (2 layers, hidden 32, 4 heads / 2 KV heads, head_dim 8,
                            intermediate 48, vocabulary 96, f32) saved by transformers' save_pretrained;
                            weights large enough (q/k std 0.25, embeddings std 1) that attention is far
                            from uniform and every adapter term moves the loss.
  batch.safetensors         input_ids (2, 12) i32 and targets (2, 12) i32: the next token, −100 on a
                            masked prompt (row 1, first 4) and one more position (row 0, t = 7).
  lora_<case>.safetensors   peft 0.13.2 LoraConfig on that model (dropout 0) with non-zero A and B
                            (U(±1/√in) and U(±0.3); B = 0 would leave A without gradient): init.<p>,
                            grad.<p> (torch autograd of HF's mean cross-entropy at init), adamw3.<p>
                            (after 3 steps of torch.optim.AdamW(foreach=False), forward/backward again
                            before each step); metadata: config (r, alpha, use_rslora, targets, layers),
                            adamw (lr, betas, eps, weight_decay), losses (before each step and after the
                            last, as Python floats). <p> are adapt's parameter names ("layers.0.q.lora_a").
  bn_<case>.safetensors     the same for bottleneck adapters, from a torch reference written here that
                            implements adapt's semantics (src/adapters/adapter_config.h, SPEC-llama.md §6.3):
                            with h the sub-block input and f its output, Houlsby h + f + s·A(f) after
                            attention and MLP, Pfeiffer h + f + s·A(h + f) and parallel h + f + s·A(h) after
                            the MLP; A(z) = up(act(down(LN?(z)))), LayerNorm eps 1e-5; every tensor
                            non-zero; AdamW with weight decay on the two weights only (biases and
                            LayerNorm excluded, as adapt's AdapterParam::decay).
  interop/<case>/           adapt's own exports (tests/golden/train/train_golden_export, interop_cases.h):
                            PEFT folders (lora, lora_rslora) and AdapterHub folders (bn_houlsby,
                            bn_pfeiffer, bn_parallel) with deterministic non-zero weights.
  interop.safetensors       input_ids (2, 10) and logits.<case> (2, 10, 96): the HF model with each folder
                            loaded by peft (PeftModel.from_pretrained) or by adapters (adapters.init,
                            load_adapter(use_safetensors=True), set_active_adapters); metadata: library
                            and versions per case. The script also checks those logits against adapt's own
                            (printed) before writing anything.

Seeds: SEED = 20261122 (model weights), SEED + 1 (batch), SEED + 100 + i and SEED + 200 + i (the values
of LoRA case i and bottleneck case i); versions, seeds and the generating commit are recorded in every
file's metadata.

Invocation (from the repository root, after `ninja -C build train_golden_export`):
    python3 scripts/make_train_fixtures.py [--export-tool build/tests/train_golden_export]
                                           [--out tests/golden/data/train]

Python environments (Debian 12, no GPU). Torch is Debian's python3-torch 1.13.1 (`apt-get install
python3-torch`; the script runs it itself when root), seen through --system-site-packages:
  * ~/.cache/adapt/venv-llama (the one scripts/make_llama_fixtures.py makes): transformers 4.46.3,
    tokenizers 0.20.3, safetensors 0.4.5, huggingface-hub 0.26.2, plus peft 0.13.2 (requires torch >=
    1.13.0) and accelerate 0.34.2 (torch >= 1.10.0). Those two are installed with --no-deps: Debian's torch
    reports itself as 1.13.0a0, a pre-release that does not satisfy "torch>=1.13.0", and pip would
    otherwise download PyPI's torch with gigabytes of CUDA libraries.
  * ~/.cache/adapt/venv-adapters: AdapterHub's `adapters` 1.0.1 with transformers 4.45.2. No `adapters`
    release supports transformers 4.46.x (1.0.1 requires ~=4.45.2, 1.1.0 ~=4.47.1, later ones newer
    still, and newer transformers need a newer torch), so AdapterHub gets its own environment, every
    package pinned and installed with --no-deps. The AdapterHub logits come from that environment (this
    script runs scripts/check_peft_interop.py there); the model and the LoRA fixtures do not depend on it.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_llama_fixtures import git_commit  # noqa: E402

CACHE = Path.home() / ".cache" / "adapt"
SEED = 20261122
PINS = {
    "venv-llama": (["transformers==4.46.3", "tokenizers==0.20.3", "safetensors==0.4.5", "huggingface-hub==0.26.2"],
                   ["peft==0.13.2", "accelerate==0.34.2"]),
    "venv-adapters": ([], ["transformers==4.45.2", "tokenizers==0.20.3", "safetensors==0.4.5",
                           "huggingface-hub==0.26.2", "adapters==1.0.1", "filelock==4.2.11", "fsspec==2026.9.0",
                           "packaging==26.3", "regex==2026.11.15", "tqdm==4.70.1"]),
}

MODEL = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
BATCH, TOKENS = 2, 12
ADAMW = {"lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-3, "weight_decay": 0.05}
STEPS = 3
TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]
# name, r, alpha, use_rslora, targets, layers (None: all)
LORA_CASES = [
    ("lora", 4, 8.0, False, TARGETS, None),
    ("rslora", 8, 4.0, True, ["q", "v", "o", "down"], [1]),
]
# name, placement, activation, scaling, ln_before, width m, layers (None: all)
BN_CASES = [
    ("houlsby_relu_ln", "houlsby", "relu", 0.5, True, 8, None),
    ("pfeiffer_swish", "pfeiffer", "swish", 2.0, False, 6, None),
    ("parallel_gelu", "parallel", "gelu", 4.0, False, 16, None),
    ("pfeiffer_gelu_ln", "pfeiffer", "gelu", 1.0, True, 8, [0]),
]


def ensure_environments():
    """Makes both virtual environments and re-runs this script in venv-llama."""
    system_python = "/usr/bin/python3"
    if subprocess.run([system_python, "-c", "import torch"], capture_output=True).returncode != 0:
        if os.geteuid() != 0:
            sys.exit("error: Debian's python3-torch is not installed and this script is not root. Run "
                     "`sudo apt-get install python3-torch python3-venv` and start the script again.")
        subprocess.check_call(["apt-get", "install", "-y", "--no-install-recommends", "python3-torch", "python3-venv"],
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for name, (with_deps, no_deps) in PINS.items():
        py = CACHE / name / "bin" / "python"
        if not py.exists():
            subprocess.check_call([system_python, "-m", "venv", "--system-site-packages", str(CACHE / name)])
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if with_deps:
            subprocess.check_call(pip + with_deps)
        subprocess.check_call(pip + ["--no-deps"] + no_deps)
    py = CACHE / "venv-llama" / "bin" / "python"
    os.execv(str(py), [str(py), __file__, "--in-venv", *sys.argv[1:]])


def make_model(out_dir):
    """The tiny model, saved with save_pretrained (f32 safetensors); returns nothing, load it from out_dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**MODEL, torch_dtype="float32"))
    std = {"embed_tokens": 1.0, "q_proj": 0.25, "k_proj": 0.25, "v_proj": 0.2, "o_proj": 0.2, "gate_proj": 0.2,
           "up_proj": 0.2, "down_proj": 0.2, "lm_head": 0.2}
    with torch.no_grad():
        for name, p in model.named_parameters():
            key = next((k for k in std if k in name), None)
            if key is not None:
                p.copy_(torch.randn(p.shape) * std[key])
            else:  # RMSNorm weights
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)


def make_batch():
    import torch
    g = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, MODEL["vocab_size"], (BATCH, TOKENS + 1), generator=g)
    ids, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    targets[1, :4] = -100  # a prompt without loss
    targets[0, 7] = -100
    return ids, targets


def loss_of(model, ids, targets):
    import torch.nn.functional as F
    logits = model(input_ids=ids, use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def train(model, params, groups, ids, targets):
    """Loss and gradients at the start, then STEPS AdamW steps; returns (losses, grads at the start)."""
    import torch
    opt = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"], foreach=False)
    losses, grads = [], None
    for step in range(STEPS + 1):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, ids, targets)
        losses.append(loss.item())
        if step == STEPS:
            break
        loss.backward()
        if grads is None:
            grads = {n: p.grad.detach().clone() for n, p in params.items()}
        opt.step()
    return losses, grads


def save_case(path, config, params, init, grads, losses, common):
    from safetensors.torch import save_file
    tensors = {}
    for n, p in params.items():
        tensors[f"init.{n}"] = init[n].contiguous()
        tensors[f"grad.{n}"] = grads[n].contiguous()
        tensors[f"adamw{STEPS}.{n}"] = p.detach().clone().contiguous()
    meta = dict(common)
    meta.update({"config": json.dumps(config), "adamw": json.dumps({**ADAMW, "steps": STEPS}),
                 "losses": json.dumps(losses)})
    save_file(tensors, str(path), metadata=meta)
    gmax = max(g.abs().max().item() for g in grads.values())
    print(f"{path.name}: {len(params)} tensors, loss {losses[0]:.6f} -> {losses[-1]:.6f}, max |grad| {gmax:.3e}")


def lora_case(model_dir, index, case, ids, targets, out_dir, common):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    name, r, alpha, rslora, targets_short, layers = case
    base = LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, use_rslora=rslora, bias="none",
                     target_modules=[f"{t}_proj" for t in targets_short], layers_to_transform=layers,
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    model.train()  # dropout is 0: train and eval modes compute the same
    pattern = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)_proj\.lora_([AB])\.default\.weight$")
    params = {}
    g = torch.Generator().manual_seed(SEED + 100 + index)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            m = pattern.search(pname)
            assert m, f"unexpected trainable parameter {pname}"
            adapt_name = f"layers.{m.group(1)}.{m.group(2)}.lora_{m.group(3).lower()}"
            bound = 1.0 / p.shape[1] ** 0.5 if m.group(3) == "A" else 0.3
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            params[adapt_name] = p
    params = dict(sorted(params.items()))
    init = {n: p.detach().clone() for n, p in params.items()}
    losses, grads = train(model, params, [{"params": list(params.values()), "weight_decay": ADAMW["weight_decay"]}],
                          ids, targets)
    config = {"kind": "lora", "r": r, "alpha": alpha, "use_rslora": rslora, "targets": targets_short,
              "layers": layers if layers is not None else list(range(MODEL["num_hidden_layers"]))}
    save_case(out_dir / f"lora_{name}.safetensors", config, params, init, grads, losses, common)


def make_bottleneck(hidden, m, activation, scaling, ln_before):
    """A(z) = s·up(act(down(LN?(z)))) as a torch module whose parameters are named like adapt's."""
    import torch
    import torch.nn.functional as F
    acts = {"relu": F.relu, "swish": F.silu, "gelu": F.gelu}  # gelu: exact (erf)

    class Bottleneck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(hidden, eps=1e-5) if ln_before else None
            self.down = torch.nn.Linear(hidden, m)
            self.up = torch.nn.Linear(m, hidden)

        def forward(self, z):
            x = self.ln(z) if self.ln is not None else z
            return scaling * self.up(acts[activation](self.down(x)))

    return Bottleneck()


def attach_bottleneck(layer, placement, attn_adapter, mlp_adapter):
    """Replaces the decoder layer's forward by adapt's: h + f (+ s·A(z)) after each sub-block."""

    def forward(hidden_states, attention_mask=None, position_ids=None, past_key_value=None, output_attentions=False,
                use_cache=False, cache_position=None, position_embeddings=None, **kwargs):
        h = hidden_states
        f = layer.self_attn(hidden_states=layer.input_layernorm(h), attention_mask=attention_mask,
                            position_ids=position_ids, past_key_value=None, output_attentions=False, use_cache=False,
                            cache_position=cache_position, position_embeddings=position_embeddings)[0]
        out = h + f
        if attn_adapter is not None:  # Houlsby only
            out = out + attn_adapter(f)
        h = out
        f = layer.mlp(layer.post_attention_layernorm(h))
        out = h + f
        if mlp_adapter is not None:
            z = {"houlsby": f, "pfeiffer": h + f, "parallel": h}[placement]
            out = out + mlp_adapter(z)
        return (out,)

    layer.forward = forward


def bn_case(model_dir, index, case, ids, targets, out_dir, common):
    import torch
    from transformers import LlamaForCausalLM
    name, placement, activation, scaling, ln_before, m, layers = case
    model = LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = layers if layers is not None else list(range(MODEL["num_hidden_layers"]))
    g = torch.Generator().manual_seed(SEED + 200 + index)
    params, decay, no_decay = {}, [], []
    hidden = MODEL["hidden_size"]
    for li, layer in enumerate(model.model.layers):
        if li not in layers:
            continue
        site_adapters = {}
        for site in (["attn"] if placement == "houlsby" else []) + ["mlp"]:
            mod = make_bottleneck(hidden, m, activation, scaling, ln_before)
            with torch.no_grad():
                for pname, p in mod.named_parameters():
                    u = torch.rand(p.shape, generator=g) * 2 - 1
                    bound = {"down.weight": 1.0 / hidden ** 0.5, "up.weight": 0.3}.get(pname, 0.2)
                    p.copy_(u * bound + (1.0 if pname == "ln.weight" else 0.0))
                    params[f"layers.{li}.{site}_adapter.{pname}"] = p
                    (decay if pname.endswith("weight") and not pname.startswith("ln") else no_decay).append(p)
            site_adapters[site] = mod
        attach_bottleneck(layer, placement, site_adapters.get("attn"), site_adapters.get("mlp"))
    model.train()
    params = dict(sorted(params.items()))
    init = {n: p.detach().clone() for n, p in params.items()}
    losses, grads = train(model, params, [{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                                          {"params": no_decay, "weight_decay": 0.0}], ids, targets)
    config = {"kind": "bottleneck", "placement": placement, "activation": activation, "scaling": scaling,
              "ln_before": ln_before, "size": m, "layers": layers}
    save_case(out_dir / f"bn_{name}.safetensors", config, params, init, grads, losses, common)


def interop(export_tool, model_dir, out_dir, common):
    """adapt's exports, committed, and the logits peft / adapters give with them."""
    import check_peft_interop as live
    from safetensors.torch import load_file, save_file

    interop_dir = out_dir / "interop"
    with tempfile.TemporaryDirectory(prefix="adapt-train-fixtures-") as tmp:
        tmp = Path(tmp)
        export = tmp / "export"
        subprocess.run([str(export_tool), str(model_dir), str(export)], check=True)
        adapt = load_file(str(export / "adapt_logits.safetensors"))
        cases = json.loads(live.read_metadata(export / "adapt_logits.safetensors")["cases"])
        if interop_dir.exists():
            shutil.rmtree(interop_dir)
        interop_dir.mkdir(parents=True)
        for case in cases:
            shutil.copytree(export / case, interop_dir / case)
        tensors = {"input_ids": adapt["input_ids"]}
        libraries = {}
        for library in live.VENVS:
            saved = tmp / f"{library}.safetensors"
            rc = live.run_library(library, export, model_dir, save=saved, compare=True)
            if rc is None:
                print(f"warning: {library} is not importable; its cases get no reference logits")
                continue
            if rc != 0:
                sys.exit(f"error: adapt's exports loaded by {library} do not reproduce adapt's logits (see above)")
            tensors.update(load_file(str(saved)))
            libraries[library] = live.read_metadata(saved)["library"]
    meta = dict(common)
    meta.update({"cases": json.dumps(cases), "libraries": json.dumps(libraries),
                 "export_tool": "tests/golden/train/train_golden_export.cpp"})
    save_file(tensors, str(out_dir / "interop.safetensors"), metadata=meta)
    print(f"interop.safetensors: {sorted(k for k in tensors if k != 'input_ids')} ({', '.join(libraries.values())})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-tool", default=str(ROOT / "build" / "tests" / "train_golden_export"))
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "data" / "train"))
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.in_venv:
        ensure_environments()
        return

    import numpy as np
    import peft
    import safetensors
    import torch
    import transformers
    from safetensors.torch import save_file

    export_tool = Path(args.export_tool).resolve()
    if not export_tool.exists():
        sys.exit(f"error: {export_tool} not found; build it first (ninja -C build train_golden_export) or pass "
                 "--export-tool PATH")
    torch.set_num_threads(1)  # the same summation order on every machine
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__}
    common = {"generator": "scripts/make_train_fixtures.py", "commit": git_commit(), "seed": str(SEED),
              "versions": json.dumps(versions, sort_keys=True)}

    model_dir = out_dir / "model"
    make_model(model_dir)
    ids, targets = make_batch()
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "targets": targets.to(torch.int32).contiguous()},
              str(out_dir / "batch.safetensors"), metadata=common)
    for index, case in enumerate(LORA_CASES):
        lora_case(model_dir, index, case, ids, targets, out_dir, common)
    for index, case in enumerate(BN_CASES):
        bn_case(model_dir, index, case, ids, targets, out_dir, common)
    interop(export_tool, model_dir, out_dir, common)


if __name__ == "__main__":
    main()
