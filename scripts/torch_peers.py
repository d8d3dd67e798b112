"""The torch peers' adapters: the bottleneck module shared by scripts/bench_train.sh (CPU) and
scripts/bench_train_hf_gpu.py (GPU), and the hand-written LoRA wrapper of bench_train.sh's lean peer and
bench_parallel.sh's DDP peer, so every benchmark times the same modules."""
import torch


class Bottleneck(torch.nn.Module):
    """Pfeiffer: applied to o = h + MLP(h), the decoder layer's output: o + up(relu(down(o)))."""

    def __init__(self, c, m):
        super().__init__()
        self.down, self.up = torch.nn.Linear(c, m), torch.nn.Linear(m, c)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, o):
        return o + self.up(torch.relu(self.down(o)))


def attach_bottlenecks(layers, hidden, size, device=None, dtype=None):
    """One Bottleneck(hidden, size) after each decoder layer (a forward hook on its output); returns them
    as a ModuleList so their parameters can go to the optimizer."""
    adapters = torch.nn.ModuleList()
    for layer in layers:
        bn = Bottleneck(hidden, size).to(device=device, dtype=dtype)
        adapters.append(bn)
        layer.register_forward_hook(
            lambda mod, args, out, bn=bn: (bn(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else bn(out))
    return adapters


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Lora(torch.nn.Module):
    """y = W x + s * B (A x) around a frozen nn.Linear W, s = alpha / rank; A uniform, B zero (as PEFT)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.s = base, alpha / rank
        bound = base.in_features ** -0.5
        self.a = torch.nn.Parameter(torch.empty(rank, base.in_features).uniform_(-bound, bound))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + self.s * torch.nn.functional.linear(torch.nn.functional.linear(x, self.a), self.b)


def attach_lora(layers, rank, alpha):
    """Wraps q, k, v, o, gate, up and down of every decoder layer in a Lora."""
    for layer in layers:
        for parent, names in ((layer.self_attn, LORA_TARGETS[:4]), (layer.mlp, LORA_TARGETS[4:])):
            for n in names:
                setattr(parent, n, Lora(getattr(parent, n), rank, alpha))
