"""The built model's ``state_dict()`` known from the shape trace alone (no torch): every tensor's
key, shape and dtype, in torch's order, with the layer it belongs to.

Keys follow the builder (build/model.py): a top-level layer is ``nn.Sequential`` child ``i``; a
composite names its parts with ``CompositeType.part_names`` (``main``/``shortcut`` for residual,
``0``..``n-1`` otherwise); a path row (main, shortcut, branch) is an ``nn.Sequential`` of its
layers; a layer's own entries come from ``LayerType.tensors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cnnspec.registry.types import TensorSpec
from cnnspec.spec.shapes import Row, ShapeTrace


@dataclass(frozen=True)
class Planned:
    """One ``state_dict()`` entry of the built model and where it comes from."""

    key: str  # e.g. "4.main.0.weight"
    tensor: TensorSpec
    module: str  # the module path it belongs to, e.g. "4.main.0"
    component: Any  # the spec's layer (cnnspec.spec.sections.Component) that makes it; located

    @property
    def shape(self) -> tuple[int, ...]:
        return self.tensor.shape

    @property
    def numel(self) -> int:
        n = 1
        for d in self.tensor.shape:
            n *= d
        return n


class Unknown(Exception):
    """A layer type declares no ``tensors`` rule: its state dict cannot be known without torch."""

    def __init__(self, component: Any, module: str) -> None:
        super().__init__(f"layer type '{component.name}' does not declare its tensors")
        self.component = component
        self.module = module


def plan(trace: ShapeTrace) -> list[Planned]:
    """Every entry of ``build_model(spec).state_dict()``, in order; raises Unknown for a layer
    type without a ``tensors`` rule."""
    return list(_rows(trace.rows, "", None))


def _rows(rows: Sequence[Row], prefix: str, owner: Any) -> Iterator[Planned]:
    for i, row in enumerate(rows):
        yield from _row(row, f"{prefix}{i}", owner)


def _row(row: Row, module: str, owner: Any) -> Iterator[Planned]:
    comp = row.component
    if comp is None:  # a path: an nn.Sequential of its layers, which belong to the composite
        yield from _rows(row.children, module + ".", owner)
        return
    own = comp.type.tensors(comp.params, row.input_shape, row.output_shape)
    if own is None:
        raise Unknown(comp, module)
    for t in own:
        yield Planned(f"{module}.{t.name}", t, module, comp)
    if row.children:
        names = comp.type.part_names(comp.params, len(row.children))
        for name, child in zip(names, row.children):
            yield from _row(child, f"{module}.{name}", comp)


def child_modules(row: Row, module: str) -> list[tuple[str, Row]]:
    """A row's children with their module paths: ``module.NAME`` as the builder names them."""
    if not row.children:
        return []
    comp = row.component
    names = [str(i) for i in range(len(row.children))] if comp is None else \
        comp.type.part_names(comp.params, len(row.children))
    return [(f"{module}.{name}", child) for name, child in zip(names, row.children)]


def module_paths(trace: ShapeTrace) -> list[str]:
    """Every layer's module path in the built model ("0", "4.main.1", ...), parents before children."""
    out: list[str] = []

    def walk(row: Row, module: str) -> None:
        out.append(module)
        for path, child in child_modules(row, module):
            walk(child, path)

    for i, row in enumerate(trace.rows):
        walk(row, str(i))
    return out


def trainable_params(entries: Sequence[Planned]) -> int:
    """How many trainable numbers the entries hold."""
    return sum(e.numel for e in entries if e.tensor.trainable)
