"""The plugin contract: register_* hooks that add named types, and hooks at points of a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from cnnspec.registry.kinds import KINDS as KINDS
from cnnspec.registry.kinds import REGISTER_HOOKS as REGISTER_HOOKS
from cnnspec.registry.kinds import Kind as Kind

hookspec = pluggy.HookspecMarker("cnnspec")
hookimpl = pluggy.HookimplMarker("cnnspec")

Register = Callable[[Any], None]

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


class RunContext(Protocol):
    """What the run hooks get: a ``cnnspec.plugin.Context``. Described here by its fields, because
    the registry sits below training and does not import it (a type check holds the two together)."""

    spec: Any  # the checked spec (cnnspec.plugin.Spec)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # the spec's scheduler, or None
    loss_fn: nn.Module
    device: torch.device
    run_dir: Any  # the run folder (cnnspec.train.rundir.RunDir); None where nothing is kept
    epoch: int
    rank: int  # under torchrun every process runs the hooks
    world_size: int
    metrics: list[dict[str, Any]]  # one row per finished epoch


@hookspec
def register_layers(register: Register) -> None:
    """Call ``register(MyLayer())`` for each cnnspec.registry.types.LayerType the plugin adds."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.OptimizerType the plugin adds."""


@hookspec
def register_schedulers(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.SchedulerType the plugin adds."""


@hookspec
def register_losses(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.LossType the plugin adds."""


@hookspec
def register_datasets(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.DatasetType the plugin adds."""


@hookspec
def register_augmentations(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.AugmentationType the plugin adds."""


@hookspec
def register_callbacks(register: Register) -> None:
    """Call ``register(...)`` for each cnnspec.registry.types.CallbackType the plugin adds."""


@hookspec
def register_blocks(register: Register) -> None:
    """Call ``register(cnnspec.registry.types.BlockType(name, layers, params))`` for each named block."""


@hookspec
def before_training(context: RunContext) -> None:
    """Before the first epoch: may replace ``context.model``, ``context.optimizer``, ``context.device``."""


@hookspec
def after_epoch(context: RunContext, metrics: dict[str, Any]) -> bool | None:
    """After each epoch's evaluation, with that epoch's metrics; return True to stop training."""


@hookspec
def after_training(context: RunContext, summary: dict[str, Any]) -> None:
    """Once training has ended (finished, stopped early or interrupted), with the run summary."""
