"""Torch modules the built-in layers share where plain torch.nn loses speed (imported only to build)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _FlattenChannelsLast(torch.autograd.Function):
    """Flatten a channels-last batch; its gradient goes back channels-last too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


class Flatten(nn.Flatten):
    """torch.nn.Flatten, except that a channels-last image batch gets its gradient back
    channels-last: plain reshape hands back a channels-first one, and the pooling and relu
    backward before it then converted their full-size gradients (two copies of the largest
    tensor per step on the reference model) instead of this one copy of the small one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() == 4 and self.start_dim == 1 and self.end_dim in (-1, 3) and x.requires_grad
                and not torch.jit.is_tracing()  # the tracer (TensorBoard's graph, export) sees plain Flatten
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
            out: torch.Tensor = _FlattenChannelsLast.apply(x)
            return out
        return super().forward(x)
