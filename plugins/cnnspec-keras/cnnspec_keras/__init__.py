"""Keras-style layers for cnnspec: Keras names, parameters and defaults, TensorFlow's padding rules.

This module only names the layers: ``layers`` defines them, and cnnspec imports it the first time
a spec uses one (``cnnspec.registry.types.Lazy``), so specs that use none of them do not pay for it.
"""

from __future__ import annotations

from cnnspec.plugin import Lazy, Register, hookimpl

NAMES = ("Conv2D", "MaxPool2D", "MaxPooling2D", "AveragePooling2D", "AvgPool2D", "Dense", "Dropout",
         "Flatten", "BatchNormalization", "Activation", "Add", "Concatenate")
MORE = ("DepthwiseConv2D", "ZeroPadding2D", "Rescaling")  # in more_layers


@hookimpl
def register_layers(register: Register) -> None:
    for name in NAMES:
        register(Lazy(name, "cnnspec_keras.layers"))
    for name in MORE:
        register(Lazy(name, "cnnspec_keras.more_layers"))
