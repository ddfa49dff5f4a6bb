"""Spec -> torch.nn.Sequential, with per-layer weight initialisation. Imports torch."""

from __future__ import annotations

import torch
from torch import nn

from .plugins import call_plugin
from .spec import Spec

_INIT = {
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


def build_model(spec: Spec) -> nn.Sequential:
    """Build the model layer by layer from the shapes the spec's trace computed."""
    modules: list[nn.Module] = []
    shape = spec.input_shape
    for comp, row in zip(spec.layers, spec.trace.rows):
        module = call_plugin(spec.registry, "layer", comp.name, comp.type.build, comp.params, shape)
        if not isinstance(module, nn.Module):
            raise TypeError(f"layer type '{comp.name}' built {type(module).__name__}, not an nn.Module")
        init = getattr(comp.params, "init", None)
        if isinstance(init, str):
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                with torch.no_grad():
                    _INIT[init](weight)
        modules.append(module)
        shape = row.output_shape
    return nn.Sequential(*modules)
