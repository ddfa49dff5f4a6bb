"""Each supported Keras layer as spec layers, and its weights as those layers' tensors.

A Keras layer becomes one or more ``Layer`` values (the spec's vocabulary: the Keras-style
plugin's types where they are exact, core types elsewhere); a layer with weights names the
``role`` that converts them. Keras keeps kernels channels-last: Conv2D's is (kh, kw, in, out)
where torch's is (out, in, kh, kw); Dense's is (in, out) where torch's is (out, in). numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Config = dict[str, Any]


class Unsupported(Exception):
    """This layer (or this use of it) has no exact equivalent; the message says why when it is
    not the class itself."""


@dataclass(eq=False)
class Layer:
    """One layer of the spec being written, and where its weights come from."""

    type: str
    params: dict[str, Any]
    keras: str  # the Keras layer's name: the comment on the spec's line, and its weights' key
    cls: str  # the Keras class
    role: str | None = None  # which converter makes its tensors (ROLES), None: no weights
    config: Config = field(default_factory=dict)
    children: list[list[Layer]] = field(default_factory=list)  # a composite's branches (or gate's one list)
    child_key: str = ""  # "branches" (a list of lists) or "layers" (gate: children[0])
    flat_from: Layer | None = None  # Dense: the Flatten whose channels-last order its kernel follows
    path: tuple[str | int, ...] = ()  # where the spec writes it, e.g. ("layers", 2, "branches", 1, 0)
    note: str = ""  # which part of the Keras layer, when it takes several spec layers


def _square(v: Any) -> Any:
    """[3, 3] -> 3, as a person would write it."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        return v[0]
    return list(v) if isinstance(v, (list, tuple)) else v


def _activation(c: Config) -> str | None:
    act = c.get("activation", "linear")
    if isinstance(act, dict):  # a serialized function object: {"class_name": "function", "config": "relu"}
        act = act.get("config") if isinstance(act.get("config"), str) else act.get("class_name")
    from cnnspec_keras.layers import ACTIVATIONS

    if act not in ACTIVATIONS:
        raise Unsupported(f"activation '{act}'")
    return None if act == "linear" else str(act)


def _channels_last(c: Config) -> None:
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise Unsupported(f"data_format '{c.get('data_format')}' (only channels_last)")


def _window(c: Config, out: dict[str, Any], strides_default: Any = 1, dilation: bool = True) -> dict[str, Any]:
    """strides, padding, dilation_rate: written only where they differ from Keras' defaults."""
    _channels_last(c)
    padding = str(c.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise Unsupported(f"padding '{padding}'")
    strides = _square(c.get("strides") or strides_default)
    if strides != strides_default:
        out["strides"] = strides
    if padding != "valid":
        out["padding"] = padding
    if dilation and _square(c.get("dilation_rate", 1)) != 1:
        out["dilation_rate"] = _square(c["dilation_rate"])
    return out


def _act_bias(c: Config, out: dict[str, Any]) -> dict[str, Any]:
    act = _activation(c)
    if act is not None:
        out["activation"] = act
    if not c.get("use_bias", True):
        out["use_bias"] = False
    return out


def conv2d(name: str, c: Config) -> list[Layer]:
    p = _window(c, {"filters": c["filters"], "kernel_size": _square(c["kernel_size"])})
    if c.get("groups", 1) != 1:
        p["groups"] = c["groups"]
    return [Layer("Conv2D", _act_bias(c, p), name, "Conv2D", "conv", c)]


def depthwise(name: str, c: Config) -> list[Layer]:
    p = _window(c, {"kernel_size": _square(c["kernel_size"])})
    if c.get("depth_multiplier", 1) != 1:
        p["depth_multiplier"] = c["depth_multiplier"]
    return [Layer("DepthwiseConv2D", _act_bias(c, p), name, "DepthwiseConv2D", "depthwise", c)]


def separable(name: str, c: Config) -> list[Layer]:
    """SeparableConv2D is a depthwise convolution (no bias) then a 1x1 Conv2D (bias, activation)."""
    p = _window(c, {"kernel_size": _square(c["kernel_size"])})
    if c.get("depth_multiplier", 1) != 1:
        p["depth_multiplier"] = c["depth_multiplier"]
    p["use_bias"] = False
    point = _act_bias(c, {"filters": c["filters"], "kernel_size": 1})
    return [Layer("DepthwiseConv2D", p, name, "SeparableConv2D", "separable_depthwise", c, note="depthwise part"),
            Layer("Conv2D", point, name, "SeparableConv2D", "separable_pointwise", c, note="pointwise part")]


def dense(name: str, c: Config) -> list[Layer]:
    return [Layer("Dense", _act_bias(c, {"units": c["units"]}), name, "Dense", "dense", c)]


def pool(kind: str) -> Callable[[str, Config], list[Layer]]:
    def convert(name: str, c: Config) -> list[Layer]:
        size = _square(c.get("pool_size", 2))
        p = _window(c, {} if size == 2 else {"pool_size": size}, strides_default=size, dilation=False)
        return [Layer(kind, p, name, kind)]
    return convert


def global_pool(kind: str) -> Callable[[str, Config], list[Layer]]:
    def convert(name: str, c: Config) -> list[Layer]:
        _channels_last(c)
        out = [Layer(kind, {"output_size": 1}, name, "GlobalPooling2D")]
        return out if c.get("keepdims") else out + [Layer("flatten", {}, name, "GlobalPooling2D", note="to features")]
    return convert


def batchnorm(name: str, c: Config) -> list[Layer]:
    axis = c.get("axis", -1)
    if axis not in (-1, 3, [-1], [3]):
        raise Unsupported(f"axis {axis} (only the channels, -1)")
    if bool(c.get("center", True)) != bool(c.get("scale", True)):
        raise Unsupported("center and scale differ (both or neither)")
    p: dict[str, Any] = {}
    if c.get("momentum", 0.99) != 0.99:
        p["momentum"] = c["momentum"]
    if c.get("epsilon", 1e-3) != 1e-3:
        p["epsilon"] = c["epsilon"]
    if not c.get("center", True):
        p.update(center=False, scale=False)
    return [Layer("BatchNormalization", p, name, "BatchNormalization", "batchnorm", c)]


# Keras' backend.epsilon(), the floor of Normalization's standard deviation, squared: as a BatchNorm eps,
# sqrt(var + eps) is max(sqrt(var), 1e-7) in float32 at var 0 and from ~1e-6 up, to a relative eps / (2 var)
# between (5e-5 at 1e-10), and 1/sqrt(2) of it at var = eps, where Keras multiplies by 1e7
NORMALIZATION_EPS = 1e-14


def normalization(name: str, c: Config) -> list[Layer]:
    """An adapted Normalization over the last axis computes (x - mean) / max(sqrt(variance), 1e-7) per
    channel (or feature): a BatchNormalization without scale and shift, frozen so that it stays in eval
    mode and keeps Keras' statistics."""
    axis = c.get("axis", -1)
    if axis not in (-1, [-1], (-1,)):
        raise Unsupported(f"axis {axis} (only the last axis, -1)")
    if c.get("invert"):
        raise Unsupported("invert=True (only the normalisation itself)")
    if c.get("mean") is not None or c.get("variance") is not None:
        raise Unsupported("mean and variance given in the config (only an adapted layer, its statistics as weights)")
    p = {"center": False, "scale": False, "epsilon": NORMALIZATION_EPS, "trainable": False}
    return [Layer("BatchNormalization", p, name, "Normalization", "normalization", c)]


def dropout(name: str, c: Config) -> list[Layer]:
    return [Layer("Dropout", {"rate": c["rate"]}, name, "Dropout")]


def spatial_dropout(name: str, c: Config) -> list[Layer]:
    _channels_last(c)
    return [Layer("dropout2d", {"p": c["rate"]}, name, "SpatialDropout2D")]


def flatten(name: str, c: Config) -> list[Layer]:
    _channels_last(c)
    return [Layer("Flatten", {}, name, "Flatten")]


def reshape(name: str, c: Config) -> list[Layer]:
    if len(c.get("target_shape", ())) != 1:
        raise Unsupported(f"target_shape {tuple(c.get('target_shape', ()))} (only to flat features, as Flatten)")
    return [Layer("Flatten", {}, name, "Reshape")]


def activation(name: str, c: Config) -> list[Layer]:
    act = _activation(c)
    return [Layer("Activation", {"activation": act or "linear"}, name, "Activation")]


def relu(name: str, c: Config) -> list[Layer]:
    top, slope, threshold = c.get("max_value"), c.get("negative_slope", 0.0), c.get("threshold", 0.0)
    if threshold:
        raise Unsupported(f"threshold {threshold}")
    if top is None and not slope:
        return [Layer("relu", {}, name, "ReLU")]
    if top == 6 and not slope:
        return [Layer("relu6", {}, name, "ReLU")]
    if top is None:
        return [Layer("leaky_relu", {"negative_slope": slope}, name, "ReLU")]
    raise Unsupported(f"max_value {top} with negative_slope {slope}")


def leaky_relu(name: str, c: Config) -> list[Layer]:
    slope = c.get("negative_slope", c.get("alpha", 0.3))  # Keras 3 names it negative_slope, Keras 2 alpha
    return [Layer("leaky_relu", {"negative_slope": slope}, name, "LeakyReLU")]


def elu(name: str, c: Config) -> list[Layer]:
    return [Layer("elu", {"alpha": c.get("alpha", 1.0)}, name, "ELU")]


def softmax(name: str, c: Config) -> list[Layer]:
    if c.get("axis", -1) not in (-1, [-1]):
        raise Unsupported(f"axis {c.get('axis')} (only the channels, -1)")
    return [Layer("softmax", {}, name, "Softmax")]


def zero_padding(name: str, c: Config) -> list[Layer]:
    _channels_last(c)
    pad = c.get("padding", 1)
    return [Layer("ZeroPadding2D", {"padding": pad if isinstance(pad, int) else [list(p) if isinstance(p, (
        list, tuple)) else p for p in pad]}, name, "ZeroPadding2D")]


def rescaling(name: str, c: Config) -> list[Layer]:
    scale, offset = c.get("scale", 1.0), c.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        raise Unsupported("a scale or offset per channel")
    return [Layer("Rescaling", {"scale": scale, "offset": offset} if offset else {"scale": scale}, name, "Rescaling")]


def identity(name: str, c: Config) -> list[Layer]:
    return [Layer("identity", {}, name, "Identity")]


CONVERTERS: dict[str, Callable[[str, Config], list[Layer]]] = {
    "Conv2D": conv2d, "Convolution2D": conv2d, "DepthwiseConv2D": depthwise, "SeparableConv2D": separable,
    "SeparableConvolution2D": separable, "Dense": dense,
    "MaxPooling2D": pool("MaxPooling2D"), "MaxPool2D": pool("MaxPool2D"),
    "AveragePooling2D": pool("AveragePooling2D"), "AvgPool2D": pool("AvgPool2D"),
    "GlobalAveragePooling2D": global_pool("adaptiveavgpool2d"), "GlobalAvgPool2D": global_pool("adaptiveavgpool2d"),
    "GlobalMaxPooling2D": global_pool("adaptivemaxpool2d"), "GlobalMaxPool2D": global_pool("adaptivemaxpool2d"),
    "BatchNormalization": batchnorm, "Normalization": normalization,
    "Dropout": dropout, "SpatialDropout2D": spatial_dropout, "Flatten": flatten, "Reshape": reshape,
    "Activation": activation, "ReLU": relu, "LeakyReLU": leaky_relu,
    "ELU": elu, "Softmax": softmax, "ZeroPadding2D": zero_padding, "Rescaling": rescaling, "Identity": identity,
}
MERGES = {"Add": "Add", "Concatenate": "Concatenate", "Multiply": "gate"}  # Multiply: x * f(x) only


def check_merge(cls: str, c: Config) -> None:
    """Raise Unsupported for a merge the spec's Add / Concatenate / gate cannot compute."""
    if cls == "Concatenate" and c.get("axis", -1) not in (-1, 3):
        raise Unsupported(f"axis {c.get('axis')} (only the channels, -1)")


# --- weights ---------------------------------------------------------------------------------

Arrays = dict[str, Any]  # the last part of a state_dict key ("weight", "running_mean", ...) -> array


def _conv_kernel(k: Any) -> Any:
    return np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))  # (kh, kw, in, out) -> (out, in, kh, kw)


def _depthwise_kernel(k: Any) -> Any:
    kh, kw, c, m = k.shape  # torch's output channel c * m_total + m is Keras' (c, m): a plain reshape
    return _conv_kernel(k.reshape(kh, kw, 1, c * m))


def _with_bias(weight: Any, rest: list[Any]) -> Arrays:
    return {"weight": weight, **({"bias": rest[0]} if rest else {})}


def _features(v: Any, flat_from: tuple[int, ...] | None) -> Any:
    """Rows indexed by flat features (axis 0) in cnnspec's order: Keras flattened a C x H x W map
    channels-last, (h, w, c), where cnnspec flattens (c, h, w)."""
    if flat_from is None or len(flat_from) != 3:
        return v
    c, h, w = flat_from
    rest = v.shape[1:]
    return np.ascontiguousarray(v.reshape(h, w, c, *rest).transpose(2, 0, 1, *range(3, 3 + len(rest)))
                                .reshape(c * h * w, *rest))


def _dense(layer: Layer, v: list[Any], flat_from: tuple[int, ...] | None) -> Arrays:
    return _with_bias(np.ascontiguousarray(_features(v[0], flat_from).T), v[1:])


def _stats(mean: Any, var: Any, flat_from: tuple[int, ...] | None) -> Arrays:
    return {"running_mean": _features(mean, flat_from), "running_var": _features(var, flat_from),
            "num_batches_tracked": np.array(0, np.int64)}


def _batchnorm(layer: Layer, v: list[Any], flat_from: tuple[int, ...] | None) -> Arrays:
    affine = bool(layer.config.get("center", True))  # then gamma, beta come first (scale == center)
    gamma_beta = {"weight": _features(v[0], flat_from), "bias": _features(v[1], flat_from)} if affine else {}
    mean, var = v[2:4] if affine else v[0:2]
    return {**gamma_beta, **_stats(mean, var, flat_from)}


def _normalization(layer: Layer, v: list[Any], flat_from: tuple[int, ...] | None) -> Arrays:
    return _stats(v[0], v[1], flat_from)  # mean, variance (then count, which torch has no use for)


ROLES: dict[str, Callable[[Layer, list[Any], tuple[int, ...] | None], Arrays]] = {
    "conv": lambda layer, v, _: _with_bias(_conv_kernel(v[0]), v[1:]),
    "depthwise": lambda layer, v, _: _with_bias(_depthwise_kernel(v[0]), v[1:]),
    "separable_depthwise": lambda layer, v, _: {"weight": _depthwise_kernel(v[0])},
    "separable_pointwise": lambda layer, v, _: _with_bias(_conv_kernel(v[1]), v[2:]),
    "dense": _dense,
    "batchnorm": _batchnorm,
    "normalization": _normalization,
}
FEATURE_ROLES = frozenset({"dense", "batchnorm", "normalization"})  # tensors indexed by flat features
