"""Core layers (conv, pooling, normalisation, dropout, flatten, linear) with torch's shape rules."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.types import LayerType, NoParams, Params, Saved, Shape, ShapeError, TensorSpec, WeightInitParams
from cnnspec.spec.shapes import check_given, conv_out, expect_chw, expect_flat, fmt, pair, pool_out

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

from cnnspec.registry.params import ConvPadding, Int, NonNegFloat, Pad2, PosInt, Probability, Size2


class Conv2dParams(WeightInitParams):
    out_channels: PosInt = Field(description="number of output channels (filters)")
    kernel_size: Size2 = Field(description="kernel size, int or [h, w]")
    in_channels: PosInt | None = Field(None, description="inferred from the input; checked if given")
    stride: Size2 = Field(1, description="stride, int or [h, w]")
    padding: ConvPadding = Field(0, description="int, [h, w], 'same' (stride 1 only) or 'valid'")
    dilation: Size2 = Field(1, description="kernel dilation, int or [h, w]")
    groups: PosInt = Field(1, description="blocked connections; divides in and out channels")
    bias: bool = Field(True, description="add a learnable bias")
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros", description="how padded values are made"
    )


class Conv2d(LayerType[Conv2dParams]):
    name = "conv2d"
    Params = Conv2dParams
    description = "2-D convolution (torch.nn.Conv2d)"

    @staticmethod
    def pads(p: Conv2dParams) -> tuple[tuple[int, int], tuple[int, int]]:
        """(left, right) padding per spatial dim, as torch applies it."""
        k, d = pair(p.kernel_size), pair(p.dilation)
        if p.padding == "valid":
            return ((0, 0), (0, 0))
        if p.padding == "same":  # total d(k-1); torch puts the odd one on the right
            tot = [d[i] * (k[i] - 1) for i in range(2)]
            return ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))
        ph, pw = pair(p.padding)
        return ((ph, ph), (pw, pw))

    def output_shape(self, p: Conv2dParams, shape: Shape) -> Shape:
        c, h, w = expect_chw("conv2d", shape)
        check_given("in_channels", p.in_channels, c, "channels")
        if c % p.groups:
            raise ShapeError(f"groups={p.groups} does not divide the {c} input channels", "groups")
        if p.out_channels % p.groups:
            raise ShapeError(
                f"groups={p.groups} does not divide out_channels={p.out_channels}", "groups"
            )
        k, s, d = pair(p.kernel_size), pair(p.stride), pair(p.dilation)
        if p.padding == "same" and s != (1, 1):
            raise ShapeError("padding 'same' needs stride 1 in torch's conv2d", "padding")
        pads = self.pads(p)
        for size, (lo, hi), axis in ((h, pads[0], "height"), (w, pads[1], "width")):
            if p.padding_mode == "reflect" and max(lo, hi) >= size:
                raise ShapeError(
                    f"reflect padding of {max(lo, hi)} needs {axis} above it, got {size}", "padding"
                )
            if p.padding_mode == "circular" and max(lo, hi) > size:
                raise ShapeError(
                    f"circular padding of {max(lo, hi)} exceeds the {axis} {size}", "padding"
                )
        oh = conv_out(h, k[0], s[0], sum(pads[0]), d[0])
        ow = conv_out(w, k[1], s[1], sum(pads[1]), d[1])
        if oh < 1 or ow < 1:
            eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
            raise ShapeError(
                f"kernel {fmt(eff)}{' (dilated)' if d != (1, 1) else ''} does not fit the padded input "
                f"{h + sum(pads[0])} x {w + sum(pads[1])}: output would be {oh} x {ow}",
                "kernel_size",
            )
        return (p.out_channels, oh, ow)

    def num_params(self, p: Conv2dParams, shape: Shape) -> int:
        kh, kw = pair(p.kernel_size)
        return p.out_channels * (shape[0] // p.groups) * kh * kw + (p.out_channels if p.bias else 0)

    def tensors(self, p: Conv2dParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        kh, kw = pair(p.kernel_size)
        weight = TensorSpec("weight", (p.out_channels, in_shape[0] // p.groups, kh, kw))
        return [weight, TensorSpec("bias", (p.out_channels,))] if p.bias else [weight]

    def macs(self, p: Conv2dParams, in_shape: Shape, out_shape: Shape) -> int:
        kh, kw = pair(p.kernel_size)  # every output element: in_ch/groups x kh x kw products
        return math.prod(out_shape) * (in_shape[0] // p.groups) * kh * kw

    def saved(self, p: Conv2dParams, in_shape: Shape, out_shape: Shape) -> Saved:
        (top, bottom), (left, right) = self.pads(p)
        if p.padding_mode == "zeros" and top == bottom and left == right:
            return KEEPS_INPUT  # the convolution pads as it goes
        # a padded copy first, kept instead of the input: uneven 'same' zero padding pads only the
        # odd row and column explicitly; other modes pad all of it (F.pad), and reflection and
        # replication padding keep their input too
        c, h, w = in_shape
        if p.padding_mode == "zeros":
            h, w = h + bottom - top, w + right - left
        else:
            h, w = h + top + bottom, w + left + right
        return Saved(input=p.padding_mode in ("reflect", "replicate"), output=False, extra=4 * c * h * w)

    def build(self, p: Conv2dParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.Conv2d(
            shape[0], p.out_channels, pair(p.kernel_size), stride=pair(p.stride),
            padding=p.padding if isinstance(p.padding, str) else pair(p.padding),
            dilation=pair(p.dilation), groups=p.groups, bias=p.bias, padding_mode=p.padding_mode,
        )


class ZeroMacs:
    """For layers FlopCounterMode counts nothing for (no convolution or matrix product)."""

    def macs(self, p: object, in_shape: Shape, out_shape: Shape) -> int:
        return 0


# memory rules (Saved): what each layer's backward keeps, as torch's autograd formulas say
KEEPS_INPUT = Saved(input=True, output=False)  # convolution, linear, batchnorm
KEEPS_NOTHING = Saved(input=False, output=False)  # only shapes needed
VIEW = Saved(input=False, output=False, view=True)  # flatten, identity: the input, reshaped


def pool_indices(out_shape: Shape) -> Saved:
    """Max pooling keeps its input and the argmax of each output value (int64, 8 bytes)."""
    return Saved(input=True, output=False, extra=8 * math.prod(out_shape))


class PoolParams(Params):
    kernel_size: Size2 = Field(description="window size, int or [h, w]")
    stride: Size2 | None = Field(None, description="defaults to kernel_size, as in torch")
    padding: Pad2 = Field(0, description="implicit padding, at most half the kernel")
    ceil_mode: bool = Field(False, description="ceil instead of floor for the output size")


def _pool_shape(name: str, p: PoolParams, shape: Shape, dilation: tuple[int, int]) -> Shape:
    c, h, w = expect_chw(name, shape)
    k = pair(p.kernel_size)
    s = pair(p.stride) if p.stride is not None else k
    pad = pair(p.padding)
    if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:  # ATen: pad <= kernel / 2
        raise ShapeError(
            f"padding {fmt(pad)} is more than half the kernel {fmt(k)}", "padding"
        )
    oh = pool_out(h, k[0], s[0], pad[0], dilation[0], p.ceil_mode)
    ow = pool_out(w, k[1], s[1], pad[1], dilation[1], p.ceil_mode)
    if oh < 1 or ow < 1:
        raise ShapeError(
            f"window {fmt(k)} does not fit the input {h} x {w}: output would be {oh} x {ow}",
            "kernel_size",
        )
    return (c, oh, ow)


class MaxPool2dParams(PoolParams):
    dilation: Size2 = Field(1, description="spacing between window elements")


class MaxPool2d(ZeroMacs, LayerType[MaxPool2dParams]):
    name = "maxpool2d"
    Params = MaxPool2dParams
    max_pooling = True
    description = "2-D max pooling (torch.nn.MaxPool2d)"

    def output_shape(self, p: MaxPool2dParams, shape: Shape) -> Shape:
        return _pool_shape(self.name, p, shape, pair(p.dilation))

    def saved(self, p: MaxPool2dParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return pool_indices(out_shape)

    def build(self, p: MaxPool2dParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.MaxPool2d(
            pair(p.kernel_size), stride=None if p.stride is None else pair(p.stride),
            padding=pair(p.padding), dilation=pair(p.dilation), ceil_mode=p.ceil_mode,
        )


class AvgPool2dParams(PoolParams):
    count_include_pad: bool = Field(True, description="count padded zeros in the average")
    divisor_override: PosInt | None = Field(None, description="divide by this instead")


class AvgPool2d(ZeroMacs, LayerType[AvgPool2dParams]):
    name = "avgpool2d"
    Params = AvgPool2dParams
    description = "2-D average pooling (torch.nn.AvgPool2d)"

    def output_shape(self, p: AvgPool2dParams, shape: Shape) -> Shape:
        return _pool_shape(self.name, p, shape, (1, 1))

    def saved(self, p: AvgPool2dParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT  # torch's avg_pool2d_backward takes the input

    def build(self, p: AvgPool2dParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.AvgPool2d(
            pair(p.kernel_size), stride=None if p.stride is None else pair(p.stride),
            padding=pair(p.padding), ceil_mode=p.ceil_mode,
            count_include_pad=p.count_include_pad, divisor_override=p.divisor_override,
        )


class AdaptiveParams(Params):
    output_size: PosInt | tuple[PosInt | None, PosInt | None] = Field(
        description="output height and width; int, or [h, w] where null keeps the input's"
    )


class _Adaptive(ZeroMacs, LayerType[AdaptiveParams]):
    Params = AdaptiveParams

    def output_shape(self, p: AdaptiveParams, shape: Shape) -> Shape:
        c, h, w = expect_chw(self.name, shape)
        oh, ow = (p.output_size, p.output_size) if isinstance(p.output_size, int) else p.output_size
        return (c, h if oh is None else oh, w if ow is None else ow)


class AdaptiveAvgPool2d(_Adaptive):
    name = "adaptiveavgpool2d"
    description = "pools to a fixed output size by averaging (torch.nn.AdaptiveAvgPool2d)"

    def saved(self, p: AdaptiveParams, in_shape: Shape, out_shape: Shape) -> Saved:
        # torch computes a 1 x 1 output as a mean (shapes only); other sizes keep the input
        return KEEPS_NOTHING if out_shape[1:] == (1, 1) else KEEPS_INPUT

    def build(self, p: AdaptiveParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.AdaptiveAvgPool2d(p.output_size)


class AdaptiveMaxPool2d(_Adaptive):
    name = "adaptivemaxpool2d"
    description = "pools to a fixed output size by maxima (torch.nn.AdaptiveMaxPool2d)"
    max_pooling = True

    def saved(self, p: AdaptiveParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return pool_indices(out_shape)

    def build(self, p: AdaptiveParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.AdaptiveMaxPool2d(p.output_size)


class BatchNormParams(Params):
    num_features: PosInt | None = Field(None, description="inferred channels; checked if given")
    eps: NonNegFloat = Field(1e-5, description="added to the variance")
    momentum: Probability | None = Field(0.1, description="running-stat momentum; null = average")
    affine: bool = Field(True, description="learnable scale and shift")
    track_running_stats: bool = Field(True, description="keep running mean and variance")


class _BatchNorm(ZeroMacs, LayerType[BatchNormParams]):
    """Batch normalisation over the channels of an image, or of flat features."""

    Params = BatchNormParams

    def __init__(self, name: str, image: bool) -> None:
        self.name = name
        self.image = image
        self.description = f"batch normalisation (torch.nn.BatchNorm{'2' if image else '1'}d)"

    def output_shape(self, p: BatchNormParams, shape: Shape) -> Shape:
        if self.image:
            expect_chw(self.name, shape)
        else:
            expect_flat(self.name, shape)
        check_given("num_features", p.num_features, shape[0], "channels" if self.image else "features")
        return shape

    def num_params(self, p: BatchNormParams, shape: Shape) -> int:
        return 2 * shape[0] if p.affine else 0

    def tensors(self, p: BatchNormParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        c = (in_shape[0],)
        out = [TensorSpec("weight", c), TensorSpec("bias", c)] if p.affine else []
        if p.track_running_stats:
            out += [TensorSpec("running_mean", c, trainable=False), TensorSpec("running_var", c, trainable=False),
                    TensorSpec("num_batches_tracked", (), "int64", trainable=False)]
        return out

    def saved(self, p: BatchNormParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT  # and two floats a channel (mean, inverse std), left out

    def build(self, p: BatchNormParams, shape: Shape) -> nn.Module:
        from torch import nn

        cls = nn.BatchNorm2d if self.image else nn.BatchNorm1d
        return cls(shape[0], eps=p.eps, momentum=p.momentum, affine=p.affine,
                   track_running_stats=p.track_running_stats)


class DropoutParams(Params):
    p: Probability = Field(0.5, description="probability of zeroing an element")


class Dropout(ZeroMacs, LayerType[DropoutParams]):
    name = "dropout"
    Params = DropoutParams
    description = "zeroes elements at random while training (torch.nn.Dropout)"

    def output_shape(self, p: DropoutParams, shape: Shape) -> Shape:
        return shape

    def saved(self, p: DropoutParams, in_shape: Shape, out_shape: Shape) -> Saved:
        # its mask: a float per value on CPU (a bool on CUDA; the estimate takes the larger)
        return Saved(input=False, output=False, extra=4 * math.prod(out_shape))

    def build(self, p: DropoutParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.Dropout(p.p)


class Dropout2d(ZeroMacs, LayerType[DropoutParams]):
    name = "dropout2d"
    Params = DropoutParams
    description = "zeroes whole channels at random while training (torch.nn.Dropout2d)"

    def output_shape(self, p: DropoutParams, shape: Shape) -> Shape:
        expect_chw(self.name, shape)
        return shape

    def saved(self, p: DropoutParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False, extra=4 * in_shape[0])  # one float a channel

    def build(self, p: DropoutParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.Dropout2d(p.p)


class FlattenParams(Params):
    start_dim: Int = Field(1, ge=1, description="first dim to flatten; 0 is the batch, so >= 1")
    end_dim: Int = Field(-1, description="last dim to flatten (negative counts from the end)")


class Flatten(ZeroMacs, LayerType[FlattenParams]):
    name = "flatten"
    Params = FlattenParams
    description = "flattens dims start_dim..end_dim into one (torch.nn.Flatten)"

    def output_shape(self, p: FlattenParams, shape: Shape) -> Shape:
        full = (None,) + tuple(shape)  # torch counts the batch dimension as dim 0
        n = len(full)
        end = p.end_dim + n if p.end_dim < 0 else p.end_dim
        if not 1 <= p.start_dim < n:
            raise ShapeError(f"start_dim={p.start_dim} is out of range for {fmt(shape)}", "start_dim")
        if not 0 <= end < n or end < p.start_dim:
            raise ShapeError(f"end_dim={p.end_dim} is out of range for {fmt(shape)}", "end_dim")
        merged = math.prod(shape[p.start_dim - 1 : end])
        return tuple(shape[: p.start_dim - 1]) + (merged,) + tuple(shape[end:])

    def saved(self, p: FlattenParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return VIEW

    def build(self, p: FlattenParams, shape: Shape) -> nn.Module:
        from cnnspec.build.modules import Flatten

        return Flatten(p.start_dim, p.end_dim)


class LinearParams(WeightInitParams):
    out_features: PosInt = Field(description="number of output features")
    in_features: PosInt | None = Field(None, description="inferred from the input; checked if given")
    bias: bool = Field(True, description="add a learnable bias")


class Linear(LayerType[LinearParams]):
    name = "linear"
    Params = LinearParams
    description = "fully connected layer (torch.nn.Linear)"

    def output_shape(self, p: LinearParams, shape: Shape) -> Shape:
        expect_flat("linear", shape)
        check_given("in_features", p.in_features, shape[0], "features")
        return (p.out_features,)

    def num_params(self, p: LinearParams, shape: Shape) -> int:
        return shape[0] * p.out_features + (p.out_features if p.bias else 0)

    def tensors(self, p: LinearParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        weight = TensorSpec("weight", (p.out_features, in_shape[0]))
        return [weight, TensorSpec("bias", (p.out_features,))] if p.bias else [weight]

    def macs(self, p: LinearParams, in_shape: Shape, out_shape: Shape) -> int:
        return in_shape[0] * p.out_features

    def saved(self, p: LinearParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return KEEPS_INPUT

    def build(self, p: LinearParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.Linear(shape[0], p.out_features, bias=p.bias)


class Identity(ZeroMacs, LayerType[NoParams]):
    name = "identity"
    description = "passes its input through (torch.nn.Identity)"

    def output_shape(self, p: NoParams, shape: Shape) -> Shape:
        return shape

    def saved(self, p: NoParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return VIEW

    def build(self, p: NoParams, shape: Shape) -> nn.Module:
        from torch import nn

        return nn.Identity()


LAYERS: tuple[LayerType, ...] = (
    Conv2d(), MaxPool2d(), AvgPool2d(), AdaptiveAvgPool2d(), AdaptiveMaxPool2d(),
    _BatchNorm("batchnorm2d", image=True), _BatchNorm("batchnorm1d", image=False),
    Dropout(), Dropout2d(), Flatten(), Linear(), Identity(),
)


@hookimpl
def register_layers(register: Register) -> None:
    for layer in LAYERS:
        register(layer)
