"""Checks located spec data: schema, names, parameters, then shapes; every problem located.

The steps, each in its own module: ``registry_for`` (the plugins a spec asks for),
``components`` (a name against the registry), ``expand`` (layers, composites, blocks,
repeat), ``shapes`` (the trace), ``fit`` (metrics, augmentations, dataset) and ``limits``;
``reporter`` collects the located problems they find.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnspec.errors import Problem, cause_first, path_str
from cnnspec.registry.types import Registry
from cnnspec.spec.components import Resolver, kind_of
from cnnspec.spec.expand import Expander
from cnnspec.spec.finetune import resolve as resolve_fine_tuning
from cnnspec.spec.fit import augmentations_fit, dataset_fits, fit_problems, normalize_fits, watched_metrics
from cnnspec.spec.limits import within_limits
from cnnspec.spec.loadplan import WeightsCheck
from cnnspec.spec.registry_for import registry_for
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.sections import Component, Spec, SpecFile, TrainSection
from cnnspec.spec.shapes import ShapeTrace, fmt, trace
from cnnspec.spec.weights import check_weights
from cnnspec.spec.yamlpos import Located

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.registry.trust import Policy

__all__ = ["CheckResult", "check", "fit_problems"]  # fit_problems: run checks a dataset's files with it


@dataclass
class CheckResult:
    """What checking found: the Spec when valid, else problems (and the shapes traced so far)."""

    file: str
    spec: Spec | None = None
    problems: list[Problem] = field(default_factory=list)
    trace: ShapeTrace | None = None
    warnings: list[Problem] = field(default_factory=list)  # severity "warning": the spec stays valid

    @property
    def valid(self) -> bool:
        return not self.problems


def check(located: Located, registry: Registry | None = None, plugins: Sequence[str] = (),
          policy: Policy | None = None, trust: bool = False, weights: bool = True) -> CheckResult:
    """Validate the whole document, collecting every independent problem.

    Without a ``registry``, the default one is used, extended by the spec's own ``plugins:``
    list and by ``plugins`` (from ``-p``; these raise PluginError instead of a located error).
    A plugin file the spec lists is imported only if ``policy`` (default: the trust store, and
    every listed file when ``trust``) trusts its bytes; otherwise its line is a located error
    and nothing is imported. ``weights=False`` leaves a ``weights:`` file unread (a run folder's
    spec: its checkpoints hold the weights, the file may be gone).
    """
    problems: list[Problem] = []
    if registry is None:
        registry, problems = registry_for(located, plugins, policy, trust)
    c = _Checker(located, registry, plugins_failed=bool(problems))
    c.report.problems.extend(problems)
    return _with_fine_tuning(c.run(), weights)


def _with_fine_tuning(result: CheckResult, weights: bool = True) -> CheckResult:
    """A valid spec's ``weights:`` file checked against its model (spec.weights), and its frozen layers
    and lr multipliers resolved (spec.finetune); all without torch."""
    spec = result.spec
    if spec is None:
        return result
    tuning, errors = resolve_fine_tuning(spec.located, spec.train, spec.trace)
    checked: WeightsCheck | None = None
    warnings: list[Problem] = []
    if spec.source.weights is not None and weights:
        checked, more, warnings = check_weights(spec.located, spec.source.weights, spec.trace)
        errors += more
    result.warnings += [dataclasses.replace(w, severity="warning") for w in warnings]
    if errors or tuning is None:
        result.problems = cause_first(errors)
        result.spec = None
    else:
        result.spec = dataclasses.replace(spec, weights=checked, finetune=tuning)
    return result


@dataclass
class _Parts:
    """The components a spec's sections name; None where one is wrong (already reported)."""

    optimizer: Component | None
    loss: Component | None
    scheduler: Component | None
    dataset: Component | None
    augmentations: list[Component] | None
    callbacks: list[Component] | None


class _Checker:
    """One check of one document: the sections, the components they name, then the model."""

    def __init__(self, located: Located, registry: Registry, plugins_failed: bool = False) -> None:
        self.loc = located
        self.reg = registry
        self.report = Reporter(located)
        self.resolve = Resolver(self.report, registry, plugins_failed)
        self.expand = Expander(self.resolve)

    def run(self) -> CheckResult:
        result = CheckResult(self.loc.file)
        data = self.loc.data
        if not isinstance(data, dict):
            self.report.fail((), f"a spec is a mapping of keys (input, layers, ...), not {kind_of(data)}")
            result.problems = self.report.problems
            return result
        source = self.resolve.validate_model(SpecFile, data, (), "")
        if isinstance(data.get("blocks"), dict):
            self.expand.define_blocks(data["blocks"])
        raw_layers = data.get("layers")
        layers = self.expand.layers(raw_layers) if isinstance(raw_layers, list) else None
        parts = self.parts(data)
        if source is not None:
            watched_metrics(self.report, source, parts.scheduler, parts.callbacks or [])
            normalize_fits(self.report, source)
        inp = data.get("input")
        # shapes need only a valid input and valid layers: other sections' problems are independent
        if layers and isinstance(inp, list) and 1 <= len(inp) <= 3 and all(
                type(d) is int and d >= 1 for d in inp):
            result.trace = self.model(tuple(inp), layers, source, parts)
        result.problems = cause_first(self.report.problems)
        if not result.problems:
            assert source and layers is not None and parts.optimizer and parts.loss and result.trace
            result.spec = Spec(
                file=self.loc.file, source=source, layers=layers, trace=result.trace,
                optimizer=parts.optimizer, scheduler=parts.scheduler, loss=parts.loss, dataset=parts.dataset,
                registry=self.reg, located=self.loc, augmentations=parts.augmentations or [],
                callbacks=parts.callbacks or [],
            )
        return result

    def parts(self, data: dict[str, Any]) -> _Parts:
        """The optimizer, loss, scheduler, dataset, augmentations and callbacks the spec names."""
        component = self.resolve.component
        train: dict[str, Any] = data["train"] if isinstance(data.get("train"), dict) else {}
        defaults = TrainSection.model_fields
        optimizer = component("optimizer", train.get("optimizer", defaults["optimizer"].default),
                              ("train", "optimizer"))
        loss = component("loss", train.get("loss", defaults["loss"].default), ("train", "loss"))
        scheduler = None
        if train.get("scheduler") is not None:
            scheduler = component("scheduler", train["scheduler"], ("train", "scheduler"))
        dataset = None
        section: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else {}
        if "dataset" in section:
            dataset = component("dataset", section["dataset"], ("data", "dataset"))
        augmentations = self.resolve.component_list("augmentation", section.get("augment"), ("data", "augment"))
        callbacks = self.resolve.component_list("callback", train.get("callbacks"), ("train", "callbacks"))
        return _Parts(optimizer, loss, scheduler, dataset, augmentations, callbacks)

    def model(self, inp: tuple[int, ...], layers: list[Component], source: SpecFile | None,
              parts: _Parts) -> ShapeTrace:
        """The shape trace, then what needs it: the dataset's fit, the limits, the augmentations."""
        t = self.shapes(inp, layers)
        if t.complete and parts.dataset is not None:
            dataset_fits(self.report, parts.dataset, inp, t)
        if t.complete and source is not None and source.limits is not None:
            within_limits(self.report, source, t, parts.optimizer)
        augmentations_fit(self.report, parts.augmentations or [], inp, parts.loss)
        return t

    def shapes(self, inp: tuple[int, ...], layers: list[Component]) -> ShapeTrace:
        """Trace the layers; where the trace stops, a located problem on the layer (or parameter)."""
        t = trace(inp, layers, self.expand.generated)
        if t.error is not None:
            i, err = t.error
            comp = err.component if err.component is not None and err.component.path else layers[i]
            path = comp.path  # point at the parameter when it is written, else at the layer
            if err.at and (comp.path + err.at in self.loc.keys or comp.path + err.at in self.loc.values):
                path = comp.path + err.at
            message = err.message
            shapes = [t.input_shape] + [r.output_shape for r in t.rows]  # shapes[i] flows into layer i
            if comp is layers[i] and i >= 1 and len(shapes[i]) == 1 and len(shapes[i - 1]) > 1:
                message += f" ({fmt(shapes[i - 1])})"  # just flattened: say from what
            before = len(self.report.problems)
            with self.report.inside(comp.trail):
                self.report.fail(path, f"{path_str(comp.path)} {comp.name}: {message}", key=True)
            if len(self.report.problems) > before:  # reported (not a repeat): with its causes
                self.report.problems[-1] = dataclasses.replace(
                    self.report.problems[-1], notes=self.shrink_notes(t, layers, i))
        return t

    def shrink_notes(self, t: ShapeTrace, layers: list[Component], failed: int) -> tuple[Problem, ...]:
        """Notes on the layers before the failing one that shrank the height or width the most (at
        most three, in order): the cause of a size that no longer fits is usually there."""
        shrunk = []
        for j, row in enumerate(t.rows[:failed]):
            before, after = row.input_shape, row.output_shape
            if len(before) == 3 and len(after) == 3 and after[1] * after[2] < before[1] * before[2]:
                shrunk.append((before[1] * before[2] / (after[1] * after[2]), j, row))
        chosen = sorted(sorted(shrunk, reverse=True)[:3], key=lambda s: s[1])
        notes = []
        for _, j, row in chosen:
            comp = layers[j]
            p = self.loc.problem(comp.path, f"{path_str(comp.path)} {comp.name} shrank the height and width "
                                 f"from {fmt(row.input_shape[1:])} to {fmt(row.output_shape[1:])}")
            notes.append(dataclasses.replace(p, severity="note"))
        return tuple(notes)
