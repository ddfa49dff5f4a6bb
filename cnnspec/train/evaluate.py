"""Evaluation during training: mean loss and accuracy over a split, in eval mode, summed over ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnspec.data.splits import Images
from cnnspec.data.stream import StreamedImages
from cnnspec.train.distributed import World, all_sum
from cnnspec.train.precision import Precision


@torch.inference_mode()
def evaluate(model: nn.Module, loss_fn: nn.Module, split: tuple[Images, Tensor], *, batch_size: int,
             precision: Precision, device: torch.device, world: World) -> tuple[float, float]:
    """Mean loss and accuracy over ``split`` = (x, y), in batches of ``batch_size``; the model's
    training mode is put back after."""
    x, y = split
    was_training = model.training
    model.eval()
    n = len(x)
    if world.distributed:  # each rank a contiguous slice; the sums below make it whole again
        lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
        x = x.subset(torch.arange(lo, hi)) if isinstance(x, StreamedImages) else x[lo:hi]
        y = y[lo:hi]
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(x), batch_size):
        xb, yb = precision.layout(x[i:i + batch_size]), y[i:i + batch_size]
        with precision.autocast(device):
            out = model(xb)
            loss += loss_fn(out, yb).double() * len(yb)
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    total, hits = all_sum([loss.item(), correct.item()], device, world)
    return total / n, hits / n
