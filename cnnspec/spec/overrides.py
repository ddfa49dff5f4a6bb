"""``--set key.path=value`` overrides applied to located spec data before it is checked."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cnnspec.errors import KeyPath, OverrideError
from cnnspec.spec.yamlpos import Located

__all__ = ["OverrideError", "apply", "parse", "set_path"]


MAX_KEY_PARTS = 20  # a spec nests a few levels; a longer key path names nothing


def _shown(arg: str, limit: int = 80) -> str:
    """The argument as quoted in a message, cut short: a huge --set must not make a huge line."""
    return repr(arg if len(arg) <= limit else arg[:limit] + "...")


def parse(arg: str) -> tuple[KeyPath, Any]:
    """``train.optimizer.lr=3e-4`` -> (("train", "optimizer", "lr"), 0.0003); values are YAML,
    read as safely as spec files (no tags, no alias bombs, no deep nesting, no huge numbers)."""
    from cnnspec.errors import SpecError
    from cnnspec.spec.yamlpos import load

    key, sep, raw = arg.partition("=")
    if not sep or not key.strip():
        raise OverrideError(f"--set {_shown(arg)}: expected KEY.PATH=VALUE, e.g. train.epochs=1")
    parts = key.strip().split(".")
    if len(parts) > MAX_KEY_PARTS:
        raise OverrideError(f"--set {_shown(arg)}: the key has {len(parts)} parts; no spec key is that deep")
    path: list[str | int] = []
    for part in parts:
        if not part:
            raise OverrideError(f"--set {_shown(arg)}: empty key in {_shown(key)}")
        path.append(int(part) if part.isdigit() and len(part) < 10 else part)
    value: Any = ""
    if raw.strip():
        try:
            value = load(raw, "--set").data
        except SpecError as e:
            first = e.problems[0].message if e.problems else "invalid"
            if first.startswith("the file is empty"):
                first = "the value is empty (only a comment?)"
            raise OverrideError(f"--set {_shown(arg)}: the value is not valid YAML ({first[:200]})") from None
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 as text; users mean a number
        try:
            value = float(value) if any(c in value for c in "eE.") and not value.isalpha() else value
        except ValueError:
            pass
    return tuple(path), value


def _default_component(path: KeyPath) -> str | None:
    """The default type of a component the spec left out (train.optimizer -> adam)."""
    from cnnspec.spec.sections import DataSection, TrainSection

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
            raise OverrideError(f"--set {_shown(arg)}: {e}") from None
        located.overridden[path] = arg if len(arg) <= 80 else arg[:80] + "..."
    return located
