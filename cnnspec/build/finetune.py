"""Apply a spec's fine-tuning plan (spec.finetune) to a built model: frozen parameters, frozen
BatchNorm kept in eval mode, and the optimizer's parameter groups by learning-rate factor."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from torch import nn

from cnnspec.spec.loadplan import FineTune

_FROZEN_SUFFIX = "Frozen"


class _FrozenNorm:
    """Mixed into a BatchNorm's class while it is frozen: ``train()`` leaves it in eval mode, so
    its running statistics stay as loaded (the class swap keeps its state_dict as it was)."""

    def train(self, mode: bool = True) -> Any:
        return nn.Module.train(cast(nn.Module, self), False)


def _frozen_class(cls: type) -> type:
    return type(cls.__name__ + _FROZEN_SUFFIX, (_FrozenNorm, cls), {"__module__": __name__})


_FROZEN_CLASSES: dict[type, type] = {}


def named_modules(model: nn.Module, paths: Iterable[str]) -> list[nn.Module]:
    """The modules at these module paths ("4.main.0"); missing paths are skipped."""
    found = dict(model.named_modules())
    return [found[p] for p in paths if p in found]


def freeze(model: nn.Module, plan: FineTune) -> None:
    """No gradients for the frozen modules' own parameters; their BatchNorm statistics fixed."""
    for module in named_modules(model, plan.frozen):
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _FrozenNorm):
            cls = type(module)
            module.__class__ = _FROZEN_CLASSES.setdefault(cls, _frozen_class(cls))
            module.eval()


def unfreeze(model: nn.Module, plan: FineTune, paths: Iterable[str] | None = None) -> int:
    """Undo ``freeze`` for ``paths`` (default: what ``train.freeze`` froze, not the layers written
    ``trainable: false``); the number of modules thawed."""
    thawed = 0
    for module in named_modules(model, plan.frozen - plan.fixed if paths is None else paths):
        for p in module.parameters(recurse=False):
            p.requires_grad_(True)
        if isinstance(module, _FrozenNorm):
            module.__class__ = type(module).__mro__[2]  # the BatchNorm class it was made from
            module.train(model.training)
        thawed += 1
    return thawed


def param_groups(model: nn.Module, plan: FineTune) -> list[dict[str, Any]]:
    """Every parameter in a group by lr factor (``lr_mult``): frozen ones too, so that unfreezing
    needs no new group (an optimizer skips a parameter whose ``grad`` is None)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for module_path, module in model.named_modules():
        factor = plan.factor(module_path)
        for p in module.parameters(recurse=False):
            groups.setdefault(factor, []).append(p)
    return [{"params": ps, "lr_mult": f} for f, ps in groups.items()]


def scale_lrs(optimizer: Any) -> None:
    """After the optimizer is built from ``param_groups``: each group's lr times its ``lr_mult``
    (before a scheduler records the initial rates)."""
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * g.get("lr_mult", 1.0)
