"""Training throughput of the reference MNIST spec in 1 process vs N processes under torchrun.

Run: python bench/ddp_throughput.py [--epochs 1] [--procs 2] [--data DIR]
Each side is `cnnspec run specs/mnist_cnn.yaml` as a user runs it; samples/s and epoch seconds
come from the run's metrics.jsonl. With N processes each gets cores/N torch threads (so the
machine is never oversubscribed) and batch 100 per process, i.e. N x 100 per optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"


def run(procs: int, epochs: int, data: Path, out: Path) -> dict:
    """One cnnspec run; returns the last epoch's metrics row."""
    cores = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // procs)))
    args = ["-m", "cnnspec", "run", "specs/mnist_cnn.yaml", "--quiet", "--device", "cpu", "--output", str(out),
            "--set", f"train.epochs={epochs}", "--set", f"data.root={data}", "--set", "data.download=false"]
    launcher = [sys.executable] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    res = subprocess.run(launcher + args, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{res.stderr[-2000:]}")
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args.epochs, args.data, Path(tmp) / "one")
        many = run(args.procs, args.epochs, args.data, Path(tmp) / "many")
    print(f"cores: {os.cpu_count()}")
    for name, r in (("1 process", one), (f"{args.procs} processes", many)):
        print(f"{name:12s} {r['samples_per_second']:8,.0f} samples/s  epoch {r['seconds']:6.1f}s  "
              f"test acc {r['test_accuracy']:.4f}")
    print(f"speed-up: {many['samples_per_second'] / one['samples_per_second']:.2f}x")


if __name__ == "__main__":
    main()
