"""TensorFlow's 'same' and 'valid' arithmetic: output sizes, the padding on each side, and whether
torch's own symmetric padding can do it (else the module pads a copy first). Pure Python."""

from __future__ import annotations

from cnnspec.plugin import Shape


def tf_out(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """TensorFlow's output size: ceil(in / s) for 'same', ceil((in - d(k-1)) / s) for 'valid'."""
    if padding == "same":
        return -(-size // stride)
    return -(-(size - dilation * (kernel - 1)) // stride)


def tf_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after): the odd one goes after (bottom, right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


Pads = tuple[int, int, int, int]  # (left, right, top, bottom), as F.pad takes them


def same_pads(shape: Shape, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], padding: str) -> Pads:
    """The padding TensorFlow gives a C x H x W input; all zero for 'valid'."""
    if padding != "same":
        return (0, 0, 0, 0)
    top, bottom = tf_pads(shape[1], k[0], s[0], d[0])
    left, right = tf_pads(shape[2], k[1], s[1], d[1])
    return (left, right, top, bottom)


def conv_pads_itself(pads: Pads) -> bool:
    """torch's convolution pads evenly on both sides; uneven 'same' padding needs a padded copy."""
    left, right, top, bottom = pads
    return left == right and top == bottom


def max_pool_pads_itself(pads: Pads, k: tuple[int, int]) -> bool:
    """torch's max pooling pads evenly (with -inf), and by at most half the window."""
    left, _, top, _ = pads
    return conv_pads_itself(pads) and top <= k[0] // 2 and left <= k[1] // 2


def padded_copy(shape: Shape, pads: Pads, pads_itself: bool) -> int:
    """Bytes of the padded copy of one sample that the module makes first (0 if it makes none)."""
    if pads_itself or not any(pads):
        return 0
    left, right, top, bottom = pads
    return 4 * shape[0] * (shape[1] + top + bottom) * (shape[2] + left + right)
