"""Composite layers: sequence, repeat, residual (out = main(x) + shortcut(x)) and parallel branches.

Each is an ordinary registered layer type (a CompositeType): its shape rule and parameter count
come from its children's, and only ``assemble`` touches torch (through ``modules``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import PosInt
from cnnspec.registry.types import CompositeType, Params, Shape, ShapeError, Tracer
from cnnspec.spec.shapes import MAX_REPEAT, fmt

# Child lists are checked by the core (with located errors); in the JSON Schema (schema.py) this
# marker becomes a list of layers.
LayerList = Annotated[list[Any], WithJsonSchema({"x-cnnspec": "layers"})]
Branch = Annotated[Any, WithJsonSchema({"x-cnnspec": "branch"})]


class SequenceParams(Params):
    layers: LayerList = Field(min_length=1, description="the layers, one after the other")


class Sequence(CompositeType[SequenceParams]):
    name = "sequence"
    Params = SequenceParams
    chain = True
    description = "layers one after the other, as one layer (a nested nn.Sequential)"

    def paths(self, p: SequenceParams) -> list[tuple[str | int, ...]]:
        return [("layers",)]

    def trace(self, p: SequenceParams, shape: Shape, t: Tracer) -> Shape:
        return t.run(0, shape)

    def assemble(self, p: SequenceParams, shape: Shape, parts: list[Any]) -> Any:
        from torch import nn

        return nn.Sequential(*parts)


class RepeatParams(Params):
    times: PosInt = Field(le=MAX_REPEAT, description=f"how many copies, 1 to {MAX_REPEAT}")
    layers: LayerList = Field(min_length=1, description="the layers to repeat (each copy has its own weights)")


class Repeat(CompositeType[RepeatParams]):
    """``{type: repeat, times: N, layers: [...]}``; ``repeat: N`` on any layer or block use is short for it."""

    name = "repeat"
    Params = RepeatParams
    chain = True
    description = "its layers N times over, each copy with its own weights"

    def paths(self, p: RepeatParams) -> list[tuple[str | int, ...]]:
        return [("layers",)]

    def trace(self, p: RepeatParams, shape: Shape, t: Tracer) -> Shape:
        for _ in range(p.times):
            shape = t.run(0, shape)
        return shape

    def info(self, p: RepeatParams) -> dict[str, Any]:
        return {"times": p.times}

    def copies(self, p: RepeatParams) -> int:
        return p.times

    def assemble(self, p: RepeatParams, shape: Shape, parts: list[Any]) -> Any:
        from torch import nn

        return nn.Sequential(*parts)


class ResidualParams(Params):
    layers: LayerList = Field(min_length=1, description="the main path")
    shortcut: Literal["identity", "auto"] | LayerList = Field(
        "identity", description="identity; auto (a 1x1 conv + batchnorm when the main path changes "
        "the shape, else identity); or a list of layers")


def projection_stride(size: int, out: int) -> int | None:
    """The smallest stride s of a 1x1 convolution taking ``size`` to ``out`` ((size - 1) // s + 1), if any.

    Arithmetic, not a search: (size - 1) // s == out - 1 == k holds for k * s <= size - 1 < (k + 1) * s,
    so the smallest such s is (size - 1) // (k + 1) + 1, if it is still at most (size - 1) // k.
    """
    if size < 1 or out < 1 or out > size:
        return None
    k = out - 1
    if k == 0:
        return size
    s = (size - 1) // (k + 1) + 1
    return s if s <= (size - 1) // k else None


class Residual(CompositeType[ResidualParams]):
    name = "residual"
    Params = ResidualParams
    description = "out = main(x) + shortcut(x) (a ResNet block's skip connection)"
    merges = True

    def merge_of(self, p: ResidualParams) -> str:
        return "sum"

    def paths(self, p: ResidualParams) -> list[tuple[str | int, ...]]:
        out: list[tuple[str | int, ...]] = [("layers",)]
        return out + ([("shortcut",)] if isinstance(p.shortcut, list) else [])

    def trace(self, p: ResidualParams, shape: Shape, t: Tracer) -> Shape:
        out = t.run(0, shape, group="main")
        if isinstance(p.shortcut, list):
            got = t.run(1, shape, group="shortcut")
            if got != out:
                raise ShapeError(f"the shortcut gives {fmt(got)} but the main path gives {fmt(out)}; "
                                 "they are added, so they must be equal", at=("shortcut",))
            return out
        if out == shape:
            t.generated([], shape, group="shortcut", shortcut="identity")
            return out
        if p.shortcut == "identity":
            raise ShapeError(f"the main path turns {fmt(shape)} into {fmt(out)} but the shortcut is "
                             "identity; write shortcut: auto (1x1 conv + batchnorm) or give shortcut layers",
                             at=("shortcut",))
        if len(shape) != 3 or len(out) != 3:
            raise ShapeError(f"shortcut: auto needs image shapes on both ends, got {fmt(shape)} and "
                             f"{fmt(out)}; give shortcut layers", at=("shortcut",))
        strides = [projection_stride(shape[i], out[i]) for i in (1, 2)]
        if None in strides:
            raise ShapeError(f"no strided 1x1 convolution turns {fmt(shape)} into {fmt(out)}; "
                             "give shortcut layers", at=("shortcut",))
        conv = {"type": "conv2d", "out_channels": out[0], "kernel_size": 1, "stride": strides, "bias": False}
        return t.generated([conv, "batchnorm2d"], shape, group="shortcut", shortcut="auto")

    def part_names(self, p: ResidualParams, n: int) -> list[str]:
        return ["main", "shortcut"]

    def assemble(self, p: ResidualParams, shape: Shape, parts: list[Any]) -> Any:
        from cnnspec.plugins.composite_modules import Residual as Module

        return Module(parts[0], parts[1])


class ParallelParams(Params):
    branches: list[Branch] = Field(min_length=2, description="two or more branches, each a list of layers "
                                "(or one layer); an empty list passes the input through")
    merge: Literal["concat", "sum"] = Field(
        "concat", description="concat: join along channels (features); sum: add, shapes must be equal")


class Parallel(CompositeType[ParallelParams]):
    name = "parallel"
    Params: type[Params] = ParallelParams  # Keras' Add and Concatenate give their own
    description = "branches on the same input, joined by channel concatenation or by sum"
    merge: str | None = None  # fixed by subclasses (Keras' Add, Concatenate)
    merges = True

    def paths(self, p: ParallelParams) -> list[tuple[str | int, ...]]:
        return [("branches", i) for i in range(len(p.branches))]

    def merge_of(self, p: Any) -> str:
        return self.merge or p.merge

    def trace(self, p: Any, shape: Shape, t: Tracer) -> Shape:
        outs = [t.run(i, shape, group="branch") for i in range(len(p.branches))]
        return merge_shapes(self.merge_of(p), outs)

    def info(self, p: Any) -> dict[str, Any]:
        return {"merge": self.merge_of(p)}

    def assemble(self, p: Any, shape: Shape, parts: list[Any]) -> Any:
        from cnnspec.plugins.composite_modules import Parallel as Module

        return Module(parts, self.merge_of(p))


def merge_shapes(merge: str, outs: list[Shape]) -> Shape:
    """The shape of branches joined by ``concat`` (dim 0, the channels) or ``sum``."""
    first = outs[0]
    for i, o in enumerate(outs[1:], 1):
        if merge == "sum" and o != first:
            raise ShapeError(f"branch {i} gives {fmt(o)} but branch 0 gives {fmt(first)}; "
                             "sum needs every branch to give the same shape", at=("branches", i))
        if merge == "concat" and (len(o) != len(first) or o[1:] != first[1:]):
            what = "height and width" if len(first) == 3 else "shape apart from the first dimension"
            raise ShapeError(f"branch {i} gives {fmt(o)} but branch 0 gives {fmt(first)}; "
                             f"concat needs every branch to have the same {what}", at=("branches", i))
    if merge == "sum":
        return first
    return (sum(o[0] for o in outs), *first[1:])


COMPOSITES: tuple[CompositeType, ...] = (Sequence(), Repeat(), Residual(), Parallel())


@hookimpl
def register_layers(register: Register) -> None:
    for layer in COMPOSITES:
        register(layer)
