"""What run hooks and callbacks see of a run (``cnnspec.plugin.Context``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from cnnspec.registry.hookspecs import RunContext
from cnnspec.spec.sections import Spec
from cnnspec.train.rundir import RunDir


@dataclass
class Context:
    """What run hooks see. ``before_training`` may replace model, optimizer or device."""

    spec: Spec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    device: torch.device
    run_dir: RunDir | None
    epoch_indices: Callable[[], tuple[Tensor, int]]  # this rank's samples and steps, next epoch
    epoch: int = 0
    rank: int = 0  # under torchrun every process runs the hooks; print from rank 0 only
    world_size: int = 1
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch


if TYPE_CHECKING:  # pragma: no cover
    _conforms: type[RunContext] = Context  # mypy: Context has every field the hooks are promised
