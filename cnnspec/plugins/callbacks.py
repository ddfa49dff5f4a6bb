"""Callbacks for ``train.callbacks`` (early stopping, unfreezing) and the metric-driven scheduler
``reduce_on_plateau``."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegFloat, NonNegInt, PosFloat, PosInt
from cnnspec.registry.types import Callback, CallbackType, Params, SchedulerType
from cnnspec.spec.metrics import metric, minimised


def _mode(mode: str, monitor: str) -> Literal["min", "max"]:
    """``auto``: losses are minimised, everything else maximised."""
    if mode == "auto":
        return "min" if minimised(monitor) else "max"
    return "min" if mode == "min" else "max"


class EarlyStoppingParams(Params):
    monitor: str = Field(metric("val", "loss"), description="the metric to watch (a metrics.jsonl key)")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses, max otherwise")
    patience: NonNegInt = Field(5, description="epochs without improvement before stopping")
    min_delta: NonNegFloat = Field(0.0, description="a smaller change is no improvement")
    restore_best: bool = Field(False, description="at the end, put the best epoch's weights back in the model")


class EarlyStoppingCallback(Callback):
    """Stops when ``monitor`` has not improved for ``patience`` epochs; also picks best.pt."""

    def __init__(self, p: EarlyStoppingParams) -> None:
        self.p = p
        self.mode = _mode(p.mode, p.monitor)
        self.best_metric = (p.monitor, self.mode)
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: dict[str, Any] | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        delta = self.best - value if self.mode == "min" else value - self.best
        return delta > self.p.min_delta

    def on_epoch_end(self, context: Any, metrics: dict[str, Any]) -> bool:
        value = float(metrics[self.p.monitor])
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, int(metrics["epoch"]), 0
            if self.p.restore_best:
                self.best_weights = {k: v.detach().cpu().clone() for k, v in context.model.state_dict().items()}
        else:
            self.wait += 1
        return self.wait >= max(self.p.patience, 1)

    def on_train_end(self, context: Any, summary: dict[str, Any]) -> None:
        if self.p.restore_best and self.best_weights is not None:
            context.model.load_state_dict(self.best_weights)
            summary["restored_epoch"] = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = state["best_weights"]


class EarlyStopping(CallbackType[EarlyStoppingParams]):
    name = "early_stopping"
    Params = EarlyStoppingParams
    description = "stop when a validation metric stops improving (and choose best.pt by it)"

    def monitor(self, p: EarlyStoppingParams) -> str:
        return p.monitor

    def build(self, p: EarlyStoppingParams) -> Callback:
        return EarlyStoppingCallback(p)


class PlateauParams(Params):
    monitor: str = Field(metric("val", "loss"), description="the metric to watch (a metrics.jsonl key)")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses, max otherwise")
    factor: PosFloat = Field(0.1, lt=1.0, description="multiply the rate by this on a plateau")
    patience: PosInt = Field(3, description="epochs without improvement before reducing")
    threshold: NonNegFloat = Field(1e-4, description="relative change that counts as improvement")
    cooldown: NonNegInt = Field(0, description="epochs to wait after a reduction")
    min_lr: NonNegFloat = Field(0.0, description="lowest learning rate")


class ReduceOnPlateau(SchedulerType[PlateauParams]):
    name = "reduce_on_plateau"
    Params = PlateauParams
    description = "cut the rate when a validation metric stops improving (torch ReduceLROnPlateau)"

    def monitor(self, p: PlateauParams) -> str:
        return p.monitor

    def build(self, p: PlateauParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        return ReduceLROnPlateau(optimizer, mode=_mode(p.mode, p.monitor), factor=p.factor,
                                 patience=p.patience, threshold=p.threshold, cooldown=p.cooldown,
                                 min_lr=p.min_lr)


class UnfreezeParams(Params):
    epoch: PosInt = Field(description="after this many epochs, the layers train.freeze froze train too")


class UnfreezeCallback(Callback):
    """Thaws what ``train.freeze`` froze once ``epoch`` epochs are done (and again on a resumed run
    past that point, since the model is built frozen)."""

    def __init__(self, p: UnfreezeParams) -> None:
        self.p = p
        self.done = False

    def _thaw(self, context: Any) -> None:
        from cnnspec.build.finetune import unfreeze
        from cnnspec.build.optim import after_thaw

        model = getattr(context.model, "module", context.model)  # a DistributedDataParallel's model
        unfreeze(model, context.spec.finetune)
        after_thaw(context.optimizer)
        self.done = True

    def on_train_begin(self, context: Any) -> None:
        if self.done:
            self._thaw(context)

    def on_epoch_end(self, context: Any, metrics: dict[str, Any]) -> bool:
        if not self.done and int(metrics["epoch"]) >= self.p.epoch:
            self._thaw(context)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))


class Unfreeze(CallbackType[UnfreezeParams]):
    name = "unfreeze"
    Params = UnfreezeParams
    description = "train the layers train.freeze froze, from a given epoch on (fine-tuning in two phases)"
    thaws = True

    def build(self, p: UnfreezeParams) -> Callback:
        return UnfreezeCallback(p)


@hookimpl
def register_callbacks(register: Register) -> None:
    register(EarlyStopping())
    register(Unfreeze())


@hookimpl
def register_schedulers(register: Register) -> None:
    register(ReduceOnPlateau())
