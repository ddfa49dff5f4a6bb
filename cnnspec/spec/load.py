"""A spec file to a CheckResult: read it, apply ``--set`` overrides, check it and its sweep section."""

from __future__ import annotations

from collections.abc import Sequence

from cnnspec.errors import SpecError
from cnnspec.registry.types import Registry
from cnnspec.spec.check import CheckResult, check
from cnnspec.spec.overrides import apply
from cnnspec.spec.sections import Spec
from cnnspec.spec.sweepspace import with_sweep_problems
from cnnspec.spec.yamlpos import load_file


def check_file(path: str, registry: Registry | None = None, plugins: Sequence[str] = (),
               overrides: Sequence[str] = (), trust: bool = False) -> CheckResult:
    """Read a spec file, apply ``--set`` overrides, check it; YAML problems come back as
    problems, never as SpecError (a malformed override raises OverrideError). ``trust``: the
    plugin files the spec lists are trusted for this call (``--trust``)."""
    try:
        located = load_file(path)
    except SpecError as e:
        return CheckResult(path, problems=e.problems)
    apply(located, list(overrides))
    result = check(located, registry, plugins, trust=trust)
    if isinstance(located.data, dict) and isinstance(located.data.get("sweep"), dict):
        result = with_sweep_problems(located, result)
    return result


def load_spec(path: str, registry: Registry | None = None, plugins: Sequence[str] = ()) -> Spec:
    """Read and check a spec file; raise SpecError with every located problem."""
    result = check_file(path, registry, plugins)
    if result.spec is None:
        raise SpecError(result.problems, path)
    return result.spec
