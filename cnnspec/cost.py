"""What a model costs, from its shape trace alone (no torch): MACs, memory, a training step's estimate.

Conventions: ``macs`` are multiply-accumulates of one sample's forward pass, exactly
``torch.utils.flop_counter.FlopCounterMode``'s forward FLOPs / 2 (convolutions and matrix
products only). Memory is fp32: 4 bytes a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .shapes import BYTES, Row, ShapeTrace

DEFAULT_BATCH_SIZE = 64  # DataSection's default, for specs without a data: section


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs at ``batch_size``: weights, gradients, optimizer state, activations.

    ``activations`` approximates what autograd keeps for backward: every layer's output (and each
    sum or concat) for the whole batch, plus the input batch.
    """

    batch_size: int
    params: int
    grads: int
    optimizer_state: int
    activations: int
    input: int
    dominant: tuple[tuple[str, int], ...] = ()  # (layer, bytes) with the most memory, largest first

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer_state + self.activations + self.input

    def to_json(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "total_bytes": self.total, "param_bytes": self.params,
                "grad_bytes": self.grads, "optimizer_state_bytes": self.optimizer_state,
                "activation_bytes": self.activations, "input_bytes": self.input,
                "dominant": [{"layer": n, "bytes": b} for n, b in self.dominant]}

    def line(self) -> str:
        """One line: the total and its parts."""
        return (f"training memory at batch {self.batch_size:,}: ~{human_bytes(self.total)} "
                f"(params {human_bytes(self.params)}, grads {human_bytes(self.grads)}, "
                f"optimizer {human_bytes(self.optimizer_state)}, activations "
                f"{human_bytes(self.activations + self.input)})")

    def dominant_text(self) -> str:
        return ", ".join(f"{n} {human_bytes(b)}" for n, b in self.dominant)


def human(n: int | float, unit: str = "", base: int = 1000) -> str:
    """3.2M, 1.5G (base 1000) or 2.0 MiB (base 1024); small numbers as they are."""
    prefixes = ["", "K", "M", "G", "T", "P", "E"]
    i = 0
    x = float(n)
    while abs(x) >= base and i < len(prefixes) - 1:
        x /= base
        i += 1
    if i == 0:
        return f"{int(n)}{' ' + unit if unit else ''}"
    p = prefixes[i] + ("i" if base == 1024 else "")
    return f"{x:.1f}{' ' if unit else ''}{p}{unit}"


def human_bytes(n: int) -> str:
    return human(n, "B", 1024)


def _label(path: str, r: Row) -> str:
    return f"#{path} {r.type}"


def _leaf_costs(rows: list[Row], batch: int, prefix: str = "") -> list[tuple[str, int]]:
    """(label, bytes) for every layer: its output for the batch, its weights with grads and state."""
    out = []
    for r in rows:
        path = f"{prefix}{r.index}"
        if r.children:
            out += _leaf_costs(list(r.children), batch, path + ".")
            if getattr(getattr(r.component, "type", None), "merges", False):
                out.append((_label(path, r), r.activation_bytes * batch))
        elif r.composite:
            continue
        else:
            out.append((_label(path, r), r.activation_bytes * batch + r.param_bytes))
    return out


def estimate(trace: ShapeTrace, optimizer: Any | None, batch_size: int) -> MemoryEstimate:
    """The training memory estimate; ``optimizer`` is the spec's optimizer Component (or None)."""
    per_param = per_param_state(optimizer)
    params = trace.param_bytes
    inp = 1
    for d in trace.input_shape:
        inp *= d
    costs = sorted(_leaf_costs(trace.rows, batch_size), key=lambda c: -c[1])
    return MemoryEstimate(batch_size=batch_size, params=params, grads=params,
                          optimizer_state=params * per_param,
                          activations=trace.activation_bytes * batch_size,
                          input=inp * BYTES * batch_size, dominant=tuple(costs[:3]))


def spec_estimate(spec: Any, batch_size: int | None = None) -> MemoryEstimate:
    """The estimate for a checked Spec at its data.batch_size (or ``batch_size``)."""
    if batch_size is None:
        batch_size = spec.data.batch_size if spec.data is not None else DEFAULT_BATCH_SIZE
    return estimate(spec.trace, spec.optimizer, batch_size)


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}


def parse_amount(text: Any, bytes_: bool) -> int:
    """``2GiB``, ``500MB``, ``1.5G``, ``3e9``, ``1000000`` as a number; ValueError if not one.

    For bytes, the unit may end in ``B``; K, M, G... are powers of 1000, Ki, Mi, Gi... of 1024.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"must be positive, got {text}")
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtTpP]i?)?\s*([bB])?\s*", str(text))
    if not m or (m.group(3) and not bytes_):
        unit = "a size such as 2GiB, 500MB or 1.5G" if bytes_ else "a count such as 500M, 1.5G or 3e9"
        raise ValueError(f"{text!r} is not {unit}")
    unit = (m.group(2) or "").lower()
    return int(float(m.group(1)) * _UNITS[unit])


def per_param_state(optimizer: Any | None) -> int:
    if optimizer is not None and hasattr(optimizer.type, "state_per_param"):
        return int(optimizer.type.state_per_param(optimizer.params))
    return 0


def row_memory(r: Row, batch_size: int, state_per_param: int) -> int:
    """What a row adds to the training estimate: its kept outputs for the batch, its weights, their
    gradients and optimizer state. The rows' sum plus the input batch is MemoryEstimate.total."""
    return r.kept_bytes * batch_size + r.param_bytes * (2 + state_per_param)


def first_crossing(rows: Sequence[Row], value: Callable[[Row], int], limit: int,
                   start: int = 0) -> tuple[list[Row], int] | None:
    """The rows (outermost first, down to the innermost it can tell) where the running total of
    ``value`` first goes over ``limit``, and the total there; None if it never does."""
    total = start
    for r in rows:
        v = value(r)
        if total + v > limit:
            inner = first_crossing(r.children, value, limit, total) if r.children else None
            if inner is not None:
                return [r, *inner[0]], inner[1]
            return [r], total + v
        total += v
    return None
