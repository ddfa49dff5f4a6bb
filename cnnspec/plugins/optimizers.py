"""torch.optim optimizers: SGD (momentum, Nesterov), Adam, AdamW, RMSprop, Adagrad."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegFloat, PosFloat, Probability
from cnnspec.registry.types import OptimizerType, Params

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class SGDParams(Params):
    lr: PosFloat = Field(0.01, description="learning rate")
    momentum: NonNegFloat = Field(0.0, description="momentum factor")
    dampening: NonNegFloat = Field(0.0, description="dampening for momentum")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0, dampening 0)")

    @model_validator(mode="after")
    def _nesterov(self) -> SGDParams:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class AdamParams(Params):
    lr: PosFloat = Field(0.001, description="learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="[beta1, beta2], each in [0, 1)")
    eps: PosFloat = Field(1e-8, description="added to the denominator")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty")
    amsgrad: bool = Field(False, description="the AMSGrad variant")


class AdamWParams(AdamParams):
    weight_decay: NonNegFloat = Field(0.01, description="decoupled weight decay")


class RMSpropParams(Params):
    lr: PosFloat = Field(0.01, description="learning rate")
    alpha: Probability = Field(0.99, description="smoothing constant")
    eps: PosFloat = Field(1e-8, description="added to the denominator")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty")
    momentum: NonNegFloat = Field(0.0, description="momentum factor")
    centered: bool = Field(False, description="normalise by the estimated variance")


class AdagradParams(Params):
    lr: PosFloat = Field(0.01, description="learning rate")
    lr_decay: NonNegFloat = Field(0.0, description="learning-rate decay")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty")
    eps: PosFloat = Field(1e-10, description="added to the denominator")


class TorchOptimizer(OptimizerType[Params]):
    """A torch.optim class whose keyword arguments are the params' fields."""

    def __init__(self, name: str, cls: str, params: type[Params]) -> None:
        self.name = name
        self.cls = cls
        self.Params = params
        self.description = f"torch.optim.{cls}"

    def state_per_param(self, p: Params) -> int:
        """Values torch keeps per parameter: Adam(W) two moments (three with amsgrad), SGD's
        momentum buffer, RMSprop's square average (plus momentum and mean), Adagrad's sum."""
        if isinstance(p, AdamParams):
            return 3 if p.amsgrad else 2
        if isinstance(p, SGDParams):
            return 1 if p.momentum > 0 else 0
        if isinstance(p, RMSpropParams):
            return 1 + (p.momentum > 0) + p.centered
        if isinstance(p, AdagradParams):
            return 1
        return 0

    def build(self, p: Params, parameters: Any) -> Any:
        import torch

        from cnnspec.build.optim import make_optimizer

        params = list(parameters)
        kwargs = p.model_dump()
        # torch's fused kernel updates each parameter in one pass: the same arithmetic, and Adam's
        # step on the Keras-style model took 0.61 ms instead of 2.00 on CPU (bench/step_ab.py)
        if self.cls in FUSED and params and all(
                isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type in ("cpu", "cuda")
                for t in params):
            kwargs["fused"] = True
        return make_optimizer(getattr(torch.optim, self.cls), params, **kwargs)


FUSED = ("SGD", "Adam", "AdamW", "Adagrad")  # the classes with fused CPU and CUDA kernels


OPTIMIZERS = (
    TorchOptimizer("sgd", "SGD", SGDParams),
    TorchOptimizer("adam", "Adam", AdamParams),
    TorchOptimizer("adamw", "AdamW", AdamWParams),
    TorchOptimizer("rmsprop", "RMSprop", RMSpropParams),
    TorchOptimizer("adagrad", "Adagrad", AdagradParams),
)


@hookimpl
def register_optimizers(register: Register) -> None:
    for opt in OPTIMIZERS:
        register(opt)
