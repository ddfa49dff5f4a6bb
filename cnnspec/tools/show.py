"""How check results are shown: compiler-style error lines, the shape table, the JSON document."""

from __future__ import annotations

import math
from typing import Any, TextIO

from cnnspec.errors import Problem
from cnnspec.spec.check import CheckResult
from cnnspec.spec.cost import MemoryEstimate, activation_profile, human, spec_estimate
from cnnspec.spec.loadplan import FineTune
from cnnspec.spec.shapes import Row, ShapeTrace, fmt
from cnnspec.spec.tensors import child_modules


def result_json(result: CheckResult, batch_size: int | None = None) -> dict[str, Any]:
    """One spec's entry of ``validate --format json``; ``memory`` is the training estimate."""
    t = result.trace
    rows = t.rows if t else []
    done = t if t is not None and t.complete else None
    return {
        "path": result.file,
        "valid": result.valid,
        "errors": [p.to_json() for p in result.problems],
        "warnings": [p.to_json() for p in result.warnings],
        "weights": result.spec.weights.to_json() if result.spec and result.spec.weights else None,
        "input_shape": list(t.input_shape) if t else None,
        "output_shape": list(done.output_shape) if done else None,
        "total_params": done.total_params if done else None,
        # one sample's forward multiply-accumulates (FlopCounterMode's FLOPs / 2); None if incomplete
        "total_macs": done.total_macs if done else None,
        "macs_complete": done.total_macs is not None if done else None,
        "param_bytes": done.param_bytes if done else None,
        # per sample: the most a training step holds at once besides weights (cost.ActivationProfile)
        "activation_bytes": activation_profile(done).peak if done else None,
        "memory": spec_estimate(result.spec, batch_size).to_json() if result.spec else None,
        "layers": [row_json(r) for r in rows],
    }


def row_json(r: Row) -> dict[str, Any]:
    """A row as JSON; a composite's also has its ``info`` and its children under ``layers``."""
    out: dict[str, Any] = {"index": r.index, "type": r.type, "output_shape": list(r.output_shape),
                           "params": r.params, "macs": r.macs, "param_bytes": r.param_bytes,
                           "activation_bytes": r.activation_bytes}
    if r.composite:
        out.update(r.info)
        out["layers"] = [row_json(c) for c in r.children]
    return out


def _label(r: Row) -> str:
    notes = []
    for k, v in r.info.items():
        notes.append(f"x{v}" if k == "times" else "block" if v == "block" else "" if k == "kind" else str(v))
    notes = [n for n in notes if n]
    return r.type + (f" ({', '.join(notes)})" if notes else "")


def _macs(m: int | None) -> str:
    return "?" if m is None else human(m)


def _table_rows(rows: list[tuple[str, Row]], frozen: frozenset[str], prefix: str = "",
                depth: int = 0) -> list[tuple[str, ...]]:
    """Table rows of ``rows`` (module path, row) and their children; frozen layers say so."""
    out: list[tuple[str, ...]] = []
    for module, r in rows:
        index = f"{prefix}{r.index}"
        mark = " (frozen)" if r.params and module in frozen else ""
        out.append((index, "  " * depth + _label(r) + mark, fmt(r.output_shape), f"{r.params:,}", _macs(r.macs),
                    human(r.param_bytes, "B", 1024), human(r.activation_bytes, "B", 1024)))
        out += _table_rows(child_modules(r, module), frozen, index + ".", depth + 1)
    return out


def print_problems(problems: list[Problem], out: TextIO) -> None:
    for p in problems:
        out.write(p.format() + "\n")


def print_table(file: str, t: ShapeTrace, out: TextIO, memory: MemoryEstimate | None = None,
                tuning: FineTune | None = None) -> None:
    """A Keras summary()-like table of every layer's output shape and parameters.

    Plain text on purpose: validate's start-up time is part of the product, and rich alone
    costs about a sixth of it.
    """
    rows: list[tuple[str, ...]] = [("", "input", fmt(t.input_shape), "", "", "",
                                    human(math.prod(t.input_shape) * 4, "B", 1024))]
    frozen = tuning.frozen if tuning is not None else frozenset()
    rows += _table_rows([(str(i), r) for i, r in enumerate(t.rows)], frozen)
    head = ("#", "layer", "output shape", "params", "MACs", "param mem", "output mem")
    n = len(head)
    widths = [max(len(row[i]) for row in rows + [head]) for i in range(n)]
    nested = any(r.children for r in t.rows)  # dotted indices read better left-aligned

    def line(cells: tuple[str, ...]) -> str:
        a, b, *rest = cells
        a = f"{a:<{widths[0]}}" if nested else f"{a:>{widths[0]}}"
        right = "  ".join(f"{c:>{w}}" for c, w in zip(rest, widths[2:]))
        return f"{a}  {b:<{widths[1]}}  {right}".rstrip()

    rule = "-" * (sum(widths) + 2 * (n - 1))
    out.write(f"{file}\n{line(head)}\n{rule}\n")
    for row in rows:
        out.write(line(row) + "\n")
    if t.error is not None:  # a shape error: the rows up to it, then the error says why it stops
        out.write(f"{rule}\nthe trace stops at layer {t.error[0]}: see the error below\n")
        return
    held = tuning.frozen_params if tuning is not None else 0
    counts = f"{t.total_params:,}" + (f" (trainable {t.total_params - held:,}, frozen {held:,})" if held else "")
    out.write(f"{rule}\ntotal params: {counts}   output shape: {fmt(t.output_shape)}\n")
    macs = t.total_macs
    total = (human(macs) if macs is not None
             else f"incomplete (at least {human(t.known_macs)}; '?' rows declare no rule)")
    out.write(f"MACs per sample (forward, multiply-accumulates; FLOPs = 2 x MACs): {total}   "
              f"param mem: {human(t.param_bytes, 'B', 1024)}   "
              f"activations per sample: {human(activation_profile(t).peak, 'B', 1024)}\n")
    if memory is not None:
        out.write(f"{memory.line()}; most: {memory.dominant_text()}\n")
