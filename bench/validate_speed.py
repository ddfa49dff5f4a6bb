"""Wall time of `cnnspec validate` on the reference spec against `python -c "import torch"`.

Run: python bench/validate_speed.py [--runs N]. Prints the best and median of N runs of each
(fresh processes, same interpreter) and the ratio the core issue asks to keep at or below 0.15.

Both commands run as on a user's machine, with Python's bytecode cache: one unmeasured run
first, and PYTHONDONTWRITEBYTECODE dropped from their environment. Where it is set (this
project's sandbox sets it), cnnspec's ~30 modules, installed from source, were compiled on every
start (about 130 ms), while torch's come precompiled from its wheel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "mnist_cnn.yaml"


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=ENV)  # writes the bytecode cache
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=ENV)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--spec", default=str(SPEC), help="the spec to validate (default: the reference spec)")
    args = ap.parse_args()
    py = sys.executable
    validate = wall([py, "-m", "cnnspec", "validate", args.spec], args.runs)
    torch = wall([py, "-c", "import torch"], args.runs)
    baseline = wall([py, "-c", "pass"], args.runs)
    for name, t in (("cnnspec validate", validate), ("import torch", torch), ("python -c pass", baseline)):
        print(f"{name:18s} best {min(t):.3f}s  median {statistics.median(t):.3f}s")
    print(f"ratio (median validate / median import torch): "
          f"{statistics.median(validate) / statistics.median(torch):.3f}  (target <= 0.15)")


if __name__ == "__main__":
    main()
