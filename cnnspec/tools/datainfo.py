"""``cnnspec data SPEC``: the dataset as the spec will see it, without training: counts per class and
split, the sample shape, class imbalance, what the dataset tells of its files (an image folder: the
cache, picture sizes and modes, unreadable pictures), and a contact sheet after augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cnnspec.data.splits import Batches, prepare_data
from cnnspec.errors import ToolError
from cnnspec.registry.manager import call_plugin
from cnnspec.spec.sections import Spec
from cnnspec.train.runner import load_for_run

SHEET_PER_CLASS = 6  # pictures per class (one row each) on the contact sheet


def describe_data(path: str, overrides: Sequence[str] = (), plugins: Sequence[str] = (), trust: bool = False,
                  sheet: str | None = None) -> dict[str, Any]:
    """What ``cnnspec data`` prints (as JSON with --format json); writes the contact sheet to ``sheet``."""
    spec = load_for_run(path, overrides, "cpu", plugins, trust)
    assert spec.data is not None and spec.dataset is not None
    described: dict[str, Any] = {}
    describe = getattr(spec.dataset.type, "describe", None)
    if describe is not None:  # first: whether this call builds a cache is part of its answer
        described = call_plugin(spec.registry, "dataset", spec.dataset.name, describe, spec.dataset.params,
                                spec.data.root)
    data = prepare_data(spec, torch.device("cpu"), budget=0)  # streamed where it can be: nothing held
    counts = {name: _counts(pair[1], len(data.classes))
              for name, pair in (("train", data.train), ("val", data.val), ("test", data.test)) if pair is not None}
    train = counts["train"]
    result: dict[str, Any] = {
        "spec": path, "dataset": spec.dataset.name, "classes": data.classes,
        "sample_shape": list(data.train[0].shape[1:]), "counts": counts,
        "imbalance": round(max(train) / max(1, min(train)), 2),  # largest class over smallest, in train
    }
    result.update(described)
    if sheet is not None:
        write_sheet(spec, data, sheet)
        result["sheet"] = sheet
    return result


def _counts(y: torch.Tensor, k: int) -> list[int]:
    """Samples per class of labels ``y``."""
    return [int(c) for c in torch.bincount(y.cpu(), minlength=k)]


def write_sheet(spec: Spec, data: Batches, file: str) -> None:
    """A PNG with one row per class of SHEET_PER_CLASS training pictures, augmented as training does."""
    from torchvision.utils import save_image

    x, y = data.train
    picks = torch.cat([torch.nonzero(y == c).flatten()[:SHEET_PER_CLASS] for c in range(len(data.classes))])
    rows = [torch.nonzero(y[picks] == c).numel() for c in range(len(data.classes))]
    xb, yb = x.index_select(0, picks), y.index_select(0, picks)
    torch.manual_seed(spec.train.seed or 0)
    for a in spec.augmentations:
        op = call_plugin(spec.registry, "augmentation", a.name, a.type.build, a.params, spec.input_shape,
                         len(data.classes))
        xb, yb = op(xb, yb)
    if data.mean is not None and data.std is not None:  # back from normalised to [0, 1] to be seen
        xb = xb * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)
    width = max(rows) if rows else 1
    grid = torch.zeros(len(rows) * width, *xb.shape[1:])
    at = 0
    for r, n in enumerate(rows):  # class r's pictures on row r, padded with black
        grid[r * width:r * width + n] = xb[at:at + n]
        at += n
    try:
        save_image(grid.clamp(0, 1), file, nrow=width, padding=2)
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot write the contact sheet {file}: {e}") from None
