"""Layers the torchvision CNN families need beyond the core: a squeeze-and-excitation gate,
channel split and shuffle (ShuffleNetV2), layer norm over an image's channels, a pointwise
linear layer and a learned layer scale (ConvNeXt), and stochastic depth.

Shape, parameter, MACs and memory rules are plain arithmetic; the torch modules are in
``zoo_modules`` and imported only when a model is built.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from cnnspec.plugins.composites import LayerList, merge_shapes
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegFloat, PosInt, Probability
from cnnspec.registry.types import CompositeType, LayerType, Params, Saved, Shape, ShapeError, TensorSpec, Tracer
from cnnspec.spec.shapes import expect_chw, fmt

KEEPS_INPUT = Saved(input=True, output=False)


class GateParams(Params):
    layers: LayerList = Field(min_length=1, description="the layers that compute the gate from the input")


class Gate(CompositeType[GateParams]):
    """``x * gate(x)``: squeeze-and-excitation (MobileNetV3, EfficientNet, RegNetY) when the gate
    pools to 1 x 1 and ends with a sigmoid; the gate's shape must broadcast to the input's."""

    name = "gate"
    Params = GateParams
    description = "out = x * gate(x), the gate computed by its layers (squeeze-and-excitation)"
    merges = True

    def paths(self, p: GateParams) -> list[tuple[str | int, ...]]:
        return [("layers",)]

    def trace(self, p: GateParams, shape: Shape, t: Tracer) -> Shape:
        g = t.run(0, shape)
        # torch broadcasting: each dimension of the gate is the input's or 1, never more dims
        if len(g) != len(shape) or any(a not in (b, 1) for a, b in zip(g, shape)):
            raise ShapeError(f"the gate gives {fmt(g)}, which does not broadcast to the input "
                             f"{fmt(shape)}; each size must be the input's or 1", at=("layers",))
        return shape

    def saved(self, p: GateParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT  # the product's backward keeps x (and the gate, small beside it)

    def assemble(self, p: GateParams, shape: Shape, parts: list[Any]) -> Any:
        from torch import nn

        from cnnspec.plugins.zoo_modules import Gate as Module

        return Module(nn.Sequential(*parts))

    def part_names(self, p: GateParams, n: int) -> list[str]:
        return [f"gate.{i}" for i in range(n)]


class SplitParams(Params):
    branches: list[Any] = Field(min_length=2, description="two or more branches, each a list of layers "
                                "(or one layer); [] passes its part through")


class Split(CompositeType[SplitParams]):
    """ShuffleNetV2's ``x.chunk(n, dim=1)``: branch i takes the i-th of n equal channel groups;
    the results are concatenated along the channels."""

    name = "split"
    Params = SplitParams
    description = "splits the channels into equal parts, one per branch, and concatenates the results"
    merges = True

    def paths(self, p: SplitParams) -> list[tuple[str | int, ...]]:
        return [("branches", i) for i in range(len(p.branches))]

    def trace(self, p: SplitParams, shape: Shape, t: Tracer) -> Shape:
        n = len(p.branches)
        if shape[0] % n:
            raise ShapeError(f"{shape[0]} channels do not split into {n} equal parts", at=("branches",))
        part = (shape[0] // n, *shape[1:])
        outs = [t.run(i, part, group="branch") for i in range(n)]
        return merge_shapes("concat", outs)

    def assemble(self, p: SplitParams, shape: Shape, parts: list[Any]) -> Any:
        from cnnspec.plugins.zoo_modules import Split as Module

        return Module(parts)


class ShuffleParams(Params):
    groups: PosInt = Field(description="channel groups to interleave; divides the channels")


class ChannelShuffle(LayerType[ShuffleParams]):
    name = "channel_shuffle"
    Params = ShuffleParams
    description = "interleaves the channels of groups (torch.nn.ChannelShuffle, ShuffleNet)"

    def output_shape(self, p: ShuffleParams, shape: Shape) -> Shape:
        c, _, _ = expect_chw(self.name, shape)
        if c % p.groups:
            raise ShapeError(f"groups={p.groups} does not divide the {c} channels", "groups")
        return shape

    def macs(self, p: ShuffleParams, in_shape: Shape, out_shape: Shape) -> int:
        return 0

    def saved(self, p: ShuffleParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False)  # a permutation: backward needs only the shape

    def build(self, p: ShuffleParams, shape: Shape) -> Any:
        from torch import nn

        return nn.ChannelShuffle(p.groups)


class LayerNorm2dParams(Params):
    eps: NonNegFloat = Field(1e-5, description="added to the variance")
    elementwise_affine: bool = Field(True, description="learnable per-channel scale and shift")


class LayerNorm2d(LayerType[LayerNorm2dParams]):
    name = "layernorm2d"
    Params = LayerNorm2dParams
    description = "layer normalisation over each pixel's channels (ConvNeXt's LayerNorm2d)"

    def output_shape(self, p: LayerNorm2dParams, shape: Shape) -> Shape:
        expect_chw(self.name, shape)
        return shape

    def num_params(self, p: LayerNorm2dParams, shape: Shape) -> int:
        return 2 * shape[0] if p.elementwise_affine else 0

    def tensors(self, p: LayerNorm2dParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        c = (in_shape[0],)
        return [TensorSpec("weight", c), TensorSpec("bias", c)] if p.elementwise_affine else []

    def macs(self, p: LayerNorm2dParams, in_shape: Shape, out_shape: Shape) -> int:
        return 0

    def saved(self, p: LayerNorm2dParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT  # and the mean and inverse std of each pixel, left out

    def build(self, p: LayerNorm2dParams, shape: Shape) -> Any:
        from cnnspec.plugins.zoo_modules import LayerNorm2d as Module

        return Module(shape[0], eps=p.eps, elementwise_affine=p.elementwise_affine)


class ChannelLinearParams(Params):
    out_features: PosInt = Field(description="output channels")
    bias: bool = Field(True, description="add a learnable bias")


class ChannelLinear(LayerType[ChannelLinearParams]):
    name = "channel_linear"
    Params = ChannelLinearParams
    description = ("torch.nn.Linear over each pixel's channels (channels-last, as in ConvNeXt's block); "
                   "its weight is out x in, not a 1x1 convolution's out x in x 1 x 1")

    def output_shape(self, p: ChannelLinearParams, shape: Shape) -> Shape:
        _, h, w = expect_chw(self.name, shape)
        return (p.out_features, h, w)

    def num_params(self, p: ChannelLinearParams, shape: Shape) -> int:
        return shape[0] * p.out_features + (p.out_features if p.bias else 0)

    def tensors(self, p: ChannelLinearParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        weight = TensorSpec("weight", (p.out_features, in_shape[0]))
        return [weight, TensorSpec("bias", (p.out_features,))] if p.bias else [weight]

    def macs(self, p: ChannelLinearParams, in_shape: Shape, out_shape: Shape) -> int:
        return math.prod(out_shape) * in_shape[0]  # every output value: in-channels products

    def saved(self, p: ChannelLinearParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT

    def build(self, p: ChannelLinearParams, shape: Shape) -> Any:
        from cnnspec.plugins.zoo_modules import ChannelLinear as Module

        return Module(shape[0], p.out_features, bias=p.bias)


class LayerScaleParams(Params):
    layers: LayerList = Field(min_length=1, description="the layers whose output is scaled")
    init: float = Field(1e-6, description="the scale's initial value")


class LayerScale(CompositeType[LayerScaleParams]):
    """``scale * layers(x)`` with a learned scale per channel (ConvNeXt's CNBlock); the scale is the
    first entry of its state dict, before its layers', as torchvision's ``layer_scale``."""

    name = "layer_scale"
    Params = LayerScaleParams
    chain = True
    description = "scale * layers(x), a learned scale per channel (ConvNeXt's layer scale)"

    def paths(self, p: LayerScaleParams) -> list[tuple[str | int, ...]]:
        return [("layers",)]

    def trace(self, p: LayerScaleParams, shape: Shape, t: Tracer) -> Shape:
        out = t.run(0, shape)
        if out[0] != shape[0]:  # the scale is sized by the input, so the channels must stay
            raise ShapeError(f"its layers turn {shape[0]} channels into {out[0]}; a layer scale's "
                             "layers must keep the channels", at=("layers",))
        return out

    def num_params(self, p: LayerScaleParams, shape: Shape) -> int:
        return shape[0]

    def tensors(self, p: LayerScaleParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        # one scale per channel, broadcast over the other dimensions
        return [TensorSpec("scale", (in_shape[0],) + (1,) * (len(out_shape) - 1))]

    def saved(self, p: LayerScaleParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False, extra=4 * math.prod(out_shape))  # the product keeps its input

    def assemble(self, p: LayerScaleParams, shape: Shape, parts: list[Any]) -> Any:
        from torch import nn

        from cnnspec.plugins.zoo_modules import LayerScale as Module

        return Module(nn.Sequential(*parts), shape[0], len(shape), p.init)

    def part_names(self, p: LayerScaleParams, n: int) -> list[str]:
        return [f"layers.{i}" for i in range(n)]


class StochasticDepthParams(Params):
    p: Probability = Field(description="probability of dropping a sample's whole path while training")
    mode: Literal["row", "batch"] = Field("row", description="row: per sample; batch: the whole batch at once")


class StochasticDepth(LayerType[StochasticDepthParams]):
    name = "stochastic_depth"
    Params = StochasticDepthParams
    description = ("zeroes the input of a sample at random while training and scales the rest by "
                   "1 / (1 - p); identity in eval (torchvision.ops.StochasticDepth); put it last in "
                   "a residual's main path")

    def output_shape(self, p: StochasticDepthParams, shape: Shape) -> Shape:
        return shape

    def macs(self, p: StochasticDepthParams, in_shape: Shape, out_shape: Shape) -> int:
        return 0

    def saved(self, p: StochasticDepthParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False, extra=4)  # one float of noise per sample

    def build(self, p: StochasticDepthParams, shape: Shape) -> Any:
        from cnnspec.plugins.zoo_modules import StochasticDepth as Module

        return Module(p.p, p.mode)


ZOO_LAYERS: tuple[LayerType, ...] = (
    Gate(), Split(), ChannelShuffle(), LayerNorm2d(), ChannelLinear(), LayerScale(), StochasticDepth(),
)


@hookimpl
def register_layers(register: Register) -> None:
    for layer in ZOO_LAYERS:
        register(layer)
