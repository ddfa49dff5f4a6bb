"""The prepared GPU script (bench/cuda_check.sh) runs end to end on CPU, on a tiny MNIST-format set."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_idx(raw: Path, train: int, test: int) -> None:
    """MNIST's four IDX files (torchvision's layout) holding random digits."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_cuda_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    write_idx(tmp_path / "mnist" / "MNIST" / "raw", train=400, test=100)
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "cuda_check.sh"), "--device", "cpu", "--epochs", "1",
                           "--handwritten-epochs", "1", "--data", str(tmp_path / "mnist"), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    for part in ("reference", "keras"):
        assert res[part]["epochs"] == 1 and res[part]["train_seconds"] > 0
        assert 0.0 <= res[part]["test_accuracy"] <= 1.0
    assert res["handwritten"]["mean_seconds"] > 0 and res["speedup_vs_handwritten"] > 0
    assert "reference_bf16" not in res  # the autocast run is for CUDA
    assert "speed-up per epoch" in proc.stdout and "target < 15 s" in proc.stdout
