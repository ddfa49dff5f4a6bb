"""How check results are shown: compiler-style error lines, the shape table, the JSON document."""

from __future__ import annotations

from typing import Any, TextIO

from .check import CheckResult
from .errors import Problem
from .shapes import Row, ShapeTrace, fmt


def result_json(result: CheckResult) -> dict[str, Any]:
    """One spec's entry of ``validate --format json``."""
    t = result.trace
    rows = t.rows if t else []
    done = t if t is not None and t.complete else None
    return {
        "path": result.file,
        "valid": result.valid,
        "errors": [p.to_json() for p in result.problems],
        "input_shape": list(t.input_shape) if t else None,
        "output_shape": list(done.output_shape) if done else None,
        "total_params": done.total_params if done else None,
        "layers": [row_json(r) for r in rows],
    }


def row_json(r: Row) -> dict[str, Any]:
    """A row as JSON; a composite's also has its ``info`` and its children under ``layers``."""
    out: dict[str, Any] = {"index": r.index, "type": r.type, "output_shape": list(r.output_shape),
                           "params": r.params}
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


def _table_rows(rows: list[Row], prefix: str = "", depth: int = 0) -> list[tuple[str, str, str, str]]:
    out = []
    for r in rows:
        index = f"{prefix}{r.index}"
        out.append((index, "  " * depth + _label(r), fmt(r.output_shape), f"{r.params:,}"))
        out += _table_rows(list(r.children), index + ".", depth + 1)
    return out


def print_problems(problems: list[Problem], out: TextIO) -> None:
    for p in problems:
        out.write(p.format() + "\n")


def print_table(file: str, t: ShapeTrace, out: TextIO) -> None:
    """A Keras summary()-like table of every layer's output shape and parameters.

    Plain text on purpose: validate's start-up time is part of the product, and rich alone
    costs about a sixth of it.
    """
    rows = [("", "input", fmt(t.input_shape), "")]
    rows += _table_rows(t.rows)
    head = ("#", "layer", "output shape", "params")
    widths = [max(len(row[i]) for row in rows + [head]) for i in range(4)]
    nested = any(r.children for r in t.rows)  # dotted indices read better left-aligned

    def line(cells: tuple[str, ...]) -> str:
        a, b, c, d = cells
        a = f"{a:<{widths[0]}}" if nested else f"{a:>{widths[0]}}"
        return (f"{a}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}").rstrip()

    rule = "-" * (sum(widths) + 2 * 3)  # four columns, two spaces between
    out.write(f"{file}\n{line(head)}\n{rule}\n")
    for row in rows:
        out.write(line(row) + "\n")
    out.write(f"{rule}\ntotal params: {t.total_params:,}   output shape: {fmt(t.output_shape)}\n")
