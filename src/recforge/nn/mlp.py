"""The MLP block (Linear -> norm -> activation -> dropout, repeated) and its activations,
including Dice from DIN (Zhou et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recforge.exceptions import ConfigError

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

    ``forward``: (..., in_dim) -> (..., out_dim or hidden[-1] or in_dim).
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
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if norm == "batch":
                layers.append(_BatchNormLast(int(h)))
            elif norm == "layer":
                layers.append(nn.LayerNorm(int(h)))
            layers.append(_activation(activation, int(h)))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        if out_dim is not None:
            layers.append(nn.Linear(width, int(out_dim)))
            width = int(out_dim)
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
