"""Shape arithmetic in pure Python: torch's output-size formulas and the layer-by-layer trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .registry import Shape, ShapeError


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
    """One layer of the trace: its output shape and parameter count."""

    index: int
    type: str
    output_shape: Shape
    params: int


@dataclass
class ShapeTrace:
    """Per-layer output shapes and parameters; ``error`` is set where the trace stopped."""

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


def trace(input_shape: Shape, layers: Sequence[tuple[str, Any, Any]]) -> ShapeTrace:
    """Run each (name, LayerType, params) over the shape flowing in; stop at the first ShapeError."""
    result = ShapeTrace(tuple(input_shape))
    shape = result.input_shape
    for i, (name, ltype, params) in enumerate(layers):
        try:
            out = tuple(ltype.output_shape(params, shape))
            if any(d < 1 for d in out):
                raise ShapeError(f"output would be {fmt(out)}: a dimension collapses to zero or below")
            count = ltype.num_params(params, shape)
        except ShapeError as e:
            result.error = (i, e)
            break
        except Exception as e:  # a bug in a (plugin's) shape rule: still a located line, not a crash
            result.error = (i, ShapeError(f"the shape rule of '{name}' failed: {type(e).__name__}: {e}"))
            break
        result.rows.append(Row(i, name, out, count))
        shape = out
    return result
