"""What a model costs, from its shape trace alone (no torch): MACs, memory, a training step's estimate.

Conventions: ``macs`` are multiply-accumulates of one sample's forward pass, exactly
``torch.utils.flop_counter.FlopCounterMode``'s forward FLOPs / 2 (convolutions and matrix
products only). Memory is fp32: 4 bytes a value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cnnspec.errors import path_str
from cnnspec.registry.types import Saved
from cnnspec.spec.shapes import BYTES, Row, ShapeTrace, is_relu, pooled_relus

DEFAULT_BATCH_SIZE = 64  # DataSection's default, for specs without a data: section
STREAM_AHEAD = 2  # batches a streamed set reads ahead of the one trained on (cnnspec.data.stream)
LABEL_BYTES = 8  # an int64 class index


@dataclass(frozen=True)
class DataHeld:
    """What the dataset holds during training: the whole set (``resident``, float32 on the training
    device) or only the batches read ahead (``streamed`` from the image cache); ``bytes`` is None
    when a resident set's size is known only once it is read."""

    kind: str  # "resident" or "streamed"
    bytes: int | None

    @classmethod
    def streamed(cls, batch_size: int, sample_bytes: int) -> DataHeld:
        """A streamed set: the STREAM_AHEAD batches read ahead of the one trained on."""
        return cls("streamed", STREAM_AHEAD * batch_size * sample_bytes)

    @property
    def label(self) -> str:
        return "streamed data" if self.kind == "streamed" else "data in memory"

    def text(self) -> str:
        """``data in memory 209.9 MiB`` (the whole set), ``streamed data 1.2 MiB`` (STREAM_AHEAD batches)."""
        return f"{self.label} " + (human_bytes(self.bytes) if self.bytes is not None else "(size known once read)")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs at ``batch_size``: weights, gradients, optimizer state, activations.

    ``activations`` is the most the layers hold at once for the whole batch: the tensors autograd
    keeps for backward (each layer's memory rule, ``LayerType.saved``) and the gradients in flight
    (see ActivationProfile); ``input`` is the batch itself.
    """

    batch_size: int
    params: int
    grads: int
    optimizer_state: int
    activations: int
    input: int
    dominant: tuple[tuple[str, int], ...] = ()  # (layer, bytes) with the most memory, largest first
    augment: int = 0  # the largest augmentation's buffers for the batch (they run one at a time)
    data: DataHeld | None = None  # what the dataset holds beside the step (None: no dataset)

    @property
    def step_total(self) -> int:
        """One training step: weights, gradients, optimizer state, activations, the batch, augmentation."""
        return self.params + self.grads + self.optimizer_state + self.activations + self.input + self.augment

    @property
    def total(self) -> int:
        """The step and the dataset's share: the whole set when it is held in memory, a few batches when
        it is streamed."""
        return self.step_total + self.data_bytes

    @property
    def data_bytes(self) -> int:
        return (self.data.bytes or 0) if self.data is not None else 0

    def to_json(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "total_bytes": self.total, "param_bytes": self.params,
                "grad_bytes": self.grads, "optimizer_state_bytes": self.optimizer_state,
                "activation_bytes": self.activations, "input_bytes": self.input, "augment_bytes": self.augment,
                "data_bytes": self.data.bytes if self.data is not None else 0,
                "data_held": self.data.kind if self.data is not None else None,
                "dominant": [{"layer": n, "bytes": b} for n, b in self.dominant]}

    def line(self) -> str:
        """One line: the total and its parts."""
        return (f"training memory at batch {self.batch_size:,}: ~{human_bytes(self.total)} "
                f"(params {human_bytes(self.params)}, grads {human_bytes(self.grads)}, "
                f"optimizer {human_bytes(self.optimizer_state)}, activations "
                f"{human_bytes(self.activations + self.input)}"
                + (f", augmentation {human_bytes(self.augment)}" if self.augment else "")
                + (f", {self.data.text()}" if self.data is not None else "") + ")")

    def dominant_text(self) -> str:
        return ", ".join(f"{n} {human_bytes(b)}" for n, b in self.dominant)


def human(n: int | float, unit: str = "", base: int = 1000) -> str:
    """3.2M, 1.5G (base 1000) or 2.0 MiB (base 1024); small numbers as they are."""
    prefixes = ["", "K", "M", "G", "T", "P", "E"]
    sep = " " if unit else ""
    if isinstance(n, float) and not math.isfinite(n):
        return f"{n}{sep}{unit}"
    if abs(n) >= base ** len(prefixes):  # past E: 3.0e396 (an int may be past float range: int arithmetic)
        e = int(math.log10(abs(n)))
        m = n / 10**e
        m, e = (m / 10, e + 1) if abs(m) >= 9.95 else (m, e)
        return f"{m:.1f}e{e}{sep}{unit}"
    i = 0
    while abs(n) >= base ** (i + 1) and i < len(prefixes) - 1:
        i += 1
    if i == 0:
        return f"{int(n)}{sep}{unit}"
    p = prefixes[i] + ("i" if base == 1024 else "")
    return f"{n / base ** i:.1f}{sep}{p}{unit}"


def human_bytes(n: int) -> str:
    return human(n, "B", 1024)


def _label(path: str, r: Row) -> str:
    return f"#{path} {r.type}"


@dataclass
class _Node:
    """One operation of the forward pass: a leaf layer, or the sum/concat of a merging composite."""

    row: Row
    inputs: list[int]  # tensor ids
    output: int
    saved: Saved
    weights: bool = False  # has parameters of its own


@dataclass(frozen=True)
class ActivationProfile:
    """Per sample: what a training step holds besides weights, from the layers' memory rules.

    The forward pass keeps tensors for backward (each layer's ``Saved``); backward then walks the
    layers in reverse, freeing a tensor once the last layer that kept it is done, while the
    gradient of the layer it is at (of its output and of its input) is alive. ``peak`` is the
    most bytes alive at any layer of that walk; ``kept`` gives each row (by id) the tensors it
    made that are kept, so the rows' shares plus ``in_flight`` (the gradients at the peak) sum
    to ``peak``. The input batch is not included (MemoryEstimate.input).
    """

    peak: int
    kept: dict[int, int]

    @property
    def in_flight(self) -> int:
        return self.peak - sum(self.kept.values())

    def row_bytes(self, r: Row) -> int:
        """The kept bytes of a row and every row below it."""
        return self.kept.get(id(r), 0) + sum(self.row_bytes(c) for c in r.children)


def _saved(r: Row) -> Saved:
    t = getattr(r.component, "type", None)
    rule = getattr(t, "saved", None)
    return rule(r.component.params, r.input_shape, r.output_shape) if rule is not None else Saved()


def _nodes(rows: Sequence[Row], tensor: int, sizes: list[int], out: list[_Node], built: bool = False) -> int:
    """Append the operations of ``rows`` (run in order from ``tensor``); the id of what they give.

    ``built``: the rows are a sequence the builder reorders (a relu before max pooling runs
    after it, see shapes.pooled_relus), so the operations follow the built model."""
    swap = set(pooled_relus(rows)) if built else set()
    for i, r in enumerate(rows):
        if i - 1 in swap:  # the pooling, already run before this relu
            continue
        if i in swap:  # pool the relu's input, then the relu on the pooled tensor
            pool = rows[i + 1]
            relu_rule = _saved(r)
            if not is_relu(r):  # a layer ending with a relu: the layer alone runs first
                sizes.append(r.activation_bytes)
                out.append(_Node(r, [tensor], len(sizes) - 1, r.component.type.without_relu(
                    r.component.params, r.input_shape, r.output_shape), weights=r.params > 0))
                tensor, relu_rule = len(sizes) - 1, Saved(input=False, output=True)  # relu keeps its output
            sizes.append(pool.activation_bytes)
            out.append(_Node(pool, [tensor], len(sizes) - 1, _saved(pool)))
            sizes.append(pool.activation_bytes)
            out.append(_Node(r, [len(sizes) - 2], len(sizes) - 1, relu_rule))
            tensor = len(sizes) - 1
        elif r.component is None:  # a path (main, shortcut, branch): its layers in order
            tensor = _nodes(r.children, tensor, sizes, out, built=True)
        elif r.composite and getattr(r.component.type, "merges", False):
            ends = [_nodes([c], tensor, sizes, out) for c in r.children]  # paths from the same input
            sizes.append(r.activation_bytes)
            out.append(_Node(r, ends, len(sizes) - 1, _saved(r)))
            tensor = len(sizes) - 1
        elif r.composite:  # children in order; reordered by the builder if the composite chains them
            tensor = _nodes(r.children, tensor, sizes, out, built=getattr(r.component.type, "chain", False))
        elif not (saved := _saved(r)).view:  # a view passes its input on: no new tensor
            sizes.append(r.activation_bytes)
            out.append(_Node(r, [tensor], len(sizes) - 1, saved, weights=r.params > 0))
            tensor = len(sizes) - 1
    return tensor


def activation_profile(trace: ShapeTrace) -> ActivationProfile:
    """Replay the forward pass and backward walk of one sample (see ActivationProfile)."""
    sizes = [0]  # tensor 0 is the input batch, counted apart
    nodes: list[_Node] = []
    _nodes(trace.rows, 0, sizes, nodes, built=True)
    # layers before the first weights see no tensor that needs a gradient: autograd keeps nothing
    grad = {0: False}
    for n in nodes:
        grad[n.output] = n.weights or any(grad[t] for t in n.inputs)
        if not grad[n.output]:
            n.saved = Saved(input=False, output=False)
    # a kept tensor is freed when backward finishes the first (in forward order) node keeping it
    freed_at: dict[int, int] = {}
    for j, n in enumerate(nodes):
        keeps = ([n.output] if n.saved.output else []) + (n.inputs if n.saved.input else [])
        for t in keeps:
            if t and t not in freed_at:
                freed_at[t] = j
    producer = {n.output: n for n in nodes}
    kept: dict[int, int] = {}
    for t in freed_at:
        kept[id(producer[t].row)] = kept.get(id(producer[t].row), 0) + sizes[t]
    for n in nodes:
        kept[id(n.row)] = kept.get(id(n.row), 0) + n.saved.extra
    # alive[j]: what is still kept while backward is at node j
    alive = [0] * (len(nodes) + 1)
    for t, j in freed_at.items():
        alive[j] += sizes[t]
    for j, n in enumerate(nodes):
        alive[j] += n.saved.extra
    peak, held = 0, sum(alive)
    for j in range(len(nodes) - 1, -1, -1):
        n = nodes[j]
        # the gradients of its output and of its inputs (none for tensors that need none)
        grads = sum(sizes[t] for t in [n.output, *n.inputs] if grad[t])
        peak = max(peak, held + grads)
        held -= alive[j]
    return ActivationProfile(peak=max(peak, sum(kept.values())), kept=kept)


def _leaf_costs(rows: list[Row], prof: ActivationProfile, batch: int, prefix: str = "") -> list[tuple[str, int]]:
    """(label, bytes) for every layer: what it keeps for the batch, its weights with grads and state."""
    out = []
    for r in rows:
        path = f"{prefix}{r.index}"
        if r.children:
            out += _leaf_costs(list(r.children), prof, batch, path + ".")
            if prof.kept.get(id(r)):
                out.append((_label(path, r), prof.kept[id(r)] * batch))
        elif r.composite:
            continue
        else:
            out.append((_label(path, r), prof.kept.get(id(r), 0) * batch + r.param_bytes))
    return out


def estimate(trace: ShapeTrace, optimizer: Any | None, batch_size: int, frozen: int = 0,
             augmentations: Sequence[Any] = (), data: DataHeld | None = None) -> MemoryEstimate:
    """The training memory estimate; ``optimizer`` is the spec's optimizer Component (or None);
    ``frozen`` parameters (train.freeze) get no gradients and no optimizer state; ``augmentations``
    (the spec's Components) add the largest one's buffers (``AugmentationType.sample_bytes``);
    ``data`` is what the dataset holds beside the step."""
    per_param = per_param_state(optimizer)
    params = trace.param_bytes
    trained = params - frozen * BYTES
    inp = 1
    for d in trace.input_shape:
        inp *= d
    prof = activation_profile(trace)
    # the model's output width is the number of classes (what a mixing augmentation's labels hold)
    classes = math.prod(trace.output_shape)
    augment = [(f"{path_str(c.path)} {c.name}", c.type.sample_bytes(c.params, trace.input_shape, classes) * batch_size)
               for c in augmentations]
    held = [(data.label, data.bytes)] if data is not None and data.bytes else []
    costs = sorted(_leaf_costs(trace.rows, prof, batch_size) + [a for a in augment if a[1]] + held,
                   key=lambda c: -c[1])
    return MemoryEstimate(batch_size=batch_size, params=params, grads=trained,
                          optimizer_state=trained * per_param,
                          activations=prof.peak * batch_size,
                          input=inp * BYTES * batch_size, dominant=tuple(costs[:3]),
                          augment=max((b for _, b in augment), default=0), data=data)


def spec_estimate(spec: Any, batch_size: int | None = None, data: DataHeld | None = None) -> MemoryEstimate:
    """The estimate for a checked Spec at its data.batch_size (or ``batch_size``), with ``data`` as
    what the dataset holds (default: what its type declares, ``data_held``)."""
    if batch_size is None:
        batch_size = spec.data.batch_size if spec.data is not None else DEFAULT_BATCH_SIZE
    thawed = any(getattr(cb.type, "thaws", False) for cb in spec.callbacks)  # frozen now, trained later
    return estimate(spec.trace, spec.optimizer, batch_size, 0 if thawed else spec.finetune.frozen_params,
                    spec.augmentations, data if data is not None else data_held(spec, batch_size))


def data_held(spec: Any, batch_size: int) -> DataHeld | None:
    """What the spec's dataset will hold while training, from its type alone (no files read): a
    streamed set the batches read ahead; a resident one every sample of both splits (``data.limit``
    applied) as float32 with its label, when its type declares the counts."""
    ds = getattr(spec, "dataset", None)
    if ds is None or spec.data is None:
        return None
    sample = BYTES * math.prod(spec.trace.input_shape)
    if ds.type.streamed(ds.params):
        return DataHeld.streamed(batch_size, sample)
    counts = ds.type.num_samples(ds.params)
    if counts is None:
        return DataHeld("resident", None)
    limit = spec.data.limit
    n = sum(min(c, limit) if limit is not None else c for c in counts)
    return DataHeld("resident", n * (sample + LABEL_BYTES))


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}


MAX_AMOUNT = 10**19  # a limit past this (10 EB, 10^19 MACs) is no limit, and float arithmetic would overflow


def parse_amount(text: Any, bytes_: bool) -> int:
    """``2GiB``, ``500MB``, ``1.5G``, ``3e9``, ``1000000`` as a number; ValueError if not one.

    For bytes, the unit may end in ``B``; K, M, G... are powers of 1000, Ki, Mi, Gi... of 1024.
    """
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise ValueError("expected a number" + (" or a size such as 2GiB" if bytes_ else ""))
    if isinstance(text, (int, float)):
        if text != text:
            raise ValueError("expected a number")
        if text < 0:
            raise ValueError("must be positive")
        if text > MAX_AMOUNT:
            raise ValueError(f"must be at most {MAX_AMOUNT:.0e} (more is past any model)")
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtTpP]i?)?\s*([bB])?\s*", text[:100])
    if not m or len(text) > 100 or (m.group(3) and not bytes_):
        unit = "a size such as 2GiB, 500MB or 1.5G" if bytes_ else "a count such as 500M, 1.5G or 3e9"
        raise ValueError(f"{text[:40]!r} is not {unit}")
    value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]  # inf past float range
    if value > MAX_AMOUNT:
        raise ValueError(f"{text!r} is more than {MAX_AMOUNT:.0e}, past any model")
    return int(value)


def per_param_state(optimizer: Any | None) -> int:
    if optimizer is not None and hasattr(optimizer.type, "state_per_param"):
        return int(optimizer.type.state_per_param(optimizer.params))
    return 0


def row_memory(r: Row, prof: ActivationProfile, batch_size: int, state_per_param: int) -> int:
    """What a row adds to the training estimate: what it keeps for the batch, its weights, their
    gradients and optimizer state. The rows' sum plus the input batch and the gradients in
    flight (``prof.in_flight``) is MemoryEstimate.total."""
    return prof.row_bytes(r) * batch_size + r.param_bytes * (2 + state_per_param)


def first_crossing(rows: Sequence[Row], value: Callable[[Row], int], limit: int,
                   start: int = 0) -> tuple[list[Row], int] | None:
    """The rows (outermost first, down to the innermost it can tell) where the running total of
    ``value`` first goes over ``limit``, and the total there; None if it never does."""
    total = start
    for r in rows:
        v = value(r)
        if total + v > limit:
            inner = first_crossing(r.children, value, limit, total) if r.children else None
            if inner is not None:
                return [r, *inner[0]], inner[1]
            return [r], total + v
        total += v
    return None
