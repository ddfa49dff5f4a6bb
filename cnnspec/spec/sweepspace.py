"""The ``sweep:`` section of a spec: its model, its static checks, and each trial's spec.

Pure arithmetic and pydantic like ``check``: ``validate`` runs these checks too, so this module
must not import torch or optuna. A sweep is valid when every key of ``space`` names a place in
the spec and every value it can take has the type that place needs; whether a combination of
values fits (shapes, the dataset) is a property of a trial, checked by ``check_trial``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnnspec.errors import KeyPath, Problem, did_you_mean, path_str
from cnnspec.registry.params import NonNegInt, PosInt
from cnnspec.spec.metrics import DEFAULT_MONITOR, METRICS, minimised, split_of
from cnnspec.spec.yamlpos import Located

RANGES = ("uniform", "log_uniform", "int", "log_int")
DEFAULT_TRIALS = 20
MAX_GRID = 100_000
SECTION: KeyPath = ("sweep",)
SPACE: KeyPath = ("sweep", "space")


class SweepSection(BaseModel):
    """``sweep:``: what to search, how, and for how many trials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: PosInt | None = Field(
        None, description=f"trials in all, every worker together (default {DEFAULT_TRIALS}, or the whole grid)")
    metric: str = Field(DEFAULT_MONITOR, description="the per-epoch metric to optimise: " + ", ".join(METRICS))
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: maximize accuracies, minimize losses")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna's TPE, random search, or grid")
    seed: NonNegInt | None = Field(
        0, description="seeds the sampler: the same seed draws the same trials; null draws one")
    pruner: Literal["median", "none"] = Field(
        "median", description="stop a trial whose metric is worse than the median of earlier trials at the same epoch")
    pruner_startup_trials: NonNegInt = Field(5, description="finished trials before the pruner starts pruning")
    pruner_warmup_epochs: NonNegInt = Field(0, description="epochs of each trial that are never pruned")
    space: dict[str, Any] = Field(
        min_length=1, description="KEY.PATH: [choices...] or {uniform|log_uniform|int|log_int: [low, high]}")


@dataclass(frozen=True)
class Param:
    """One dimension of the search: a key path in the spec and the values it may take."""

    key: str  # as written, e.g. "train.optimizer.lr"; Optuna's parameter name
    path: KeyPath  # ("train", "optimizer", "lr")
    kind: str  # "choice" or one of RANGES
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None

    @property
    def labels(self) -> list[Any]:
        """The choices as Optuna's categorical values: plain scalars, or flow YAML text."""
        plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choices)
        distinct = len({(type(v), v) for v in self.choices} if plain else ()) == len(self.choices)
        if plain and distinct and not _mixes_bools(self.choices):
            return list(self.choices)
        return [label(v) for v in self.choices]

    def value(self, sampled: Any) -> Any:
        """The spec value for what Optuna sampled (a categorical label back to its sub-tree)."""
        if self.kind != "choice":
            return sampled
        labels = self.labels
        return self.choices[labels.index(sampled)] if sampled in labels else sampled

    def grid_points(self) -> int | None:
        """How many values ``grid`` would list, by arithmetic (nothing is built); None for a continuous range."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int":
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.kind == "uniform" and self.step:
            q = (self.high - self.low) / self.step
            if not math.isfinite(q):  # past float range: the exact quotient
                return math.floor((Fraction(self.high) - Fraction(self.low)) / Fraction(self.step)) + 1
            return int(math.floor(q + 1e-9)) + 1  # as grid counts them
        return None

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous range. Only for a grid whose
        size (``grid_points``) was checked: it builds the whole list."""
        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "uniform" and self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(n)]
        return None

    def where(self, sampled: Any) -> KeyPath:
        """Where in the sweep section a sampled value is written (the choice, else the range)."""
        if self.kind == "choice":
            labels = self.labels
            if sampled in labels:
                return SPACE + (self.key, labels.index(sampled))
            return SPACE + (self.key,)
        return SPACE + (self.key, self.kind)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep section."""

    section: SweepSection
    params: tuple[Param, ...]

    @property
    def metric(self) -> str:
        return self.section.metric

    @property
    def direction(self) -> str:
        d = self.section.direction
        return d if d else ("minimize" if minimised(self.metric) else "maximize")

    @property
    def grid_size(self) -> int | None:
        if self.section.sampler != "grid":
            return None
        return math.prod(p.grid_points() or 0 for p in self.params)

    @property
    def trials(self) -> int:
        size = self.grid_size
        if size is not None:
            return min(self.section.trials or size, size)
        return self.section.trials or DEFAULT_TRIALS

    def fingerprint(self, base: dict[str, Any]) -> str:
        """Identifies the search: the spec without its sweep, the space, metric, sampler, seed.

        Left out on purpose: ``trials`` (raise it to extend a sweep) and the pruner settings.
        """
        s = self.section
        doc = {"spec": {k: v for k, v in base.items() if k != "sweep"}, "space": s.space, "metric": s.metric,
               "direction": self.direction, "sampler": s.sampler, "seed": s.seed}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def label(value: Any) -> str:
    """A value as one line of flow YAML: ``{type: dropout, p: 0.25}``, ``[]``, ``3``."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _mixes_bools(values: tuple[Any, ...]) -> bool:
    return any(isinstance(v, bool) for v in values) and any(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def parse_key(key: str) -> KeyPath | None:
    """``layers.0.out_channels`` or ``layers[0].out_channels`` -> ("layers", 0, "out_channels")."""
    path: list[str | int] = []
    for seg in key.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", seg)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        name = m.group(1)
        if name:
            path.append(int(name) if name.isdigit() else name)
        elif not path:
            return None
        path += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return tuple(path)


# -- checking the section ---------------------------------------------------------------------


def check_sweep(located: Located, registry: Any, base_valid: bool = True) -> tuple[Sweep | None, list[Problem]]:
    """Check ``located.data["sweep"]``; ``registry`` is the base spec's (from its check).

    With ``base_valid`` false (the spec itself has problems, reported elsewhere) only what the
    section says on its own is checked; the values' types need a valid spec to be tried in.
    """
    data = located.data
    raw = data.get("sweep") if isinstance(data, dict) else None
    problems: list[Problem] = []

    def fail(path: KeyPath, message: str, key: bool = False) -> None:
        problems.append(located.problem(path, message, key=key))

    if not isinstance(raw, dict):
        fail(SECTION, f"sweep: expected a mapping (trials, metric, space, ...), got {_kind(raw)}")
        return None, problems
    section = _section(raw, fail)  # its problems reported; the space is still checked below, independently
    space = raw.get("space")
    params: list[Param] = []
    for key, spec in (space.items() if isinstance(space, dict) else ()):
        p = _param(str(key), spec, fail)
        if p is not None:
            params.append(p)
    for i, p in enumerate(params):  # one key inside another's value: which value would win?
        for q in params[:i]:
            short, long_ = sorted((p, q), key=lambda x: len(x.path))
            if long_.path[: len(short.path)] == short.path:
                fail(SPACE + (p.key,), f"sweep.space.{p.key}: overlaps '{q.key}' (one key inside the other's value)",
                     key=True)
    if raw.get("sampler") == "grid":
        for p in params:
            if p.grid_points() is None:
                fail(SPACE + (p.key,), f"sweep.space.{p.key}: the grid sampler needs a list of choices, "
                     "{int: [low, high]} or {uniform: [low, high], step: STEP}", key=True)
    if base_valid:
        for p in params:
            problems += _check_values(located, registry, p)
    if problems or section is None:
        return None, problems
    sweep = Sweep(section, tuple(params))
    if sweep.grid_size is not None and sweep.grid_size > MAX_GRID:
        n = sweep.grid_size
        fail(SECTION + ("sampler",), "sweep.sampler: the grid has "
             + (f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}") + f" points (at most {MAX_GRID:,})")
    if base_valid:
        problems += _check_base(located, sweep)
    return (None if problems else sweep), problems


def _section(raw: dict[str, Any], fail: Any) -> SweepSection | None:
    """The section's own keys (all but the space's values) as a SweepSection; None if they have problems."""
    section: SweepSection | None = None
    try:
        section = SweepSection.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                fail(SECTION + loc, f"sweep: unknown key '{loc[-1]}'"
                     + did_you_mean(str(loc[-1]), SweepSection.model_fields), key=True)
            elif err["type"] == "missing":
                fail(SECTION, f"sweep: missing required key '{loc[-1]}'", key=True)
            elif loc[:1] != ("space",) or len(loc) == 1:
                where = SECTION + loc[:1]
                fail(where, f"{path_str(where)}: {_msg(err)}")
    if section is not None and section.metric not in METRICS:
        fail(SECTION + ("metric",), f"sweep.metric: unknown metric '{section.metric}'"
             + (did_you_mean(section.metric, METRICS) or f" (known: {', '.join(METRICS)})"))
    return section


def _param(key: str, spec: Any, fail: Any) -> Param | None:
    where = SPACE + (key,)
    label_ = f"sweep.space.{key}"
    path = parse_key(key)
    if path is None or not path:
        fail(where, f"{label_}: not a key path (write it like train.optimizer.lr or layers.0.out_channels)", key=True)
        return None
    if path[0] == "sweep":
        fail(where, f"{label_}: a sweep cannot search its own settings", key=True)
        return None
    if isinstance(spec, list):
        if not spec:
            fail(where, f"{label_}: an empty list of choices")
            return None
        return Param(key, path, "choice", tuple(spec))
    if not isinstance(spec, dict):
        fail(where, f"{label_}: expected a list of choices or {{uniform|log_uniform|int|log_int: [low, high]}}, "
             f"got {_kind(spec)} (a fixed value belongs in the spec, or in --set)")
        return None
    kinds = [k for k in spec if k in RANGES]
    for k in spec:
        if k not in RANGES and k != "step":
            fail(where + (k,), f"{label_}: unknown key '{k}'" + (did_you_mean(k, [*RANGES, "step"])
                 or f" (expected one of {', '.join(RANGES)}, and step)"), key=True)
            return None
    if len(kinds) != 1:
        fail(where, f"{label_}: give exactly one of {', '.join(RANGES)}")
        return None
    kind = kinds[0]
    bounds = spec[kind]
    integer = kind in ("int", "log_int")
    def number(v: Any) -> bool:
        return type(v) is int if integer else isinstance(v, (int, float)) and not isinstance(v, bool)

    if not (isinstance(bounds, list) and len(bounds) == 2 and all(number(b) for b in bounds)):
        what = "integers" if integer else "numbers"
        fail(where + (kind,), f"{label_}: {kind} takes [low, high], two {what}, got {bounds!r}")
        return None
    low, high = bounds
    if not low < high:
        fail(where + (kind,), f"{label_}: low must be below high, got [{low}, {high}]")
        return None
    if kind.startswith("log") and low <= 0:
        fail(where + (kind,), f"{label_}: a log range needs low > 0, got {low}")
        return None
    step = spec.get("step")
    if step is not None:
        if kind.startswith("log"):
            fail(where + ("step",), f"{label_}: step does not go with a log range", key=True)
            return None
        if not number(step) or step <= 0:
            what = "integer" if integer else "number"
            fail(where + ("step",), f"{label_}: step must be a positive {what}, got {step!r}")
            return None
    return Param(key, path, kind, (), low, high, step)


def _check_base(located: Located, sweep: Sweep) -> list[Problem]:
    """What the whole search needs from the spec: data to train on, a validation split for val_*."""
    data = located.data
    out = []
    if not isinstance(data.get("data"), dict):
        out.append(located.problem(SECTION, "sweep: the spec needs a 'data' section to train on", key=True))
    elif split_of(sweep.metric) == "val" and not data["data"].get("val_split") and not any(
            p.path == ("data", "val_split") for p in sweep.params):
        out.append(located.problem(SECTION + ("metric",), f"sweep.metric: {sweep.metric} needs a validation split: "
                                   "set data.val_split (e.g. 0.1), or optimise a test_ metric"))
    return out


def _candidates(p: Param) -> list[Any]:
    """Values that show whether every value of ``p`` has the right type: each choice, or a
    range's ends and a point inside it (so an integer key given a float range fails)."""
    if p.kind == "choice":
        return list(p.labels)
    if p.kind == "uniform":
        return [p.low, p.high] if p.step else [p.low, p.low + (p.high - p.low) * 0.377, p.high]
    if p.kind == "log_uniform":
        return [p.low, math.exp(math.log(p.low) + (math.log(p.high) - math.log(p.low)) * 0.377), p.high]
    return [p.low, p.high]


def _check_values(located: Located, registry: Any, p: Param) -> list[Problem]:
    """Try each candidate value in the spec alone; report what is not a shape or fit problem."""
    from cnnspec.spec.check import check
    from cnnspec.spec.overrides import OverrideError, set_path

    out: list[Problem] = []
    seen: set[tuple[int, int, str]] = set()
    base = {k: v for k, v in located.data.items() if k != "sweep"}
    for sampled in _candidates(p):
        data = copy.deepcopy(base)
        try:
            set_path(data, p.path, copy.deepcopy(p.value(sampled)))
        except OverrideError as e:
            return [located.problem(SPACE + (p.key,), f"sweep.space.{p.key}: {_not_there(data, p.path, e)}", key=True)]
        result = check(Located(data, located.file, located.keys, located.values, located.overridden), registry)
        for q in result.problems:
            if _trial_dependent(q, result):
                continue
            about_key = "unknown key" in q.message or "is not in the spec" in q.message
            msg = f"sweep.space.{p.key}: {q.message}"
            if not about_key and p.kind != "choice":
                msg += f" (at {p.kind} value {sampled:g})"
                if "integer" in q.message and not p.kind.endswith("int"):
                    msg += "; use {int: [low, high]} for an integer range"
            where = located.where(SPACE + (p.key,), key=True) if about_key else located.where(p.where(sampled))
            if (where[0], where[1], msg) not in seen:
                seen.add((where[0], where[1], msg))
                out.append(Problem(where[0], where[1], msg, SPACE + (p.key,), located.file))
    return out


def _trial_dependent(q: Problem, result: Any) -> bool:
    """A shape or dataset-fit problem: a property of one combination, not of the value's type.

    Shapes are traced only once every layer parsed and the input is valid, so then every
    problem under ``layers`` or at ``input`` comes from shape arithmetic or the dataset fit, and
    one at ``limits`` from a budget this combination exceeds (an invalid trial, not a bad value).
    """
    return result.trace is not None and bool(q.path) and q.path[0] in ("layers", "input", "limits")


def _not_there(data: Any, path: KeyPath, e: Exception) -> str:
    """Why ``path`` names no place in the spec, in the user's words."""
    cur: Any = data
    for i, part in enumerate(path):
        if isinstance(cur, list):
            if not isinstance(part, int):
                return f"{path_str(path[:i])} is a list: index it by number, e.g. {path_str(path[:i])}.0"
            if part >= len(cur):
                return f"{path_str(path[:i]) or 'the list'} has {len(cur)} items (0 to {len(cur) - 1}), no {part}"
            cur = cur[part]
        elif isinstance(cur, dict):
            if isinstance(part, int):
                return f"{path_str(path[:i])} is a mapping, not a list"
            cur = cur.get(part)
        else:
            return f"{path_str(path[:i])} is a single value ({cur!r}); it has no '{part}'"
    return str(e)


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(type(v), f"the value {v!r}")


def _msg(err: Any) -> str:
    msg = str(err["msg"])
    got = err.get("input")
    said = isinstance(got, (dict, list)) or ", got " in msg or repr(got)[:40] in msg
    return msg[0].lower() + msg[1:] + ("" if said else f", got {got!r}")


# -- trials -----------------------------------------------------------------------------------


def trial_data(located: Located, values: dict[str, Any], sweep: Sweep) -> dict[str, Any]:
    """The spec's data with a trial's values set and the sweep section removed."""
    from cnnspec.spec.overrides import set_path

    data = copy.deepcopy({k: v for k, v in located.data.items() if k != "sweep"})
    for p in sweep.params:  # shorter paths first: a whole sub-tree before a key inside it
        if p.key in values:
            set_path(data, p.path, copy.deepcopy(p.value(values[p.key])))
    return data


def check_trial(located: Located, registry: Any, sweep: Sweep,
                values: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """A trial's spec data and its located problems (none: it may train). No torch.

    A problem inside a swept value points at that value in the sweep section and names it.
    """
    from cnnspec.spec.check import check

    data = trial_data(located, values, sweep)
    result = check(Located(data, located.file, located.keys, located.values, located.overridden), registry)
    out = []
    for q in result.problems:
        for p in sweep.params:
            if p.key in values and q.path[: len(p.path)] == p.path:
                line, col = located.where(p.where(values[p.key]))
                q = Problem(line, col, f"{q.message} (sweep: {p.key}={label(p.value(values[p.key]))})", q.path, q.file)
                break
        out.append(q)
    if not out and split_of(sweep.metric) == "val" and not (data.get("data") or {}).get("val_split"):
        out.append(located.problem(SECTION + ("metric",), f"sweep.metric: {sweep.metric} needs data.val_split > 0"))
    return data, sorted(out)


def with_sweep_problems(located: Located, result: Any) -> Any:
    """``check``'s result for a spec with a ``sweep:`` section, its problems added (validate)."""
    if not isinstance(located.data, dict) or located.data.get("sweep") is None:
        return result
    registry = result.spec.registry if result.spec is not None else None
    _, problems = check_sweep(located, registry, base_valid=result.spec is not None)
    if problems:
        result.problems = sorted([*result.problems, *problems])
        result.spec = None
    return result
