"""The Keras-style layer types: Keras names, parameters and defaults, TensorFlow's padding rules.

Shapes here are plain arithmetic (no torch); ``modules`` builds the torch modules. The package's
``__init__`` registers the names, and the registry imports this module when a spec uses one.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator

from cnnspec.plugin import (
    KEEP_OUTPUT,  # activations whose backward reads the result
    Branch,
    LayerType,
    NoParams,
    Parallel,
    Params,
    PosInt,
    Probability,
    Register,
    Saved,
    Shape,
    ShapeError,
    Size2,
    TensorSpec,
    expect_chw,
    expect_flat,
    fmt,
    pair,
)

from .padding import conv_pads_itself, max_pool_pads_itself, padded_copy, same_pads, tf_out

ACTIVATIONS = (
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish",
    "sigmoid", "hard_sigmoid", "tanh", "softplus", "softsign", "softmax", "log_softmax",
)
INITIALIZERS = (
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "orthogonal", "random_normal", "random_uniform", "zeros", "ones",
)
Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]  # the names come from one tuple, shared with modules
Initializer = Literal[INITIALIZERS]  # type: ignore[valid-type]  # as for Activation


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def with_activation(activation: str | None, padded: int, out_shape: Shape) -> Saved:
    """A convolution or matrix product keeps its input (or the padded copy it ran on); the
    activation after it keeps its result, or else its input: the pre-activation tensor."""
    act = activation or "linear"
    pre = 0 if act == "linear" or act in KEEP_OUTPUT else 4 * math.prod(out_shape)
    return Saved(input=not padded, output=act in KEEP_OUTPUT, extra=padded + pre)


# TensorFlow 1 code writes 'SAME'; the schema lists the spellings that validation accepts
_PADDING_SCHEMA: dict[str, JsonValue] = {"enum": ["valid", "same", "VALID", "SAME", "Valid", "Same"]}


class _Keras(Params):
    @field_validator("padding", "activation", mode="before", check_fields=False)
    @classmethod
    def _case(cls, v: Any) -> Any:  # TF1 code writes padding='SAME'
        return _lower(v)


class Conv2DParams(_Keras):
    filters: PosInt = Field(description="number of output channels")
    kernel_size: Size2 = Field(description="int or [h, w]")
    strides: Size2 = Field(1, description="int or [h, w]")
    padding: Literal["valid", "same"] = Field(
        "valid", description="'valid' or 'same' (any case), as TensorFlow pads", json_schema_extra=_PADDING_SCHEMA
    )
    dilation_rate: Size2 = Field(1, description="int or [h, w]")
    groups: PosInt = Field(1, description="grouped convolution")
    activation: Activation | None = Field(None, description="applied after the convolution")
    use_bias: bool = Field(True, description="add a bias")
    kernel_initializer: Initializer = Field("glorot_uniform", description="Keras initializer name")
    bias_initializer: Initializer = Field("zeros", description="Keras initializer name")


def _spatial(name: str, shape: Shape, k: tuple[int, int], s: tuple[int, int],
             d: tuple[int, int], padding: str) -> tuple[int, int]:
    _, h, w = expect_chw(name, shape)
    oh, ow = (tf_out(h, k[0], s[0], d[0], padding), tf_out(w, k[1], s[1], d[1], padding))
    if oh < 1 or ow < 1:
        key = "kernel_size" if name == "Conv2D" else "pool_size"
        raise ShapeError(f"window {fmt(k)} does not fit the input {h} x {w} with padding "
                         f"'{padding}': output would be {oh} x {ow}", key)
    return oh, ow


def _with_activation(activation: str | None) -> str:
    """The key prefix of a module built as Sequential(layer, activation) when it has one."""
    return "0." if activation not in (None, "linear") else ""


class Conv2D(LayerType[Conv2DParams]):
    name = "Conv2D"
    Params = Conv2DParams
    description = "Keras Conv2D (glorot-uniform kernel, zero bias, TensorFlow padding)"

    def output_shape(self, p: Conv2DParams, shape: Shape) -> Shape:
        c = shape[0] if shape else 0
        if len(shape) == 3 and (c % p.groups or p.filters % p.groups):
            raise ShapeError(f"groups={p.groups} must divide the {c} input channels and filters={p.filters}", "groups")
        s, d = pair(p.strides), pair(p.dilation_rate)
        if max(s) > 1 and max(d) > 1:
            raise ShapeError("strides > 1 cannot be combined with dilation_rate > 1 (as in Keras)", "strides")
        return (p.filters, *_spatial(self.name, shape, pair(p.kernel_size), s, d, p.padding))

    def num_params(self, p: Conv2DParams, shape: Shape) -> int:
        kh, kw = pair(p.kernel_size)
        return p.filters * (shape[0] // p.groups) * kh * kw + (p.filters if p.use_bias else 0)

    def macs(self, p: Conv2DParams, in_shape: Shape, out_shape: Shape) -> int:
        kh, kw = pair(p.kernel_size)
        return math.prod(out_shape) * (in_shape[0] // p.groups) * kh * kw

    def tensors(self, p: Conv2DParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        k = pair(p.kernel_size)
        pads = same_pads(in_shape, k, pair(p.strides), pair(p.dilation_rate), p.padding)
        # modules.conv2d: the conv, inside Padded ("inner") when it cannot pad itself, inside
        # Sequential(conv, activation) ("0") when it has an activation
        at = _with_activation(p.activation) + ("" if conv_pads_itself(pads) else "inner.")
        out = [TensorSpec(f"{at}weight", (p.filters, in_shape[0] // p.groups, *k))]
        return out + [TensorSpec(f"{at}bias", (p.filters,))] if p.use_bias else out

    def saved(self, p: Conv2DParams, in_shape: Shape, out_shape: Shape) -> Saved:
        pads = same_pads(in_shape, pair(p.kernel_size), pair(p.strides), pair(p.dilation_rate), p.padding)
        return with_activation(p.activation, padded_copy(in_shape, pads, conv_pads_itself(pads)), out_shape)

    def without_relu(self, p: Conv2DParams, in_shape: Shape, out_shape: Shape) -> Saved | None:
        """With ``activation: relu`` the module is Sequential(conv, ReLU): the cnnspec builder may
        move that ReLU after a following MaxPool2D; the convolution alone keeps only its input."""
        return self.saved(p.model_copy(update={"activation": None}), in_shape, out_shape) \
            if p.activation == "relu" else None

    def build(self, p: Conv2DParams, shape: Shape) -> Any:
        from .modules import conv2d

        return conv2d(p, shape)


class _ZeroMacs:
    """Layers FlopCounterMode counts nothing for (pooling, dropout, flatten, normalisation, activations)."""

    def macs(self, p: object, in_shape: Shape, out_shape: Shape) -> int:
        return 0


class PoolParams(_Keras):
    pool_size: Size2 = Field(2, description="window, int or [h, w]")
    strides: Size2 | None = Field(None, description="defaults to pool_size, as in Keras")
    padding: Literal["valid", "same"] = Field(
        "valid", description="'valid' or 'same' (any case)", json_schema_extra=_PADDING_SCHEMA
    )


class _Pool(_ZeroMacs, LayerType[PoolParams]):
    Params = PoolParams
    mode = "max"

    def output_shape(self, p: PoolParams, shape: Shape) -> Shape:
        k = pair(p.pool_size)
        s = pair(p.strides) if p.strides is not None else k
        return (shape[0], *_spatial(self.name, shape, k, s, (1, 1), p.padding))

    def saved(self, p: PoolParams, in_shape: Shape, out_shape: Shape) -> Saved:
        k = pair(p.pool_size)
        s = pair(p.strides) if p.strides is not None else k
        pads = same_pads(in_shape, k, s, (1, 1), p.padding)
        padded = padded_copy(in_shape, pads, self.mode == "max" and max_pool_pads_itself(pads, k))
        # the pooling keeps its (padded) input; max pooling also the int64 argmax of every output
        indices = 8 * math.prod(out_shape) if self.mode == "max" else 0
        return Saved(input=not padded, output=False, extra=padded + indices)

    def build(self, p: PoolParams, shape: Shape) -> Any:
        from .modules import pool2d

        return pool2d(self.mode, p, shape)


class MaxPool2D(_Pool):
    name = "MaxPool2D"
    description = "Keras MaxPool2D: padded positions are never the maximum"
    max_pooling = True


class MaxPooling2D(MaxPool2D):
    name = "MaxPooling2D"


class AveragePooling2D(_Pool):
    name = "AveragePooling2D"
    description = "Keras AveragePooling2D: 'same' divides by the real values in each window"
    mode = "avg"


class AvgPool2D(AveragePooling2D):
    name = "AvgPool2D"


class DenseParams(_Keras):
    units: PosInt = Field(description="output features")
    activation: Activation | None = Field(None, description="applied after the layer")
    use_bias: bool = Field(True, description="add a bias")
    kernel_initializer: Initializer = Field("glorot_uniform", description="Keras initializer name")
    bias_initializer: Initializer = Field("zeros", description="Keras initializer name")


class Dense(LayerType[DenseParams]):
    name = "Dense"
    Params = DenseParams
    description = "Keras Dense (glorot-uniform kernel, zero bias); needs flat input"

    def output_shape(self, p: DenseParams, shape: Shape) -> Shape:
        expect_flat("Dense", shape, flatten="Flatten")
        return (p.units,)

    def num_params(self, p: DenseParams, shape: Shape) -> int:
        return shape[0] * p.units + (p.units if p.use_bias else 0)

    def macs(self, p: DenseParams, in_shape: Shape, out_shape: Shape) -> int:
        return in_shape[0] * p.units

    def tensors(self, p: DenseParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        at = _with_activation(p.activation)  # modules.dense: Sequential(linear, activation) or the linear
        out = [TensorSpec(f"{at}weight", (p.units, in_shape[0]))]
        return out + [TensorSpec(f"{at}bias", (p.units,))] if p.use_bias else out

    def saved(self, p: DenseParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return with_activation(p.activation, 0, out_shape)

    def build(self, p: DenseParams, shape: Shape) -> Any:
        from .modules import dense

        return dense(p, shape)


class DropoutParams(Params):
    rate: Probability = Field(description="fraction of inputs to drop while training")


class Dropout(_ZeroMacs, LayerType[DropoutParams]):
    name = "Dropout"
    Params = DropoutParams
    description = "Keras Dropout"

    def output_shape(self, p: DropoutParams, shape: Shape) -> Shape:
        return shape

    def saved(self, p: DropoutParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False, extra=4 * math.prod(out_shape))  # the mask (float on CPU)

    def build(self, p: DropoutParams, shape: Shape) -> Any:
        from torch import nn

        return nn.Dropout(p.rate)


class Flatten(_ZeroMacs, LayerType[NoParams]):
    name = "Flatten"
    description = "Keras Flatten (flattens channels-first, in torch's order)"

    def output_shape(self, p: NoParams, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def saved(self, p: NoParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False, view=True)

    def build(self, p: NoParams, shape: Shape) -> Any:
        from cnnspec.plugin import Flatten

        return Flatten()


class BatchNormalizationParams(Params):
    momentum: Probability = Field(0.99, description="Keras momentum (torch's is 1 - this)")
    epsilon: float = Field(1e-3, gt=0, description="added to the variance")
    center: bool = Field(True, description="learn a shift (beta)")
    scale: bool = Field(True, description="learn a scale (gamma)")


class BatchNormalization(_ZeroMacs, LayerType[BatchNormalizationParams]):
    name = "BatchNormalization"
    Params = BatchNormalizationParams
    description = "Keras BatchNormalization over channels (or features)"

    def output_shape(self, p: BatchNormalizationParams, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise ShapeError(f"BatchNormalization expects C x H x W or flat features, got {fmt(shape)}")
        if p.center != p.scale:
            raise ShapeError("center and scale must be both true or both false here", "center")
        return shape

    def num_params(self, p: BatchNormalizationParams, shape: Shape) -> int:
        return 2 * shape[0] if p.center else 0

    def saved(self, p: BatchNormalizationParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=True, output=False)

    def tensors(self, p: BatchNormalizationParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        c = (in_shape[0],)
        out = [TensorSpec("weight", c), TensorSpec("bias", c)] if p.center else []
        return out + [TensorSpec("running_mean", c, trainable=False), TensorSpec("running_var", c, trainable=False),
                      TensorSpec("num_batches_tracked", (), "int64", trainable=False)]

    def build(self, p: BatchNormalizationParams, shape: Shape) -> Any:
        from torch import nn

        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return cls(shape[0], eps=p.epsilon, momentum=1.0 - p.momentum, affine=p.center)


class ActivationParams(_Keras):
    activation: Activation = Field(description="Keras activation name")


class KerasActivation(_ZeroMacs, LayerType[ActivationParams]):
    name = "Activation"
    Params = ActivationParams
    description = "Keras Activation layer"

    def output_shape(self, p: ActivationParams, shape: Shape) -> Shape:
        return shape

    def saved(self, p: ActivationParams, in_shape: Shape, out_shape: Shape) -> Saved:
        keeps_output = p.activation in KEEP_OUTPUT
        return Saved(input=not keeps_output and p.activation != "linear", output=keeps_output)

    def build(self, p: ActivationParams, shape: Shape) -> Any:
        from .modules import activation

        return activation(p.activation)


class AddParams(Params):
    branches: list[Branch] = Field(min_length=2, description="the layers Add's inputs come from: two or more "
                                   "branches on the same input, each a list of layers; [] is the input itself")


class ConcatenateParams(AddParams):
    axis: Literal[-1] = Field(-1, description="Keras' channel axis (-1); cnnspec tensors are channels-first, "
                              "so this joins the channels as Keras does")


class Add(Parallel):
    """Keras ``Add()([a, b])`` on branches of one input: ``[[...], []]`` is a residual connection."""

    name = "Add"
    Params = AddParams
    description = "Keras Add: sums its branches (shapes must be equal)"
    merge = "sum"


class Concatenate(Parallel):
    name = "Concatenate"
    Params = ConcatenateParams
    description = "Keras Concatenate: joins its branches along the channels"
    merge = "concat"


LAYERS = (Conv2D(), MaxPool2D(), MaxPooling2D(), AveragePooling2D(), AvgPool2D(), Dense(),
          Dropout(), Flatten(), BatchNormalization(), KerasActivation(), Add(), Concatenate())


def register_layers(register: Register) -> None:
    """Called by cnnspec's registry (see ``__init__``) the first time a spec names one of these."""
    for layer in LAYERS:
        register(layer)
