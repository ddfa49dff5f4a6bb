"""Classification losses: cross entropy (with label smoothing) and negative log-likelihood."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.types import LossType, NoParams, Params


class CrossEntropyParams(Params):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="spread this mass over all classes")


class CrossEntropy(LossType[CrossEntropyParams]):
    name = "cross_entropy"
    Params = CrossEntropyParams
    description = "softmax cross entropy on logits (torch.nn.CrossEntropyLoss)"
    soft_targets = True  # torch's loss also takes class probabilities (mixup, cutmix)

    def build(self, p: CrossEntropyParams) -> Any:
        from torch import nn

        return nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)


class NLL(LossType[NoParams]):
    name = "nll_loss"
    description = "negative log-likelihood on log-probabilities (torch.nn.NLLLoss)"

    def build(self, p: NoParams) -> Any:
        from torch import nn

        return nn.NLLLoss()


@hookimpl
def register_losses(register: Register) -> None:
    register(CrossEntropy())
    register(NLL())
