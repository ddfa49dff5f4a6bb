"""Spec -> torch.nn.Sequential, with per-layer weight initialisation. Imports torch.

The model is built from the spec's shape trace: a row per layer, composite rows holding their
children's, so every module gets the input shape the trace computed for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnspec.errors import PluginError
from cnnspec.registry.manager import call_plugin
from cnnspec.registry.types import WeightInitParams
from cnnspec.spec.sections import Spec
from cnnspec.spec.shapes import Row, is_relu, pooled_relus

_INIT: dict[str, Callable[[torch.Tensor], object]] = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
    "trunc_normal": lambda w: nn.init.trunc_normal_(w, std=0.02),
    "normal": lambda w: nn.init.normal_(w, std=0.02),
    "uniform": lambda w: nn.init.uniform_(w, -0.05, 0.05),
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
}


def _init_weight(module: nn.Module, name: str) -> None:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        with torch.no_grad():
            _INIT[name](weight)


def build_model(spec: Spec) -> nn.Sequential:
    """Build the model layer by layer from the shapes the spec's trace computed."""
    return nn.Sequential(*_sequence(spec, spec.trace.rows))


def _sequence(spec: Spec, rows: Sequence[Row]) -> list[nn.Module]:
    """The modules of rows that run one after another. A relu before max pooling moves after
    it (see shapes.pooled_relus): the same numbers, a quarter of the element-wise work for 2 x 2
    pooling. Each module keeps its row's position and output shape, and its parameters' names."""
    parts = [_module(spec, row) for row in rows]
    for i in pooled_relus(rows):
        if is_relu(rows[i]):
            relu, parts[i] = parts[i], nn.Identity()
        else:  # a layer ending with a ReLU (LayerType.without_relu): take it off the end
            module = parts[i]
            if not (isinstance(module, nn.Sequential) and isinstance(module[-1], nn.ReLU)):
                owner = spec.registry.owner("layer", rows[i].type)
                raise PluginError(f"layer type '{rows[i].type}' (from plugin '{owner}') declares "
                                  f"without_relu but built {type(module).__name__}, not an "
                                  "nn.Sequential ending with nn.ReLU")
            relu, module[-1] = module[-1], nn.Identity()
        parts[i + 1] = nn.Sequential(parts[i + 1], relu)
    return parts


def _module(spec: Spec, row: Row) -> nn.Module:
    """The module of one traced row; a composite's is assembled from its children's, in order."""
    comp = row.component
    if comp is None:  # a path inside a composite (main, shortcut, branch): its layers in order
        parts = _sequence(spec, row.children)
        return nn.Sequential(*parts) if parts else nn.Identity()
    if getattr(comp.type, "chain", False):  # its parts run in order: rewrite among them too
        parts = _sequence(spec, row.children)
    else:
        parts = [_module(spec, child) for child in row.children]
    if hasattr(comp.type, "assemble"):
        module = call_plugin(spec.registry, "layer", comp.name, comp.type.assemble, comp.params,
                             row.input_shape, parts)
    else:
        module = call_plugin(spec.registry, "layer", comp.name, comp.type.build, comp.params, row.input_shape)
    if not isinstance(module, nn.Module):
        owner = spec.registry.owner("layer", comp.name)
        raise PluginError(f"layer type '{comp.name}' (from plugin '{owner}') built "
                          f"{type(module).__name__}, not a torch.nn.Module")
    # only layers that declare WeightInitParams take `init`; a plugin's own `init` is its own
    if isinstance(comp.params, WeightInitParams) and comp.params.init is not None:
        call_plugin(spec.registry, "layer", comp.name, _init_weight, module, comp.params.init)
    return module
