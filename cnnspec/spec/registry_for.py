"""The registry a spec asks for: the built-ins, its ``plugins:`` list (trusted files only), ``-p`` modules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cnnspec.errors import Problem
from cnnspec.registry.types import Registry
from cnnspec.spec.yamlpos import Located

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.registry.trust import Policy


def registry_for(located: Located, plugins: Sequence[str] = (), policy: Policy | None = None,
                 trust: bool = False) -> tuple[Registry, list[Problem]]:
    """The default registry extended by the spec's own ``plugins:`` list and by ``plugins`` (``-p``).

    ``-p`` modules raise PluginError (the user named them on the command line); a listed file
    that is not trusted (``policy``, default: the trust store, and every listed file when
    ``trust``) or fails to load is a located problem on its line, and nothing of it is imported.
    When the listed plugins cannot be registered together, the problem is on ``plugins:`` and
    the registry is the default one.
    """
    from cnnspec.registry.manager import PluginError, default_registry, load_local_plugin, registry_with

    data = located.data
    listed = data.get("plugins") if isinstance(data, dict) else None
    problems: list[Problem] = []
    modules = [load_local_plugin(ref) for ref in plugins]  # -p: the user named them
    refs = listed if isinstance(listed, list) else []
    if refs:
        from cnnspec.registry.trust import Policy  # only when a spec names plugins: validate's start-up stays lean

        if policy is None:
            policy = Policy(listed=trust, how=f"cnnspec trust {located.file}")
        policy.files = policy.files | frozenset(str(Path(ref).resolve()) for ref in plugins)
    base = Path(located.file).parent
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
    return registry, problems
