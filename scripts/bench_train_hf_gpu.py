"""Training-step speed of Hugging Face transformers + peft on one CUDA GPU: the peer of adapt's training
step in scripts/gpu_check.sh.

The step (as scripts/bench_train.sh's CPU peer, at GPU sizes): one row of SEQ tokens (random ids with a
fixed seed, labels = the next id), forward, cross-entropy over every position, backward, global
gradient-norm clipping at 1.0 and one torch.optim.AdamW update (lr 1e-4, no weight decay) of the
adapter parameters. The base model is frozen (bf16, requires_grad False: no weight gradient) and
runs with torch's scaled-dot-product attention (attn_implementation="sdpa", flash kernels on
sm_80/sm_90), HF's default on a GPU.

Adapters (--adapter):
  lora        peft LoraConfig(r=16, lora_alpha=32, lora_dropout=0, bias="none") on q, k, v, o, gate, up
              and down of every layer (peft keeps the adapter weights in f32: autocast_adapter_dtype)
  bottleneck  a Pfeiffer bottleneck after each decoder layer's MLP, out = o + up(relu(down(o))) with
              o = h + MLP(h), width --bn-size (default 256 = hidden / 16), up initialised to 0, through
              a forward hook as in bench_train.sh; weights in the model's dtype
  lora+bottleneck  both

Model FLOPs per step (what MFU counts; the frozen base has no weight gradient):
  linear layers: 2 · N_lin per token forward + 2 · N_lin backward (input gradient only), N_lin the base
  weights of every projection and the LM head (the embedding is a gather: not counted); adapters: 6 ·
  N_adapter per token; causal attention: forward 2 · T² · H · D per layer (half of the T x T square:
  QKᵀ and PV), backward 2.5x the forward. MFU = model FLOP/s / --peak-tflops.

Usage:
  python scripts/bench_train_hf_gpu.py MODEL_DIR [--adapter lora|bottleneck|lora+bottleneck] [--seq 4096]
      [--batch 1] [--steps 10] [--warmup 3] [--rank 16] [--alpha 32] [--bn-size 256]
      [--peak-tflops 989.4] [--config-only]
MODEL_DIR holds an HF Llama model (config.json + safetensors: `adapt_model make --preset llama-3.1-8b
--layers 4 --dtype bf16 --out DIR`); --config-only reads only config.json and initialises random weights
on the GPU (no weights on disk needed; the speed is the same).
Output: `key value` lines on stdout (step_s, tokens_per_s, model_tflops_per_s, mfu, peak_mem_gb,
trainable, loss, versions, device). Exit 77 with the reason when torch, transformers, peft or a CUDA
device is missing.
"""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--adapter", default="lora", choices=["lora", "bottleneck", "lora+bottleneck"])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--bn-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="the device's dense bf16 peak for MFU (0: MFU not printed)")
    ap.add_argument("--config-only", action="store_true")
    args = ap.parse_args()

    try:
        import torch
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
        from torch_peers import attach_bottlenecks
    except ImportError as e:
        print(f"bench_train_hf_gpu: skipped: {e}", file=sys.stderr)
        return 77
    use_lora = "lora" in args.adapter
    use_bn = "bottleneck" in args.adapter
    peft_version = "-"
    if use_lora:
        try:
            import peft
            from peft import LoraConfig, get_peft_model
            peft_version = peft.__version__
        except ImportError as e:
            print(f"bench_train_hf_gpu: skipped: {e}", file=sys.stderr)
            return 77
    if not torch.cuda.is_available():
        print("bench_train_hf_gpu: skipped: torch sees no CUDA device "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})", file=sys.stderr)
        return 77

    dev = torch.device("cuda")
    torch.manual_seed(0)
    if args.config_only:
        with open(os.path.join(args.model_dir, "config.json")) as f:
            cfg = LlamaConfig(**json.load(f))
        cfg._attn_implementation = "sdpa"
        with torch.device(dev):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    else:
        model = LlamaForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").to(dev)
    cfg = model.config
    model.requires_grad_(False)
    n_lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if use_lora:
        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, bias="none",
                                                 target_modules=targets, task_type="CAUSAL_LM"))
        layers = model.base_model.model.model.layers
    else:
        layers = model.model.layers

    adapters = (attach_bottlenecks(layers, cfg.hidden_size, args.bn_size, dev, torch.bfloat16) if use_bn
                else torch.nn.ModuleList())
    params = [p for p in model.parameters() if p.requires_grad] + list(adapters.parameters())
    n_adapter = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()

    gen = torch.Generator().manual_seed(20261121)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen).to(dev)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    times = []
    for _ in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[args.warmup:])
    tokens = args.batch * args.seq
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_fwd = 2.0 * args.seq * args.seq * cfg.num_attention_heads * head_dim * cfg.num_hidden_layers * args.batch
    flops = 4.0 * n_lin * tokens + 6.0 * n_adapter * tokens + 3.5 * attn_fwd
    tflops = flops / med / 1e12
    print(f"step_s {med:.4f}")
    print(f"tokens_per_s {tokens / med:.1f}")
    print(f"model_tflops_per_s {tflops:.1f}")
    if args.peak_tflops > 0:
        print(f"mfu {tflops / args.peak_tflops:.3f}")
    print(f"steps_s {' '.join(f'{t:.3f}' for t in times)}")
    print(f"peak_mem_gb {torch.cuda.max_memory_allocated() / 2**30:.1f}")
    print(f"trainable {n_adapter}")
    print(f"loss {float(loss):.4f}")
    print(f"layers {cfg.num_hidden_layers}")
    print(f"versions torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
          f"peft {peft_version}")
    print(f"device {torch.cuda.get_device_name()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
