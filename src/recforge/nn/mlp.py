"""The MLP block (Linear -> norm -> activation -> dropout, repeated) and its activations,
including Dice from DIN (Zhou et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recforge.exceptions import ConfigError
from recforge.nn.align import aligned, pad_last
from recforge.nn.exporting import exporting

ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "swish",
    "silu",
    "prelu",
    "dice",
    "sigmoid",
    "tanh",
    "linear",
)


class Dice(nn.Module):
    """Data-adaptive activation (DIN, eq. 4): ``p * x + (1 - p) * alpha * x`` with
    ``p = sigmoid(BN(x))``, BN without affine parameters and a learned ``alpha`` per unit.

    Input (B, H) or (B, T, H); the gate normalises over every axis except the last.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.bn.track_running_stats:
            shape = x.shape
            flat = x.reshape(-1, shape[-1])  # (N, H)
            p = torch.sigmoid(self.bn(flat)).reshape(shape)
        else:  # BN's eval formula written out: ONNX export cannot size BN over (N, H) views
            var = self.bn.running_var + self.bn.eps
            p = torch.sigmoid((x - self.bn.running_mean) * torch.rsqrt(var))
        return p * x + (1.0 - p) * self.alpha * x


def activation(name: str, num_features: int) -> nn.Module:
    """An activation module by name; ``num_features`` sizes prelu and dice."""
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "elu":
        return nn.ELU()
    if name == "gelu":
        return nn.GELU()
    if name in ("swish", "silu"):
        return nn.SiLU()
    if name == "prelu":
        return _LastAxis(nn.PReLU(num_features))
    if name == "dice":
        return Dice(num_features)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "linear":
        return nn.Identity()
    raise ConfigError(f"activation={name!r}; choose one of {', '.join(ACTIVATIONS)}.")


class MLP(nn.Module):
    """A stack of ``Linear -> norm -> activation -> dropout`` blocks, then an optional
    ``Linear(out_dim)`` head with no activation.

    Parameters
    ----------
    in_dim: input width.
    hidden: widths of the hidden layers (empty = no hidden layer).
    activation: one of ``ACTIVATIONS``.
    dropout: dropout probability after each activation (off in eval mode).
    norm: None, "batch" or "layer" normalisation before each activation.
    out_dim: if set, a final linear layer to this width.

    ``forward``: (..., in_dim) -> (..., out_dim or hidden[-1] or in_dim). The input may
    also come zero-padded to ``in_width`` = ``recforge.nn.align.aligned(in_dim)`` columns
    (``FeatureEmbedding.deep_input(..., width=mlp.in_width)`` pads in its concatenation):
    the first layer's weight then gets zero columns at forward time (the faster GEMM
    shape; same parameters, same function).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128),
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in (None, "batch", "layer"):
            raise ConfigError(f"norm={norm!r}; choose None, 'batch' or 'layer'.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}.")
        layers: list[nn.Module] = []
        width = int(in_dim)
        self.in_dim = width
        # the padded input width the first Linear takes (no Linear: no padding)
        self.in_width = aligned(width) if (hidden or out_dim is not None) else width
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if norm == "batch":
                layers.append(_BatchNormLast(int(h)))
            elif norm == "layer":
                layers.append(nn.LayerNorm(int(h)))
            # ReLU in place on the Linear/norm output (neither backward reads it): one
            # (B, h) allocation less per layer (DeepFM step -3 %, B=4096, 1 thread)
            act = _activation(activation, int(h))
            layers.append(nn.ReLU(inplace=True) if isinstance(act, nn.ReLU) else act)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        if out_dim is not None:
            layers.append(nn.Linear(width, int(out_dim)))
            width = int(out_dim)
        self.net = nn.Sequential(*layers)
        self.out_dim = width
        # (Linear -> ReLU)+ (-> Linear), nothing else: training runs _ReluStack
        head = out_dim is not None
        self._relu_stack = bool(hidden) and len(layers) == 2 * len(hidden) + head
        self._relu_stack &= all(isinstance(m, nn.ReLU) for m in layers[1 : 2 * len(hidden) : 2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = x.shape[-1] != self.in_dim and self.in_width != self.in_dim
        if self._relu_stack and x.dim() == 2 and torch.is_grad_enabled() and not exporting():
            linears = self.net[::2]
            params: list[torch.Tensor] = []
            for i, lin in enumerate(linears):
                w = pad_last(lin.weight, self.in_width) if i == 0 and padded else lin.weight
                params += [w, lin.bias]
            return _ReluStack.apply(x, not isinstance(self.net[-1], nn.Linear), *params)
        if not padded:
            return self.net(x)
        first = self.net[0]  # the input is padded to in_width: pad the weight the same way
        h = F.linear(x, pad_last(first.weight, self.in_width), first.bias)
        for layer in self.net[1:]:
            h = layer(h)
        return h


class _ReluStack(torch.autograd.Function):
    """``Linear -> ReLU -> ... -> Linear`` on (B, in) inputs with the backward written
    out: per layer dW = gᵀ h_in, db = Σ_b g, g <- (g W) masked by h_in > 0 in place
    (``threshold_backward`` into its own input). Autograd's graph of the same layers
    allocates a new (B, h) tensor for each ReLU's gradient: a B=4096 432-400-400-400-1
    forward + backward took 108.4 against 116.4 ms on one thread, 61.8 against 73.6 and
    65.0 against 65.1 in two runs on two (``python -m benchmarks.ctr_micro --parts mlp``).
    Same products, same sums. Arguments: x, whether the last layer has a ReLU too (an
    MLP without a head), then (weight, bias) per layer."""

    @staticmethod
    def forward(ctx, x, last_relu, *params):  # type: ignore[override]
        n = len(params) // 2
        saved = [x]
        h = x
        for i in range(n):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
            if i < n - 1 or last_relu:
                h.relu_()
            if i < n - 1:
                saved.append(h)
        ctx.save_for_backward(*saved, *params[0::2], *([h] if last_relu else []))
        ctx.n, ctx.last_relu = n, last_relu
        return h

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        n = ctx.n
        saved = ctx.saved_tensors
        ins, weights = saved[:n], saved[n : 2 * n]
        grads: list[torch.Tensor | None] = [None] * (2 * n)
        g = g.contiguous()
        if ctx.last_relu:  # g is the caller's: a new tensor, not in place
            g = torch.ops.aten.threshold_backward(g, saved[2 * n], 0)
        gx = None
        for i in range(n - 1, -1, -1):
            h_in = ins[i]
            grads[2 * i] = g.t().mm(h_in)
            grads[2 * i + 1] = g.sum(0)
            if i > 0:
                g = g.mm(weights[i])
                torch.ops.aten.threshold_backward.grad_input(g, h_in, 0, grad_input=g)
            elif ctx.needs_input_grad[0]:
                gx = g.mm(weights[0])
        return (gx, None, *grads)


_activation = activation  # MLP's parameter shadows the function name inside __init__


class _LastAxis(nn.Module):
    """Apply a channels-at-axis-1 module (PReLU, BatchNorm1d) over the last axis of
    (B, H) or (B, T, H) inputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.inner(x.reshape(-1, shape[-1])).reshape(shape)


class _BatchNormLast(nn.Module):
    """BatchNorm over the last axis for inputs (B, H) or (B, T, H)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.bn(x.reshape(-1, shape[-1])).reshape(shape)
