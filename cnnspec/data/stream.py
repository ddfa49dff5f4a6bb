"""Images streamed from a uint8 map: batches read by index, made float (and normalised) on the device,
so memory holds a few batches plus the page cache rather than the float32 set."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from cnnspec.spec.cost import STREAM_AHEAD

__all__ = ["PREFETCH", "StreamedImages", "batches", "to_float"]

PREFETCH = STREAM_AHEAD  # batches read ahead of the one being trained on (the memory estimate counts them)


def to_float(u8: Tensor) -> Tensor:
    """uint8 pixels as float32 in [0, 1]: the one conversion both the resident and streamed paths use."""
    return u8.to(torch.float32).mul_(1.0 / 255.0)


class StreamedImages:
    """N x C x H x W images in [0, 1], read from ``pixels`` (uint8, file-backed) only when asked.

    Quacks like the float tensor it stands for where the trainer uses one: ``len``, ``shape``,
    ``index_select(0, idx)`` and ``x[i:j]`` give float32 batches on ``device``, normalised by
    ``mean``/``std`` when set. ``rows`` picks a subset (a validation split, ``data.limit``)
    without reading anything."""

    ndim = 4

    def __init__(self, pixels: Tensor, rows: Tensor | None = None, mean: Tensor | None = None,
                 std: Tensor | None = None, device: torch.device | None = None, in_memory: bool | None = None,
                 source: str = "") -> None:
        assert pixels.dtype == torch.uint8 and pixels.ndim == 4, "uint8 N x C x H x W pixels"
        self.pixels, self.rows, self.mean, self.std = pixels, rows, mean, std
        self.device = device or torch.device("cpu")
        self.in_memory = in_memory  # the dataset's wish: True resident, False streamed, None by size
        self.source = source  # where the pixels are, for messages

    @classmethod
    def from_array(cls, a: np.ndarray, **kw: object) -> StreamedImages:
        """Over a uint8 numpy array (a writable map: ``np.memmap(mode="c")``), without copying."""
        return cls(torch.from_numpy(a), **kw)  # type: ignore[arg-type]

    def _with(self, **changes: object) -> StreamedImages:
        kw: dict[str, object] = {"rows": self.rows, "mean": self.mean, "std": self.std, "device": self.device,
                                 "in_memory": self.in_memory, "source": self.source}
        kw.update(changes)
        return StreamedImages(self.pixels, **kw)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.pixels.shape[1:]))

    @property
    def float_bytes(self) -> int:
        """What the set takes as resident float32."""
        return int(np.prod(self.shape)) * 4

    def subset(self, idx: Tensor) -> StreamedImages:
        """The images at positions ``idx`` (nothing is read)."""
        idx = idx.cpu()
        return self._with(rows=self.rows[idx] if self.rows is not None else idx)

    def normalised(self, mean: Tensor, std: Tensor) -> StreamedImages:
        return self._with(mean=mean.view(1, -1, 1, 1), std=std.view(1, -1, 1, 1))

    def to(self, device: torch.device | str) -> StreamedImages:
        return self._with(device=torch.device(device))

    def uint8(self, idx: Tensor) -> Tensor:
        """The raw pixels at positions ``idx`` (on the CPU)."""
        idx = idx.cpu()
        return self.pixels.index_select(0, self.rows[idx] if self.rows is not None else idx)

    def index_select(self, dim: int, idx: Tensor) -> Tensor:
        """The float batch at positions ``idx``, on the device, normalised."""
        assert dim == 0, "images are selected along the batch dimension"
        return self._finish(self.uint8(idx))

    def __getitem__(self, s: slice) -> Tensor:
        """The float batch of a contiguous range of positions."""
        assert isinstance(s, slice), "a range of images; subset() for a selection"
        return self.index_select(0, torch.arange(len(self))[s])

    def _finish(self, u8: Tensor) -> Tensor:
        """uint8 on the CPU -> float32 on the device, normalised (the arithmetic on the device)."""
        if self.device.type == "cuda":
            u8 = u8.pin_memory().to(self.device, non_blocking=True)
        else:
            u8 = u8.to(self.device)
        x = to_float(u8)  # a new tensor: normalised in place, without two more batches of float32
        if self.mean is not None and self.std is not None:
            x.sub_(self.mean.to(self.device)).div_(self.std.to(self.device))
        return x

    def resident(self) -> Tensor:
        """Every image as one float32 tensor on the CPU, not normalised (the small-set fast path)."""
        u8 = self.pixels if self.rows is None else self.pixels.index_select(0, self.rows)
        return to_float(u8)

    def channel_stats(self, chunk: int = 1024) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std over the set (read in chunks, summed in float64); std >= 1e-6."""
        c = self.pixels.shape[1]
        total, squares, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
        for i in range(0, len(self), chunk):
            x = to_float(self.uint8(torch.arange(i, min(i + chunk, len(self))))).double()
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
            count += x.numel() // c
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
        return mean.to(torch.float32), std.to(torch.float32)


def batches(x: Tensor | StreamedImages, y: Tensor, order: Tensor, batch_size: int, first: int,
            steps: int) -> Generator[tuple[Tensor, Tensor], None, None]:
    """The training batches ``first`` .. ``steps - 1`` of an epoch in ``order``: by index from the
    resident tensor, or read ahead (``PREFETCH`` batches) on a background thread from a stream."""
    def idx(step: int) -> Tensor:
        return order[step * batch_size:(step + 1) * batch_size]

    if not isinstance(x, StreamedImages):
        for step in range(first, steps):
            i = idx(step)
            yield x.index_select(0, i), y.index_select(0, i)
        return
    order_cpu = order.cpu()
    with ThreadPoolExecutor(1, thread_name_prefix="cnnspec-prefetch") as pool:
        ahead: deque[tuple[Tensor, Future[Tensor]]] = deque()
        nxt = first
        while nxt < steps or ahead:
            while nxt < steps and len(ahead) <= PREFETCH:
                i = idx(nxt)
                ahead.append((i, pool.submit(x.index_select, 0, order_cpu[nxt * batch_size:(nxt + 1) * batch_size])))
                nxt += 1
            i, future = ahead.popleft()
            yield future.result(), y.index_select(0, i)
