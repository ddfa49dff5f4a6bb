"""What plugins register (layer, optimizer, scheduler, loss, dataset types) and the registry of them.

Everything here is free of torch: a type declares its parameters as a pydantic model and its
shape rule as plain arithmetic; only ``build``/``load`` methods import torch, lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cnnspec.errors import PluginError
from cnnspec.registry.kinds import KINDS, REGISTER_HOOKS, Kind

if TYPE_CHECKING:  # pragma: no cover
    import torch

Shape = tuple[int, ...]  # one sample's shape, batch dimension left out: (C, H, W) or (F,)



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
    """A layer cannot take the shape flowing in; ``key`` names the parameter to point at.

    ``at`` is a longer path inside the layer's item (e.g. ``("branches", 2)``); ``component``
    is filled in by the trace with the (innermost) layer the error belongs to.
    """

    def __init__(self, message: str, key: str | None = None, at: tuple[str | int, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.at = at if at is not None else ((key,) if key else None)
        self.component: Any = None


P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class Saved:
    """A layer's memory rule: what its backward keeps, per sample.

    ``input`` and ``output``: whether autograd keeps the layer's input or output tensor (a
    convolution keeps its input, ReLU its output); ``extra``: bytes of its own beyond those, such
    as max-pooling's int64 indices, dropout's mask or a padded copy of the input. ``view``: the
    output is the input seen in another shape (flatten, identity), no new tensor.
    """

    input: bool = True
    output: bool = True
    extra: int = 0
    view: bool = False


@dataclass(frozen=True)
class TensorSpec:
    """One entry of a built module's ``state_dict()``, known without torch: its name inside the
    layer's module (``weight``, ``1.bias``), shape, dtype, and whether it is a trainable parameter
    (False: a buffer, such as BatchNorm's running statistics)."""

    name: str
    shape: Shape
    dtype: str = "float32"
    trainable: bool = True


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

    def tensors(self, p: P, in_shape: Shape, out_shape: Shape) -> list[TensorSpec] | None:
        """The ``state_dict()`` of the module ``build`` makes, in its order (no torch): what lets
        ``validate`` check a weights file against the spec. The default covers layers without
        parameters or buffers; a layer with either must list them (None = unknown: a weights file
        cannot be checked against a spec that uses it)."""
        return [] if self.num_params(p, in_shape) == 0 else None

    def macs(self, p: P, in_shape: Shape, out_shape: Shape) -> int | None:
        """Multiply-accumulates of one sample's forward pass (no torch); None = unknown (``?``).

        The convention is ``torch.utils.flop_counter.FlopCounterMode``'s forward FLOPs / 2: only
        convolutions and matrix products count, so element-wise layers, pooling and
        normalisation return 0. The default, None, makes the spec's total incomplete.
        """
        return None

    def saved(self, p: P, in_shape: Shape, out_shape: Shape) -> Saved:
        """What backward keeps of this layer, per sample (no torch). The default assumes both the
        input and the output, an upper bound for element-wise layers and convolutions alike."""
        return Saved()

    # Its output is a max over windows of its input, so a relu just before it may run after it.
    max_pooling: bool = False
    # Its module is a ReLU (max(x, 0) element-wise, no parameters): before a max pooling, the
    # builder moves it after the pooling (see ``shapes.pooled_relus``) and ``cost`` counts it there.
    relu: bool = False

    def without_relu(self, p: P, in_shape: Shape, out_shape: Shape) -> Saved | None:
        """For a layer whose module ends with a ReLU (a convolution with ``activation: relu``):
        its memory rule without that ReLU. The builder may then move the ReLU after a max pooling
        that follows (see ``shapes.pooled_relus``), so the built module must be an
        ``nn.Sequential`` whose last module is the ``nn.ReLU``. None (the default): no ReLU at its end."""
        return None

    def build(self, p: P, shape: Shape) -> torch.nn.Module:
        """The torch module for input ``shape``; the only place torch is touched."""
        raise NotImplementedError


class Tracer(Protocol):
    """What a composite's ``trace`` gets: runs the shape through its child layer lists.

    Rows made by ``run`` become the composite's children in the shape table (and its built
    module's children, in the same order); ``group`` wraps them in one labelled row (a path such
    as ``main``, ``shortcut`` or ``branch``), built as an ``nn.Sequential`` (``nn.Identity`` if empty).
    """

    def run(self, i: int, shape: Shape, group: str | None = None, **info: Any) -> Shape:
        """Trace child list ``i`` from ``shape``; return the shape it gives."""
        ...

    def generated(self, layers: list[Any], shape: Shape, group: str | None = None, **info: Any) -> Shape:
        """Trace layers the composite makes itself (bare names or {type: ..., ...} mappings)."""
        ...


class CompositeType(LayerType[P]):
    """A layer made of lists of layers (sequence, residual, parallel branches, repeat...).

    Its parameters hold the lists as written; ``paths`` says where they are, and the core checks
    every layer in them like any other (located errors, blocks, repeat). Its shape rule and
    parameter count come from its children's: ``trace`` runs the shape through them with a
    ``Tracer``; the parameter count is the children's sum plus ``num_params`` (its own, 0 by default).
    ``assemble`` gets the built modules of the rows ``trace`` made, in order, and returns one module.
    Its MACs are its children's sum plus ``macs`` (its own, 0 by default: a sum or concat costs none);
    ``merges`` says its output is a new tensor (a sum or concat), which counts as activation memory.
    ``chain`` says ``assemble`` runs the parts one after another (an ``nn.Sequential``), so the
    builder may rewrite among them as among top-level layers (see ``shapes.pooled_relus``).
    ``copies`` says how many times its child lists run (``repeat``: ``times``), so the check counts
    every copy against the limit of layers in a model; ``merge_of`` names how a composite whose
    children are all paths joins them (``sum``, ``concat``), for the merge node ``graph`` draws.
    """

    merges: bool = False
    chain: bool = False

    def macs(self, p: P, in_shape: Shape, out_shape: Shape) -> int | None:
        return 0

    def saved(self, p: P, in_shape: Shape, out_shape: Shape) -> Saved:
        """Its own: a sum or concat keeps nothing for backward (its children declare theirs)."""
        return Saved(input=False, output=False)

    def copies(self, p: P) -> int:
        """How many times the child lists run, each copy with its own layers (1 by default)."""
        return 1

    def merge_of(self, p: P) -> str | None:
        """How the paths' outputs are joined (``sum``, ``concat``); None (the default): the graph
        labels the merge node with the type's name."""
        return None

    def paths(self, p: P) -> list[tuple[str | int, ...]]:
        """Where each child layer list is inside the parameters, e.g. ``[("layers",)]``.

        The value there is a list of layers (or a single layer, read as a list of one)."""
        raise NotImplementedError

    def trace(self, p: P, shape: Shape, t: Tracer) -> Shape:
        """The output shape, computed by running the child lists through ``t``; ShapeError if not."""
        raise NotImplementedError

    def info(self, p: P) -> dict[str, Any]:
        """Extra facts shown on its row (``validate`` table and JSON), e.g. {"merge": "concat"}."""
        return {}

    def part_names(self, p: P, n: int) -> list[str]:
        """The names ``assemble`` gives its ``n`` parts in the module it returns (the prefixes of
        their ``state_dict()`` keys): ``"0"`` to ``"n-1"`` by default, as ``nn.Sequential`` does."""
        return [str(i) for i in range(n)]

    def tensors(self, p: P, in_shape: Shape, out_shape: Shape) -> list[TensorSpec] | None:
        """Its own ``state_dict()`` entries besides its parts' (none by default)."""
        return []

    def assemble(self, p: P, shape: Shape, parts: list[Any]) -> torch.nn.Module:
        """One module from the children's modules (torch imported here only)."""
        raise NotImplementedError

    def output_shape(self, p: P, shape: Shape) -> Shape:  # composites trace instead
        raise TypeError(f"composite layer '{self.name}' has no output_shape; the core calls trace()")

    def build(self, p: P, shape: Shape) -> torch.nn.Module:  # composites assemble instead
        raise TypeError(f"composite layer '{self.name}' is assembled from its children, not built")


class BlockType:
    """A named, parameterised block a plugin ships (a spec's ``blocks:`` entry, in Python).

    ``params`` and ``layers`` are written exactly as under ``blocks: NAME:`` in a spec file:
    ``params`` maps a name to a type (``int``, ``float``, ``bool``, ``str``, ``size``, ``list``,
    ``any``) or to ``{type: T, default: V, description: ...}``; ``$name`` in ``layers`` is
    replaced by the argument.
    """

    def __init__(self, name: str, layers: list[Any], params: dict[str, Any] | None = None,
                 description: str = "") -> None:
        self.name = name
        self.layers = layers
        self.params = dict(params or {})
        self.description = description


class OptimizerType(Generic[P]):
    """An optimizer a spec can name under ``train.optimizer``."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""

    def state_per_param(self, p: P) -> int:
        """How many values the optimizer keeps per parameter (Adam: 2 moments; SGD with momentum: 1)."""
        return 0

    def build(self, p: P, parameters: Any) -> torch.optim.Optimizer:
        raise NotImplementedError


class SchedulerType(Generic[P]):
    """A learning-rate scheduler under ``train.scheduler``; ``interval`` says when it steps."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""
    interval: ClassVar[Literal["epoch", "batch"]] = "epoch"

    def monitor(self, p: P) -> str | None:
        """The metric (a metrics.jsonl key) whose value ``step(value)`` takes each epoch, if any."""
        return None

    def planned_for(self, p: P, epochs: int) -> int | None:
        """The number of epochs its schedule is planned over (cosine's T_max), if it depends on
        the run's length: a resumed run that trains longer would go past its end. None: it does not."""
        return None

    def build(self, p: P, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError


class LossType(Generic[P]):
    """A loss under ``train.loss``; built modules take (logits, integer targets)."""

    name: str  # a class attribute, or set per instance when one class serves several names
    Params: type[Params] = NoParams
    description: str = ""
    # True if the module also takes class probabilities (N x K floats) as targets (mixup, cutmix)
    soft_targets: bool = False

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

    def num_samples(self, p: P) -> tuple[int, int] | None:
        """The (train, test) sample counts when known without reading files, or None: the training
        memory estimate counts a set held in memory whole."""
        return None

    def streamed(self, p: P) -> bool:
        """True when training reads the set batch by batch (from the image cache) instead of holding
        it in memory: the training memory estimate then counts only the batches read ahead."""
        return False

    def load(self, p: P, root: str | None, download: bool) -> Any:
        """Return a ``cnnspec.data.splits.Splits``; may import torch and read files."""
        raise NotImplementedError


class AugmentationType(Generic[P]):
    """A training-data augmentation under ``data.augment``, applied to whole batches on the device.

    ``check`` is its static rule (validate); ``build`` gives a callable
    ``(x: N x C x H x W, y) -> (x, y)`` drawing from torch's global random state (which
    checkpoints save, so a resumed run draws the same); ``y`` is N class indices, or N x K
    class probabilities after an augmentation that ``mixes_labels``.
    """

    name: str
    Params: type[Params] = NoParams
    description: str = ""
    mixes_labels: bool = False  # its targets become class probabilities: the loss must take them

    def check(self, p: P, shape: Shape) -> None:
        """Raise ShapeError if the augmentation cannot apply to samples of ``shape``."""

    def build(self, p: P, shape: Shape, num_classes: int) -> Any:
        raise NotImplementedError

    def sample_bytes(self, p: P, shape: Shape, num_classes: int) -> int:
        """Bytes per sample this augmentation holds beside the batch while it runs (its padded or
        shuffled copies, mixed labels); the training memory estimate counts them. Default 0."""
        return 0


class Callback:
    """Something a spec's ``train.callbacks`` adds to the loop; every method is optional.

    ``context`` is the run's ``cnnspec.train.context.Context``. State returned by ``state_dict``
    (tensors and plain data) is saved in every resumable checkpoint and given back to
    ``load_state_dict`` on ``--resume``.
    """

    # (metric, "min" | "max") if this callback decides which epoch is "best" (best.pt)
    best_metric: tuple[str, str] | None = None

    def on_train_begin(self, context: Any) -> None: ...
    def on_epoch_end(self, context: Any, metrics: dict[str, Any]) -> bool | None:
        """After each epoch's evaluation; return True to stop training."""
    def on_train_end(self, context: Any, summary: dict[str, Any]) -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CallbackType(Generic[P]):
    """A callback a spec can name under ``train.callbacks``."""

    name: str
    Params: type[Params] = NoParams
    description: str = ""
    # It makes what train.freeze froze train again during the run: the memory estimate then counts
    # every parameter's gradient and optimizer state (the most the run will hold).
    thaws: bool = False

    def monitor(self, p: P) -> str | None:
        """The metric it watches, so validate can check that the run will have it."""
        return None

    def build(self, p: P) -> Callback:
        raise NotImplementedError


class DuplicateName(Exception):
    """Two plugins registered the same name for the same kind."""


@dataclass(frozen=True)
class Lazy:
    """A type registered by its name alone: ``module`` is imported when the type is first used.

    ``module`` defines the usual ``register_*`` function for the type's kind (whether or not it is
    itself registered with pluggy); the first lookup of any of its names calls that function and
    puts every type it gives in place. A plugin with many types, or heavy imports, registers
    ``Lazy("mytype", "mypkg.types")`` for each, so that ``validate`` pays only for what a spec names.
    """

    name: str
    module: str


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
        item = self.entries[kind].get(name)
        if isinstance(item, Lazy):
            self._resolve(kind, name, item.module)
            item = self.entries[kind][name]
        return item

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.entries[kind])

    def items(self, kind: Kind) -> Iterator[tuple[str, Any]]:
        for name in list(self.entries[kind]):
            self.get(kind, name)
        yield from sorted(self.entries[kind].items())

    def _resolve(self, kind: Kind, name: str, module: str) -> None:
        """Import ``module`` and put the types its register function gives in place of its Lazy entries."""
        import importlib

        hook = next(h for h, k in REGISTER_HOOKS.items() if k == kind)
        owner = self.owner(kind, name)
        given: list[Any] = []
        try:
            getattr(importlib.import_module(module), hook)(given.append)
        except (Exception, SystemExit) as e:
            raise PluginError(f"plugin {owner!r} failed to load {kind} type '{name}' "
                              f"from {module}.{hook}: {type(e).__name__}: {e}") from e
        listed = {n for n, entry in self.entries[kind].items() if isinstance(entry, Lazy) and entry.module == module}
        names = [getattr(item, "name", None) for item in given]
        found = dict(zip(names, given))
        # the names a plugin lists and the types its module gives must agree, as for eager plugins
        wrong = [f"registers '{n}' twice" for n in sorted({n for n in names if names.count(n) > 1}, key=str)]
        wrong += [f"does not register '{n}'" for n in sorted(listed - set(found))]
        wrong += [f"registers '{n}', which the plugin does not list" for n in sorted(set(found) - listed, key=str)]
        if wrong:
            raise PluginError(f"plugin {owner!r} lists {kind} types in {module}, but {module}.{hook} "
                              + "; ".join(wrong))
        for n in listed:
            self.entries[kind][n] = found[n]
