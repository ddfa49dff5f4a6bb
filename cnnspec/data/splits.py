"""What every dataset shares: Splits in [0, 1], the validation split, channel statistics, and
``prepare_data``, which turns a spec's dataset into Batches on the training device.

The readers of particular formats (IDX, CIFAR pickles, image folders, ...) live in the
dataset plugins that use them (``cnnspec.plugins``); core never names a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cnnspec.data.pixels import PixelStats, pixel_stats
from cnnspec.data.stream import StreamedImages
from cnnspec.errors import MEMORY_REFUSAL, DataError, ResourceError, SpecError
from cnnspec.spec.cost import LABEL_BYTES, DataHeld, human_bytes
from cnnspec.spec.shapes import BYTES

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.spec.sections import Spec

__all__ = ["DEFAULT_ROOT", "Batches", "DataError", "Images", "Splits", "channel_stats", "data_root",
           "images_from_uint8", "labels_from_ints", "prepare_data", "validation_split"]

DEFAULT_ROOT = Path("~/.cache/cnnspec/data")
RESIDENT_SHARE = 0.25  # a set whose float32 copy takes at most this share of free memory is held there

Images = Tensor | StreamedImages  # a split's pixels: resident float32, or streamed from a uint8 map


@dataclass
class Splits:
    """A train and a test set: x is float32 N x C x H x W in [0, 1] (or StreamedImages standing for
    it), y is int64 N."""

    train_x: Images
    train_y: Tensor
    test_x: Images
    test_y: Tensor
    classes: list[str]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def split_validation(self, fraction: float, seed: int) -> tuple[Splits, tuple[Images, Tensor] | None]:
        """Move a seeded random ``fraction`` of train into a validation set (None when 0)."""
        tx, ty, vx, vy = validation_split(self.train_x, self.train_y, fraction, seed)
        rest = Splits(tx, ty, self.test_x, self.test_y, list(self.classes))
        return rest, (None if vx is None or vy is None else (vx, vy))


@dataclass
class Batches:
    """The splits as tensors on the device, already scaled (and normalised if asked); streamed
    images are read and scaled batch by batch."""

    train: tuple[Images, Tensor]
    test: tuple[Images, Tensor]
    val: tuple[Images, Tensor] | None
    classes: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = ""  # the image cache the images came from, if any
    pixels: PixelStats | None = None  # the training pictures' statistics before scaling (for predict)

    @property
    def streamed(self) -> bool:
        return isinstance(self.train[0], StreamedImages)

    @property
    def resident_bytes(self) -> int:
        """What the images hold in memory: the float32 splits, or nothing (but batches) when streamed."""
        pairs = [self.train, self.test] + ([self.val] if self.val is not None else [])
        return sum(p[0].numel() * p[0].element_size() for p in pairs if isinstance(p[0], Tensor))

    def held(self, batch_size: int) -> DataHeld:
        """What the data holds while training at ``batch_size``, for the memory estimate: the batches
        read ahead of a stream, or every image and label of a resident set."""
        if self.streamed:
            return DataHeld.streamed(batch_size, BYTES * int(np.prod(self.train[0].shape[1:])))
        pairs = [self.train, self.test] + ([self.val] if self.val is not None else [])
        return DataHeld("resident", self.resident_bytes + LABEL_BYTES * sum(len(p[1]) for p in pairs))

    def to(self, device: torch.device) -> Batches:
        """The same splits on another device."""
        def move(pair: tuple[Images, Tensor]) -> tuple[Images, Tensor]:
            return pair[0].to(device), pair[1].to(device)

        val = move(self.val) if self.val is not None else None
        return Batches(move(self.train), move(self.test), val, self.classes, self.mean, self.std, self.source,
                       self.pixels)


def validation_split(x: Images, y: Tensor, fraction: float, seed: int
                     ) -> tuple[Images, Tensor, Images | None, Tensor | None]:
    """(train_x, train_y, val_x, val_y) from a seeded permutation; val is None when fraction is 0.

    The schema keeps ``fraction`` in [0, 1); a dataset's sizes are only known here.
    """
    if fraction == 0.0:
        return x, y, None, None
    n = len(x)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"a validation fraction of {fraction} leaves no training samples out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val], perm[n_val:]
    return select(x, train), y[train], select(x, val), y[val]


def select(x: Images, idx: Tensor) -> Images:
    """The images at ``idx``: a tensor's rows, or a stream's subset (nothing read)."""
    return x.subset(idx) if isinstance(x, StreamedImages) else x[idx]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (each of shape C) of N x C x H x W; std is floored at 1e-6."""
    xd = x.to(torch.float64)
    mean = xd.mean(dim=(0, 2, 3))
    std = xd.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6)
    return mean.to(torch.float32), std.to(torch.float32)


def data_root(root: str | None) -> Path:
    """``data.root`` as a path, or the default cache folder."""
    return (Path(root) if root else DEFAULT_ROOT).expanduser()


def images_from_uint8(a: np.ndarray) -> Tensor:
    """uint8 N x C x H x W pixels as float32 in [0, 1] (for dataset plugins)."""
    return torch.from_numpy(a.astype(np.float32)).mul_(1.0 / 255.0)


def labels_from_ints(a: np.ndarray | list[int]) -> Tensor:
    """Integer class labels as an int64 tensor (for dataset plugins)."""
    return torch.from_numpy(np.asarray(a).astype(np.int64))


def prepare_data(spec: Spec, device: torch.device, budget: int | None = None, refuse: bool = False,
                 pixels: bool = False) -> Batches:
    """Load the spec's dataset, check it fits the model (located errors), split, scale, move.

    Streamed images (a dataset's StreamedImages) become resident float32 tensors when they take at
    most RESIDENT_SHARE of ``budget`` bytes (what the device has free beside the model; None: no
    limit is known), or when the dataset asks; otherwise they stay streamed. With ``refuse``, a set
    the dataset asks to hold (``in_memory: true``) that is larger than ``budget`` is a ResourceError.
    With ``pixels``, the training pictures' statistics that a run's checkpoints record (``Batches.pixels``)."""
    from cnnspec.registry.manager import call_plugin
    from cnnspec.spec.check import fit_problems

    assert spec.data is not None and spec.dataset is not None, "run checks that a dataset is named"
    ds = spec.dataset
    splits = call_plugin(spec.registry, "dataset", ds.name, ds.type.load, ds.params, spec.data.root,
                         spec.data.download, passthrough=(DataError,))
    if not isinstance(splits, Splits):
        raise DataError(f"dataset type '{ds.name}' returned {type(splits).__name__}, not cnnspec.data.splits.Splits")
    for split, x, y in (("training", splits.train_x, splits.train_y), ("test", splits.test_x, splits.test_y)):
        if x.ndim != 4 or len(x) != len(y):
            raise DataError(f"dataset '{ds.name}' gave {split} images of shape {tuple(x.shape)} with "
                            f"{len(y)} labels; expected N x C x H x W and N labels")
        if len(x) == 0:
            raise DataError(f"dataset '{ds.name}' has no {split} samples")
    problems = fit_problems(spec.located, ds.name, splits.sample_shape, len(splits.classes),
                            spec.input_shape, spec.trace)
    if problems:
        raise SpecError(problems, spec.file)
    seed = spec.train.seed or 0
    splits, val = splits.split_validation(spec.data.val_split, seed)
    if spec.data.limit is not None:  # a subset: the first N samples of each split
        n = spec.data.limit
        splits = Splits(_head(splits.train_x, n), splits.train_y[:n], _head(splits.test_x, n), splits.test_y[:n],
                        splits.classes)
        val = (_head(val[0], n), val[1][:n]) if val else None
    if spec.train.limit_batches is not None:  # evaluation on the first N batches of val and test
        n = spec.train.limit_batches * spec.eval_batch_size
        splits = Splits(splits.train_x, splits.train_y, _head(splits.test_x, n), splits.test_y[:n], splits.classes)
        val = (_head(val[0], n), val[1][:n]) if val else None
    source = getattr(splits.train_x, "source", "")
    images = _resident_or_streamed([splits.train_x, splits.test_x] + ([val[0]] if val else []), budget,
                                   spec.file if refuse else None)
    stats = pixel_stats(images[0]) if pixels else None  # before normalisation: what predict compares with
    mean = std = None
    if spec.data.normalize:  # the same statistics, from the training split or the spec, for every split
        norm = spec.data.normalize
        m, s = (torch.tensor(norm.mean), torch.tensor(norm.std)) if not isinstance(norm, bool) \
            else _channel_stats(images[0])
        images = [_normalised(t, m, s) for t in images]
        mean, std = m.tolist(), s.tolist()
    moved = [t.to(device) for t in images]
    return Batches(
        train=(moved[0], splits.train_y.to(device)),
        test=(moved[1], splits.test_y.to(device)),
        val=(moved[2], val[1].to(device)) if val else None,
        classes=splits.classes, mean=mean, std=std, source=source, pixels=stats,
    )


def _resident_or_streamed(images: list[Images], budget: int | None, refuse: str | None) -> list[Images]:
    """Streamed splits made resident float32 tensors when they fit (see prepare_data), else as they are;
    ``refuse``: the file name that starts the refusal of a set asked to be resident that cannot fit."""
    streams = [x for x in images if isinstance(x, StreamedImages)]
    if not streams:
        return images
    wish = streams[0].in_memory
    size = sum(x.float_bytes for x in streams)
    if wish is False or (wish is None and budget is not None and size > RESIDENT_SHARE * budget):
        return images
    if wish and refuse is not None and budget is not None and size > budget:  # worded as run's refusal
        raise ResourceError(f"{refuse}{MEMORY_REFUSAL}{human_bytes(size)} more for the images held in memory "
                            f"(data.dataset.in_memory: true; float32) but only {human_bytes(budget)} is free "
                            "beside the training estimate (unset in_memory to stream them from the image cache, "
                            "or pass --force)")
    return [x.resident() if isinstance(x, StreamedImages) else x for x in images]


def _head(x: Images, n: int) -> Images:
    """The first ``n`` images."""
    return x.subset(torch.arange(min(n, len(x)))) if isinstance(x, StreamedImages) else x[:n]


def _channel_stats(x: Images) -> tuple[Tensor, Tensor]:
    return x.channel_stats() if isinstance(x, StreamedImages) else channel_stats(x)


def _normalised(x: Images, m: Tensor, s: Tensor) -> Images:
    if isinstance(x, StreamedImages):
        return x.normalised(m, s)
    return (x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
