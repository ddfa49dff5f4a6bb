"""Three ways to apply random_resized_crop to a batch on the device, timed, and each checked against
torchvision's per-sample ``resized_crop``: the op's one ``grid_sample`` with clamped sampling points,
a Python loop of crop + ``F.interpolate``, and batched resize matrices (``Ry @ x @ Rx^T``).

Run: python bench/resized_crop.py [--batch 64] [--size 64] [--repeat 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def loop(x: Tensor, p: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    return torch.stack([F.interpolate(x[i:i + 1, :, t:t + h, left:left + w], size=size, mode="bilinear",
                                      align_corners=False)[0]
                        for i, (t, left, h, w) in enumerate(zip(*(p[k].tolist() for k in ("top", "left", "h", "w")),
                                                                strict=True))])


def matrices(x: Tensor, p: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    from cnnspec.plugins.augment_ops import _source

    def weights(start: Tensor, length: Tensor, out: int, side: int) -> Tensor:
        s = _source(start, length, out, x.dtype)
        lo = s.floor()
        frac, lo_i = s - lo, lo.long()
        hi = torch.minimum(lo_i + 1, (start + length - 1)[:, None])
        m = torch.zeros(len(x), out, side, device=x.device, dtype=x.dtype)
        m.scatter_add_(2, lo_i[..., None], (1 - frac)[..., None])
        return m.scatter_add_(2, hi[..., None], frac[..., None])

    ry = weights(p["top"], p["h"], size[0], x.shape[2])
    rx = weights(p["left"], p["w"], size[1], x.shape[3])
    return ry[:, None] @ x @ rx[:, None].transpose(-1, -2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from torchvision.transforms.v2 import functional as TF

    from cnnspec.plugins.augment_ops import RandomResizedCropOp
    from cnnspec.train.host import cpu_model

    torch.manual_seed(0)
    dev, size = torch.device(args.device), (args.size, args.size)
    x = torch.rand(args.batch, 3, *size, device=dev)
    op = RandomResizedCropOp((0.08, 1.0), (3 / 4, 4 / 3), size)
    p = op.sample(x)
    ref = torch.stack([TF.resized_crop(x[i], int(p["top"][i]), int(p["left"][i]), int(p["h"][i]), int(p["w"][i]),
                                       list(size), antialias=True) for i in range(len(x))])
    ways: dict[str, Callable[[], Tensor]] = {
        "grid_sample (the op)": lambda: op.apply(x, x, p)[0],
        "loop: crop + interpolate": lambda: loop(x, p, size),
        "resize matrices": lambda: matrices(x, p, size),
    }
    print(f"batch {args.batch} x 3 x {args.size} x {args.size} on {dev} ({cpu_model()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__})")
    for name, run in ways.items():
        diff = float((run() - ref).abs().max())
        for _ in range(3):
            run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.repeat):
            run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - started) / args.repeat * 1e3
        print(f"{name:<26} {ms:7.2f} ms a batch   max |difference| from torchvision {diff:.1e}")


if __name__ == "__main__":
    main()
