"""A finished run loaded back: its spec, its model with trained weights, its classes and scaling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnspec.data.pixels import PixelStats
from cnnspec.spec.sections import Spec
from cnnspec.train.rundir import BEST, LAST, SPEC_FILE, RunDir


@dataclass
class Trained:
    """The model of a run (eval mode, on CPU) and what is needed to feed it raw [0, 1] images."""

    spec: Spec
    model: nn.Module
    classes: list[str]
    mean: list[float] | None
    std: list[float] | None
    checkpoint: Path
    pixels: PixelStats | None = None  # the training pictures' mean and background (None: an older run)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Scale as training did: the same per-channel standardisation, if any."""
        if self.mean is None or self.std is None:
            return x
        m = torch.tensor(self.mean).view(1, -1, 1, 1)
        s = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - m) / s

    def with_preprocessing(self) -> nn.Module:
        """One module taking [0, 1] images: the scaling baked in (for export)."""
        return _Scaled(self.model, self.mean, self.std)


class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__()
        self.model = model
        c = len(mean) if mean else 1
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean or [0.0] * c).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * c).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def load_run(path: str | Path, which: str = "best", trust: bool = False) -> Trained:
    """Load RUN_DIR's spec and the ``best`` or ``last`` weights (weights_only).

    The run's plugin files load only if trusted (or ``trust``: --trust) and unchanged since the run."""
    from cnnspec.build.model import build_model
    from cnnspec.errors import CheckpointError, SpecError
    from cnnspec.spec.check import check
    from cnnspec.spec.yamlpos import load_file
    from cnnspec.train.checkpoint import Checkpoint
    from cnnspec.train.runplugins import run_policy

    run = RunDir(path)
    if not run.path.is_dir():
        what = "not a run folder" if run.path.exists() else "no such file or directory"
        raise CheckpointError(f"{path}: {what} (give the folder `cnnspec run` made, e.g. runs/latest)")
    spec_file = str(run.path / SPEC_FILE)
    located = load_file(spec_file)
    listed = located.data.get("plugins") if isinstance(located.data, dict) else None
    result = check(located, policy=run_policy(run.path, listed, trust), weights=False)  # best.pt has them
    if result.spec is None:
        raise SpecError(result.problems, spec_file)
    spec = result.spec
    # "best" is chosen on validation data; a run without a validation split has only its last
    name = BEST if which == "best" and (spec.data is None or spec.data.val_split > 0) else LAST
    saved = Checkpoint.load(run.path / name)
    model = build_model(spec)
    why = saved.weights_mismatch(model)
    if why:
        raise CheckpointError(f"{run.path / name} does not fit the run's spec.yaml: {why}")
    model.load_state_dict(saved.model)
    model.eval()
    return Trained(spec, model, saved.classes, saved.mean, saved.std, run.path / name, saved.pixels)
