"""Pydantic's validation errors as located, readable lines: one per problem, unions merged, did-you-mean."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from cnnspec.errors import KeyPath, did_you_mean, path_str
from cnnspec.spec.sections import DataSection, SpecFile, TrainSection

SECTIONS: dict[str, type[BaseModel]] = {"data": DataSection, "train": TrainSection}


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[KeyPath, tuple[Any, ...]]:
    """Split a pydantic loc into the part that exists in the data and the rest (union tags...)."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            return tuple(path), tuple(loc[i:])
        path.append(part)
    return tuple(path), ()


def _fields_at(model: type[BaseModel], path: KeyPath) -> list[str]:
    """Field names of the (sub)model at ``path``, for did-you-mean suggestions."""
    if len(path) == 1 and model is SpecFile and path[0] in SECTIONS:
        return list(SECTIONS[str(path[0])].model_fields)
    return list(model.model_fields) if not path else []


_TAGS = (("tuple", "a list [h, w]"), ("list", "a list"), ("literal", ""), ("int", "an integer"),
         ("float", "a number"), ("bool", "true or false"), ("str", "text"), ("none", "null"))


def _member_kind(tag: str) -> str:
    """What a union member pydantic names by ``tag`` accepts: tuple, literal, int or other."""
    tag = tag.lower()
    if tag.startswith(("tuple", "list")):
        return "tuple"
    if tag.startswith("literal"):
        return "literal"
    return "int" if "int" in tag else tag


def _tag_words(tag: str, err: Any) -> str:
    for prefix, words in _TAGS:
        if prefix in tag.lower():
            return words or str(err.get("ctx", {}).get("expected", tag))
    return tag


def _plain(err: Any) -> str:
    """One pydantic error as a short phrase, without the location."""
    t, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = f", got {value!r}"
    if t in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[t]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}{got}"
    if t in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{got}"
    if t in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if t in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if t in ("string_type",):
        return f"must be text{got}"
    if t == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ",").split(",")
        extra = did_you_mean(str(value), [s.strip(" '") for s in expected])
        return f"must be {ctx.get('expected')}{got}{extra}"
    if t == "string_pattern_mismatch":
        return f"does not match the pattern {ctx.get('pattern')}{got}"
    if t == "too_short":
        n = ctx.get("min_length")
        return f"needs at least {n} item{'s' if n != 1 else ''}{got}"
    if t in ("list_type", "tuple_type"):
        return f"must be a list{got}"
    if t in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys{got}"
    if t == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        said = isinstance(value, (dict, list)) or ", got " in msg or repr(value)[:40] in msg
        return msg if said else msg + got  # the value once: not "must be positive, got -1, got -1"
    msg = str(err["msg"])
    return msg[0].lower() + msg[1:] + got


def explain(e: ValidationError, data: Any, model: type[BaseModel]) -> list[tuple[KeyPath, str, bool]]:
    """Pydantic errors as (path, message, point-at-key) triples, unions merged into one line."""
    groups: dict[KeyPath, list[tuple[tuple[Any, ...], Any]]] = {}
    out: list[tuple[KeyPath, str, bool]] = []
    errors = e.errors()
    short: set[KeyPath] = set()
    for err in errors:
        loc = tuple(err["loc"])
        where = path_str(loc[:-1])
        if err["type"] == "extra_forbidden":
            name = str(loc[-1])
            hint = did_you_mean(name, _fields_at(model, loc[:-1]))
            out.append((loc, (f"{where}: " if where else "") + f"unknown key '{name}'" + hint, True))
            continue
        if err["type"] == "missing":
            parent, _ = _data_path(data, loc[:-1])
            if isinstance(loc[-1], int):  # a tuple written too short
                out.append((parent, f"{path_str(parent)}: too few items (item {loc[-1]} is missing)", False))
                short.add(parent)
            elif not any(tuple(x["loc"]) == loc[:-1] + (x["loc"][-1],) and did_you_mean(
                    str(x["loc"][-1]), [str(loc[-1])]) for x in errors if x["type"] == "extra_forbidden"):
                out.append((parent, f"missing required key '{loc[-1]}'" + (f" in {where}" if where else ""), False))
            continue
        path, rest = _data_path(data, loc)
        groups.setdefault(path, []).append((rest, err))
    for path, errs in groups.items():
        if path in short:  # said already: the list is too short (the other union members agree)
            continue
        label = path_str(path) or "spec"
        if len(errs) == 1:
            rest, err = errs[0]
            sub = path_str(tuple(r for r in rest if isinstance(r, int)))
            out.append((path, f"{label}{sub}: {_plain(err)}", False))
            continue
        # A union: prefer the member that matches the kind of value written.
        value = errs[0][1].get("input")
        want = "tuple" if isinstance(value, list) else "literal" if isinstance(value, str) else "int"
        chosen = [(r, er) for r, er in errs if r and _member_kind(str(r[0])) == want]
        if len(chosen) == 1:
            rest, err = chosen[0]
            sub = "".join(f"[{r}]" for r in rest[1:] if isinstance(r, int))
            out.append((path, f"{label}{sub}: {_plain(err)}", False))
            continue
        options = []
        for rest, err in errs:
            w = _tag_words(str(rest[0]) if rest else err["type"], err)
            if w not in options:
                options.append(w)
        out.append((path, f"{label}: must be {' or '.join(options)}, got {value!r}", False))
    return out
