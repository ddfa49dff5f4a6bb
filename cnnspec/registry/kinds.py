"""What a plugin can register: the kinds of type, and the register_* hook of each (no pluggy here:
``cnnspec/__init__`` imports this before ``python -m`` has taken the current folder off sys.path)."""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["layer", "optimizer", "scheduler", "loss", "dataset", "augmentation", "callback", "block"]
KINDS: tuple[Kind, ...] = get_args(Kind)

# hook name (cnnspec.registry.hookspecs) -> registry kind, for the register_* hooks
REGISTER_HOOKS: dict[str, Kind] = {
    "register_layers": "layer",
    "register_optimizers": "optimizer",
    "register_schedulers": "scheduler",
    "register_losses": "loss",
    "register_datasets": "dataset",
    "register_augmentations": "augmentation",
    "register_callbacks": "callback",
    "register_blocks": "block",
}
