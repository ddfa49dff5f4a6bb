"""The device path measured in one call: both example specs for 15 epochs, and the hand-written loop.

Made to use a lent GPU once, briefly; it runs end to end on any device (``--device cpu`` with
``--epochs 1`` checks it on a laptop). Each part is a fresh process, as a user would run it:

1. ``cnnspec run specs/mnist_cnn.yaml`` for ``--epochs`` epochs: training seconds (the sum of
   the epochs' ``seconds``, start-up and evaluation not counted) and test accuracy;
2. on CUDA: the same with ``train.capture=off``, against the first (``auto``, which captures the
   step as a CUDA graph there): median epoch time of each, and whether the captured run's metrics
   match the eager one's (test accuracy within ``CAPTURE_TOLERANCE``; exit status 1 if not, or if
   the step was not captured);
   then with ``train.precision=bf16`` (the autocast path);
3. the hand-written tutorial loop (bench/train_vs_handwritten.py) for ``--handwritten-epochs``
   on the same device: its mean epoch time over cnnspec's is the speed-up;
4. ``cnnspec run specs/keras_mnist_cnn.yaml`` for ``--epochs`` epochs;
5. with more than one GPU, the reference spec under torchrun (DDP) for 2 epochs.

Then one table, each line beside the target the performance issue sets for a GPU (reference
under 15 s at accuracy >= 0.985 and >= 10x the hand-written loop per epoch; Keras-style under
30 s). Usage: bash bench/cuda_check.sh [--device cuda] [--epochs 15] [--data ROOT] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
CAPTURE_TOLERANCE = 0.005  # test accuracy, captured against eager: the graph's rates are float32, eager's float64


def run_spec(spec: str, device: str, epochs: int, data: Path, out: Path, *extra: str,
             launcher: tuple[str, ...] = ()) -> dict[str, Any]:
    """`cnnspec run` in a fresh process; its metrics and summary."""
    cmd = [*(launcher or (sys.executable,)), "-m", "cnnspec", "run", spec, "--quiet", "--device", device,
           "--set", f"train.epochs={epochs}", "--set", f"data.root={data}", "--set", "data.download=false",
           "--output", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    seconds = [float(r["seconds"]) for r in rows]
    return {"spec": spec, "extra": list(extra), "epochs": len(rows), "train_seconds": sum(seconds),
            "epoch_seconds": seconds, "test_accuracy": rows[-1]["test_accuracy"],
            "train_loss": rows[-1]["train_loss"], "device_name": summary.get("device_name"),
            "fast_paths": summary.get("fast_paths"),
            "warnings": [ln for ln in proc.stderr.splitlines() if "warning" in ln][:5]}


def capture_check(captured: dict[str, Any], eager: dict[str, Any]) -> dict[str, Any]:
    """The CUDA-graph run (train.capture auto) against the eager one: epoch times, metrics."""
    on, off = statistics.median(captured["epoch_seconds"]), statistics.median(eager["epoch_seconds"])
    diff = abs(captured["test_accuracy"] - eager["test_accuracy"])
    return {"captured": bool((captured["fast_paths"] or {}).get("cuda_graph")), "median_epoch_seconds": on,
            "eager_median_epoch_seconds": off, "speedup": off / on, "test_accuracy_difference": diff,
            "match": diff <= CAPTURE_TOLERANCE, "warnings": captured["warnings"]}


def run_handwritten(device: str, epochs: int, data: Path, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "bench" / "train_vs_handwritten.py"), "--skip-cnnspec", "--device", device,
           "--epochs", str(epochs), "--data", str(data), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the hand-written loop failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    side = json.loads(out.read_text())["sides"][0]
    return {"epoch_seconds": side["epoch_seconds"], "mean_seconds": side["mean_seconds"],
            "test_accuracy": side["test_accuracy"]}


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of each spec (15, as the targets say)")
    ap.add_argument("--handwritten-epochs", type=int, default=2, help="epochs of the hand-written loop")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="holds MNIST/raw/*-ubyte")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    data = args.data.resolve()
    cuda = args.device.startswith("cuda")
    res: dict[str, Any] = {"device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        res["reference"] = run_spec("specs/mnist_cnn.yaml", args.device, args.epochs, data, t / "ref")
        print(f"device: {res['reference']['device_name']}", flush=True)
        if cuda:
            res["reference_eager"] = run_spec("specs/mnist_cnn.yaml", args.device, args.epochs, data, t / "eager",
                                              "--set", "train.capture=off")
            res["capture"] = capture_check(res["reference"], res["reference_eager"])
            res["reference_bf16"] = run_spec("specs/mnist_cnn.yaml", args.device, args.epochs, data, t / "bf16",
                                             "--set", "train.precision=bf16")
        res["handwritten"] = run_handwritten(args.device, args.handwritten_epochs, data, t / "hand.json")
        res["keras"] = run_spec("specs/keras_mnist_cnn.yaml", args.device, args.epochs, data, t / "keras")
        gpus = gpu_count() if cuda else 0
        if gpus > 1:
            res["ddp"] = run_spec("specs/mnist_cnn.yaml", args.device, 2, data, t / "ddp", launcher=(
                sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"))
    ref, hand, keras = res["reference"], res["handwritten"], res["keras"]
    speedup = hand["mean_seconds"] / statistics.mean(ref["epoch_seconds"])
    res["speedup_vs_handwritten"] = speedup
    on = "" if cuda else "  (targets are for a GPU)"
    lines = [
        ("reference spec", f"{ref['epochs']} epochs in {ref['train_seconds']:.1f} s, test accuracy "
                           f"{ref['test_accuracy']:.4f}", "< 15 s at >= 0.985"),
        *([("CUDA graph step", _capture_line(res["capture"], res["reference_eager"]),
            f"metrics within {CAPTURE_TOLERANCE}")] if cuda else []),
        *([("reference, bf16", f"{res['reference_bf16']['train_seconds']:.1f} s, test accuracy "
                                f"{res['reference_bf16']['test_accuracy']:.4f}", "")] if cuda else []),
        ("hand-written loop", f"{hand['mean_seconds']:.2f} s/epoch, test accuracy {hand['test_accuracy']:.4f} "
                              f"after {len(hand['epoch_seconds'])}", ""),
        ("speed-up per epoch", f"{speedup:.1f}x the hand-written loop", ">= 10x"),
        ("Keras-style spec", f"{keras['epochs']} epochs in {keras['train_seconds']:.1f} s, test accuracy "
                             f"{keras['test_accuracy']:.4f}", "< 30 s"),
        *([("DDP reference", f"{gpus} processes, 2 epochs in {res['ddp']['train_seconds']:.1f} s", "")]
          if "ddp" in res else []),
    ]
    for name, got, target in lines:
        print(f"{name:20s} {got:60s} {('target ' + target) if target else ''}")
    print(f"fast paths: {ref['fast_paths']}{on}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    for line in res.get("capture", {}).get("warnings", []):
        print(f"captured run: {line}")
    cap = res.get("capture", {"captured": True, "match": True})
    return 0 if cap["captured"] and cap["match"] else 1  # the reference spec has nothing that blocks capture


def _capture_line(cap: dict[str, Any], eager: dict[str, Any]) -> str:
    if not cap["captured"]:
        return "NOT CAPTURED (auto found a blocker, or the capture failed: warnings below, if any)"
    verdict = "match" if cap["match"] else "MISMATCH"
    return (f"{cap['median_epoch_seconds']:.2f} s/epoch against {cap['eager_median_epoch_seconds']:.2f} eager "
            f"({cap['speedup']:.2f}x); test accuracy {eager['test_accuracy']:.4f} eager, "
            f"difference {cap['test_accuracy_difference']:.4f}: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
