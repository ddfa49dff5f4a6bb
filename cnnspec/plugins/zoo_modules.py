"""Torch modules of the zoo layers (imported only when a model is built)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    """out = x * gate(x) (squeeze-and-excitation when the gate pools and ends with a sigmoid)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Split(nn.Module):
    """Branch i takes the i-th of n equal channel groups; the results are concatenated."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(str(i), b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(len(self._modules), dim=1)
        return torch.cat([b(part) for b, part in zip(self.children(), parts)], dim=1)


class LayerNorm2d(nn.LayerNorm):
    """nn.LayerNorm over the channels of an N x C x H x W batch (torchvision's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # N x H x W x C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelLinear(nn.Linear):
    """nn.Linear over the channels of an N x C x H x W batch, computed channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """scale * layers(x), one learned scale per channel broadcast over the other ``dims - 1``
    dimensions; a module's own parameters come first in its state dict, as ConvNeXt's layer_scale."""

    def __init__(self, layers: nn.Module, channels: int, dims: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,) + (1,) * (dims - 1), init))
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.layers(x)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: in training, zero a sample's input (``row``) or the whole
    batch's (``batch``) with probability p and scale the rest by 1 / (1 - p); identity in eval."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"
