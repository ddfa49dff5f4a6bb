"""Images per second delivered to the model, and a training epoch, on a generated folder of JPEGs:
cnnspec's decoded cache against torchvision's ImageFolder + DataLoader(num_workers=2).

1. delivery (no training step): the cached pipeline (batches by index from the uint8 map, float,
   flip, normalise) against ImageFolder + DataLoader with Resize, RandomHorizontalFlip, ToTensor,
   Normalize; the cache's first build (decoding every picture once) and its later opening timed too.
2. an epoch of a small CNN at 64 x 64: `cnnspec run` (the `seconds` of its metrics row: training only)
   against the same model, optimizer and transforms hand-written with torchvision.

Run: python bench/image_pipeline.py [--images 2000] [--size 64] [--folder DIR]
     (the issue's large run: --images 20000)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
BATCH = 128

SPEC = """\
name: bench-images
input: [3, {s}, {s}]
layers:
  - {{type: conv2d, out_channels: 16, kernel_size: 3, padding: 1}}
  - relu
  - {{type: maxpool2d, kernel_size: 2}}
  - {{type: conv2d, out_channels: 32, kernel_size: 3, padding: 1}}
  - relu
  - {{type: maxpool2d, kernel_size: 2}}
  - flatten
  - {{type: linear, out_features: {k}}}
data:
  dataset: {{type: image_folder, size: [{s}, {s}], in_memory: false}}
  root: {root}
  batch_size: {b}
  normalize: {{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
  augment: [horizontal_flip]
train: {{epochs: 1, seed: 0, device: cpu, optimizer: {{type: sgd, lr: 0.01, momentum: 0.9}}}}
"""


def make_folder(root: Path, n: int) -> None:
    """``n`` 256 x 256 JPEGs (9/10 train, 1/10 test) in CLASSES classes: smooth colour fields plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    for i in range(n):
        split, k = ("test" if (i // CLASSES) % 10 == 0 else "train"), i % CLASSES
        d = root / split / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.stack([np.sin(xx * (k + 1) * 3), np.cos(yy * (k + 2) * 2), xx * yy], -1) * 100 + 128
        a = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(d / f"{i}.jpg", quality=90)


def transforms(size: int):  # noqa: ANN201 - torchvision's Compose
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize([0.5] * 3, [0.25] * 3)])


def torchvision_rate(root: Path, size: int) -> float:
    """Images/s from ImageFolder + DataLoader(num_workers=2), one pass over train."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    loader = DataLoader(ImageFolder(str(root / "train"), transforms(size)), batch_size=BATCH, shuffle=True,
                        num_workers=2, drop_last=True)
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def cnnspec_rates(root: Path, size: int) -> dict[str, float]:
    """The cache's build and reopening, then images/s delivered from it (float, flip, normalise)."""
    import torch

    from cnnspec.data.cache import open_cache
    from cnnspec.data.stream import batches
    from cnnspec.plugins.augment_ops import HorizontalFlipOp
    from cnnspec.plugins.image_folder import ImageFolderParams, listing, load_image_folder

    p = ImageFolderParams(size=(size, size))
    t0 = time.perf_counter()
    built = open_cache(listing(p, str(root)), (size, size), 3)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = load_image_folder(str(root), "train", "test", (size, size), 3, stream=True)
    reopen = time.perf_counter() - t0
    x = s.train_x.normalised(torch.tensor([0.5] * 3), torch.tensor([0.25] * 3))  # type: ignore[union-attr]
    steps = len(x) // BATCH
    t0 = time.perf_counter()
    flip = HorizontalFlipOp(0.5)
    for xb, yb in batches(x, s.train_y, torch.randperm(len(x)), BATCH, 0, steps):
        flip(xb, yb)
    rate = steps * BATCH / (time.perf_counter() - t0)
    return {"build_s": first if built.built else float("nan"), "reopen_s": reopen, "rate": rate}


def cnnspec_epoch(root: Path, size: int, work: Path) -> float:
    spec = work / "bench.yaml"
    spec.write_text(SPEC.format(s=size, k=CLASSES, root=root, b=BATCH))
    out = work / "run"
    proc = subprocess.run([sys.executable, "-m", "cnnspec", "run", str(spec), "--quiet", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode:
        sys.exit(f"cnnspec run failed:\n{proc.stderr[-2000:]}")
    return float(json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["seconds"])


def handwritten_epoch(root: Path, size: int) -> float:
    """The same model, optimizer and transforms, written the usual way with torchvision."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    torch.manual_seed(0)
    q = size // 4
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * q * q, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(ImageFolder(str(root / "train"), transforms(size)), batch_size=BATCH, shuffle=True,
                        num_workers=2, drop_last=True)
    t0 = time.perf_counter()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--folder", help="generate (or reuse) the pictures here instead of a temporary folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.setdefault("CNNSPEC_CACHE_DIR", str(work / "cache"))
        root = Path(args.folder) if args.folder else work / "images"
        if not (root / "train").is_dir():
            t0 = time.perf_counter()
            make_folder(root, args.images)
            print(f"generated {args.images:,} JPEGs of 256 x 256 in {time.perf_counter() - t0:.1f} s")
        ours = cnnspec_rates(root, args.size)
        theirs = torchvision_rate(root, args.size)
        print(f"cache build (decode once, {os.cpu_count()} cores): {ours['build_s']:.1f} s; reopen: "
              f"{ours['reopen_s']:.2f} s")
        print(f"delivered at {args.size}x{args.size}: cnnspec cached {ours['rate']:,.0f} images/s, ImageFolder + "
              f"DataLoader(num_workers=2) {theirs:,.0f} images/s: {ours['rate'] / theirs:.1f}x")
        ours_epoch, theirs_epoch = cnnspec_epoch(root, args.size, work), handwritten_epoch(root, args.size)
        print(f"epoch of a small CNN at {args.size}x{args.size}: cnnspec {ours_epoch:.2f} s, hand-written "
              f"torchvision {theirs_epoch:.2f} s: {ours_epoch / theirs_epoch:.2f}x")


if __name__ == "__main__":
    main()
