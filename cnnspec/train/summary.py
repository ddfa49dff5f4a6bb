"""summary.json: how a run ended, its last and best epochs, its cost, and what ran where."""

from __future__ import annotations

from typing import Any

import torch

from cnnspec.spec.sections import Spec
from cnnspec.train.host import device_name, versions
from cnnspec.train.parts import Parts
from cnnspec.train.precision import Precision


def train_flops_per_sample(spec: Spec) -> int | None:
    """FLOPs of one sample's training step: 3 x 2 x forward MACs (the backward pass counted as
    twice the forward); None when a layer declares no MAC rule."""
    macs = spec.trace.total_macs
    return None if macs is None else 6 * macs


def fast_paths(precision: Precision, optimizer: torch.optim.Optimizer, cuda_graph: bool = False) -> dict[str, Any]:
    """What makes this run fast, for the start-up line and summary.json (``cuda_graph``: whether
    the step is replayed from a CUDA graph, train.capture)."""
    return {"channels_last": precision.channels_last,
            "precision": precision.name,
            "fused_optimizer": bool(optimizer.defaults.get("fused")),
            "cuda_graph": cuda_graph,
            "compiled": False}


def run_summary(parts: Parts, rows: list[dict[str, Any]], best: dict[str, Any] | None, *, status: str,
                seconds: float, error: str | None, device: torch.device, seed: int,
                optimizer: torch.optim.Optimizer, sources: dict[str, str], cuda_graph: bool = False) -> dict[str, Any]:
    """The summary of a run whose finished epochs are ``rows``; ``device`` and ``optimizer``: those
    the run used (a before_training hook may replace them), ``sources``: the plugins' origins,
    ``cuda_graph``: whether steps were replayed from a CUDA graph."""
    spec, world = parts.spec, parts.world
    flops = train_flops_per_sample(spec)
    trained = sum(r["seconds"] for r in rows)
    samples = sum(r["samples_per_second"] * r["seconds"] for r in rows)
    out = {
        "name": spec.name,
        "status": status,
        "epochs_completed": len(rows),
        "epochs_planned": spec.train.epochs,
        "final": rows[-1] if rows else None,
        "best": best,
        "device": str(device),
        "seed": seed,
        "params": spec.trace.total_params,
        "macs_per_sample": spec.trace.total_macs,
        "train_flops_per_sample": flops,
        "train_gflops_per_second": flops * samples / trained / 1e9 if flops is not None and trained else None,
        "batch_size": parts.batch_size,
        "steps_per_epoch": parts.steps_per_epoch,
        "processes": world.size,
        "effective_batch_size": parts.batch_size * world.size,
        "seconds_this_session": seconds,
        "device_name": device_name(device),
        "fast_paths": fast_paths(parts.precision, optimizer, cuda_graph),
        "versions": versions(sources),
    }
    if error is not None:
        out["error"] = error
    return out
