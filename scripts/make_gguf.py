#!/usr/bin/env python3
"""Writes a Hugging Face Llama checkpoint (config.json + *.safetensors) as a GGUF file for llama.cpp.

Used by scripts/bench_gen.sh to run llama.cpp's `llama-bench` on the same weights as adapt and HF.
The tensors are those of the checkpoint, renamed to GGUF's llama names; q_proj and k_proj are permuted
from HF's rotate-half row order to the interleaved pairs of llama.cpp's rope, as llama.cpp's own
convert_hf_to_gguf.py does. Matrices keep their dtype (F32 or BF16); norms are written as F32.

The vocabulary is a placeholder of vocab_size tokens (SentencePiece-style: <unk>, <s>, </s>, 256 byte
tokens, then `t<i>`): llama-bench feeds token ids, never text, so only the count matters.

Needs numpy and llama.cpp's gguf-py (pass its directory with --gguf-py, or have `gguf` importable).

Usage: make_gguf.py MODEL_DIR OUT.gguf [--gguf-py DIR]
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np


def read_safetensors(path):
    """Yields (name, dtype string, numpy array) for every tensor of one .safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    np_dtype = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in np_dtype:
            sys.exit(f"error: {path}: tensor {name} has dtype {info['dtype']}; only F32, BF16 and F16 are written")
        begin, end = info["data_offsets"]
        arr = data[begin:end].view(np_dtype[info["dtype"]]).reshape(info["shape"])
        yield name, info["dtype"], arr


def permute(w, n_head, n_head_kv):
    """HF's rotate-half rows of q/k to llama.cpp's interleaved rope pairs (convert_hf_to_gguf.py)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")  # model.layers.<i>.<module>.<proj>.weight
    if len(parts) < 5 or parts[:2] != ["model", "layers"]:
        return None
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                 "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    module = ".".join(parts[3:-1])
    return f"blk.{parts[2]}.{per_layer[module]}.weight" if module in per_layer else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--gguf-py", type=Path, help="llama.cpp's gguf-py directory (else `import gguf`)")
    args = ap.parse_args()
    if args.gguf_py:
        sys.path.insert(0, str(args.gguf_py))
    import gguf

    cfg = json.loads((args.model_dir / "config.json").read_text())
    if cfg.get("rope_scaling"):
        sys.exit(f"error: {args.model_dir}/config.json: rope_scaling is set; this writer handles unscaled rope only")
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // n_head)
    files = sorted(args.model_dir.glob("*.safetensors"))
    if not files:
        sys.exit(f"error: no .safetensors files in {args.model_dir}")

    tensors, dtypes = [], set()
    for path in files:
        for name, dtype, arr in read_safetensors(path):
            out_name = gguf_name(name)
            if out_name is None:
                sys.exit(f"error: {path}: tensor {name} has no GGUF llama name")
            if name.endswith("q_proj.weight"):
                arr = permute(arr, n_head, n_head)
            elif name.endswith("k_proj.weight"):
                arr = permute(arr, n_head, n_kv)
            if arr.ndim == 1:  # norms in f32, as convert_hf_to_gguf.py writes them
                arr = (arr.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else arr.astype(np.float32)
                dtype = "F32"
            else:
                dtypes.add(dtype)
            tensors.append((out_name, dtype, np.ascontiguousarray(arr)))
    # Tied embeddings need nothing more: without output.weight, llama.cpp uses token_embd.weight.

    w = gguf.GGUFWriter(str(args.out), "llama")
    w.add_name(args.model_dir.name)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if "BF16" in dtypes else gguf.LlamaFileType.ALL_F32)

    vocab = cfg["vocab_size"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"t{i}" for i in range(len(tokens), vocab)]
    types += [gguf.TokenType.NORMAL] * (vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens[:vocab])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types[:vocab])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    for name, dtype, arr in tensors:
        w.add_tensor(name, arr, raw_dtype=gguf.GGMLQuantizationType.BF16 if dtype == "BF16" else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: {len(tensors)} tensors ({', '.join(sorted(dtypes))} matrices), vocab {vocab}")


if __name__ == "__main__":
    main()
