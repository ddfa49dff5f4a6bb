"""What augmentation costs: epoch time of a spec with and without `random_crop` + `horizontal_flip`.

Both sides run `cnnspec run` as subprocesses in this one command, alternating (plain, augmented,
plain, ...) so that a noisy machine hits both alike; each side's epoch time is the `seconds` of
its metrics.jsonl rows (training only, evaluation excluded). Target: augmented at most 1.10x.

Run: python bench/augment_cost.py [--spec specs/mnist_cnn.yaml] [--epochs 1] [--repeats 3]
     [--data ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
AUGMENT = "data.augment=[{type: random_crop, padding: 2}, horizontal_flip]"


def epoch_seconds(spec: str, data: Path, epochs: int, augment: bool) -> list[float]:
    """Training seconds of each epoch of one `cnnspec run`."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "cnnspec", "run", spec, "--quiet", "--output", out, "--device", "cpu",
               "--set", f"train.epochs={epochs}", "--set", f"data.root={data}", "--set", "data.download=false"]
        if augment:
            cmd += ["--set", AUGMENT]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            sys.exit(f"cnnspec run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        rows = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        return [float(r["seconds"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/mnist_cnn.yaml")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    sides: dict[str, list[float]] = {"plain": [], "crop+flip": []}
    for _ in range(args.repeats):
        sides["plain"] += epoch_seconds(args.spec, args.data.resolve(), args.epochs, augment=False)
        sides["crop+flip"] += epoch_seconds(args.spec, args.data.resolve(), args.epochs, augment=True)
    for name, secs in sides.items():
        print(f"{name:10s} median epoch {statistics.median(secs):6.2f} s  [{', '.join(f'{s:.2f}' for s in secs)}]")
    ratio = statistics.median(sides["crop+flip"]) / statistics.median(sides["plain"])
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    print(f"ratio augmented/plain: {ratio:.3f} (target <= 1.10); {args.spec}, {cpu}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
