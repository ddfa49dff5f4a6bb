"""Learning-rate warm-up: the optimizer's rate scaled by a factor rising linearly to 1 over the first steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cnnspec.spec.sections import WarmupSection


class Warmup:
    """``train.warmup`` (None: no warm-up) for a run of ``steps_per_epoch`` optimizer steps per epoch."""

    def __init__(self, warm: WarmupSection | None, steps_per_epoch: int) -> None:
        self.start_factor = 1.0 if warm is None else warm.start_factor
        self.steps = 0 if warm is None else warm.steps or (warm.epochs or 0) * steps_per_epoch

    def factor(self, global_step: int) -> float:
        """The multiplier of the learning rate at an optimizer step (0-based)."""
        if global_step >= self.steps:
            return 1.0
        return self.start_factor + (1 - self.start_factor) * global_step / self.steps

    @contextmanager
    def applied(self, optimizer: torch.optim.Optimizer, global_step: int) -> Iterator[None]:
        """During warm-up, the optimizer steps with the scheduler's rate times the factor (from
        start_factor at the first step to 1 at step ``steps``); the scheduler's own rates are put
        back after, so any scheduler composes with it."""
        factor = self.factor(global_step)
        if factor == 1.0:
            yield
            return
        groups = optimizer.param_groups
        rates = [g["lr"] for g in groups]
        for g, lr in zip(groups, rates):
            g["lr"] = lr * factor
        try:
            yield
        finally:
            for g, lr in zip(groups, rates):
                g["lr"] = lr
