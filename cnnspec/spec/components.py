"""Resolves a named component (layer, optimizer, loss, ...) against the registry, with located problems."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from cnnspec.errors import KeyPath, PluginError, did_you_mean, path_str
from cnnspec.registry.types import Kind, Registry
from cnnspec.spec.explain import explain
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.sections import Component


class Resolver:
    """Turns ``NAME`` or ``{type: NAME, ...params}`` into a Component, reporting what is wrong.

    ``plugins_failed``: a plugin the spec lists was not loaded (untrusted, failed), so an
    unknown name most likely belongs to it and the hint says so.
    """

    def __init__(self, report: Reporter, registry: Registry, plugins_failed: bool = False) -> None:
        self.report = report
        self.reg = registry
        self.plugins_failed = plugins_failed

    def validate_model(self, model: type[BaseModel], data: Any, base: KeyPath, prefix: str) -> Any:
        """``model`` validated from ``data``, or None after reporting each error under ``base``."""
        try:
            return model.model_validate(data)
        except ValidationError as e:
            for path, message, key in explain(e, data, model):
                self.report.fail(base + path, prefix + message, key=key)
            return None

    def parse_ref(self, kind: Kind, raw: Any, path: KeyPath) -> tuple[str, dict[str, Any]] | None:
        """A bare name or {type: NAME, ...} as (name, params); None after reporting a problem."""
        fail = self.report.fail
        if isinstance(raw, str):
            return raw, {}
        if isinstance(raw, dict):
            if "type" not in raw:
                also = " (or 'block' for a named block)" if kind == "layer" else ""
                fail(path, f"{path_str(path)}: a {kind} mapping needs a 'type' key{also}")
                return None
            name = raw["type"]
            if not isinstance(name, str):
                fail(path + ("type",), f"{path_str(path)}: 'type' must be a name, got {name!r}")
                return None
            return name, {k: v for k, v in raw.items() if k != "type"}
        fail(path, f"{path_str(path)}: expected a {kind} name or {{type: NAME, ...}}, got {kind_of(raw)}")
        return None

    def component(self, kind: Kind, raw: Any, path: KeyPath) -> Component | None:
        """The component written at ``path``, its parameters validated; None after reporting."""
        parsed = self.parse_ref(kind, raw, path)
        if parsed is None:
            return None
        name, params = parsed
        label = path_str(path)
        where = path + ("type",) if isinstance(raw, dict) else path
        try:
            ctype = self.reg.get(kind, name)
        except PluginError as e:  # a plugin registered the name lazily and its module failed
            self.report.fail(where, f"{label}: {e}")
            return None
        if ctype is None:
            if self.plugins_failed:  # most likely the type of the plugin that did not load
                hint = "; a plugin listed under 'plugins:' was not loaded (see its error)"
            else:
                hint = did_you_mean(name, self.reg.names(kind)) or _known(self.reg.names(kind)) or (
                    "; if a plugin provides it, list the plugin under 'plugins:' or pass -p")
            self.report.fail(where, f"{label}: unknown {kind} type '{name}'{hint}")
            return None
        p = self.validate_model(ctype.Params, params, path, f"{label} {name}: ")
        return None if p is None else Component(name, ctype, p, path, trail=self.report.trail)

    def component_list(self, kind: Kind, raw: Any, path: KeyPath) -> list[Component] | None:
        """A list of components (data.augment, train.callbacks); None if any is wrong."""
        if not isinstance(raw, list):
            return [] if raw is None else None  # not a list: the section's schema says so
        out = [self.component(kind, item, path + (i,)) for i, item in enumerate(raw)]
        return [c for c in out if c is not None] if all(c is not None for c in out) else None


def kind_of(v: Any) -> str:
    """What a value is, as a problem message says it: a mapping, a list, text, the value 3."""
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(
        type(v), f"the value {v!r}"
    )


def _known(names: list[str]) -> str:
    return f" (known: {', '.join(names)})" if names and len(names) <= 12 else ""
