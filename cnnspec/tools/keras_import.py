"""``cnnspec import``: a saved Keras model as a spec plus a weights file that computes the same outputs.

The steps: read the file (tools.keras_h5), refuse every unsupported layer at once, nest the graph
(tools.keras_graph), write the spec's text with Keras' layer names as comments, check that text
as ``validate`` would (without the weights file, which does not exist yet), and take the state
dict's keys and shapes from ``spec.tensors.plan`` of that checked spec: each planned tensor
belongs to a spec layer (by its position in the text), which knows the Keras layer and the
converter of its weights (tools.keras_layers). The weights are written as ``.safetensors`` next
to the spec, which names them in ``weights: {file: ..., mapping: cnnspec}``. Nothing is written
unless every step succeeds. numpy, h5py and safetensors; neither torch nor TensorFlow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.errors import ToolError
from cnnspec.spec.shapes import Row, ShapeTrace
from cnnspec.spec.tensors import plan
from cnnspec.tools.keras_graph import Graph, GraphError, nest, parse, unsupported
from cnnspec.tools.keras_h5 import KerasModel, read_model
from cnnspec.tools.keras_layers import ROLES, Layer

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


class ImportFailed(ToolError):
    """The model cannot be imported; ``details`` are indented lines under the first (exit 2)."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []

    def lines(self) -> list[str]:
        return super().lines() + [f"  {d}" for d in self.details]


@dataclass(frozen=True)
class Imported:
    """What ``import`` wrote."""

    spec: Path
    weights: Path | None
    layers: int  # Keras layers read (the input not counted)
    tensors: int  # tensors written
    params: int  # the spec's parameter count, as validate prints it


def import_keras(model_path: str, output: str, weights: str | None = None, force: bool = False) -> Imported:
    """Read ``model_path`` (with ``weights`` for a JSON config), write the spec to ``output`` and
    its weights next to it; raise ImportFailed (nothing written) if any step cannot be done exactly."""
    _need_plugin()
    model = read_model(model_path, weights)
    try:
        graph = parse(model.config)
    except GraphError as e:
        raise GraphError(f"{model_path}: {e}") from None
    bad = unsupported(graph)
    if bad:
        raise ImportFailed(f"{model_path}: {len(bad)} layer{'s' if len(bad) != 1 else ''} cannot be imported "
                           "(nothing written):", [f"{n} ({c}){': ' + why if why else ''}" for n, c, why in bad])
    try:
        layers = nest(graph)
    except GraphError as e:
        raise GraphError(f"{model_path}: {e}") from None
    out = Path(output)
    weights_out = out.with_suffix(".safetensors") if model.weights is not None else None
    for target in (out, weights_out):
        if target is not None and target.exists() and not force:
            raise ImportFailed(f"{target} exists; choose another -o, or --force to replace it")
    text = spec_text(model, graph, layers, out, weights_out)
    trace = _checked(text, str(out))
    tensors = _tensors(model, layers, trace) if weights_out is not None else {}
    params = sum(r.params for r in trace.rows)
    if weights_out is not None:
        from safetensors.numpy import save_file

        save_file(tensors, str(weights_out), metadata={"source": Path(model_path).name, "by": "cnnspec import"})
    out.write_text(text)
    return Imported(out, weights_out, len(graph.nodes) - 1, len(tensors), params)


def _need_plugin() -> None:
    import importlib.util

    if importlib.util.find_spec("cnnspec_keras") is None:
        raise ImportFailed("cnnspec import writes the Keras-style layers: install plugins/cnnspec-keras "
                           "(pip install -e plugins/cnnspec-keras)")


def _checked(text: str, file: str) -> ShapeTrace:
    """The written spec checked as validate checks it (the weights file is checked later, by validate)."""
    from cnnspec.spec.check import check
    from cnnspec.spec.yamlpos import load

    result = check(load(text, file), weights=False)
    if result.spec is None:  # an import that makes an invalid spec is a bug in the importer
        raise AssertionError("the imported spec does not check:\n" + "\n".join(p.format() for p in result.problems)
                             + "\n" + text)
    return result.spec.trace


def _rows_by_path(rows: tuple[Row, ...] | list[Row], out: dict[tuple[Any, ...], Row]) -> dict[tuple[Any, ...], Row]:
    for row in rows:
        if row.component is not None:
            out[tuple(row.component.path)] = row
        _rows_by_path(row.children, out)
    return out


def _walk(layers: list[Layer]) -> list[Layer]:
    return [x for layer in layers for x in (layer, *(y for b in layer.children for y in _walk(b)))]


def _tensors(model: KerasModel, layers: list[Layer], trace: ShapeTrace) -> dict[str, Any]:
    """The spec's state dict, its keys and shapes from spec.tensors.plan, its values Keras' weights."""
    import numpy as np

    assert model.weights is not None
    by_path = {layer.path: layer for layer in _walk(layers)}
    rows = _rows_by_path(trace.rows, {})
    converted: dict[tuple[Any, ...], dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for entry in plan(trace):
        path = tuple(entry.component.path)
        layer = by_path[path]
        if layer.role is None:
            raise AssertionError(f"{entry.key}: the spec layer at {path} has tensors but no Keras weights")
        if path not in converted:
            arrays = model.weights.get(layer.keras)
            if not arrays:
                raise ImportFailed(f"{model.path}: the weights file has no weights for layer '{layer.keras}' "
                                   f"({layer.cls})")
            flat = rows[layer.flat_from.path].input_shape if layer.flat_from is not None else None
            converted[path] = ROLES[layer.role](layer, list(arrays), flat)
        value = converted[path][entry.tensor.name.rsplit(".", 1)[-1]]
        value = np.array(value, dtype=np.int64 if entry.tensor.dtype == "int64" else np.float32, order="C")
        if tuple(value.shape) != entry.shape:
            raise ImportFailed(f"{model.path}: layer '{layer.keras}' ({layer.cls}): Keras' weight has shape "
                               f"{tuple(value.shape)} where the spec's '{entry.key}' needs {entry.shape}")
        out[entry.key] = value
    return out


# --- the spec's text ---------------------------------------------------------------------------

def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    s = str(v)
    return s if _PLAIN.fullmatch(s) and s.lower() not in _RESERVED else json.dumps(s)


def _flow(layer: Layer) -> str:
    if not layer.params:
        return layer.type
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in {"type": layer.type, **layer.params}.items()) + "}"


def _comment(layer: Layer) -> str:
    name = re.sub(r"[\x00-\x1f\x7f]", " ", layer.keras) + (f", {layer.note}" if layer.note else "")
    return f"   # {name}" if layer.cls in (layer.type, "") else f"   # {name} ({layer.cls})"


def _emit(layers: list[Layer], at: tuple[str | int, ...], indent: int, lines: list[str]) -> None:
    """Write ``layers`` as a block sequence, recording each layer's path in the spec's data."""
    pad = " " * indent
    for i, layer in enumerate(layers):
        layer.path = (*at, i)
        if not layer.children:
            lines.append(f"{pad}- {_flow(layer)}{_comment(layer)}")
            continue
        lines.append(f"{pad}- type: {layer.type}{_comment(layer)}")
        for k, v in layer.params.items():
            lines.append(f"{pad}  {k}: {_scalar(v)}")
        lines.append(f"{pad}  {layer.child_key}:")
        if layer.child_key == "layers":
            _emit(layer.children[0], (*layer.path, "layers"), indent + 4, lines)
            continue
        for b, branch in enumerate(layer.children):
            if not branch:
                lines.append(f"{pad}    - []   # the input itself")
                continue
            lines.append(f"{pad}    -")
            _emit(branch, (*layer.path, "branches", b), indent + 6, lines)


def _chw(shape: tuple[int, ...]) -> list[int]:
    return [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)


def spec_text(model: KerasModel, graph: Graph, layers: list[Layer], out: Path, weights: Path | None) -> str:
    """The spec: a header saying where it came from, name, input (channels first), layers, weights."""
    name = graph.name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", graph.name) else out.stem
    version = f"Keras {model.keras_version}, " if model.keras_version else ""
    src = Path(model.path).name
    lines = [
        f"# Imported by `cnnspec import` from {src} ({version}{graph.kind} model {graph.name!r}).",
        "# Each comment is the Keras layer's name (and class, where the spec writes another type).",
        "# Tensors are channels-first here: give the model N x C x H x W where Keras took N x H x W x C.",
        f"name: {name}",
        f"input: {_scalar(_chw(graph.input_shape))}   # Keras: {_scalar(list(graph.input_shape))}",
        "layers:",
    ]
    _emit(layers, ("layers",), 2, lines)
    if weights is not None:
        lines += ["weights:", f"  file: {_scalar(weights.name)}   # Keras' weights in torch's layout",
                  "  mapping: cnnspec"]
    return "\n".join(lines) + "\n"
