"""Epoch time and test accuracy of `cnnspec run specs/mnist_cnn.yaml` against a hand-written torch loop.

The hand-written loop copies the original PyTorch MNIST tutorial that the reference spec mirrors
(batch 100, seed 777, Adam 1e-3, xavier_uniform on the linear weight) and runs in this process;
cnnspec runs as a subprocess exactly as a user would, and its per-epoch `seconds` and last
`test_accuracy` are read from the run's metrics.jsonl. Both evaluate on ToTensor-scaled pixels.

Run: python bench/train_vs_handwritten.py [--epochs N] [--pairs P] [--data DIR] [--threads T]
     [--skip-cnnspec] [--skip-handwritten] [--json FILE]
Prints both sides' epoch times and accuracies, the epoch-time ratio (target <= 0.50), the
accuracy difference, and the machine facts (CPU model, cores, torch version, torch threads).
With --pairs P it runs P back-to-back pairs, alternating which side goes first, and reports
each pair's ratio and their median (the host is shared: only back-to-back runs compare).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@dataclass
class Side:
    """One side's measurements: per-epoch training seconds and final test accuracy."""

    name: str
    epoch_seconds: list[float]
    test_accuracy: float

    @property
    def mean_seconds(self) -> float:
        """Mean training seconds per epoch."""
        return statistics.mean(self.epoch_seconds)


def run_handwritten(data: Path, epochs: int, device: str = "cpu") -> Side:
    """Train and test the tutorial CNN in-process, timing each epoch's training pass; as the
    tutorial does, each batch comes from a DataLoader and moves to ``device`` in the loop."""
    to_tensor = transforms.ToTensor()
    train = datasets.MNIST(root=str(data), train=True, transform=to_tensor, download=False)
    test = datasets.MNIST(root=str(data), train=False, transform=to_tensor, download=False)
    loader = DataLoader(train, batch_size=100, shuffle=True, drop_last=True)
    torch.manual_seed(777)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 10),
    )
    nn.init.xavier_uniform_(model[-1].weight)
    dev = torch.device(device)
    model = model.to(dev)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    seconds = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=1000):
            correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
    return Side("handwritten", seconds, correct / len(test))


def _read_metrics(path: Path) -> Side:
    """Parse a cnnspec metrics.jsonl (one object per epoch) into a Side."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["epoch"])
    return Side("cnnspec", [float(r["seconds"]) for r in rows], float(rows[-1]["test_accuracy"]))


def run_cnnspec(data: Path, epochs: int, threads: int | None, device: str = "cpu") -> Side:
    """Run `cnnspec run` on the reference spec as a subprocess and read its metrics."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "cnnspec", "run", "specs/mnist_cnn.yaml",
               "--set", f"train.epochs={epochs}", "--set", f"data.root={data}",
               "--set", "data.download=false", "--output", out, "--quiet", "--device", device]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"cnnspec run failed (exit {proc.returncode}); stderr tail:", file=sys.stderr)
            print("\n".join(proc.stderr.splitlines()[-20:]), file=sys.stderr)
            sys.exit(1)
        return _read_metrics(Path(out) / "metrics.jsonl")


def machine() -> dict[str, object]:
    """CPU model, core count, torch version and torch's intra-op thread count."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def report(sides: list[Side], facts: dict[str, object]) -> None:
    """Print the per-side table, the ratio and accuracy difference, and the machine facts."""
    print(f"{'side':12s} {'mean epoch s':>12s} {'test acc':>9s}  per-epoch s")
    for s in sides:
        per = ", ".join(f"{t:.2f}" for t in s.epoch_seconds)
        print(f"{s.name:12s} {s.mean_seconds:12.2f} {s.test_accuracy:9.4f}  [{per}]")
    by_name = {s.name: s for s in sides}
    if len(by_name) == 2:
        spec, hand = by_name["cnnspec"], by_name["handwritten"]
        print(f"ratio cnnspec/handwritten epoch time: {spec.mean_seconds / hand.mean_seconds:.2f}"
              f" (target <= 0.50)")
        print(f"accuracy difference: {spec.test_accuracy - hand.test_accuracy:+.4f}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))


def main() -> None:
    """Parse arguments, run the selected sides, print and optionally save the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip-cnnspec", action="store_true")
    ap.add_argument("--skip-handwritten", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--pairs", type=int, default=0, help="back-to-back pairs, reporting the median ratio")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (both sides)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data.resolve()
    if args.pairs:
        return pairs(data, args)
    sides = []
    if not args.skip_cnnspec:
        sides.append(run_cnnspec(data, args.epochs, args.threads, args.device))
    if not args.skip_handwritten:
        sides.append(run_handwritten(data, args.epochs, args.device))
    facts = machine()
    report(sides, facts)
    if args.json:
        payload = {"epochs": args.epochs, "machine": facts,
                   "sides": [{**asdict(s), "mean_seconds": s.mean_seconds} for s in sides]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


def pairs(data: Path, args: argparse.Namespace) -> None:
    """``args.pairs`` back-to-back pairs (the side that goes first alternates); the median ratio."""
    rows = []
    for i in range(args.pairs):
        order = [run_cnnspec, run_handwritten] if i % 2 == 0 else [run_handwritten, run_cnnspec]
        got = {}
        for fn in order:
            side = (run_cnnspec(data, args.epochs, args.threads, args.device) if fn is run_cnnspec
                    else run_handwritten(data, args.epochs, args.device))
            got[side.name] = side
        ratio = got["cnnspec"].mean_seconds / got["handwritten"].mean_seconds
        rows.append({"cnnspec": asdict(got["cnnspec"]), "handwritten": asdict(got["handwritten"]), "ratio": ratio})
        print(f"pair {i + 1}: cnnspec {got['cnnspec'].mean_seconds:.2f} s (acc {got['cnnspec'].test_accuracy:.4f})"
              f"  handwritten {got['handwritten'].mean_seconds:.2f} s (acc {got['handwritten'].test_accuracy:.4f})"
              f"  ratio {ratio:.2f}", flush=True)
    median = statistics.median(r["ratio"] for r in rows)
    facts = machine()
    print(f"median ratio cnnspec/handwritten epoch time over {args.pairs} pairs: {median:.2f} (target <= 0.50)")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "machine": facts, "pairs": rows,
                                         "median_ratio": median}, indent=2) + "\n")


if __name__ == "__main__":
    main()
