"""A picture folder larger than memory as float32: the cache's first build, then the second run's start and memory.

On a folder of 256 x 256 JPEGs (generated like bench/image_pipeline.py's; the issue's size is
20,000, whose float32 set at 256 x 256 is 15.7 GB), with a fresh image cache:

1. the first `cnnspec run` (a few batches): its wall time and the CPU seconds of it and its worker
   processes, whose ratio says how many cores the build kept busy;
2. the second run, from the cache: the time from starting the process to the end of its first
   training step (bench/first_step_probe.py, loaded with -p), beside `python -c "import torch"` run
   just before it (the target: at most import torch + 2 s), and the process's anonymous memory
   (`RssAnon` of /proc/PID/status, sampled every 20 ms while it runs; the cache's pages are
   file-backed, the page cache's business; the target: under 1.5 GB).

    python bench/image_scale.py --folder /tmp/img20k --images 20000 [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from image_pipeline import make_folder  # noqa: E402

PROBE = ROOT / "bench" / "first_step_probe.py"
BATCHES = 20  # training steps per run: enough to see the read-ahead at work

SPEC = """\
name: bench-scale
input: [3, 256, 256]
layers:
  - {{type: conv2d, out_channels: 16, kernel_size: 4, stride: 4}}
  - relu
  - {{type: maxpool2d, kernel_size: 4}}
  - flatten
  - {{type: linear, out_features: 10}}
data:
  dataset: {{type: image_folder, size: [256, 256]}}
  root: {root}
  batch_size: 128
  normalize: {{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
  augment: [horizontal_flip]
train: {{epochs: 1, seed: 0, device: cpu, optimizer: {{type: sgd, lr: 0.01}}}}
"""


def rss_anon(pid: int) -> int:
    """The process's anonymous resident memory in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(spec: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    """One `cnnspec run` as a user types it: wall and CPU seconds (its workers included), peak RssAnon."""
    cmd = [sys.executable, "-m", "cnnspec", "run", str(spec), "--quiet", "--no-report", "--output", str(out),
           "--limit-batches", str(BATCHES), "-p", str(PROBE)]
    start, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"cnnspec run failed:\n{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return {"wall": wall, "start": start, "peak": peak}


def cpu_of_children() -> float:
    r = os.times()
    return r.children_user + r.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--folder", help="generate (or reuse) the pictures here instead of a temporary folder")
    ap.add_argument("--rounds", type=int, default=3, help="second runs (each beside an import torch)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = Path(args.folder) if args.folder else work / "images"
        if not (root / "train").is_dir():
            make_folder(root, args.images)
        spec = work / "scale.yaml"
        spec.write_text(SPEC.format(root=root))
        stamp = work / "first-step"
        env = dict(os.environ, CNNSPEC_CACHE_DIR=str(work / "cache"), CNNSPEC_FIRST_STEP_FILE=str(stamp))
        n = sum(1 for _ in root.rglob("*.jpg"))
        print(f"{n:,} pictures; float32 at 3 x 256 x 256: {n * 3 * 256 * 256 * 4 / 1e9:.1f} GB")

        cpu0 = cpu_of_children()
        first = run(spec, work / "r0", env)
        cpu = cpu_of_children() - cpu0
        print(f"first run (builds the cache): {first['wall']:.1f} s wall, {cpu:.1f} s CPU of it and its workers "
              f"({cpu / first['wall']:.2f} cores busy on average, {os.cpu_count()} cores), "
              f"peak RssAnon {first['peak'] / 2**20:,.0f} MiB")

        lags, peaks = [], []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            imp = time.perf_counter() - t0
            second = run(spec, work / f"r{i + 1}", env)
            step = float(stamp.read_text()) - second["start"]
            lags.append(step - imp)
            peaks.append(second["peak"])
            print(f"second run {i + 1}: first step done {step:.2f} s after the start, import torch {imp:.2f} s: "
                  f"{step - imp:.2f} s beyond it (target <= 2 s); whole run {second['wall']:.1f} s; "
                  f"peak RssAnon {second['peak'] / 2**20:,.0f} MiB (target < 1,536 MiB)")
        print(f"median: first step {statistics.median(lags):.2f} s beyond import torch; "
              f"peak RssAnon {max(peaks) / 2**20:,.0f} MiB at most")


if __name__ == "__main__":
    main()
