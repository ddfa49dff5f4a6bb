"""``--set key.path=value`` overrides applied to located spec data before it is checked."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from .errors import KeyPath, OverrideError
from .yamlpos import Located

__all__ = ["OverrideError", "apply", "parse", "set_path"]


def parse(arg: str) -> tuple[KeyPath, Any]:
    """``train.optimizer.lr=3e-4`` -> (("train", "optimizer", "lr"), 0.0003); values are YAML."""
    key, sep, raw = arg.partition("=")
    if not sep or not key.strip():
        raise OverrideError(f"--set {arg!r}: expected KEY.PATH=VALUE, e.g. train.epochs=1")
    path: list[str | int] = []
    for part in key.strip().split("."):
        if not part:
            raise OverrideError(f"--set {arg!r}: empty key in '{key}'")
        path.append(int(part) if part.isdigit() else part)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise OverrideError(f"--set {arg!r}: the value is not valid YAML ({e})") from None
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 as text; users mean a number
        try:
            value = float(value) if any(c in value for c in "eE.") and not value.isalpha() else value
        except ValueError:
            pass
    return tuple(path), value


def _default_component(path: KeyPath) -> str | None:
    """The default type of a component the spec left out (train.optimizer -> adam)."""
    from .spec import DataSection, TrainSection

    sections: dict[str, type[BaseModel]] = {"train": TrainSection, "data": DataSection}
    if len(path) == 2 and path[0] in sections:
        field = sections[str(path[0])].model_fields.get(str(path[1]))
        if field is not None and isinstance(field.default, str):
            return field.default
    return None


def set_path(data: Any, path: KeyPath, value: Any) -> None:
    """Set ``path`` in plain spec data to ``value``, as --set does: missing mappings are made
    (an omitted optimizer or loss gets its default type), a bare component name becomes
    ``{type: NAME}``, lists are indexed by number. Raises OverrideError naming the first part
    of the path that is not in the spec."""
    if not isinstance(data, dict):
        raise OverrideError("the spec is not a mapping")
    cur: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(cur, dict) and isinstance(part, str):
            if part not in cur or cur[part] is None:
                default = _default_component(path[: i + 1])  # an omitted optimizer or loss
                cur[part] = {"type": default} if default and nxt != "type" else {}
            elif isinstance(cur[part], str):  # `loss: x` -> {type: x}
                cur[part] = {"type": cur[part]}
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            if isinstance(cur[part], str):
                cur[part] = {"type": cur[part]}
            cur = cur[part]
        else:
            raise OverrideError(f"'{'.'.join(map(str, path[:i + 1]))}' is not in the spec")
    last = path[-1]
    if isinstance(cur, dict) and isinstance(last, str):
        cur[last] = value
    elif isinstance(cur, list) and isinstance(last, int) and last < len(cur):
        cur[last] = value
    else:
        raise OverrideError(f"'{'.'.join(map(str, path))}' is not in the spec")


def apply(located: Located, args: list[str]) -> Located:
    """Set each override in place; creates missing mappings, indexes lists by number."""
    for arg in args:
        path, value = parse(arg)
        try:
            set_path(located.data, path, value)
        except OverrideError as e:
            raise OverrideError(f"--set {arg!r}: {e}") from None
        located.overridden[path] = arg
    return located
