"""A JSON Schema of the spec format, with every registered type's parameters, for editors."""

from __future__ import annotations

import json
from typing import Any

from cnnspec.registry.types import Kind, Registry
from cnnspec.spec.sections import DataSection, SpecFile, TrainSection

DIALECT = "https://json-schema.org/draft/2020-12/schema"


_LAYERS = {"type": "array", "items": {"$ref": "#/$defs/layer"}}
# what a composite's child-list fields stand for (see plugins/composites.py)
_MARKERS: dict[str, dict[str, Any]] = {
    "layers": _LAYERS,
    "branch": {"anyOf": [_LAYERS, {"$ref": "#/$defs/layer"}]},
}


def _unmark(node: Any) -> Any:
    if isinstance(node, dict):
        if "x-cnnspec" in node:
            return {**{k: v for k, v in node.items() if k != "x-cnnspec"}, **_MARKERS[node["x-cnnspec"]]}
        return {k: _unmark(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unmark(v) for v in node]
    return node


def _params_schema(params: Any, prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """A params model's schema with its $defs hoisted to the root under unique names."""
    schema = params.model_json_schema()
    schema = _unmark(schema)
    local = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name, d in local.items():
        text = text.replace(f'"#/$defs/{name}"', f'"#/$defs/{prefix}{name}"')
        defs[f"{prefix}{name}"] = json.loads(json.dumps(d).replace('"#/$defs/', f'"#/$defs/{prefix}'))
    return json.loads(text)


_REPEAT = {"type": "integer", "minimum": 1, "maximum": 1000,
           "description": "this many copies in a row, each with its own weights"}
_TRAINABLE = {"type": "boolean", "description": "false: its parameters do not train (fine-tuning)"}


def _component(reg: Registry, kind: Kind, defs: dict[str, Any]) -> dict[str, Any]:
    """``NAME`` or ``{type: NAME, ...params}`` for every registered type of ``kind``."""
    options: list[dict[str, Any]] = []
    bare = []
    for name, t in reg.items(kind):
        s = _params_schema(t.Params, f"{kind}_{name}_", defs)
        props = {"type": {"const": name, "description": t.description or name}, **s.get("properties", {})}
        if kind == "layer":
            props["repeat"], props["trainable"] = _REPEAT, _TRAINABLE
        options.append({
            "type": "object", "title": name, "description": t.description or name,
            "properties": props, "required": ["type", *s.get("required", [])],
            "additionalProperties": False,
        })
        if not s.get("required"):
            bare.append(name)
    if bare:
        options.insert(0, {"type": "string", "enum": bare, "description": f"a {kind} with default parameters"})
    if kind == "layer":
        block: dict[str, Any] = {"type": "string", "description": "a block under 'blocks:' or from a plugin"}
        options.append({
            "type": "object", "title": "block",
            "description": "a use of a named block; the other keys are its arguments",
            "properties": {"block": block, "repeat": _REPEAT, "trainable": _TRAINABLE}, "required": ["block"],
        })
    return {"anyOf": options}


_TEMPLATE = {"type": "string", "pattern": "^\\$[A-Za-z_][A-Za-z0-9_]*$", "description": "a block parameter: $NAME"}


def _body_layer(reg: Registry) -> dict[str, Any]:
    """A layer inside a block body: its values may be ``$NAME`` templates, so only its keys are
    checked here (a wrong key is caught as you type); cnnspec checks the values once substituted."""
    rules: list[dict[str, Any]] = []
    for name, t in reg.items("layer"):
        keys = ["type", "repeat", *t.Params.model_json_schema().get("properties", {})]
        rules.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                      "then": {"propertyNames": {"enum": keys}}})
    return {"anyOf": [{"type": "string"}, {"type": "object", "allOf": rules}]}


def _blocks(reg: Registry, defs: dict[str, Any]) -> dict[str, Any]:
    """``blocks:``: bodies are templates ($NAME values), so their layers' keys are checked here and
    their values by cnnspec."""
    from cnnspec.spec.blocks import BlockDef

    s = BlockDef.model_json_schema()
    s.pop("title", None)
    defs["block_layer"] = _body_layer(reg)
    s["properties"]["layers"]["items"] = {"$ref": "#/$defs/block_layer"}
    return {"anyOf": [{"type": "object", "additionalProperties": s}, {"type": "null"}],
            "description": "named, parameterised blocks of layers, used as {block: NAME, ...arguments}"}


def _sweep() -> dict[str, Any]:
    """``sweep:``: the section's own keys, and each space entry a list of choices or one range."""
    from cnnspec.spec.sweepspace import RANGES, SweepSection

    s = SweepSection.model_json_schema()
    s.pop("title", None)
    pair = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    ranges = [{"type": "object", "required": [r], "properties": {r: pair, "step": {"type": "number"}},
               "additionalProperties": False} for r in RANGES]
    s["properties"]["space"]["additionalProperties"] = {"anyOf": [{"type": "array", "minItems": 1}, *ranges]}
    return {"anyOf": [s, {"type": "null"}], "description": s.pop("description", None)}


def _section(model: Any, components: dict[str, dict[str, Any]], defs: dict[str, Any]) -> dict[str, Any]:
    s = _params_schema(model, f"{model.__name__}_", defs)  # nested sections' $defs go to the root
    s.pop("title", None)
    s["additionalProperties"] = False
    for key, schema in components.items():
        desc = s["properties"][key].get("description")
        s["properties"][key] = {**schema, "description": desc}
    return s


def json_schema(reg: Registry) -> dict[str, Any]:
    """The whole spec format as one JSON Schema document."""
    defs: dict[str, Any] = {}
    root = SpecFile.model_json_schema()
    props = root["properties"]
    defs["layer"] = _component(reg, "layer", defs)
    props["layers"] = {
        "type": "array", "minItems": 1, "description": props["layers"].get("description"),
        "items": defs["layer"],
    }
    props["blocks"] = _blocks(reg, defs)
    props["sweep"] = _sweep()
    props["data"] = {"anyOf": [_section(DataSection, {
        "dataset": _component(reg, "dataset", defs),
        "augment": {"type": "array", "items": _component(reg, "augmentation", defs)},
    }, defs), {"type": "null"}], "description": "the dataset and batching"}
    props["train"] = _section(TrainSection, {
        "optimizer": _component(reg, "optimizer", defs),
        "scheduler": {"anyOf": [_component(reg, "scheduler", defs), {"type": "null"}]},
        "loss": _component(reg, "loss", defs),
        "callbacks": {"type": "array", "items": _component(reg, "callback", defs)},
    }, defs)
    props["train"]["description"] = "the training loop"
    for name, d in root.pop("$defs", {}).items():  # the sections' own models (limits, weights, ...): kept,
        defs.setdefault(name, d)  # else their $refs would point nowhere (an editor then checks nothing)
    return {
        "$schema": DIALECT,
        "$id": "https://cnnspec.invalid/spec.schema.json",
        "title": "cnnspec spec",
        "description": "A CNN, its data and its training, for cnnspec",
        **{k: v for k, v in root.items() if k != "title"},
        "additionalProperties": False,
        "$defs": defs,
    }
