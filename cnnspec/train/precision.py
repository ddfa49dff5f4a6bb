"""How a step runs fast: the tensors' memory layout (channels-last) and mixed precision (autocast, gradient scaler)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor

from cnnspec.errors import DeviceError
from cnnspec.spec.sections import Spec


class Precision:
    """The spec's ``train.channels_last`` and ``train.precision`` for one device.

    The scaler is always there: ``GradScaler(enabled=False)`` and ``autocast(enabled=False)`` pass
    everything through, so the step has no branch on the precision."""

    def __init__(self, spec: Spec, device: torch.device) -> None:
        # channels-last made the reference step ~1.5x faster on CPU; conv nets gain on CUDA too
        cl = spec.train.channels_last
        use_cl = cl if cl is not None else device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if use_cl and len(spec.input_shape) == 3 else torch.contiguous_format
        # mixed precision: forward and loss under autocast; fp16 needs a gradient scaler
        self.name = spec.train.precision
        if self.name == "fp16" and device.type != "cuda":
            raise DeviceError("precision fp16 needs a CUDA device; use bf16 on this machine")
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.name == "fp16")

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last

    def layout(self, x: Tensor) -> Tensor:
        """A batch in the layout the model runs fastest in."""
        return x.contiguous(memory_format=self.memory_format)

    def autocast(self, device: torch.device, cache: bool = True) -> AbstractContextManager[Any]:
        """The forward pass and loss under autocast on ``device`` (a no-op at fp32). ``cache=False``
        for a step captured as a CUDA graph: autocast's cache of cast weights must not outlive it."""
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=cache)
