"""One epoch of fine-tuning a frozen-backbone ResNet-18 on 64x64 pictures: cnnspec against the torchvision job.

The data is generated in a temporary folder (fixed seed): 5 classes x 200 training and 5 x 50 test
PNG pictures at 64x64 (per-class coloured stripes plus noise), laid out as ROOT/train/CLASS/*.png
and ROOT/test/CLASS/*.png, with torchvision's randomly initialised ``resnet18().state_dict()``
saved next to it as resnet18.pth (no download; loading it is the same as loading the ImageNet file).

cnnspec side: a fresh process running, as a user would,
  python -m cnnspec run specs/finetune_resnet18.yaml --quiet --output DIR --set input=[3, 64, 64]
    --set data.dataset={type: image_folder, size: [64, 64]} --set data.root=TMP
    --set weights.file=TMP/resnet18.pth --set layers.13.out_features=5 --set train.freeze=["0:13"]
    --set train.epochs=1 --set data.val_split=0 --set train.callbacks=[] --set train.lr_multipliers={}
    --set data.augment=[] --set data.batch_size=32 --set train.scheduler=null --set train.device=cpu
  Its epoch time is metrics.jsonl's ``seconds`` (the training pass over the in-memory tensors) plus
  ``eval_seconds`` (the test-split evaluation, one batch of eval_batch_size 1000). The images are
  decoded, resized and stacked into tensors once, before the epoch starts: that time is in the
  command's wall time only, not in the epoch.
Hand-written side: a fresh process running this file with --handwritten-worker: torchvision's
  resnet18(), the same .pth, fc = Linear(512, 5), requires_grad_(False) on everything but fc and
  the frozen BatchNorms kept in eval mode, ImageFolder + ToTensor + Normalize(ImageNet mean/std),
  DataLoader(batch_size=32, shuffle=True, num_workers=2, drop_last=True: cnnspec also trains on
  whole batches only), SGD lr 0.001 momentum 0.9 weight decay 1e-4, cross entropy. Its epoch time
  is the training pass plus the test evaluation (DataLoader batch 32, 2 workers) timed in-process,
  so it includes the DataLoader workers' start-up and every picture's PNG decode.
Wall time, both sides: the parent's clock around the subprocess (interpreter start, imports, data,
  model, epoch, writing outputs: cnnspec's run folder, last.pt and curves.png; nothing on the other side).
CPU time, both sides: the subprocess's user + system CPU seconds (getrusage of the children, the
  DataLoader workers included): a second view on a shared host, though spinning OpenMP threads make
  it grow under contention too. Only back-to-back pairs compare; look at the spread, not just the median.

Run: .venv/bin/python bench/finetune_vs_torchvision.py [--pairs N] [--json FILE] [--keep DIR]
Runs N (default 3) interleaved pairs, the side that goes first alternating, prints each pair's
times and test accuracies and the median ratios cnnspec/hand-written for the epoch, the wall time
and the CPU time, the one-off cost of decoding every picture in this process, the CPU model and
torch's thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, SIZE = 5, 200, 50, 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_data(root: Path, seed: int = 0) -> None:
    """The picture folders (PNG, 64x64 RGB) and resnet18.pth under ``root``."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.models import resnet18

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = np.pi * c / CLASSES
            colour = np.array([(c * 53) % 256, (c * 97 + 80) % 256, (c * 151 + 160) % 256], np.float32)
            for i in range(per_class):
                phase = rng.uniform(0, 2 * np.pi)
                wave = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.4 + phase)
                img = wave[..., None] * colour + rng.normal(0, 40, (SIZE, SIZE, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    torch.manual_seed(seed)
    torch.save(resnet18().state_dict(), root / "resnet18.pth")


def decode_all(root: Path) -> float:
    """Seconds to open, decode and ToTensor every picture once in this process (the work cnnspec
    does before its epoch and the DataLoader does inside each epoch)."""
    from torchvision import datasets, transforms

    start = time.perf_counter()
    for split in ("train", "test"):
        ds = datasets.ImageFolder(str(root / split), transform=transforms.ToTensor())
        for i in range(len(ds)):
            ds[i]
    return time.perf_counter() - start


def handwritten_worker(root: Path, out: Path) -> None:
    """The job a torchvision user writes: one epoch of training plus a test evaluation, timed."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, models, transforms

    torch.manual_seed(0)
    model = models.resnet18()
    model.load_state_dict(torch.load(root / "resnet18.pth", map_location="cpu", weights_only=True))
    model.fc = nn.Linear(512, CLASSES)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    frozen_bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train = datasets.ImageFolder(str(root / "train"), transform=tf)
    test = datasets.ImageFolder(str(root / "test"), transform=tf)
    loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=2, drop_last=True)
    test_loader = DataLoader(test, batch_size=32, shuffle=False, num_workers=2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001,
                                momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()

    start = time.perf_counter()
    model.train()
    for m in frozen_bn:
        m.eval()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start
    t1 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    eval_seconds = time.perf_counter() - t1
    out.write_text(json.dumps({"train_seconds": train_seconds, "eval_seconds": eval_seconds,
                               "epoch_seconds": train_seconds + eval_seconds,
                               "test_accuracy": correct / len(test), "torch_threads": torch.get_num_threads()}))


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (and their waited-for children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_handwritten(root: Path) -> dict:
    """This file with --handwritten-worker in a fresh process: its timings and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "hand.json"
        cpu0, start = _children_cpu(), time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--handwritten-worker", str(root), str(res)],
                              cwd=ROOT, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
        if proc.returncode != 0:
            sys.exit(f"hand-written side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return {**json.loads(res.read_text()), "wall_seconds": wall, "cpu_seconds": cpu}


def cnnspec_overrides(root: Path) -> list[str]:
    """The --set overrides that turn specs/finetune_resnet18.yaml into this benchmark's job."""
    return ["input=[3, 64, 64]", "data.dataset={type: image_folder, size: [64, 64]}", f"data.root={root}",
            f"weights.file={root / 'resnet18.pth'}", "layers.13.out_features=5", 'train.freeze=["0:13"]',
            "train.epochs=1", "data.val_split=0", "train.callbacks=[]", "train.lr_multipliers={}",
            "data.augment=[]", "data.batch_size=32", "train.scheduler=null", "train.device=cpu"]


def run_cnnspec(root: Path, keep: Path | None = None) -> dict:
    """`cnnspec run specs/finetune_resnet18.yaml` in a fresh process: epoch times from metrics.jsonl."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cnnspec", "run", "specs/finetune_resnet18.yaml", "--quiet", "--output", str(out)]
        for o in cnnspec_overrides(root):
            cmd += ["--set", o]
        cpu0, start = _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
        if proc.returncode != 0:
            sys.exit(f"cnnspec side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        summary = json.loads((out / "summary.json").read_text())
        if keep is not None:
            shutil.copytree(out, keep, dirs_exist_ok=True)
        row = rows[-1]
        return {"train_seconds": row["seconds"], "eval_seconds": row["eval_seconds"],
                "epoch_seconds": row["seconds"] + row["eval_seconds"], "test_accuracy": row["test_accuracy"],
                "seconds_this_session": summary.get("seconds_this_session"),
                "fast_paths": summary.get("fast_paths"), "wall_seconds": wall, "cpu_seconds": cpu}


def cpu_model() -> str:
    """lscpu's "Model name" (or /proc/cpuinfo's "model name")."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="interleaved pairs (default 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--keep", type=Path, default=None, help="copy the last cnnspec run folder here")
    ap.add_argument("--handwritten-worker", nargs=2, type=Path, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.handwritten_worker:
        return handwritten_worker(*args.handwritten_worker)

    import torch

    with tempfile.TemporaryDirectory(prefix="finetune_bench_") as tmp:
        root = Path(tmp)
        make_data(root)
        decode = decode_all(root)
        rows = []
        head = (f"{'pair':>4s} {'side':12s} {'train s':>8s} {'eval s':>7s} {'epoch s':>8s} {'wall s':>7s} "
                f"{'pre/post s':>10s} {'cpu s':>6s} {'test acc':>8s}")
        print(head, flush=True)
        for i in range(args.pairs):
            order = ["cnnspec", "handwritten"] if i % 2 == 0 else ["handwritten", "cnnspec"]
            got = {}
            for side in order:
                got[side] = run_cnnspec(root, args.keep) if side == "cnnspec" else run_handwritten(root)
            for side in ("cnnspec", "handwritten"):
                g = got[side]
                print(f"{i + 1:4d} {side:12s} {g['train_seconds']:8.2f} {g['eval_seconds']:7.2f} "
                      f"{g['epoch_seconds']:8.2f} {g['wall_seconds']:7.2f} "
                      f"{g['wall_seconds'] - g['epoch_seconds']:10.2f} {g['cpu_seconds']:6.2f} "
                      f"{g['test_accuracy']:8.4f}", flush=True)
            ratio_epoch = got["cnnspec"]["epoch_seconds"] / got["handwritten"]["epoch_seconds"]
            ratio_wall = got["cnnspec"]["wall_seconds"] / got["handwritten"]["wall_seconds"]
            ratio_cpu = got["cnnspec"]["cpu_seconds"] / got["handwritten"]["cpu_seconds"]
            print(f"     ratio cnnspec/hand-written: epoch {ratio_epoch:.3f}, wall {ratio_wall:.3f}, "
                  f"cpu {ratio_cpu:.3f} (first: {order[0]})", flush=True)
            rows.append({**got, "ratio_epoch": ratio_epoch, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu,
                         "first": order[0]})
    med_epoch = statistics.median(r["ratio_epoch"] for r in rows)
    med_wall = statistics.median(r["ratio_wall"] for r in rows)
    med_cpu = statistics.median(r["ratio_cpu"] for r in rows)
    facts = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(),
             "handwritten_torch_threads": rows[0]["handwritten"]["torch_threads"]}
    print(f"median ratio cnnspec/hand-written over {args.pairs} pairs: epoch {med_epoch:.3f}, wall {med_wall:.3f}, "
          f"cpu {med_cpu:.3f}")
    print(f"decoding every picture once ({CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS)} PNGs, ToTensor, "
          f"one process): {decode:.2f} s; cnnspec pays it before its epoch, the DataLoader inside it")
    print("pre/post s = wall - epoch: interpreter, imports, data loading (cnnspec: the decode), model, outputs; "
          "cpu s = the whole command's user + system CPU seconds, DataLoader workers included")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "decode_seconds": decode, "pairs": rows,
                                         "median_ratio_epoch": med_epoch, "median_ratio_wall": med_wall,
                                         "median_ratio_cpu": med_cpu},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
