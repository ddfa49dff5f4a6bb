"""Named, parameterised blocks: their definitions, typed arguments and ``$name`` substitution.

A block is defined under ``blocks:`` in a spec (or shipped by a plugin as a registry.BlockType)
and used as a layer: ``{block: NAME, ...arguments, repeat: N}``. A use becomes a ``BlockUse``
component whose children are the block's layers with the arguments substituted; check.py does
the expanding so that every error keeps its place in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, TypeAdapter, ValidationError, create_model

from cnnspec.errors import KeyPath, did_you_mean
from cnnspec.registry.params import Int, Size2
from cnnspec.registry.types import CompositeType, Params, Shape, Tracer

PARAM_TYPES: dict[str, Any] = {
    "int": Int, "float": float, "bool": StrictBool, "str": StrictStr, "size": Size2,
    "list": list[Any], "any": Any,
}
RESERVED = ("block", "repeat")  # keys of a use that are not arguments
REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING = object()


def _a(word: str) -> str:
    """``an int``, ``a float``: the article for a type's name."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


class ParamDecl(BaseModel):
    """``{type: int, default: 1, description: ...}``: one parameter of a block."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    type: str = Field(description=f"one of {', '.join(PARAM_TYPES)}")
    default: Any = Field(None, description="value when the use leaves it out (required if absent)")
    description: str | None = Field(None, description="what it means")


class BlockDef(BaseModel):
    """One entry of ``blocks:``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    params: dict[str, Any] = Field(
        default={},
        description="NAME: TYPE (required) or NAME: {type: TYPE, default: VALUE, description: ...}; "
                    f"TYPE is one of {', '.join(PARAM_TYPES)}")
    layers: Annotated[list[Any], Field(min_length=1)] = Field(
        description="the block's layers; $NAME stands for the argument NAME")
    description: str | None = Field(None, description="what the block is")


@dataclass
class Block:
    """A compiled block definition."""

    name: str
    layers: list[Any]
    args: type[Params]  # the pydantic model of its arguments
    owner: str  # "spec", or the plugin that registered it
    description: str = ""

    def __post_init__(self) -> None:
        self.use_type = BlockUse(self)


def refs(data: Any, path: KeyPath = ()) -> list[tuple[KeyPath, str]]:
    """Every ``$name`` in a raw body, with its path (relative to ``data``)."""
    if isinstance(data, str):
        m = REF.match(data)
        return [(path, m.group(1))] if m else []
    if isinstance(data, dict):
        return [r for k, v in data.items() for r in refs(v, path + (k,))]
    if isinstance(data, list):
        return [r for i, v in enumerate(data) for r in refs(v, path + (i,))]
    return []


def substitute(data: Any, args: dict[str, Any]) -> Any:
    """A copy of ``data`` with each whole-value ``$name`` replaced by ``args[name]``."""
    if isinstance(data, str):
        m = REF.match(data)
        return args[m.group(1)] if m and m.group(1) in args else data
    if isinstance(data, dict):
        return {k: substitute(v, args) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, args) for v in data]
    return data


def compile_block(name: str, raw: Any, owner: str) -> tuple[Block | None, list[tuple[KeyPath, str, bool]]]:
    """A Block from its definition, or the problems as (path inside the definition, message, at key)."""
    from cnnspec.spec.explain import explain

    try:
        d = BlockDef.model_validate(raw)
    except ValidationError as e:
        return None, explain(e, raw, BlockDef)
    problems: list[tuple[KeyPath, str, bool]] = []
    if not NAME.match(name):
        problems.append(((), f"block name '{name}' must be letters, digits and _ (not starting with a digit)", True))
    fields: dict[str, Any] = {}
    for pname, decl in d.params.items():
        where: KeyPath = ("params", pname)
        if not NAME.match(pname) or pname in RESERVED:
            why = "is reserved on a use" if pname in RESERVED else "must be letters, digits and _"
            problems.append((where, f"parameter name '{pname}' {why}", True))
            continue
        if isinstance(decl, str):
            decl_t, default, desc, tpath = decl, _MISSING, None, where
        elif isinstance(decl, dict):
            try:
                pd = ParamDecl.model_validate(decl)
            except ValidationError as e:
                problems += [(where + p, f"params.{pname}: {m}", k) for p, m, k in explain(e, decl, ParamDecl)]
                continue
            decl_t, desc, tpath = pd.type, pd.description, where + ("type",)
            default = decl["default"] if "default" in decl else _MISSING
        else:
            problems.append((where, f"params.{pname}: expected a type ({', '.join(PARAM_TYPES)}) or "
                             f"{{type: T, default: V}}, got {decl!r}", False))
            continue
        if decl_t not in PARAM_TYPES:
            problems.append((tpath, f"params.{pname}: unknown parameter type '{decl_t}'"
                             + (did_you_mean(decl_t, PARAM_TYPES) or f" (known: {', '.join(PARAM_TYPES)})"), False))
            continue
        t = PARAM_TYPES[decl_t]
        if default is not _MISSING and default is not None:
            try:
                default = TypeAdapter(t).validate_python(default)
            except ValidationError:
                problems.append((where + ("default",), f"params.{pname}: default {default!r} is not {_a(decl_t)}",
                                 False))
                continue
        fields[pname] = (t | None if default is None else t,
                         Field(... if default is _MISSING else default, description=desc or decl_t))
    known = list(d.params)
    for rpath, ref in refs(d.layers):
        if ref not in d.params:
            hint = did_you_mean(ref, known)
            hint = hint.replace("'", "'$", 1) if hint else (f" (its parameters: {', '.join(known)})" if known
                                                             else " (it declares no params)")
            problems.append((("layers",) + rpath, f"'${ref}' is not a parameter of block '{name}'{hint}", False))
    if problems:
        return None, problems
    model = create_model(f"Block_{name}", __base__=Params, **fields)
    return Block(name, d.layers, model, owner, d.description or ""), []


class BlockUse(CompositeType[Params]):
    """A use of a named block: its layers in order, as one nested nn.Sequential."""

    chain = True

    def __init__(self, block: Block) -> None:
        self.block = block
        self.name = block.name
        self.Params = block.args
        self.description = block.description or f"block '{block.name}'"

    def paths(self, p: Params) -> list[tuple[str | int, ...]]:
        return []  # its layers come from the definition, not from the use

    def trace(self, p: Params, shape: Shape, t: Tracer) -> Shape:
        return t.run(0, shape)

    def info(self, p: Params) -> dict[str, Any]:
        return {"kind": "block"}

    def item_dict(self, p: Params) -> dict[str, Any]:
        return {"block": self.name, **p.model_dump(mode="json")}

    def assemble(self, p: Params, shape: Shape, parts: list[Any]) -> Any:
        from torch import nn

        return nn.Sequential(*parts)
