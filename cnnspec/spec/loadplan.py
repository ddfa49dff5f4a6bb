"""What ``run`` applies as ``validate`` checked it: the weights file's plan (made by spec.weights) and the
fine-tuning plan (made by spec.finetune)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cnnspec.spec.tensors import Planned


@dataclass
class WeightsCheck:
    """What ``run`` will load: model key <- file key, and what is fresh, filled or unused."""

    path: Path
    sha256: str
    size: int
    format: str
    key: str | None  # where the state dict sits in the file
    strip: str | None  # the prefix taken off the file's names
    assign: list[tuple[Planned, str]] = field(default_factory=list)
    fresh: list[Planned] = field(default_factory=list)  # skipped: initialised as the spec builds them
    filled: list[Planned] = field(default_factory=list)  # num_batches_tracked the file lacks: zero
    unused: list[str] = field(default_factory=list)  # file tensors nothing takes

    def to_json(self) -> dict[str, object]:
        return {"file": str(self.path), "sha256": self.sha256, "format": self.format, "loaded": len(self.assign),
                "fresh": sorted({e.module for e in self.fresh}, key=_order), "unused": self.unused}

    def summary(self) -> str:
        """One line for validate: how many tensors come from the file, and what is fresh."""
        fresh = sorted({e.module for e in self.fresh}, key=_order)
        out = f"weights: {len(self.assign)} tensors from {self.path.name} (sha256 {self.sha256[:12]})"
        if fresh:
            out += f"; initialised fresh: {', '.join(fresh)}"
        return out


@dataclass(frozen=True)
class FineTune:
    """Module paths whose parameters are frozen, and the lr factor of each module that has one."""

    frozen: frozenset[str] = frozenset()
    multipliers: dict[str, float] = field(default_factory=dict)  # module path -> factor
    frozen_params: int = 0  # trainable numbers that freeze takes out of training
    fixed: frozenset[str] = frozenset()  # written trainable: false: frozen for good (unfreeze leaves them)

    def is_frozen(self, module: str) -> bool:
        return module in self.frozen

    def factor(self, module: str) -> float:
        """The lr factor of a module's parameters (1 unless a multiplier names it)."""
        return self.multipliers.get(module, 1.0)

    def groups(self, entries: list[Planned]) -> dict[float, list[str]]:
        """Trainable tensor keys by lr factor (frozen ones left out): the optimizer's parameter groups."""
        out: dict[float, list[str]] = {}
        for e in entries:
            if e.tensor.trainable and not self.is_frozen(e.module):
                out.setdefault(self.factor(e.module), []).append(e.key)
        return out



def _order(module: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in module.split(".")]
