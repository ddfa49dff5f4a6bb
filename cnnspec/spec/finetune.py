"""``train.freeze`` and ``train.lr_multipliers`` resolved to the model's module paths, without torch.

What is frozen, and each layer's learning-rate factor, is known before torch is imported, so
``validate`` can mark frozen rows, count trainable parameters and leave the frozen ones' gradients
and optimizer state out of the memory estimate; the builder (build.finetune) applies the same plan.
"""

from __future__ import annotations

from cnnspec.errors import KeyPath, Problem
from cnnspec.spec.loadplan import FineTune
from cnnspec.spec.sections import TrainSection
from cnnspec.spec.selectors import SelectorError, matcher
from cnnspec.spec.shapes import Row, ShapeTrace
from cnnspec.spec.tensors import Unknown, child_modules, module_paths, plan
from cnnspec.spec.yamlpos import Located


def resolve(located: Located, train: TrainSection, trace: ShapeTrace) -> tuple[FineTune | None, list[Problem]]:
    """The fine-tuning plan of a spec, or located problems (a selector that names no layer)."""
    marked = _marked(trace)
    if not train.freeze and not train.lr_multipliers and not marked:
        return FineTune(), []
    paths = module_paths(trace)
    problems: list[Problem] = []
    frozen: set[str] = set(marked)
    for i, chosen in enumerate(train.freeze):
        frozen |= _names(located, ("train", "freeze", i), f"train.freeze[{i}]", chosen, paths, trace, problems)
    multipliers: dict[str, float] = {}
    for raw, factor in train.lr_multipliers.items():  # in the order written: a later entry wins
        selector: int | str = int(raw) if raw.lstrip("-").isdigit() else raw
        for m in _names(located, ("train", "lr_multipliers", raw), f"train.lr_multipliers['{raw}']", selector,
                        paths, trace, problems):
            multipliers[m] = factor
    if problems:
        return None, problems
    try:
        entries = plan(trace)
    except Unknown:
        entries = []  # a layer without a tensors rule: counts stay at what is known
    frozen_params = sum(e.numel for e in entries if e.tensor.trainable and e.module in frozen)
    return FineTune(frozenset(frozen), multipliers, frozen_params, frozenset(marked)), []


def _marked(trace: ShapeTrace) -> set[str]:
    """The module paths of the layers written with ``trainable: false``, and of everything inside them."""
    out: set[str] = set()

    def walk(row: Row, module: str, frozen: bool) -> None:
        frozen = frozen or bool(getattr(row.component, "frozen", False))
        if frozen:
            out.add(module)
        for path, child in child_modules(row, module):
            walk(child, path, frozen)

    for i, row in enumerate(trace.rows):
        walk(row, str(i), False)
    return out


def _names(located: Located, path: KeyPath, label: str, selector: int | str, paths: list[str], trace: ShapeTrace,
           problems: list[Problem]) -> set[str]:
    try:
        return matcher(selector, paths, len(trace.rows))
    except SelectorError as e:
        problems.append(located.problem(path, f"{label}: {e}"))
        return set()
