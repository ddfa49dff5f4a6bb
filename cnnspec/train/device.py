"""The training device: a name checked against the spec's pattern (no torch), resolved once to a torch.device."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cnnspec.errors import DeviceError
from cnnspec.spec.sections import DEVICE_PATTERN

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICES = "auto, cpu, cuda, cuda:N, mps"  # what DEVICE_PATTERN accepts, as messages say it


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device cnnspec knows (the spec's ``train.device`` pattern); no torch."""
    return re.fullmatch(DEVICE_PATTERN, name) is not None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist (DeviceError if not)."""
    import torch

    if not is_device_name(name):
        raise DeviceError(f"device '{name}' is not one of {DEVICES}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' requested but CUDA is not available here "
                              "(--device cpu, or train.device: auto, uses what there is)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not mps_ok:
        raise DeviceError("device 'mps' requested but MPS is not available here")
    return dev
