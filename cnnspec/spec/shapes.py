"""Shape arithmetic in pure Python: torch's output-size formulas and the layer-by-layer trace."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnspec.registry.types import Shape, ShapeError

MAX_REPEAT = 1000  # copies in one repeat
MAX_LAYERS = 10_000  # layers in a whole model once blocks and repeats are expanded
MAX_NESTING = 48  # composites and block uses one inside another (each pass over the model recurses per level)
BYTES = 4  # fp32


def sum_macs(values: Iterator[int | None] | Sequence[int | None]) -> int | None:
    """The sum, or None when any part is unknown."""
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """An int or [h, w] as (h, w)."""
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (h, w)


def conv_out(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Convolution output size: floor((in + p_l + p_r - d(k-1) - 1) / s) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """Pooling output size exactly as ATen's pooling_output_shape computes it."""
    # floor, or ceil by adding s-1 first, of (in + 2p - d(k-1) - 1) / s, plus one
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    # in ceil mode the last window must start inside the input or its left padding
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def fmt(shape: Shape) -> str:
    """A shape as a user reads it: 64 x 7 x 7."""
    return " x ".join(str(d) for d in shape)


def expect_chw(layer: str, shape: Shape) -> tuple[int, int, int]:
    """The (C, H, W) of an image-shaped input, or a ShapeError saying what arrived."""
    if len(shape) != 3:
        raise ShapeError(
            f"{layer} expects an image (channels x height x width) but receives {fmt(shape)}"
        )
    c, h, w = shape
    return c, h, w


def expect_flat(layer: str, shape: Shape, flatten: str = "flatten") -> int:
    """The feature count of a flat input, or a ShapeError that says to flatten first."""
    if len(shape) != 1:
        raise ShapeError(f"{layer} expects flat features but receives {fmt(shape)}; "
                         f"add '{flatten}' before it (it would give {math.prod(shape)} features)")
    return shape[0]


def check_given(key: str, given: int | None, actual: int, what: str) -> None:
    """An optional in_channels / in_features must match the inferred value."""
    if given is not None and given != actual:
        raise ShapeError(f"{key}={given} but {actual} {what} arrive", key=key)


@dataclass(frozen=True)
class Row:
    """One layer of the trace: its output shape and parameter count.

    A composite layer's row has ``children`` (its layers, or its paths: ``main``, ``shortcut``,
    ``branch`` rows whose ``component`` is None); ``info`` holds what its table row shows besides
    (e.g. {"merge": "concat"}, {"kind": "block"}).
    """

    index: int
    type: str
    output_shape: Shape
    params: int
    children: tuple[Row, ...] = ()
    input_shape: Shape = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    component: Any = field(default=None, compare=False, repr=False)
    macs: int | None = None  # one sample's forward multiply-accumulates; None = a rule is missing below

    @property
    def param_bytes(self) -> int:
        """fp32 parameters: 4 bytes each."""
        return self.params * BYTES

    @property
    def activation_bytes(self) -> int:
        """One sample's output tensor in fp32."""
        return math.prod(self.output_shape) * BYTES

    @property
    def composite(self) -> bool:
        return self.component is None or hasattr(self.component.type, "trace")

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Row]]:
        """This row and every row below it, depth first, with its nesting depth."""
        yield depth, self
        for c in self.children:
            yield from c.walk(depth + 1)


def is_relu(row: Row) -> bool:
    """A layer whose module is a ReLU (``LayerType.relu``)."""
    return not row.composite and bool(getattr(row.component.type, "relu", False))


def ends_in_relu(row: Row) -> bool:
    """A relu, or a layer whose module ends with one (``LayerType.without_relu``)."""
    if row.composite:
        return False
    rule = getattr(row.component.type, "without_relu", None)
    return is_relu(row) or (rule is not None and rule(row.component.params, row.input_shape,
                                                      row.output_shape) is not None)


def pooled_relus(rows: Sequence[Row]) -> list[int]:
    """Indices i where a relu (or a layer ending with one) is followed by max pooling in the
    sequence ``rows``: the builder pools first and applies the relu to the smaller pooled tensor,
    which is exact, gradients included (relu(max(x)) == max(relu(x)), and both send a window's
    gradient to its argmax or to nowhere). ``cost`` follows the same order, so its estimate is
    the built model's."""
    return [i for i in range(len(rows) - 1) if ends_in_relu(rows[i]) and not rows[i + 1].composite
            and getattr(rows[i + 1].component.type, "max_pooling", False)]


@dataclass
class ShapeTrace:
    """Per-layer output shapes and parameters; ``error`` is set where the trace stopped.

    ``error`` is (index of the top-level layer, ShapeError); the error's ``component`` is the
    layer it belongs to, which is nested inside that one when the top-level layer is composite.
    """

    input_shape: Shape
    rows: list[Row] = field(default_factory=list)
    error: tuple[int, ShapeError] | None = None

    @property
    def output_shape(self) -> Shape:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def complete(self) -> bool:
        return self.error is None

    @property
    def total_macs(self) -> int | None:
        """One sample's forward MACs; None when a layer declares no rule (the total is incomplete)."""
        return sum_macs(r.macs for r in self.rows)

    @property
    def known_macs(self) -> int:
        """The MACs of the layers that declare a rule (a lower bound when total_macs is None)."""
        return sum(r.macs or 0 for _, r in self.walk() if not r.children and r.macs is not None)

    @property
    def param_bytes(self) -> int:
        return self.total_params * BYTES

    def walk(self) -> Iterator[tuple[int, Row]]:
        for r in self.rows:
            yield from r.walk()


Resolve = Callable[[Any], Any]  # a bare name or {type: ...} mapping -> Component (for generated layers)


class _Tracer:
    """The Tracer a composite's trace() gets: traces its child lists into child rows."""

    def __init__(self, comp: Any, resolve: Resolve | None) -> None:
        self.comp = comp
        self.resolve = resolve
        self.rows: list[Row] = []

    def _add(self, made: list[Row], shape: Shape, out: Shape, group: str | None, info: dict[str, Any]) -> None:
        if group is None:
            for r in made:
                self.rows.append(_reindex(r, len(self.rows)))
        else:
            self.rows.append(Row(len(self.rows), group, out, sum(r.params for r in made), tuple(made), shape,
                                 {"kind": "path", **info}, macs=sum_macs([r.macs for r in made])))

    def run(self, i: int, shape: Shape, group: str | None = None, **info: Any) -> Shape:
        made, out = trace_list(self.comp.children[i], shape, self.resolve)
        self._add(made, shape, out, group, info)
        return out

    def generated(self, layers: list[Any], shape: Shape, group: str | None = None, **info: Any) -> Shape:
        if self.resolve is None:
            raise ShapeError(f"'{self.comp.name}' makes layers, which needs the registry")
        comps = [self.resolve(item) for item in layers]
        made, out = trace_list(comps, shape, self.resolve)
        self._add(made, shape, out, group, info)
        return out


def _reindex(r: Row, i: int) -> Row:
    return r if r.index == i else Row(i, r.type, r.output_shape, r.params, r.children, r.input_shape,
                                      r.info, r.component, r.macs)


def trace_one(index: int, comp: Any, shape: Shape, resolve: Resolve | None = None) -> Row:
    """The row of one component (a tree for a composite); ShapeError names the failing component."""
    name, ltype, params = comp.name, comp.type, comp.params
    try:
        if hasattr(ltype, "trace"):  # a composite: shapes and counts come from its children
            t = _Tracer(comp, resolve)
            out = tuple(ltype.trace(params, shape, t))
            count = sum(r.params for r in t.rows) + ltype.num_params(params, shape)
            own = ltype.macs(params, shape, out) if hasattr(ltype, "macs") else 0
            macs = sum_macs([*(r.macs for r in t.rows), own])
            return Row(index, name, out, count, tuple(t.rows), shape, dict(ltype.info(params)), comp, macs)
        out = tuple(ltype.output_shape(params, shape))
        if any(d < 1 for d in out):
            raise ShapeError(f"output would be {fmt(out)}: a dimension collapses to zero or below")
        count = ltype.num_params(params, shape)
        macs = ltype.macs(params, shape, out) if hasattr(ltype, "macs") else None
    except ShapeError as e:
        if e.component is None:
            e.component = comp
        raise
    except Exception as e:  # a bug in a (plugin's) shape rule: still a located line, not a crash
        err = ShapeError(f"the shape rule of '{name}' failed: {type(e).__name__}: {e}")
        err.component = comp
        raise err from e
    return Row(index, name, out, count, (), shape, {}, comp, macs)


def trace_list(comps: Sequence[Any], shape: Shape, resolve: Resolve | None = None) -> tuple[list[Row], Shape]:
    """Rows of a list of components run one after the other, and the shape at the end."""
    rows = []
    for i, comp in enumerate(comps):
        row = trace_one(i, comp, shape, resolve)
        rows.append(row)
        shape = row.output_shape
    return rows, shape


def trace(input_shape: Shape, layers: Sequence[Any], resolve: Resolve | None = None) -> ShapeTrace:
    """Run each component over the shape flowing in; stop at the first ShapeError."""
    result = ShapeTrace(tuple(input_shape))
    shape = result.input_shape
    for i, comp in enumerate(layers):
        try:
            row = trace_one(i, comp, shape, resolve)
        except ShapeError as e:
            result.error = (i, e)
            break
        result.rows.append(row)
        shape = row.output_shape
    return result
