"""Learning-rate schedulers from torch.optim.lr_scheduler: step, multistep, exponential, cosine, onecycle."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegFloat, PosFloat, PosInt
from cnnspec.registry.types import Params, SchedulerType


class StepParams(Params):
    step_size: PosInt = Field(description="epochs between decays")
    gamma: PosFloat = Field(0.1, description="decay factor")


class MultiStepParams(Params):
    milestones: list[PosInt] = Field(description="epochs at which to decay")
    gamma: PosFloat = Field(0.1, description="decay factor")


class ExponentialParams(Params):
    gamma: PosFloat = Field(description="decay factor per epoch")


class CosineParams(Params):
    T_max: PosInt | None = Field(None, description="epochs of the half cosine; default all epochs")
    eta_min: NonNegFloat = Field(0.0, description="lowest learning rate")


class OneCycleParams(Params):
    max_lr: PosFloat = Field(description="peak learning rate")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="fraction of steps spent rising")
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="annealing shape")
    div_factor: PosFloat = Field(25.0, description="initial lr = max_lr / div_factor")
    final_div_factor: PosFloat = Field(1e4, description="final lr = initial lr / final_div_factor")
    three_phase: bool = Field(False, description="the three-phase variant")


class Step(SchedulerType[StepParams]):
    name = "step"
    Params = StepParams
    description = "multiply the lr by gamma every step_size epochs (StepLR)"

    def build(self, p: StepParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim import lr_scheduler

        return lr_scheduler.StepLR(optimizer, p.step_size, p.gamma)


class MultiStep(SchedulerType[MultiStepParams]):
    name = "multistep"
    Params = MultiStepParams
    description = "multiply the lr by gamma at each milestone epoch (MultiStepLR)"

    def build(self, p: MultiStepParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim import lr_scheduler

        return lr_scheduler.MultiStepLR(optimizer, p.milestones, p.gamma)


class Exponential(SchedulerType[ExponentialParams]):
    name = "exponential"
    Params = ExponentialParams
    description = "multiply the lr by gamma every epoch (ExponentialLR)"

    def build(self, p: ExponentialParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim import lr_scheduler

        return lr_scheduler.ExponentialLR(optimizer, p.gamma)


class Cosine(SchedulerType[CosineParams]):
    name = "cosine"
    Params = CosineParams
    description = "cosine annealing over T_max epochs (CosineAnnealingLR)"

    def planned_for(self, p: CosineParams, epochs: int) -> int | None:
        return p.T_max or epochs

    def build(self, p: CosineParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim import lr_scheduler

        return lr_scheduler.CosineAnnealingLR(optimizer, p.T_max or epochs, p.eta_min)


class OneCycle(SchedulerType[OneCycleParams]):
    name = "onecycle"
    Params = OneCycleParams
    description = "the one-cycle policy, stepped every batch (OneCycleLR)"
    interval = "batch"

    def planned_for(self, p: OneCycleParams, epochs: int) -> int | None:
        return epochs

    def build(self, p: OneCycleParams, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        from torch.optim import lr_scheduler

        kw = p.model_dump()
        # one peak per parameter group: train.lr_multipliers scale it as they scale the lr
        kw["max_lr"] = [p.max_lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, total_steps=epochs * steps_per_epoch, **kw)


@hookimpl
def register_schedulers(register: Register) -> None:
    for s in (Step(), MultiStep(), Exponential(), Cosine(), OneCycle()):
        register(s)
