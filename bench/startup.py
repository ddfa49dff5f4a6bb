"""The quick start's whole command, and its time to the first training step, beside `python -c "import torch"`.

Each round runs `cnnspec run specs/quickstart.yaml --quiet` (a fresh process, as a user types it) and
`python -c "import torch"`, alternating which goes first (the host drifts within minutes). For the run it
prints the whole wall time, the time from starting the process to the end of the first training step
(`bench/first_step_probe.py`, loaded with -p, records when the second step begins; the target is at most
1.5x `import torch`), and what is not training (wall minus the epochs' training and evaluation seconds from
metrics.jsonl: imports, checks, data, model, the run folder, the curves, the report).

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
PROBE = ROOT / "bench" / "first_step_probe.py"


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds of ``cmd``, and the wall-clock time it started at."""
    start, t = time.time(), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t, start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    runs, torches, rest, firsts = [], [], [], []
    for i in range(args.rounds):
        out, stamp = tmp / f"r{i}", tmp / f"first-step-{i}"
        run = [sys.executable, "-m", "cnnspec", "run", str(ROOT / "specs" / "quickstart.yaml"), "--quiet",
               "--output", str(out), "-p", str(PROBE)]
        env = dict(os.environ, CNNSPEC_FIRST_STEP_FILE=str(stamp))
        torch = [sys.executable, "-c", "import torch"]
        if i % 2 == 0:
            (wall, started), (imp, _) = timed(run, env), timed(torch)
        else:
            (imp, _), (wall, started) = timed(torch), timed(run, env)
        first = float(stamp.read_text()) - started
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        training = sum(r["seconds"] + r["eval_seconds"] for r in rows)
        runs.append(wall)
        torches.append(imp)
        rest.append(wall - training)
        firsts.append(first)
        print(f"round {i + 1}: quick start {wall:.2f} s (first step done at {first:.2f} s, not training "
              f"{wall - training:.2f} s), import torch {imp:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"median: quick start {statistics.median(runs):.2f} s, first step done at {statistics.median(firsts):.2f} s, "
          f"not training {statistics.median(rest):.2f} s, import torch {statistics.median(torches):.2f} s; ratios "
          f"(median over rounds) first-step/import {statistics.median(f / t for f, t in zip(firsts, torches)):.2f}, "
          f"not-training/import {statistics.median(r / t for r, t in zip(rest, torches)):.2f}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
