"""DepthwiseConv2D, ZeroPadding2D and Rescaling: the Keras layers MobileNet-style models add.

``DepthwiseConv2D`` is ``Conv2D`` with ``groups`` = input channels and ``filters`` = input
channels x ``depth_multiplier`` (output channel ``c * depth_multiplier + m`` is filter ``m`` on
input channel ``c``, as in Keras), so every rule here is Conv2D's on those parameters. Pure
arithmetic, like ``layers``; the torch modules are built only by ``build``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cnnspec.plugin import LayerType, PosInt, Register, Saved, Shape, ShapeError, Size2, TensorSpec, expect_chw

from .layers import _PADDING_SCHEMA, Activation, Conv2D, Conv2DParams, Initializer, _Keras, _ZeroMacs


class DepthwiseConv2DParams(_Keras):
    kernel_size: Size2 = Field(description="int or [h, w]")
    strides: Size2 = Field(1, description="int or [h, w]")
    padding: Literal["valid", "same"] = Field(
        "valid", description="'valid' or 'same' (any case), as TensorFlow pads", json_schema_extra=_PADDING_SCHEMA
    )
    depth_multiplier: PosInt = Field(1, description="output channels per input channel")
    dilation_rate: Size2 = Field(1, description="int or [h, w]")
    activation: Activation | None = Field(None, description="applied after the convolution")
    use_bias: bool = Field(True, description="add a bias")
    depthwise_initializer: Initializer = Field("glorot_uniform", description="Keras initializer name")
    bias_initializer: Initializer = Field("zeros", description="Keras initializer name")


_CONV = Conv2D()


def as_conv(p: DepthwiseConv2DParams, shape: Shape) -> Conv2DParams:
    """The grouped Conv2D that computes this depthwise convolution on a C x H x W input."""
    c = shape[0] if shape else 1
    return Conv2DParams(filters=c * p.depth_multiplier, kernel_size=p.kernel_size, strides=p.strides,
                        padding=p.padding, dilation_rate=p.dilation_rate, groups=c, activation=p.activation,
                        use_bias=p.use_bias, kernel_initializer=p.depthwise_initializer,
                        bias_initializer=p.bias_initializer)


class DepthwiseConv2D(LayerType[DepthwiseConv2DParams]):
    name = "DepthwiseConv2D"
    Params = DepthwiseConv2DParams
    description = "Keras DepthwiseConv2D: one filter (or depth_multiplier) per input channel, TensorFlow padding"

    def output_shape(self, p: DepthwiseConv2DParams, shape: Shape) -> Shape:
        expect_chw(self.name, shape)
        return _CONV.output_shape(as_conv(p, shape), shape)

    def num_params(self, p: DepthwiseConv2DParams, shape: Shape) -> int:
        return _CONV.num_params(as_conv(p, shape), shape)

    def macs(self, p: DepthwiseConv2DParams, in_shape: Shape, out_shape: Shape) -> int:
        return _CONV.macs(as_conv(p, in_shape), in_shape, out_shape)

    def tensors(self, p: DepthwiseConv2DParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        return _CONV.tensors(as_conv(p, in_shape), in_shape, out_shape)

    def saved(self, p: DepthwiseConv2DParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return _CONV.saved(as_conv(p, in_shape), in_shape, out_shape)

    def without_relu(self, p: DepthwiseConv2DParams, in_shape: Shape, out_shape: Shape) -> Saved | None:
        return _CONV.without_relu(as_conv(p, in_shape), in_shape, out_shape)

    def build(self, p: DepthwiseConv2DParams, shape: Shape) -> Any:
        from .modules import conv2d

        return conv2d(as_conv(p, shape), shape)


Pads2 = tuple[tuple[int, int], tuple[int, int]]


class ZeroPadding2DParams(_Keras):
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = Field(
        1, description="int, [rows, columns] on both sides, or [[top, bottom], [left, right]]")


def pads(p: ZeroPadding2DParams) -> Pads2:
    """((top, bottom), (left, right)), as Keras reads its padding argument."""
    v = p.padding
    if isinstance(v, int):
        return (v, v), (v, v)
    if isinstance(v[0], int):
        rows, cols = int(v[0]), int(v[1])
        return (rows, rows), (cols, cols)
    return v


class ZeroPadding2D(_ZeroMacs, LayerType[ZeroPadding2DParams]):
    name = "ZeroPadding2D"
    Params = ZeroPadding2DParams
    description = "Keras ZeroPadding2D: zero rows and columns around the picture"

    def output_shape(self, p: ZeroPadding2DParams, shape: Shape) -> Shape:
        c, h, w = expect_chw(self.name, shape)
        (top, bottom), (left, right) = pads(p)
        if min(top, bottom, left, right) < 0:
            raise ShapeError("padding must not be negative", "padding")
        return (c, h + top + bottom, w + left + right)

    def saved(self, p: ZeroPadding2DParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False)  # the gradient of padding is a slice: nothing kept

    def build(self, p: ZeroPadding2DParams, shape: Shape) -> Any:
        from torch import nn

        (top, bottom), (left, right) = pads(p)
        return nn.ZeroPad2d((left, right, top, bottom))


class RescalingParams(_Keras):
    scale: float = Field(description="multiplies the input")
    offset: float = Field(0.0, description="then added")


class Rescaling(_ZeroMacs, LayerType[RescalingParams]):
    name = "Rescaling"
    Params = RescalingParams
    description = "Keras Rescaling: x * scale + offset (e.g. pixels 0..255 to [-1, 1] at the input)"

    def output_shape(self, p: RescalingParams, shape: Shape) -> Shape:
        return shape

    def saved(self, p: RescalingParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False)  # the gradient is grad * scale

    def tensors(self, p: RescalingParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        return []

    def build(self, p: RescalingParams, shape: Shape) -> Any:
        from .modules import Affine

        return Affine(p.scale, p.offset)


LAYERS = (DepthwiseConv2D(), ZeroPadding2D(), Rescaling())


def register_layers(register: Register) -> None:
    """Called by cnnspec's registry (see ``__init__``) the first time a spec names one of these."""
    for layer in LAYERS:
        register(layer)
