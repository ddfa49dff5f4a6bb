"""What a run trains with, built from the spec before the run folder exists (a failure here writes nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cnnspec.build.finetune import freeze, param_groups, scale_lrs
from cnnspec.build.model import build_model
from cnnspec.build.weights import load_weights
from cnnspec.data.splits import Batches
from cnnspec.errors import SetupError
from cnnspec.registry.manager import call_plugin
from cnnspec.registry.types import Callback
from cnnspec.spec.sections import Spec
from cnnspec.train.distributed import SINGLE, World, shard
from cnnspec.train.precision import Precision
from cnnspec.train.warmup import Warmup


class Pipeline:
    """The spec's augmentations in order, applied to each training batch."""

    def __init__(self, ops: list[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]]) -> None:
        self.ops = ops

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for op in self.ops:
            x, y = op(x, y)
        return x, y


@dataclass
class Parts:
    """The model, optimizer, scheduler, loss, augmentations and callbacks of one spec, on ``device``."""

    spec: Spec
    data: Batches
    device: torch.device
    world: World
    seed: int
    precision: Precision
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    augment: Pipeline
    callbacks: list[Callback]
    steps_per_epoch: int  # this rank's optimizer steps per epoch
    batch_size: int  # what a step really holds: data.batch_size, or the whole (shard of the) split if smaller
    warmup: Warmup
    scheduler: Any = None
    capture: bool = False  # train.capture as run decided it before the hooks (the Step decides after them)

    @property
    def train_batch(self) -> int:
        """The configured ``data.batch_size``."""
        assert self.spec.data is not None
        return self.spec.data.batch_size

    @property
    def eval_batch(self) -> int:
        return self.spec.eval_batch_size

    def scheduler_for(self, optimizer: torch.optim.Optimizer) -> Any:
        """The spec's scheduler driving ``optimizer`` (None without one)."""
        sc = self.spec.scheduler
        if sc is None:
            return None
        return call_plugin(self.spec.registry, "scheduler", sc.name, sc.type.build, sc.params, optimizer,
                           self.spec.train.epochs, self.steps_per_epoch)


def build_parts(spec: Spec, data: Batches, device: torch.device, world: World = SINGLE) -> Parts:
    """Seed, build the model on ``device``, and every plugin the spec names (through call_plugin)."""
    assert spec.data is not None, "run checks that the spec has a data section"
    seed = spec.train.seed if spec.train.seed is not None else int(torch.seed() % 2**31)
    precision = Precision(spec, device)
    torch.manual_seed(seed)  # weights, then dropout, draw from this stream
    model = build_model(spec)
    if spec.weights is not None:  # a fresh run of a spec with weights: (a resumed one has its checkpoint)
        load_weights(model, spec.weights)
    freeze(model, spec.finetune)
    model = model.to(device).to(memory_format=precision.memory_format)
    reg = spec.registry
    grouped = bool(spec.finetune.multipliers)
    opt = call_plugin(reg, "optimizer", spec.optimizer.name, spec.optimizer.type.build, spec.optimizer.params,
                      param_groups(model, spec.finetune) if grouped else model.parameters())
    if grouped:
        scale_lrs(opt)
    if world.rank:  # other dropout draws on every rank; weights were made identical above
        torch.manual_seed(seed + 1_000_003 * world.rank)
    mine, steps = shard(torch.arange(len(data.train[0])), world, spec.data.batch_size, spec.train.limit_batches)
    batch_size = min(spec.data.batch_size, len(mine))
    if batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise SetupError([spec.problem(("data", "batch_size"), "data.batch_size: batch normalisation needs "
                                       f"at least 2 samples per batch while training, but batches here hold "
                                       f"{batch_size}")], spec.file)
    loss_fn = call_plugin(reg, "loss", spec.loss.name, spec.loss.type.build, spec.loss.params)
    classes = len(data.classes)
    augment = Pipeline([call_plugin(reg, "augmentation", a.name, a.type.build, a.params, spec.input_shape,
                                    classes) for a in spec.augmentations])
    callbacks: list[Callback] = [call_plugin(reg, "callback", cb.name, cb.type.build, cb.params)
                                 for cb in spec.callbacks]
    parts = Parts(spec, data, device, world, seed, precision, model, opt, loss_fn, augment, callbacks,
                  steps, batch_size, Warmup(spec.train.warmup, steps))
    parts.scheduler = parts.scheduler_for(opt)
    parts.loss_fn.to(device)
    return parts
