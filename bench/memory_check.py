"""The training-memory estimate of `cnnspec validate` against what one real training step allocates.

For each spec, this builds cnnspec's own Trainer on random data of the spec's input shape,
runs one warm-up step (so Adam's state exists, as in every later step), then records one more
step with torch.profiler's memory profiling (``profile_memory``, ``record_shapes``,
``with_stack``) and replays its allocation timeline (torch.profiler._memory_profiler, the data
behind ``export_memory_timeline``). Each allocation is labelled by the profiler as a parameter,
optimizer state, input, gradient, activation, temporary or autograd detail (pooling indices,
dropout masks). On CUDA, ``torch.cuda.max_memory_allocated`` is read as well.

Reported per spec, in bytes:
- ``measured_peak``: the most bytes alive at once during the step, every category;
- ``measured_activations``: that peak less parameters, gradients and optimizer state: what the
  forward pass keeps for backward plus the input batch and temporaries, at the peak;
- ``estimate_total`` / ``estimate_activations``: cost.spec_estimate's step total (the dataset's
  share left out: the step here trains on a few random batches) and its activations + input batch,
  which is what `validate` and `run` print.

Run: python bench/memory_check.py [specs...] [--batch-size N] [--device cpu|cuda] [--json FILE]
Exit status 1 when an activation estimate is off by more than 20%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = [ROOT / "specs" / "mnist_cnn.yaml", ROOT / "specs" / "keras_mnist_cnn.yaml"]
TOLERANCE = 0.20
# torch.profiler._memory_profiler's timeline columns: 0 is unused, then one per category
COLUMNS = ["", "parameter", "optimizer_state", "input", "temporary", "activation", "gradient",
           "autograd_detail", "unknown"]


def trainer_for(spec_path: Path, batch_size: int, device: str):
    """cnnspec's Trainer for the spec on random data, so the step measured is the one `run` takes."""
    from cnnspec.data.splits import Batches
    from cnnspec.registry.manager import default_plugin_manager
    from cnnspec.train.device import resolve_device
    from cnnspec.train.loop import Trainer
    from cnnspec.train.parts import build_parts
    from cnnspec.train.progress import QuietProgress
    from cnnspec.train.runner import load_for_run

    spec = load_for_run(str(spec_path), [f"data.batch_size={batch_size}"], device)
    dev = resolve_device(device)
    n, classes = 4 * batch_size, 10
    x = torch.rand(n, *spec.input_shape, device=dev)
    y = torch.randint(0, classes, (n,), device=dev)
    data = Batches(train=(x, y), test=(x, y), val=None, classes=[str(i) for i in range(classes)])
    return spec, Trainer(build_parts(spec, data, dev), default_plugin_manager(), QuietProgress())


def measure(spec_path: Path, batch_size: int, device: str) -> dict[str, object]:
    """Estimate and measurement for one spec at ``batch_size``."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from cnnspec.spec.cost import spec_estimate
    from cnnspec.train.step import Step

    spec, trainer = trainer_for(spec_path, batch_size, device)
    est = spec_estimate(spec, batch_size)
    xb, yb = trainer.data.train[0][:batch_size], trainer.data.train[1][:batch_size]
    trainer.ctx.model.train()
    step = Step(trainer.parts, trainer.ctx)  # the step `run` takes, made as fit() makes it
    step(xb, yb, 0)  # warm-up: Adam's moments now exist, as in every later step
    dev = torch.device(device)
    cuda_peak = None
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(xb, yb, 1)
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated() - before
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step(xb, yb, 2)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(str(dev))
    totals = [sum(row) for row in sizes]
    at = max(range(len(totals)), key=totals.__getitem__)
    peak = dict(zip(COLUMNS[1:], sizes[at][1:], strict=True))
    fixed = peak["parameter"] + peak["optimizer_state"] + peak["gradient"]
    measured_act = totals[at] - fixed
    est_act = est.activations + est.input
    return {"spec": spec_path.name, "batch_size": batch_size, "device": str(dev),
            "measured_peak": totals[at], "measured_activations": measured_act, "at_peak": peak,
            "estimate_total": est.step_total, "estimate_activations": est_act,
            "activation_ratio": round(est_act / measured_act, 3),
            "total_ratio": round(est.step_total / totals[at], 3),
            **({"cuda_max_memory_allocated_in_step": cuda_peak} if cuda_peak is not None else {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", type=Path, default=SPECS)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    from cnnspec.train.host import cpu_model

    results = [measure(p, args.batch_size, args.device) for p in args.specs]
    mib = 2**20
    print(f"{'spec':<22}{'estimate':>12}{'measured':>12}{'ratio':>8}   (activations + input, MiB)")
    for r in results:
        print(f"{r['spec']:<22}{r['estimate_activations'] / mib:>12.1f}"  # type: ignore[operator]
              f"{r['measured_activations'] / mib:>12.1f}{r['activation_ratio']:>8.2f}")  # type: ignore[operator]
    print(f"{'':<22}{'estimate':>12}{'measured':>12}{'ratio':>8}   (whole step peak, MiB)")
    for r in results:
        print(f"{r['spec']:<22}{r['estimate_total'] / mib:>12.1f}"  # type: ignore[operator]
              f"{r['measured_peak'] / mib:>12.1f}{r['total_ratio']:>8.2f}")  # type: ignore[operator]
    print(f"machine: {cpu_model()}, torch {torch.__version__}, device {args.device}")
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_model(), "results": results}, indent=2) + "\n")
    off = [r["spec"] for r in results if abs(float(r["activation_ratio"]) - 1) > TOLERANCE]  # type: ignore[arg-type]
    if off:
        print(f"activation estimate off by more than {TOLERANCE:.0%}: {', '.join(map(str, off))}")
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
