"""Checks located spec data: schema, names, parameters, then shapes; every problem located."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from cnnspec.errors import KeyPath, PluginError, Problem, did_you_mean, path_str
from cnnspec.registry.types import Kind, Registry, ShapeError
from cnnspec.spec.explain import explain
from cnnspec.spec.finetune import resolve as resolve_fine_tuning
from cnnspec.spec.loadplan import WeightsCheck
from cnnspec.spec.metrics import METRICS
from cnnspec.spec.sections import Component, Spec, SpecFile, TrainSection
from cnnspec.spec.shapes import BYTES, MAX_LAYERS, MAX_REPEAT, ShapeTrace, fmt, trace
from cnnspec.spec.weights import check_weights
from cnnspec.spec.yamlpos import Located

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.registry.trust import Policy

# Models of nested sections, so an unknown key deep inside suggests a field of the right model.


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
          policy: Policy | None = None, trust: bool = False) -> CheckResult:
    """Validate the whole document, collecting every independent problem.

    Without a ``registry``, the default one is used, extended by the spec's own ``plugins:``
    list and by ``plugins`` (from ``-p``; these raise PluginError instead of a located error).
    A plugin file the spec lists is imported only if ``policy`` (default: the trust store, and
    every listed file when ``trust``) trusts its bytes; otherwise its line is a located error
    and nothing is imported.
    """
    from cnnspec.registry.manager import PluginError, default_registry, load_local_plugin, registry_with

    data = located.data
    listed = data.get("plugins") if isinstance(data, dict) else None
    problems: list[Problem] = []
    if registry is None:
        base = Path(located.file).parent
        modules = [load_local_plugin(ref) for ref in plugins]  # -p: the user named them
        refs = listed if isinstance(listed, list) else []
        if refs:
            from cnnspec.registry.trust import Policy  # only when a spec names plugins: validate's start-up stays lean

            if policy is None:
                policy = Policy(listed=trust, how=f"cnnspec trust {located.file}")
            policy.files = policy.files | frozenset(str(Path(ref).resolve()) for ref in plugins)
        for i, ref in enumerate(refs):
            if isinstance(ref, str):
                try:
                    modules.append(load_local_plugin(ref, base, policy))
                except PluginError as e:
                    problems.append(located.problem(("plugins", i), f"plugins[{i}]: {e}"))
        try:
            registry = registry_with(modules) if modules else default_registry()
        except PluginError as e:
            if not listed:
                raise
            problems.append(located.problem(("plugins",), f"plugins: {e}", key=True))
            registry = default_registry()
    c = _Checker(located, registry)
    c.problems.extend(problems)
    c.plugins_failed = bool(problems)
    return _with_fine_tuning(c.run())


def _with_fine_tuning(result: CheckResult) -> CheckResult:
    """A valid spec's ``weights:`` file checked against its model (spec.weights), and its frozen layers
    and lr multipliers resolved (spec.finetune); all without torch."""
    spec = result.spec
    if spec is None:
        return result
    tuning, errors = resolve_fine_tuning(spec.located, spec.train, spec.trace)
    checked: WeightsCheck | None = None
    warnings: list[Problem] = []
    if spec.source.weights is not None:
        checked, more, warnings = check_weights(spec.located, spec.source.weights, spec.trace)
        errors += more
    result.warnings += [dataclasses.replace(w, severity="warning") for w in warnings]
    if errors or tuning is None:
        result.problems = sorted(errors)
        result.spec = None
    else:
        result.spec = dataclasses.replace(spec, weights=checked, finetune=tuning)
    return result


class _Checker:
    def __init__(self, located: Located, registry: Registry) -> None:
        self.loc = located
        self.reg = registry
        self.problems: list[Problem] = []
        self.seen: set[tuple[int, int, str]] = set()
        self.trail: tuple[tuple[str, KeyPath], ...] = ()  # the block uses being expanded, outermost first
        self.blocks: dict[str, Any] = {}  # name -> compiled Block, or None when its definition is bad
        self.bad_plugin_blocks: dict[str, str] = {}  # name -> what is wrong with a plugin's block
        self.plugins_failed = False  # a plugin the spec lists was not loaded (untrusted, failed)

    def fail(self, path: KeyPath, message: str, *, key: bool = False) -> None:
        """Record a located problem; inside a block's body, say which use (line) it came from."""
        notes = []
        for name, use in reversed(self.trail):
            block = self.blocks.get(name)
            owner = f" (from plugin '{block.owner}')" if block is not None and block.owner != "spec" else ""
            notes.append(f"in block '{name}'{owner} used at line {self.loc.where(use)[0]}")
        if self.trail and path[:1] == ("blocks",) and path[:3] not in self.loc.values:
            # inside a plugin's block: point at the innermost use written in this file
            uses = [u for _, u in self.trail if u[:1] != ("blocks",) or u[:3] in self.loc.values]
            path, key = uses[-1], True
        p = self.loc.problem(path, message, key=key)
        seen = (p.line, p.column, p.message)  # a block used many times: report its body's problem once
        if seen in self.seen:
            return
        self.seen.add(seen)
        if notes:
            p = Problem(p.line, p.column, f"{p.message} ({'; '.join(notes)})", p.path, p.file)
        self.problems.append(p)

    def run(self) -> CheckResult:
        result = CheckResult(self.loc.file)
        data = self.loc.data
        if not isinstance(data, dict):
            self.fail((), f"a spec is a mapping of keys (input, layers, ...), not {_kind(data)}")
            result.problems = self.problems
            return result
        source = self.validate_model(SpecFile, data, (), "")
        if isinstance(data.get("blocks"), dict):
            self.define_blocks(data["blocks"])
        raw_layers = data.get("layers")
        layers = self.layers(raw_layers) if isinstance(raw_layers, list) else None
        train: dict[str, Any] = data["train"] if isinstance(data.get("train"), dict) else {}
        defaults = TrainSection.model_fields
        optimizer = self.component("optimizer", train.get("optimizer", defaults["optimizer"].default),
                                   ("train", "optimizer"))
        loss = self.component("loss", train.get("loss", defaults["loss"].default), ("train", "loss"))
        scheduler = None
        if train.get("scheduler") is not None:
            scheduler = self.component("scheduler", train["scheduler"], ("train", "scheduler"))
        dataset = None
        section: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else {}
        if "dataset" in section:
            dataset = self.component("dataset", section["dataset"], ("data", "dataset"))
        augmentations = self.component_list("augmentation", section.get("augment"), ("data", "augment"))
        callbacks = self.component_list("callback", train.get("callbacks"), ("train", "callbacks"))
        if source is not None:
            self.training_checks(source, loss, scheduler, callbacks or [])

        inp = data.get("input")
        # shapes need only a valid input and valid layers: other sections' problems are independent
        if layers and isinstance(inp, list) and 1 <= len(inp) <= 3 and all(
                type(d) is int and d >= 1 for d in inp):
            result.trace = self.shapes(tuple(inp), layers)
            if result.trace.complete and dataset is not None:
                self.dataset_fits(dataset, tuple(inp), result.trace)
            if result.trace.complete and source is not None and source.limits is not None:
                self.within_limits(source, result.trace, optimizer)
            self.augmentations_fit(augmentations or [], tuple(inp), loss)
        result.problems = sorted(self.problems)
        if not self.problems:
            assert source and layers is not None and optimizer and loss and result.trace
            result.spec = Spec(
                file=self.loc.file, source=source, layers=layers, trace=result.trace,
                optimizer=optimizer, scheduler=scheduler, loss=loss, dataset=dataset,
                registry=self.reg, located=self.loc, augmentations=augmentations or [],
                callbacks=callbacks or [],
            )
        return result

    # -- schema ---------------------------------------------------------------------------

    def validate_model(self, model: type[BaseModel], data: Any, base: KeyPath, prefix: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            for path, message, key in explain(e, data, model):
                self.fail(base + path, prefix + message, key=key)
            return None

    def parse_ref(self, kind: Kind, raw: Any, path: KeyPath) -> tuple[str, dict[str, Any]] | None:
        """A bare name or {type: NAME, ...} as (name, params); None after reporting a problem."""
        if isinstance(raw, str):
            return raw, {}
        if isinstance(raw, dict):
            if "type" not in raw:
                also = " (or 'block' for a named block)" if kind == "layer" else ""
                self.fail(path, f"{path_str(path)}: a {kind} mapping needs a 'type' key{also}")
                return None
            name = raw["type"]
            if not isinstance(name, str):
                self.fail(path + ("type",), f"{path_str(path)}: 'type' must be a name, got {name!r}")
                return None
            return name, {k: v for k, v in raw.items() if k != "type"}
        self.fail(path, f"{path_str(path)}: expected a {kind} name or {{type: NAME, ...}}, got {_kind(raw)}")
        return None

    def component(self, kind: Kind, raw: Any, path: KeyPath) -> Component | None:
        parsed = self.parse_ref(kind, raw, path)
        if parsed is None:
            return None
        name, params = parsed
        label = path_str(path)
        where = path + ("type",) if isinstance(raw, dict) else path
        try:
            ctype = self.reg.get(kind, name)
        except PluginError as e:  # a plugin registered the name lazily and its module failed
            self.fail(where, f"{label}: {e}")
            return None
        if ctype is None:
            if self.plugins_failed:  # most likely the type of the plugin that did not load
                hint = "; a plugin listed under 'plugins:' was not loaded (see its error)"
            else:
                hint = did_you_mean(name, self.reg.names(kind)) or _known(self.reg.names(kind)) or (
                    "; if a plugin provides it, list the plugin under 'plugins:' or pass -p")
            self.fail(where, f"{label}: unknown {kind} type '{name}'{hint}")
            return None
        p = self.validate_model(ctype.Params, params, path, f"{label} {name}: ")
        return None if p is None else Component(name, ctype, p, path, trail=self.trail)

    def layers(self, raw: list[Any]) -> list[Component] | None:
        out = self.layer_list(raw, ("layers",))
        if out is not None and sum(map(_size, out)) > MAX_LAYERS:
            self.fail(("layers",), f"layers: the model expands to {sum(map(_size, out)):,} layers, more "
                      f"than the limit of {MAX_LAYERS:,} (check the repeat counts)", key=True)
            return None
        return out

    # -- layers, composites and blocks ----------------------------------------------------

    def layer_list(self, raw: list[Any], path: KeyPath) -> list[Component] | None:
        out: list[Component] = []
        ok = True
        for i, item in enumerate(raw):
            comp = self.layer(item, path + (i,))
            ok = ok and comp is not None
            if comp is not None:
                out.append(comp)
        return out if ok else None

    def layer(self, raw: Any, path: KeyPath) -> Component | None:
        """One layer item: a layer, a composite (children checked too), a block use, or ``repeat: N`` of one."""
        label = path_str(path)
        if isinstance(raw, dict) and "repeat" in raw:
            return self.repeated(raw, path)
        if isinstance(raw, dict) and "block" in raw:
            if "type" in raw:
                self.fail(path + ("type",), f"{label}: give either 'type' (a layer) or 'block' (a named block), "
                          "not both", key=True)
                return None
            return self.block_use(raw, path)
        comp = self.component("layer", raw, path)
        if comp is None or not hasattr(comp.type, "trace"):
            return comp
        kids = []
        for where in comp.type.paths(comp.params):
            value = _at(raw, where, comp.params)
            items = self.layer_list(value, path + where) if isinstance(value, list) else (
                None if (one := self.layer(value, path + where)) is None else [one])
            if items is None:
                return None
            kids.append(tuple(items))
        return Component(comp.name, comp.type, comp.params, path, tuple(kids), self.trail)

    def repeated(self, raw: dict[str, Any], path: KeyPath) -> Component | None:
        """``{..., repeat: N}``: short for ``{type: repeat, times: N, layers: [{...}]}``."""
        n = raw["repeat"]
        where = path + ("repeat",)
        label = path_str(path)
        if type(n) is not int:
            self.fail(where, f"{label}: repeat must be a whole number of copies, got {n!r}")
            return None
        if n < 1:
            self.fail(where, f"{label}: repeat must be at least 1, got {n}")
            return None
        if n > MAX_REPEAT:
            self.fail(where, f"{label}: repeat {n:,} is more than the limit of {MAX_REPEAT:,}")
            return None
        inner = {k: v for k, v in raw.items() if k != "repeat"}
        child = self.layer(inner, path)
        rtype = self.reg.get("layer", "repeat")
        if child is None or rtype is None:
            return None
        size = n * _size(child)
        if size > MAX_LAYERS:
            self.fail(where, f"{label}: repeat {n:,} of {_size(child):,} layers makes {size:,}, more than "
                      f"the limit of {MAX_LAYERS:,} layers in a model")
            return None
        return Component("repeat", rtype, rtype.Params(times=n, layers=[inner]), path, ((child,),), self.trail)

    def define_blocks(self, raw: dict[str, Any]) -> None:
        """Compile the spec's own ``blocks:``; problems in a definition are located there."""
        from cnnspec.spec.blocks import compile_block

        for name, body in raw.items():
            block, problems = compile_block(name, body, "spec")
            for rel, message, key in problems:
                self.fail(("blocks", name) + rel, f"blocks.{name}: {message}", key=key)
            self.blocks[name] = block

    def find_block(self, name: str) -> Any:
        if name in self.blocks:
            return self.blocks[name]
        btype = self.reg.get("block", name)
        if btype is None:
            return None
        from cnnspec.spec.blocks import compile_block

        owner = self.reg.owners.get(("block", name), "?")
        block, problems = compile_block(name, {"params": btype.params, "layers": btype.layers,
                                               "description": btype.description}, owner)
        self.blocks[name] = block
        if problems:
            self.bad_plugin_blocks[name] = "; ".join(f"{path_str(p) or name}: {m}" for p, m, _ in problems)
        return block

    def block_use(self, raw: dict[str, Any], path: KeyPath) -> Component | None:
        """``{block: NAME, ...arguments}``: the block's layers, arguments substituted, checked in place."""
        from cnnspec.spec.blocks import substitute

        label = path_str(path)
        name = raw["block"]
        if not isinstance(name, str):
            self.fail(path + ("block",), f"{label}: 'block' must be a block name, got {name!r}")
            return None
        known = sorted(set(self.blocks) | set(self.reg.names("block")))
        if name not in known:
            hint = did_you_mean(name, known)
            if not hint and name in self.reg.names("layer"):
                hint = f" ('{name}' is a layer type: write {{type: {name}, ...}})"
            self.fail(path + ("block",), f"{label}: unknown block '{name}'" + (
                hint or (f" (known: {', '.join(known)})" if known else " (define it under 'blocks:')")))
            return None
        chain = [b for b, _ in self.trail]
        if name in chain:
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            self.fail(path + ("block",), f"{label}: block '{name}' uses itself ({cycle}); blocks cannot be recursive")
            return None
        block = self.find_block(name)
        if block is None:
            if name in self.bad_plugin_blocks:
                owner = self.reg.owners.get(("block", name), "?")
                self.fail(path + ("block",), f"{label}: block '{name}' (from plugin '{owner}') is invalid: "
                          f"{self.bad_plugin_blocks[name]}")
            return None  # a bad definition in this file: reported where it is
        args_raw = {k: v for k, v in raw.items() if k != "block"}
        args = self.validate_model(block.args, args_raw, path, f"{label} block '{name}': ")
        if args is None:
            return None
        body = substitute(block.layers, args.model_dump(mode="json"))
        outer = self.trail
        self.trail = outer + ((name, path),)
        try:
            kids = self.layer_list(body, ("blocks", name, "layers"))
        finally:
            self.trail = outer
        if kids is None:
            return None
        return Component(name, block.use_type, args, path, (tuple(kids),), outer)

    def generated(self, item: Any) -> Component:
        """A layer a composite makes itself (an auto shortcut's conv): resolved without a place."""
        name, params = (item, {}) if isinstance(item, str) else (item["type"], {
            k: v for k, v in item.items() if k != "type"})
        ltype = self.reg.get("layer", name)
        if ltype is None:
            raise ValueError(f"no layer type '{name}' is registered")
        return Component(name, ltype, ltype.Params.model_validate(params), (), trail=self.trail)

    def component_list(self, kind: Kind, raw: Any, path: KeyPath) -> list[Component] | None:
        """A list of components (data.augment, train.callbacks); None if any is wrong."""
        if not isinstance(raw, list):
            return [] if raw is None else None  # not a list: the section's schema says so
        out = [self.component(kind, item, path + (i,)) for i, item in enumerate(raw)]
        return [c for c in out if c is not None] if all(c is not None for c in out) else None

    def training_checks(self, source: SpecFile, loss: Component | None, scheduler: Component | None,
                        callbacks: list[Component]) -> None:
        """Every metric a scheduler or callback watches must exist, and not be a test metric."""
        has_val = source.data is not None and source.data.val_split > 0
        known = list(METRICS)
        for comp in ([scheduler] if scheduler else []) + callbacks:
            metric = comp.type.monitor(comp.params)
            if metric is None:
                continue
            path = comp.path + ("monitor",) if comp.path + ("monitor",) in self.loc.values else comp.path
            label = f"{path_str(comp.path)} {comp.name}"
            if metric not in known:
                self.fail(path, f"{label}: unknown metric '{metric}'{did_you_mean(metric, known)}; "
                          f"known: {', '.join(known)}")
            elif metric.startswith("test_"):
                self.fail(path, f"{label}: watching '{metric}' would choose on the test set; watch "
                          f"'val{metric[4:]}' and hold out a validation set with data.val_split")
            elif metric.startswith("val_") and not has_val:
                self.fail(path, f"{label}: '{metric}' needs a validation set: set data.val_split "
                          "(for example 0.1)")

    def augmentations_fit(self, augmentations: list[Component], inp: tuple[int, ...],
                          loss: Component | None) -> None:
        """Each augmentation's static rule on the input shape; mixing labels needs a soft-target loss."""
        for comp in augmentations:
            label = f"{path_str(comp.path)} {comp.name}"
            try:
                comp.type.check(comp.params, inp)
            except ShapeError as e:
                path = comp.path + (e.key,) if e.key and comp.path + (e.key,) in self.loc.keys else comp.path
                self.fail(path, f"{label}: {e.message}", key=path != comp.path)
            if comp.type.mixes_labels and loss is not None and not loss.type.soft_targets:
                self.fail(comp.path, f"{label}: mixes labels into class probabilities, which the loss "
                          f"'{loss.name}' cannot take; use cross_entropy")

    # -- shapes ---------------------------------------------------------------------------

    def shapes(self, inp: tuple[int, ...], layers: list[Component]) -> ShapeTrace:
        t = trace(inp, layers, self.generated)
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
            self.trail = comp.trail
            self.fail(path, f"{path_str(comp.path)} {comp.name}: {message}", key=True)
            self.trail = ()
        return t

    def within_limits(self, source: SpecFile, t: ShapeTrace, optimizer: Component | None) -> None:
        """Each ``limits:`` entry the model goes over: an error at the limit and at the layer
        where the running total (in the order the layers run) first crosses it."""
        from cnnspec.spec.cost import (
            DEFAULT_BATCH_SIZE,
            activation_profile,
            first_crossing,
            human,
            human_bytes,
            per_param_state,
            row_memory,
        )

        lim = source.limits
        assert lim is not None
        batch = source.data.batch_size if source.data is not None else DEFAULT_BATCH_SIZE
        state = per_param_state(optimizer)
        inp = BYTES
        for d in t.input_shape:
            inp *= d
        prof = activation_profile(t)
        checks: list[tuple[str, Any, Any, int, Any]] = [
            ("params", lim.params, lambda r: r.params, 0, lambda n, show: f"{n:,} parameters"),
            ("macs", lim.macs, lambda r: r.macs or 0, 0, lambda n, show: f"{show(n)} MACs per sample"),
            ("memory", lim.memory, lambda r: row_memory(r, prof, batch, state), (inp + prof.in_flight) * batch,
             lambda n, show: f"~{show(n)} estimated training memory at batch {batch:,}"),
        ]
        for key, limit, value, start, say in checks:
            if limit is None:
                continue
            found = first_crossing(t.rows, value, int(limit), start)
            if found is None:
                continue
            chain, reached = found
            comp = next((r.component for r in reversed(chain) if r.component is not None and r.component.path),
                        chain[0].component)
            total = start + sum(value(r) for r in t.rows)
            where = f"{path_str(comp.path)} {comp.name}"
            line = self.loc.where(comp.path, key=True)[0]
            at = f" (first crossed at {where}{f', line {line}' if line else ''})"
            show: Any = human_bytes if key == "memory" else human
            if show(total) == show(int(limit)):  # "needs 36.0 MiB, over the limit of 36.0 MiB": exact numbers
                show = (lambda n: f"{n:,} bytes") if key == "memory" else (lambda n: f"{n:,}")
            short = show(int(limit))
            self.fail(("limits", key), f"limits.{key}: the model needs {say(total, show)}, over the limit of "
                      f"{short}{at}")
            self.trail = comp.trail
            self.fail(comp.path, f"{where}: reaches {say(reached, show)} here, over limits.{key} ({short})",
                      key=True)
            self.trail = ()

    def dataset_fits(self, ds: Component, inp: tuple[int, ...], t: ShapeTrace) -> None:
        shape = ds.type.sample_shape(ds.params)
        classes = ds.type.num_classes(ds.params)
        self.problems += fit_problems(self.loc, ds.name, shape, classes, inp, t)


def fit_problems(loc: Located, dataset: str, shape: tuple[int, ...] | None, classes: int | None,
                 inp: tuple[int, ...], t: ShapeTrace) -> list[Problem]:
    """Located problems when a dataset's sample shape or class count does not fit the model.

    ``validate`` calls this with what a dataset declares, ``run`` with what its files hold.
    """
    problems = []
    if shape is not None and tuple(shape) != tuple(inp):
        problems.append(loc.problem(("input",), f"input is {fmt(inp)} but dataset '{dataset}' "
                                    f"gives samples of {fmt(tuple(shape))}"))
    out = t.output_shape
    if classes is not None and out != (classes,):
        last = len(t.rows) - 1
        problems.append(loc.problem(("layers", last), f"layers[{last}] {t.rows[-1].type}: the model ends in "
                                    f"{fmt(out)} but dataset '{dataset}' has {classes} classes "
                                    f"(the last layer should give {classes})"))
    return problems


# -- turning pydantic errors into located, readable lines ------------------------------------


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(
        type(v), f"the value {v!r}"
    )


def _known(names: list[str]) -> str:
    return f" (known: {', '.join(names)})" if names and len(names) <= 12 else ""


def _at(raw: Any, where: KeyPath, params: Any) -> Any:
    """The layer list at ``where`` in a composite's item as written, else its parameter's default."""
    try:
        for part in where:
            raw = raw[part]
        return raw
    except (KeyError, IndexError, TypeError):
        value = params.model_dump(mode="json")
        for part in where:
            value = value[part]
        return value


def _size(comp: Component) -> int:
    """How many layers a component stands for once repeats are expanded."""
    if not comp.children:
        return 1
    inner = sum(_size(c) for kids in comp.children for c in kids)
    return inner * (getattr(comp.params, "times", 1) if comp.name == "repeat" else 1)
