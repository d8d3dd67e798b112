#!/usr/bin/env python3
"""Make the Llama forward-pass golden fixtures with Hugging Face transformers (not adapt).

Purpose: adapt's CPU forward pass (src/model/llama_forward.*) is compared with transformers'
LlamaForCausalLM on the very same weights (tests/golden/llama_forward/). For every case below the
script builds the model folder with adapt's own deterministic generator
(`adapt_model make --recipe RECIPE --out DIR`), loads that folder with
`LlamaForCausalLM.from_pretrained(DIR, torch_dtype=torch.float32)` (bf16 weights are widened exactly),
runs a batch of random token sequences and writes, under tests/golden/data/llama/:

  <case>.safetensors   input_ids (I32, B x T), logits (F32, B x T x V: the full logits of every
                       position), probe.embed / probe.wq0 (F32: the first 16 values of
                       model.embed_tokens.weight and model.layers.0.self_attn.q_proj.weight as
                       transformers loaded them, before qk_scale, so the C++ test can tell
                       "adapt_model make changed" apart from "the forward pass is wrong"); metadata:
                       recipe, qk_scale (see CASES), seeds, package versions, the generating commit,
                       the sha256 of every weight file.
  generate.safetensors greedy generation on the `tiny` case: prompt (I32), tokens (I32, the 32 new
                       tokens of `generate(do_sample=False)` with end-of-sequence stopping disabled),
                       margins (F32, top-1 minus top-2 logit at each step: how robust each choice is).

The model folders are not committed: the C++ test regenerates them from the same recipes with the
same adapt_model, which is deterministic per seed, and checks the probes first.

Invocation (from the repository root, after building adapt_model, e.g. `ninja -C build app_adapt_model`):
    python3 scripts/make_llama_fixtures.py [--adapt-model build/bin/adapt_model]
                                           [--out tests/golden/data/llama]
                                           [--venv ~/.cache/adapt/venv-llama]

Python environment (what worked on Debian 12 without a GPU, and why):
  * Debian's python3-torch (1.13.1+dfsg, for /usr/bin/python3 3.11) via `apt-get install python3-torch`.
    This script runs apt-get itself when it is root and torch is missing. PyPI's torch wheel was not
    needed (it is a large download that brings CUDA libraries).
  * A virtual environment made with --system-site-packages (so it sees Debian's torch and numpy
    1.24) and the pins below from PyPI. transformers 4.46.3 (DESIGN.md's lead: "before 4.47") loads
    and runs LlamaForCausalLM on torch 1.13 here; later releases were not tried. tokenizers 0.20.3 is
    the range 4.46.3 requires; huggingface-hub is pinned because pip otherwise picks the newest.
  * transformers' generate() imports torch.distributed.fsdp to ask "is this module FSDP-wrapped?",
    and Debian's torch 1.13 fails that import on Python 3.11 (a dataclass with a mutable default).
    The script answers the question itself (always "no") before calling generate().
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ["transformers==4.46.3", "tokenizers==0.20.3", "safetensors==0.4.5", "huggingface-hub==0.26.2"]
SEED = 20260522  # token ids of every case derive from it

# name, recipe, batch, tokens per sequence, qk_scale. Shapes are deliberately not multiples of adapt's
# tile sizes (64 keys, 64 query rows), and the llama3 cases run past original_max_position_embeddings
# = 64. qk_scale multiplies q_proj and k_proj of every layer after loading (exactly, a power of two,
# on both sides): random weights of std 0.02 give near-uniform attention, where a wrong RoPE band or
# mask barely moves the logits; with 8x larger scores a wrong llama3 scaling moves them by ~30%.
CASES = [
    # MHA (1 query head per KV head), default RoPE, untied, f32 weights; the model exactly as made.
    ("tiny_mha_default_rope", "inputs/models/tiny-mha-default-rope.toml", 3, 37, 1.0),
    # GQA 2, llama3 rope scaling (original context 64) over 200 positions, untied, bf16 weights.
    ("tiny", "inputs/models/tiny.toml", 2, 200, 8.0),
    # GQA 4, head_dim 8, llama3 scaling, tied embeddings, f32 weights.
    ("tiny_gqa4_tied", "inputs/models/tiny-gqa4-tied.toml", 2, 100, 8.0),
    # Linear rope scaling (factor 2), GQA 2, untied, f32 weights.
    ("tiny_linear_rope", "tests/golden/data/llama/tiny-linear-rope.toml", 1, 80, 8.0),
]
# Greedy generation runs on the tiny model exactly as adapt_model makes it (no qk_scale), with a
# prompt cut from the tiny case's first sequence.
GENERATE_CASE = "tiny"
GENERATE_PROMPT_TOKENS = 16
GENERATE_NEW_TOKENS = 32


def ensure_torch_and_venv(venv: Path):
    """Re-runs this script with a Python that has torch (Debian's) and the pinned packages."""
    system_python = "/usr/bin/python3"
    has_torch = subprocess.run([system_python, "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        if os.geteuid() != 0:
            sys.exit("error: Debian's python3-torch is not installed and this script is not root. Run "
                     "`sudo apt-get install python3-torch` and start the script again.")
        subprocess.check_call(["apt-get", "install", "-y", "--no-install-recommends", "python3-torch", "python3-venv"],
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.check_call([system_python, "-m", "venv", "--system-site-packages", str(venv)])
    subprocess.check_call([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS])
    os.execv(str(py), [str(py), __file__, "--in-venv", *sys.argv[1:]])


def git_commit():
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "scripts", "src", "inputs"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_model(adapt_model: Path, recipe: str, out: Path):
    subprocess.run([str(adapt_model), "make", "--recipe", str(ROOT / recipe), "--out", str(out), "--force"],
                   check=True, capture_output=True, text=True)


def fsdp_import_workaround():
    """generate() asks whether the model is FSDP-wrapped by importing torch.distributed.fsdp, which
    Debian's torch 1.13 cannot import on Python 3.11. It is never wrapped here."""
    import transformers.generation.utils as gen_utils
    gen_utils.is_fsdp_managed_module = lambda module: False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapt-model", default=str(ROOT / "build" / "bin" / "adapt_model"))
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "data" / "llama"))
    ap.add_argument("--venv", default=str(Path.home() / ".cache" / "adapt" / "venv-llama"))
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.in_venv:
        ensure_torch_and_venv(Path(args.venv))
        return

    import numpy as np
    import safetensors
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaForCausalLM

    adapt_model = Path(args.adapt_model).resolve()
    if not adapt_model.exists():
        sys.exit(f"error: {adapt_model} not found; build it first (ninja -C build app_adapt_model) or pass "
                 "--adapt-model PATH")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    versions = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__,
    }
    common = {"generator": "scripts/make_llama_fixtures.py", "commit": git_commit(), "seed": str(SEED),
              "versions": json.dumps(versions, sort_keys=True)}
    fsdp_import_workaround()

    with tempfile.TemporaryDirectory(prefix="adapt-llama-fixtures-") as tmp:
        for index, (name, recipe, batch, n_tokens, qk_scale) in enumerate(CASES):
            model_dir = Path(tmp) / name
            make_model(adapt_model, recipe, model_dir)
            model = LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
            sd = model.state_dict()
            probes = {
                "probe.embed": sd["model.embed_tokens.weight"].flatten()[:16].float().clone(),
                "probe.wq0": sd["model.layers.0.self_attn.q_proj.weight"].flatten()[:16].float().clone(),
            }
            with torch.no_grad():
                for layer in model.model.layers:
                    layer.self_attn.q_proj.weight.mul_(qk_scale)
                    layer.self_attn.k_proj.weight.mul_(qk_scale)
            cfg = model.config
            rng = np.random.RandomState(SEED + index)
            ids = torch.from_numpy(rng.randint(0, cfg.vocab_size, size=(batch, n_tokens)).astype(np.int64))
            with torch.no_grad():
                logits = model(input_ids=ids).logits.float().contiguous()
            tensors = {"input_ids": ids.to(torch.int32).contiguous(), "logits": logits, **probes}
            weight_files = sorted(model_dir.glob("*.safetensors"))
            meta = dict(common)
            meta.update({
                "case": name, "recipe": recipe, "batch": str(batch), "tokens": str(n_tokens), "qk_scale": repr(qk_scale),
                "ids_seed": str(SEED + index), "attn_implementation": str(cfg._attn_implementation),
                "weights_sha256": json.dumps({f.name: file_sha256(f) for f in weight_files}, sort_keys=True),
                "config": json.dumps(cfg.to_dict(), sort_keys=True, default=str),
            })
            save_file(tensors, str(out_dir / f"{name}.safetensors"), metadata=meta)
            print(f"{name}: logits {tuple(logits.shape)}, max |logit| {logits.abs().max().item():.4f}, "
                  f"attention '{cfg._attn_implementation}'")

            if name == GENERATE_CASE:
                model = LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
                prompt = ids[:1, :GENERATE_PROMPT_TOKENS]
                gen_cfg = GenerationConfig(max_new_tokens=GENERATE_NEW_TOKENS, do_sample=False, eos_token_id=None,
                                           pad_token_id=cfg.bos_token_id, bos_token_id=cfg.bos_token_id)
                with torch.no_grad():
                    res = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                         generation_config=gen_cfg, output_scores=True, return_dict_in_generate=True)
                new_tokens = res.sequences[0, prompt.shape[1]:]
                assert new_tokens.numel() == GENERATE_NEW_TOKENS, new_tokens
                top2 = torch.stack([s[0].float().topk(2).values for s in res.scores])
                margins = (top2[:, 0] - top2[:, 1]).contiguous()
                # Cross-check generate() against argmax of full forwards (no KV cache).
                seq = prompt.clone()
                with torch.no_grad():
                    for _ in range(GENERATE_NEW_TOKENS):
                        nxt = model(input_ids=seq).logits[0, -1].argmax().view(1, 1)
                        seq = torch.cat([seq, nxt], dim=1)
                assert torch.equal(seq[0, prompt.shape[1]:], new_tokens), "generate() disagrees with argmax"
                gmeta = dict(common)
                gmeta.update({"case": name, "recipe": recipe, "prompt": f"input_ids[0, :{GENERATE_PROMPT_TOKENS}] of "
                              f"{name}.safetensors", "method": "generate(do_sample=False), eos stopping disabled"})
                save_file({"prompt": prompt[0].to(torch.int32).contiguous(),
                           "tokens": new_tokens.to(torch.int32).contiguous(), "margins": margins},
                          str(out_dir / "generate.safetensors"), metadata=gmeta)
                print(f"generate: {new_tokens.tolist()}; smallest top-1/top-2 margin {margins.min().item():.2e}")


if __name__ == "__main__":
    main()
