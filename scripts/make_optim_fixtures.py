#!/usr/bin/env python3
"""Make the optimizer golden fixtures with PyTorch and HF transformers (not adapt).

Purpose: adapt's AdamW, gradient clipping and learning-rate schedules (src/optim/) are compared
with torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and transformers'
get_{constant,linear,cosine}_schedule_with_warmup. Writes tests/golden/data/optim/optim.json:

  adamw:     three parameters (one excluded from weight decay), their initial values, the gradient of
             every step, and after every step the learning rate used, the gradient norm before
             clipping and the parameters; AdamW(betas 0.9/0.999, eps 1e-8, weight_decay 0.1),
             clip_grad_norm_(max_norm=1.0), cosine schedule with warmup.
  schedules: lr of steps 0..14 for each schedule kind (warmup 3, 10 training steps, lr 0.5).

Values are float32 numbers written as Python floats (exact). Seed and versions are recorded.

Invocation (from the repository root):
    python3 scripts/make_optim_fixtures.py [--python ~/.cache/adapt/venv-llama/bin/python]

It needs torch and transformers: the environment scripts/make_llama_fixtures.py creates (Debian's
python3-torch 1.13.1 + transformers 4.46.3 in a venv with system site packages) is used by default;
the script re-executes itself under that interpreter.
"""
import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261121
DEFAULT_PY = Path.home() / ".cache/adapt/venv-llama/bin/python"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=str(DEFAULT_PY))
    ap.add_argument("--out", default=str(ROOT / "tests/golden/data/optim/optim.json"))
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        if os.environ.get("ADAPT_OPTIM_FIXTURE_REEXEC"):
            sys.exit("torch and transformers are needed; run scripts/make_llama_fixtures.py once to create the venv")
        os.environ["ADAPT_OPTIM_FIXTURE_REEXEC"] = "1"
        os.execv(args.python, [args.python, __file__, "--out", args.out])
    import torch
    import transformers
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    torch.manual_seed(SEED)
    shapes = [(4, 5), (7,), (3, 3)]
    params = [torch.nn.Parameter(torch.randn(s) * 0.5) for s in shapes]
    init = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW([{"params": params[:2], "weight_decay": 0.1},
                             {"params": params[2:], "weight_decay": 0.0}],
                            lr=0.02, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    steps = []
    for step in range(6):
        scale = [0.3, 2.0, 0.05, 1.0, 0.2, 3.0][step]  # some steps exceed max_norm, some do not
        grads = [torch.randn(s) * scale for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        lr = opt.param_groups[0]["lr"]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        opt.step()
        sched.step()
        steps.append({"lr": lr, "grad_norm": float(norm),
                      "grads": [g.flatten().tolist() for g in grads],
                      "params": [p.detach().flatten().tolist() for p in params]})
    schedules = {}
    for name, make in [("constant", lambda o: get_constant_schedule_with_warmup(o, 3)),
                       ("linear", lambda o: get_linear_schedule_with_warmup(o, 3, 10)),
                       ("cosine", lambda o: get_cosine_schedule_with_warmup(o, 3, 10))]:
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        s = make(o)
        lrs = []
        for _ in range(15):
            lrs.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        schedules[name] = lrs
    out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": sys.version.split()[0]},
           "seed": SEED,
           "adamw": {"shapes": [list(s) for s in shapes], "decay": [True, True, False], "lr": 0.02,
                     "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "max_norm": 1.0,
                     "warmup_steps": 2, "total_steps": 6,
                     "init": [p.flatten().tolist() for p in init], "steps": steps},
           "schedules": {"lr": 0.5, "warmup_steps": 3, "total_steps": 10, "values": schedules}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
