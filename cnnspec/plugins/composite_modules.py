"""Torch modules of the composite layers (imported only when a model is built)."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """out = main(x) + shortcut(x); ``main`` registers first, so its parameters come first."""

    def __init__(self, main: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class Parallel(nn.Module):
    """Branches on the same input, joined along dim 1 (channels) or summed."""

    def __init__(self, branches: list[nn.Module], merge: str) -> None:
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(str(i), b)
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.children()]
        if self.merge == "concat":
            return torch.cat(outs, dim=1)
        out = outs[0]
        for o in outs[1:]:
            out = out + o
        return out

    def extra_repr(self) -> str:
        return f"merge={self.merge!r}"
