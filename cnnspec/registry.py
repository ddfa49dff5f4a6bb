"""What plugins register (layer, optimizer, scheduler, loss, dataset types) and the registry of them.

Everything here is free of torch: a type declares its parameters as a pydantic model and its
shape rule as plain arithmetic; only ``build``/``load`` methods import torch, lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    import torch

Shape = tuple[int, ...]  # one sample's shape, batch dimension left out: (C, H, W) or (F,)

Kind = Literal["layer", "optimizer", "scheduler", "loss", "dataset"]
KINDS: tuple[Kind, ...] = ("layer", "optimizer", "scheduler", "loss", "dataset")


class Params(BaseModel):
    """Base of every parameter model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoParams(Params):
    """For types that take no parameters."""


InitName = Literal[
    "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
    "orthogonal", "trunc_normal", "normal", "uniform", "zeros", "ones",
]


class WeightInitParams(Params):
    """Mixin for layers with a ``weight``: ``init`` names a torch.nn.init function for it."""

    init: InitName | None = Field(
        None, description="initialise the weight with this torch.nn.init function (bias untouched)"
    )


class ShapeError(Exception):
    """A layer cannot take the shape flowing in; ``key`` names the parameter to point at."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


P = TypeVar("P", bound=Params)


class LayerType(Generic[P]):
    """A layer a spec can name: its parameters, its shape rule, its parameter count, its module."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""

    def output_shape(self, p: P, shape: Shape) -> Shape:
        """The shape this layer gives for one sample of ``shape``; raise ShapeError if it can't."""
        raise NotImplementedError

    def num_params(self, p: P, shape: Shape) -> int:
        """Trainable parameters of the module built for input ``shape`` (no torch)."""
        return 0

    def build(self, p: P, shape: Shape) -> torch.nn.Module:
        """The torch module for input ``shape``; the only place torch is touched."""
        raise NotImplementedError


class OptimizerType(Generic[P]):
    """An optimizer a spec can name under ``train.optimizer``."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""

    def build(self, p: P, parameters: Any) -> torch.optim.Optimizer:
        raise NotImplementedError


class SchedulerType(Generic[P]):
    """A learning-rate scheduler under ``train.scheduler``; ``interval`` says when it steps."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""
    interval: ClassVar[Literal["epoch", "batch"]] = "epoch"

    def build(self, p: P, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError


class LossType(Generic[P]):
    """A loss under ``train.loss``; built modules take (logits, integer targets)."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""

    def build(self, p: P) -> torch.nn.Module:
        raise NotImplementedError


class DatasetType(Generic[P]):
    """A dataset under ``data.dataset``; static facts let ``validate`` check it without torch."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""

    def sample_shape(self, p: P) -> Shape | None:
        """The (C, H, W) of one sample, or None when only the files can tell."""
        return None

    def num_classes(self, p: P) -> int | None:
        return None

    def load(self, p: P, root: str | None, download: bool) -> Any:
        """Return a ``cnnspec.data.Splits``; may import torch and read files."""
        raise NotImplementedError


class DuplicateName(Exception):
    """Two plugins registered the same name for the same kind."""


@dataclass
class Registry:
    """Every registered type by kind and name, with the plugin that registered it."""

    entries: dict[Kind, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    pm: Any = field(default=None, repr=False)  # the plugin manager it came from (run hooks)

    def add(self, kind: Kind, item: Any, owner: str) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"plugin {owner!r} registered a {kind} without a name: {item!r}")
        if name in self.entries[kind]:
            first = self.owners[(kind, name)]
            raise DuplicateName(
                f"{kind} type '{name}' is registered by two plugins: {first!r} and {owner!r}"
            )
        self.entries[kind][name] = item
        self.owners[(kind, name)] = owner

    def owner(self, kind: str, name: str) -> str:
        """The plugin that registered ``name`` as a ``kind``, or "?"."""
        return self.owners.get((kind, name), "?")

    def get(self, kind: Kind, name: str) -> Any | None:
        return self.entries[kind].get(name)

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.entries[kind])

    def items(self, kind: Kind) -> Iterator[tuple[str, Any]]:
        yield from sorted(self.entries[kind].items())
