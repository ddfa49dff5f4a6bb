"""torch.optim optimizers built, stepped, zeroed and saved without importing torch._dynamo where that is exact.

``torch.optim.Optimizer`` imports ``torch._dynamo`` (with sympy: about a second of start-up on a
2-core CPU, as much again as the rest of a quick run before its first step) from four places that
an eager run does not need: ``add_param_group`` (called by ``__init__``), ``zero_grad``,
``state_dict`` and ``load_state_dict`` are wrapped in ``torch._disable_dynamo``, which imports it on
their first call, and ``step`` is wrapped in ``_use_grad_for_differentiable``, which imports it on
every call to put graph breaks around the update for ``torch.compile``. Outside compilation those
wrappers do nothing but set the grad mode, so the functions here call what they wrap
(``functools.wraps`` leaves it as ``__wrapped__``) when the wrapping is exactly torch's, and the
ordinary method otherwise: an optimizer of another kind, a hook on the step, ``differentiable=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as _optimizer


def _probe() -> Any:  # pragma: no cover - never called: only its wrappers' code objects are read
    return None


def _code(wrapper: Any) -> Any:
    return getattr(wrapper, "__code__", None)


# the code objects of torch's wrappers, to recognise them by (every wrapper made by one decorator shares its code)
_USE_GRAD = _code(_optimizer._use_grad_for_differentiable(_probe))
_PROFILED = _code(Optimizer.profile_hook_step(_probe))
_NO_DYNAMO = _code(torch._disable_dynamo(_probe))


def _unwrapped(method: Any, wrapper_code: Any) -> FunctionType | None:
    """The plain function inside ``method`` when ``method`` is exactly one torch wrapper of that code."""
    inner = getattr(method, "__wrapped__", None)
    if wrapper_code is None or _code(method) is not wrapper_code or not isinstance(inner, FunctionType):
        return None
    return None if hasattr(inner, "__wrapped__") else inner


def _base_method(optimizer: Optimizer, name: str) -> FunctionType | None:
    """``Optimizer.NAME`` without its ``torch._disable_dynamo``, if ``optimizer`` has it as torch defines it."""
    base = getattr(Optimizer, name)
    if getattr(type(optimizer), name, None) is not base or name in vars(optimizer):
        return None
    return _unwrapped(base, _NO_DYNAMO)


def make_optimizer(cls: type[Optimizer], params: Any, **kwargs: Any) -> Optimizer:
    """``cls(params, **kwargs)``, its parameter groups added without ``torch._disable_dynamo``."""
    add = Optimizer.add_param_group
    plain = _unwrapped(add, _NO_DYNAMO)
    if plain is None or getattr(cls, "add_param_group", None) is not add:
        return cls(params, **kwargs)
    opt = cls.__new__(cls)
    opt.add_param_group = MethodType(plain, opt)  # type: ignore[method-assign]  # what __init__ calls
    try:
        opt.__init__(params, **kwargs)  # type: ignore[misc]
    finally:
        del opt.add_param_group
    return opt


def _global_hooks() -> bool:
    pre = getattr(_optimizer, "_global_optimizer_pre_hooks", None)
    post = getattr(_optimizer, "_global_optimizer_post_hooks", None)
    return pre is None or post is None or bool(pre) or bool(post)


def plain_step(optimizer: Optimizer) -> Callable[[], None] | None:
    """One update of ``optimizer`` as ``optimizer.step()`` does it, without the graph breaks that
    import torch._dynamo, or None where that cannot be done exactly (call ``optimizer.step()``).

    ``optimizer.step`` is, from the outside in: the learning-rate scheduler's counting wrapper
    (when a scheduler drives it), the profiling wrapper that runs the step hooks, torch's
    ``_use_grad_for_differentiable`` and the optimizer's own update. Every layer must be exactly
    that; there must be no step hooks and ``differentiable`` must be off."""
    step: Any = optimizer.step
    if isinstance(step, MethodType):
        if step.__self__ is not optimizer:
            return None
        step = step.__func__
    counted = bool(getattr(step, "_wrapped_by_lr_sched", False))
    if counted:
        step = getattr(step, "__wrapped__", None)
    if step is not getattr(type(optimizer), "step", None) or _code(step) is not _PROFILED:
        return None
    inner = getattr(step, "__wrapped__", None)
    update = _unwrapped(inner, _USE_GRAD)
    if update is None or optimizer.defaults.get("differentiable", True) is not False:
        return None
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks or _global_hooks():
        return None
    name = f"Optimizer.step#{type(optimizer).__name__}.step"

    def run() -> None:
        with torch.autograd.profiler.record_function(name), torch.no_grad():
            update(optimizer)
            optimizer._optimizer_step_code()  # what the profiler's Python tracer watches for
        if counted:  # what the scheduler's wrapper records: the optimizer stepped before the scheduler
            optimizer._opt_called = True  # type: ignore[attr-defined]

    return run


def step(optimizer: Optimizer) -> None:
    """``optimizer.step()``, without importing torch._dynamo where that is exact."""
    run = plain_step(optimizer)
    if run is None:
        optimizer.step()
    else:
        run()


def clear_grads(optimizer: Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``."""
    if type(optimizer).zero_grad is not Optimizer.zero_grad or "zero_grad" in vars(optimizer):
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def state_dict(optimizer: Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()``."""
    plain = _base_method(optimizer, "state_dict")
    return optimizer.state_dict() if plain is None else plain(optimizer)


def load_state_dict(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``."""
    plain = _base_method(optimizer, "load_state_dict")
    if plain is None:
        optimizer.load_state_dict(state)
    else:
        plain(optimizer, state)


def after_thaw(optimizer: Optimizer) -> int:
    """After frozen parameters were made trainable: the groups of a fused SGD with momentum in which
    some parameters have a momentum buffer and the thawed ones not yet run unfused from now on
    (torch's fused kernel takes all buffers or none, and fails with a TypeError on a mix; the
    unfused update gives a new parameter its first buffer as torch does); the number of such groups."""
    if not isinstance(optimizer, torch.optim.SGD):
        return 0
    changed = 0
    for group in optimizer.param_groups:
        if group.get("fused") and group.get("momentum", 0) != 0:
            has = [optimizer.state.get(p, {}).get("momentum_buffer") is not None for p in group["params"]]
            if any(has) and not all(has):
                group["fused"] = False
                changed += 1
    return changed
