"""How long `cnnspec validate` takes to check a weights file: resnet18 (44.7 MB) against specs/resnet18.yaml.

Writes torchvision's randomly initialised resnet18 state dict (as .pth and .safetensors) into a temporary
folder, then times the whole `cnnspec validate` command (a fresh process, as a user runs it) for the file
that fits, a wrong shape, a missing tensor, extra tensors (a warning: exit 0), a truncated file and a pickle
that is not a state dict. Prints per case the exit status, the median of --runs runs and the start of the
first located error or warning.

    python bench/weights_check.py --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        _bench(tmp, args.runs)
    finally:
        shutil.rmtree(tmp)  # the weights files, about 45 MB each


def _bench(tmp: Path, runs: int) -> None:
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp / "fits.pth")
    bad = dict(state)
    bad["layer3.0.conv2.weight"] = torch.zeros(256, 256, 3, 1)
    torch.save(bad, tmp / "shape.pth")
    torch.save({k: v for k, v in state.items() if k != "layer3.0.bn2.running_var"}, tmp / "missing.pth")
    torch.save({**state, "aux.weight": torch.zeros(10, 512), "aux.bias": torch.zeros(10)}, tmp / "extra.pth")
    (tmp / "truncated.pth").write_bytes((tmp / "fits.pth").read_bytes()[:-4096])
    torch.save({"epoch": 3, "note": "no tensors"}, tmp / "not-a-state-dict.pth")
    try:
        from safetensors.torch import save_file

        save_file(state, str(tmp / "names.safetensors"))  # by name: mapping torchvision refuses it (no order)
    except ImportError:
        pass
    spec = (ROOT / "specs" / "resnet18.yaml").read_text()
    print(f"{'case':<22} {'exit':>4} {'median s':>9}  first problem")
    for weights in sorted(tmp.glob("*.*")):
        path = tmp / f"{weights.stem}-{weights.suffix[1:]}.yaml"
        path.write_text(spec + f"\nweights: {{file: {weights}, mapping: torchvision}}\n")
        times, res = [], None
        for _ in range(runs):
            t = time.perf_counter()
            cmd = [sys.executable, "-m", "cnnspec", "validate", str(path)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
        assert res is not None
        print(f"{weights.name:<22} {res.returncode:>4} {statistics.median(times):>9.3f}  {_first_problem(res.stdout)}")


def _first_problem(out: str) -> str:
    """``error: ...`` or ``warning: ...`` of validate's first located problem, shortened; "-" if none."""
    for line in out.splitlines():
        for kind in ("error: ", "warning: "):
            if f": {kind}" in line:
                text = kind + line.split(f": {kind}", 1)[1]
                return text if len(text) <= 90 else text[:87] + "..."
    return "-"


if __name__ == "__main__":
    main()
