"""The torch peers' bottleneck adapter, shared by scripts/bench_train.sh (CPU) and
scripts/bench_train_hf_gpu.py (GPU), so both benchmarks time the same module."""
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
