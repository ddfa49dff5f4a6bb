"""cnnspec: describe a CNN in a YAML file, check it like a compiler, build and train it with torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnnspec.errors import Problem, SpecError
from cnnspec.spec.sections import Spec
from cnnspec.version import __version__ as __version__

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from cnnspec.registry.types import Registry
    from cnnspec.spec.check import CheckResult

__all__ = ["Problem", "Spec", "SpecError", "build_model", "check_file", "load_spec", "loads_spec"]


def check_file(path: str, registry: Registry | None = None, plugins: Sequence[str] = (),
               trust: bool = False) -> CheckResult:
    """Check a spec file and return a ``cnnspec.spec.check.CheckResult`` (never raises SpecError).

    ``plugins`` are extra plugin modules or .py files to load, like ``-p`` on the command line.
    Plugin files the spec lists load only if trusted (``cnnspec trust``), or with ``trust=True``
    (``--trust``): this call trusts them.
    """
    from cnnspec.spec.load import check_file as _check_file

    return _check_file(path, registry, plugins, trust=trust)


def load_spec(path: str, registry: Registry | None = None, plugins: Sequence[str] = ()) -> Spec:
    """Load and validate a spec file; raise SpecError with every located problem."""
    from cnnspec.spec.load import load_spec as _load_spec

    return _load_spec(path, registry, plugins)


def loads_spec(text: str, file: str = "<string>", registry: Registry | None = None) -> Spec:
    """Like load_spec, from YAML text."""
    from cnnspec.spec.check import check
    from cnnspec.spec.yamlpos import load

    result = check(load(text, file), registry)
    if result.spec is None:
        raise SpecError(result.problems, file)
    return result.spec


def build_model(spec: Spec) -> nn.Sequential:
    """Compile a checked spec into a ``torch.nn.Sequential`` (imports torch)."""
    from cnnspec.build.model import build_model as _build

    return _build(spec)
