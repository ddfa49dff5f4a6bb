"""Torch modules that compute what the Keras layers compute, TensorFlow's 'same' padding included."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnspec.plugin import pair

from .padding import conv_pads_itself, max_pool_pads_itself, same_pads

_ACT: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "elu": nn.ELU, "selu": nn.SELU, "silu": nn.SiLU,
    "swish": nn.SiLU, "mish": nn.Mish, "sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh, "softplus": nn.Softplus, "softsign": nn.Softsign,
    "gelu": nn.GELU,  # Keras 3's gelu defaults to the exact form, like torch
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras 3's default negative_slope
    "softmax": lambda: nn.Softmax(dim=1), "log_softmax": lambda: nn.LogSoftmax(dim=1),
    "linear": nn.Identity,
}


def activation(name: str | None) -> nn.Module:
    return _ACT[name or "linear"]()


def _trunc_normal(t: torch.Tensor, fan: float, scale: float) -> None:
    # Keras' variance-scaling normal: truncated at 2 std, std corrected for the truncation
    std = math.sqrt(scale / fan) / 0.87962566103423978
    nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


def initialize(t: torch.Tensor, name: str) -> None:
    """Fill ``t`` as the Keras initializer ``name`` would (fans computed as Keras does)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(t) if t.dim() >= 2 else (t.numel(), t.numel())
    with torch.no_grad():
        if name == "glorot_uniform":
            nn.init.xavier_uniform_(t)
        elif name == "glorot_normal":
            _trunc_normal(t, (fan_in + fan_out) / 2, 1.0)
        elif name == "he_uniform":
            nn.init.uniform_(t, -math.sqrt(6 / fan_in), math.sqrt(6 / fan_in))
        elif name == "he_normal":
            _trunc_normal(t, fan_in, 2.0)
        elif name == "lecun_uniform":
            nn.init.uniform_(t, -math.sqrt(3 / fan_in), math.sqrt(3 / fan_in))
        elif name == "lecun_normal":
            _trunc_normal(t, fan_in, 1.0)
        elif name == "orthogonal":
            nn.init.orthogonal_(t)
        elif name == "random_normal":
            nn.init.normal_(t, std=0.05)
        elif name == "random_uniform":
            nn.init.uniform_(t, -0.05, 0.05)
        elif name == "zeros":
            nn.init.zeros_(t)
        elif name == "ones":
            nn.init.ones_(t)
        else:  # pragma: no cover - the params model only admits the names above
            raise ValueError(name)


class Affine(nn.Module):
    """``x * scale + offset`` (Keras' Rescaling)."""

    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class Padded(nn.Module):
    """Pads (left, right, top, bottom) with ``value``, then applies ``inner``."""

    def __init__(self, pads: tuple[int, int, int, int], inner: nn.Module, value: float = 0.0) -> None:
        super().__init__()
        self.pads, self.value, self.inner = pads, value, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=self.value)
        return self.inner(x)


def conv2d(p: Any, shape: tuple[int, ...]) -> nn.Module:
    k, s, d = pair(p.kernel_size), pair(p.strides), pair(p.dilation_rate)
    pads = same_pads(shape, k, s, d, p.padding)
    left, _, top, _ = pads
    symmetric = conv_pads_itself(pads)  # then the conv pads itself (keeps channels-last fast)
    conv = nn.Conv2d(shape[0], p.filters, k, stride=s, dilation=d, groups=p.groups, bias=p.use_bias,
                     padding=(top, left) if symmetric else 0)
    initialize(conv.weight, p.kernel_initializer)
    if conv.bias is not None:
        initialize(conv.bias, p.bias_initializer)
    layer: nn.Module = conv if symmetric else Padded(pads, conv)
    return nn.Sequential(layer, activation(p.activation)) if p.activation not in (None, "linear") else layer


def dense(p: Any, shape: tuple[int, ...]) -> nn.Module:
    lin = nn.Linear(shape[0], p.units, bias=p.use_bias)
    initialize(lin.weight, p.kernel_initializer)
    if lin.bias is not None:
        initialize(lin.bias, p.bias_initializer)
    return nn.Sequential(lin, activation(p.activation)) if p.activation not in (None, "linear") else lin


class AvgPoolSame(nn.Module):
    """Average over the real values of each window: sum / count, with zero padding."""

    def __init__(self, pads: tuple[int, int, int, int], k: tuple[int, int], s: tuple[int, int],
                 shape: tuple[int, ...]) -> None:
        super().__init__()
        self.pads, self.k, self.s = pads, k, s
        ones = F.pad(torch.ones(1, 1, shape[1], shape[2]), pads)
        # fraction of each window that is real input; a buffer, so it follows .to(device)
        self.coverage: torch.Tensor
        self.register_buffer("coverage", F.avg_pool2d(ones, k, s), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, self.pads), self.k, self.s) / self.coverage


def pool2d(mode: str, p: Any, shape: tuple[int, ...]) -> nn.Module:
    k = pair(p.pool_size)
    s = pair(p.strides) if p.strides is not None else k
    pads = same_pads(shape, k, s, (1, 1), p.padding)
    if mode == "max":  # -inf padding: a padded position can never be the maximum
        if max_pool_pads_itself(pads, k):
            return nn.MaxPool2d(k, s, padding=(pads[2], pads[0]))  # torch pads max pools with -inf too
        return Padded(pads, nn.MaxPool2d(k, s), value=-math.inf)
    if not any(pads):
        return nn.AvgPool2d(k, s)
    return AvgPoolSame(pads, k, s, shape)
