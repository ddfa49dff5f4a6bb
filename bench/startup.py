"""The quick start's whole command beside `python -c "import torch"`, in interleaved pairs.

Each round runs `cnnspec run specs/quickstart.yaml --quiet` (a fresh process, as a user types it) and
`python -c "import torch"`, alternating which goes first (the host drifts within minutes). For the run it
prints the whole wall time and what is not training (wall minus the epochs' training and evaluation
seconds from metrics.jsonl: imports, checks, data, model, the run folder, the curves).

    python bench/startup.py --rounds 5
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    runs, torches, rest = [], [], []
    for i in range(args.rounds):
        out = tmp / f"r{i}"
        run = [sys.executable, "-m", "cnnspec", "run", str(ROOT / "specs" / "quickstart.yaml"), "--quiet",
               "--output", str(out)]
        torch = [sys.executable, "-c", "import torch"]
        first, second = (run, torch) if i % 2 == 0 else (torch, run)
        a, b = timed(first), timed(second)
        wall, imp = (a, b) if first is run else (b, a)
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        training = sum(r["seconds"] + r["eval_seconds"] for r in rows)
        runs.append(wall)
        torches.append(imp)
        rest.append(wall - training)
        print(f"round {i + 1}: quick start {wall:.2f} s (not training {wall - training:.2f} s), "
              f"import torch {imp:.2f} s")
    print(f"median: quick start {statistics.median(runs):.2f} s, not training {statistics.median(rest):.2f} s, "
          f"import torch {statistics.median(torches):.2f} s, ratio not-training/import "
          f"{statistics.median(r / t for r, t in zip(rest, torches)):.2f}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
