#!/usr/bin/env python3
"""Draw the training curves of an adapt_train run as a PNG.

Purpose: adapt_train writes one JSON object per line to RUN_DIR/metrics.jsonl: training steps
({"kind": "train", "step", "loss", "lr", "grad_norm", "tokens_per_s", ...}) and evaluations
({"kind": "eval", "step", "eval_loss", "eval_ppl"}). This script plots training loss (raw and a
moving average) and eval loss against the step, and the learning rate on a second panel.

Invocation:
    python3 scripts/plot_metrics.py RUN_DIR/metrics.jsonl [-o curves.png] [--title TEXT]
    python3 scripts/plot_metrics.py A/metrics.jsonl B/metrics.jsonl -o compare.png   (several runs)

Needs matplotlib (scripts/requirements-test.txt pins it; ./scripts/setup.sh --python installs it into
.venv). Exits 2 with a message when a file is missing or holds no training steps.
"""
import argparse
import json
import sys
from pathlib import Path


def read(path):
    train, evals = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e})")
            kind = rec.get("kind", "train")
            if kind == "eval" and "eval_loss" in rec:
                evals.append(rec)
            elif kind == "train" and "loss" in rec:
                train.append(rec)
    return train, evals


def moving_average(values, window):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main():
    ap = argparse.ArgumentParser(description="Plot adapt_train metrics.jsonl files.")
    ap.add_argument("metrics", nargs="+")
    ap.add_argument("-o", "--output", default="curves.png")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: ./scripts/setup.sh --python installs it into .venv", file=sys.stderr)
        return 77
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for path in args.metrics:
        if not Path(path).exists():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
        train, evals = read(path)
        if not train:
            print(f"{path}: no training steps (lines with \"loss\")", file=sys.stderr)
            return 2
        label = Path(path).parent.name or path
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(steps, losses, alpha=0.3, linewidth=0.8)
        ax.plot(steps, moving_average(losses, max(1, len(losses) // 50)), label=f"{label} train")
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label=f"{label} eval")
        if all("lr" in r for r in train):
            ax_lr.plot(steps, [r["lr"] for r in train], label=label)
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.suptitle(args.title or "adapt_train")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
