"""The public plugin API: everything a cnnspec plugin imports, from here and nowhere else.

A plugin implements hooks (``hookimpl``) from ``cnnspec.registry.hookspecs`` and registers types
(``LayerType``, ``DatasetType``, ...) whose parameters are ``Params`` models and whose shape rules
use the helpers below. Like pytest's ``pytest`` over ``_pytest``, the modules behind these names
may move; these names stay.

Importing this module is cheap and torch-free, so ``cnnspec validate`` stays fast: the names
marked "lazy" below (they need torch, or a built-in plugin) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cnnspec.errors import DataError, PluginError
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.kinds import KINDS, Kind
from cnnspec.registry.params import (
    ConvPadding,
    Int,
    NonNegFloat,
    NonNegInt,
    NonNegPair,
    Pad2,
    PosFloat,
    PosInt,
    PosPair,
    Probability,
    Size2,
)
from cnnspec.registry.types import (
    AugmentationType,
    BlockType,
    Callback,
    CallbackType,
    CompositeType,
    DatasetType,
    LayerType,
    Lazy,
    LossType,
    NoParams,
    OptimizerType,
    Params,
    Saved,
    SchedulerType,
    Shape,
    ShapeError,
    TensorSpec,
    Tracer,
    WeightInitParams,
)
from cnnspec.spec.shapes import check_given, conv_out, expect_chw, expect_flat, fmt, pair, pool_out

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.build.modules import Flatten
    from cnnspec.data.splits import Splits
    from cnnspec.plugins.activations import KEEP_OUTPUT
    from cnnspec.plugins.composites import Branch, Parallel
    from cnnspec.train.context import Context

# name -> module, imported on first use (they import torch or a built-in plugin)
_LAZY = {
    "Splits": "cnnspec.data.splits",  # what a dataset's load() returns
    "Flatten": "cnnspec.build.modules",  # torch.nn.Flatten that keeps channels-last input fast
    "Context": "cnnspec.train.context",  # what run hooks and callbacks get
    "KEEP_OUTPUT": "cnnspec.plugins.activations",  # activations whose backward reads their output
    "Branch": "cnnspec.plugins.composites",  # a parameter holding a layer list (one branch)
    "Parallel": "cnnspec.plugins.composites",  # the built-in parallel-branches composite, to subclass
}

__all__ = [
    "KINDS", "AugmentationType", "BlockType", "Branch", "Callback", "CallbackType", "CompositeType", "Context",
    "ConvPadding", "DataError", "DatasetType", "Flatten", "Int", "KEEP_OUTPUT", "Kind", "LayerType", "Lazy",
    "LossType", "NoParams", "NonNegFloat", "NonNegInt", "NonNegPair", "OptimizerType", "Pad2", "Parallel",
    "Params", "PluginError", "PosFloat", "PosInt", "PosPair", "Probability", "Register", "Saved",
    "SchedulerType", "Shape", "ShapeError", "Size2", "Splits", "TensorSpec", "Tracer", "WeightInitParams",
    "check_given",
    "conv_out", "expect_chw", "expect_flat", "fmt", "hookimpl", "pair", "pool_out",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnspec.plugin' has no attribute {name!r}")
