"""What the training pictures look like before scaling: per-channel mean and background (border) value.

Recorded in every checkpoint (``pixels``) so that ``predict`` can tell, without the dataset, a
picture whose polarity is the opposite of the training data's (dark ink on white paper given to a
model trained on MNIST's light ink on black).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cnnspec.data.stream import StreamedImages, to_float

__all__ = ["SAMPLE", "PixelStats", "border_mean", "pixel_stats"]

SAMPLE = 10_000  # pictures the statistics are taken over, evenly spaced through the training split ...
SAMPLE_BYTES = 64 * 2**20  # ... and at most this many bytes of uint8 pixels (341 pictures of 3 x 256 x 256)
_CHUNK = 256  # pictures made float at once


@dataclass(frozen=True)
class PixelStats:
    """Per-channel means in [0, 1] of the training pictures before normalisation: of every pixel
    (``mean``) and of the border ring, the background of most pictures (``border``)."""

    mean: list[float]
    border: list[float]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "border": list(self.border)}

    @classmethod
    def from_dict(cls, state: Any) -> PixelStats | None:
        """From a checkpoint's ``pixels`` entry; None for one without it (an older run) or a foreign one."""
        if not isinstance(state, dict):
            return None
        mean, border = state.get("mean"), state.get("border")
        ok = all(isinstance(v, list) and v and all(isinstance(f, float) and 0.0 <= f <= 1.0 for f in v)
                 for v in (mean, border))
        return cls(list(mean), list(border)) if ok and len(mean) == len(border) else None  # type: ignore[arg-type]


def _ring(h: int, w: int) -> Tensor:
    """The border ring of an h x w picture: a tenth of its smaller side wide, at least one pixel."""
    r = max(1, min(h, w) // 10)
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[r:h - r, r:w - r] = False
    return mask


def border_mean(x: Tensor) -> Tensor:
    """Per-channel mean (float64, shape C) of the border ring of N x C x H x W pictures."""
    ring = _ring(int(x.shape[2]), int(x.shape[3]))
    return x[:, :, ring].to(torch.float64).mean(dim=(0, 2))


def pixel_stats(x: Tensor | StreamedImages, most: int = SAMPLE) -> PixelStats:
    """The statistics of pictures in [0, 1] (not normalised), over at most ``most`` of them (and
    SAMPLE_BYTES of pixels), evenly spaced, read ``_CHUNK`` at a time (a streamed set reads only those)."""
    n = len(x)
    most = max(1, min(most, SAMPLE_BYTES // max(1, math.prod(x.shape[1:]))))
    idx = torch.linspace(0, n - 1, min(n, most)).round().long().unique() if n > most else torch.arange(n)
    c = int(x.shape[1])
    total, ring_total = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(idx), _CHUNK):
        part = idx[i:i + _CHUNK]
        xb = to_float(x.uint8(part)) if isinstance(x, StreamedImages) else x.index_select(0, part.to(x.device))
        xb = xb.cpu()
        total += xb.to(torch.float64).mean(dim=(2, 3)).sum(0)
        ring_total += border_mean(xb) * len(part)
    k = max(1, len(idx))
    return PixelStats(_unit(total / k), _unit(ring_total / k))


def _unit(v: Tensor) -> list[float]:
    return [min(1.0, max(0.0, round(float(f), 6))) for f in v]
