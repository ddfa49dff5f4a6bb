"""The ``limits:`` check: each limit the model goes over, located at the limit and at the layer
where the running total first crosses it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnspec.errors import path_str
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.sections import Component, SpecFile
from cnnspec.spec.shapes import BYTES, Row, ShapeTrace


@dataclass(frozen=True)
class _Measure:
    """One limit: what each row adds, the total before the first row, and how to say an amount."""

    key: str  # params, macs or memory
    limit: Any  # the parsed limit, or None when not set
    value: Callable[[Row], int]
    start: int
    say: Callable[[int, Callable[[int], str]], str]


def within_limits(report: Reporter, source: SpecFile, t: ShapeTrace, optimizer: Component | None) -> None:
    """Each ``limits:`` entry the model goes over: an error at the limit and at the layer
    where the running total (in the order the layers run) first crosses it."""
    for m in _measures(source, t, optimizer):
        if m.limit is not None:
            _check(report, t, m)


def _measures(source: SpecFile, t: ShapeTrace, optimizer: Component | None) -> list[_Measure]:
    from cnnspec.spec.cost import DEFAULT_BATCH_SIZE, activation_profile, per_param_state, row_memory

    lim = source.limits
    assert lim is not None
    batch = source.data.batch_size if source.data is not None else DEFAULT_BATCH_SIZE
    state = per_param_state(optimizer)
    inp = BYTES  # one input sample's bytes: 4 x C x H x W
    for d in t.input_shape:
        inp *= d
    prof = activation_profile(t)
    return [
        _Measure("params", lim.params, lambda r: r.params, 0, lambda n, show: f"{n:,} parameters"),
        _Measure("macs", lim.macs, lambda r: r.macs or 0, 0, lambda n, show: f"{show(n)} MACs per sample"),
        # the input batch and the gradients in flight at the peak count before the first layer
        _Measure("memory", lim.memory, lambda r: row_memory(r, prof, batch, state), (inp + prof.in_flight) * batch,
                 lambda n, show: f"~{show(n)} estimated training memory at batch {batch:,}"),
    ]


def _check(report: Reporter, t: ShapeTrace, m: _Measure) -> None:
    from cnnspec.spec.cost import first_crossing, human, human_bytes

    found = first_crossing(t.rows, m.value, int(m.limit), m.start)
    if found is None:
        return
    chain, reached = found
    comp = next((r.component for r in reversed(chain) if r.component is not None and r.component.path),
                chain[0].component)
    total = m.start + sum(m.value(r) for r in t.rows)
    where = f"{path_str(comp.path)} {comp.name}"
    line = report.loc.where(comp.path, key=True)[0]
    at = f" (first crossed at {where}{f', line {line}' if line else ''})"
    show: Callable[[int], str] = human_bytes if m.key == "memory" else human
    if show(total) == show(int(m.limit)):  # "needs 36.0 MiB, over the limit of 36.0 MiB": exact numbers
        show = (lambda n: f"{n:,} bytes") if m.key == "memory" else (lambda n: f"{n:,}")
    short = show(int(m.limit))
    report.fail(("limits", m.key), f"limits.{m.key}: the model needs {m.say(total, show)}, over the limit of "
                f"{short}{at}")
    with report.inside(comp.trail):
        report.fail(comp.path, f"{where}: reaches {m.say(reached, show)} here, over limits.{m.key} ({short})",
                    key=True)
