"""Per-trial overhead of `cnnspec sweep`: a trial's wall time minus its training and evaluation time.

Runs a 20-trial, 1-epoch sweep of specs/quickstart_sweep.yaml with -j 2, warm (trials forked from a
server that imported torch and cnnspec once; the default) and cold (CNNSPEC_SWEEP_COLD=1: a fresh
`python -m cnnspec run` per trial), alternating which goes first over --pairs pairs, and prints the
median overhead per trial of each, and whether both found the same metrics for the same trials.

    python bench/sweep_overhead.py --pairs 1 --trials 20
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(folder: Path, trials: int, cold: bool) -> tuple[float, list[float], dict[str, str]]:
    """Wall time, per-trial overheads (s) and each trial's metric, of one sweep."""
    env = dict(os.environ, CNNSPEC_SWEEP_COLD="1" if cold else "0")
    cmd = [sys.executable, "-m", "cnnspec", "sweep", str(ROOT / "specs" / "quickstart_sweep.yaml"), "-j", "2",
           "--output", str(folder), "--quiet", "--set", f"sweep.trials={trials}", "--set", "train.epochs=1",
           "--set", "sweep.space={train.optimizer.lr: {log_uniform: [3.0e-4, 1.0e-2]}, "
           "layers.0.out_channels: [8, 16, 32]}"]  # every trial valid: each one trains
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t
    overheads, metric = [], {}
    with open(folder / "results.csv") as f:
        for row in csv.DictReader(f):
            if row["status"] != "complete":
                continue
            rows = [json.loads(ln) for ln in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
            work = sum(r["seconds"] + r["eval_seconds"] for r in rows)
            overheads.append(float(row["seconds"]) - work)
            metric[f"{row['train.optimizer.lr']} {row['layers.0.out_channels']}"] = row["val_accuracy"]
    return wall, overheads, metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, list[float]] = {"warm": [], "cold": []}
    metrics: dict[str, dict[str, str]] = {}
    for pair in range(args.pairs):
        order = ["warm", "cold"] if pair % 2 == 0 else ["cold", "warm"]
        for kind in order:
            wall, over, metric = sweep(tmp / f"{kind}{pair}", args.trials, kind == "cold")
            results[kind] += over
            metrics[kind] = metric
            print(f"pair {pair + 1} {kind}: sweep {wall:.1f} s, {len(over)} trials, overhead per trial "
                  f"median {statistics.median(over):.2f} s (min {min(over):.2f}, max {max(over):.2f})")
    for kind, over in results.items():
        print(f"{kind}: median overhead per trial {statistics.median(over):.2f} s over {len(over)} trials")
    both = set(metrics["warm"]) & set(metrics["cold"])  # the same values drawn (-j 2 may order them otherwise)
    same = all(metrics["warm"][k] == metrics["cold"][k] for k in both)
    print(f"trials with the same values, warm and cold: {len(both)}; the same metric for each: {same}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
