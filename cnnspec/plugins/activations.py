"""Activation layers: shape-preserving, mostly parameter-free, built from torch.nn by class name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import Int, PosInt
from cnnspec.registry.types import LayerType, NoParams, Params, Saved, Shape, ShapeError, TensorSpec
from cnnspec.spec.shapes import fmt


class LeakyReluParams(Params):
    negative_slope: float = Field(0.01, description="slope for negative inputs")


class AlphaParams(Params):
    alpha: float = Field(1.0, description="scale of the negative part")


class GeluParams(Params):
    approximate: Literal["none", "tanh"] = Field("none", description="tanh approximation or exact")


class SoftplusParams(Params):
    beta: float = Field(1.0, description="sharpness")
    threshold: float = Field(20.0, description="above this the function is linear")


class DimParams(Params):
    dim: Int = Field(1, description="the dimension to normalise over (0 is the batch)")


class HardtanhParams(Params):
    min_val: float = Field(-1.0, description="lower clip")
    max_val: float = Field(1.0, description="upper clip")


class PReluParams(Params):
    num_parameters: PosInt = Field(1, description="1, or the number of channels")
    init: float = Field(0.25, description="initial slope")


KEEP_OUTPUT = frozenset({"relu", "sigmoid", "tanh", "softmax", "log_softmax"})


class Activation(LayerType[Params]):
    """An element-wise torch.nn activation named ``torch_name``."""

    def __init__(self, name: str, torch_name: str, params: type[Params] = NoParams, *, relu: bool = False) -> None:
        self.name = name
        self.torch_name = torch_name
        self.Params = params
        self.relu = relu  # nn.ReLU: the builder may run it after a max pooling that follows
        self.description = f"torch.nn.{torch_name}"

    def output_shape(self, p: Params, shape: Shape) -> Shape:
        if isinstance(p, DimParams) and not -len(shape) - 1 <= p.dim <= len(shape):
            raise ShapeError(f"dim={p.dim} is out of range for a batch of {fmt(shape)}", "dim")
        return shape

    def macs(self, p: Params, in_shape: Shape, out_shape: Shape) -> int:
        return 0  # element-wise: FlopCounterMode counts nothing

    def saved(self, p: Params, in_shape: Shape, out_shape: Shape) -> Saved:
        # torch's backward of relu, sigmoid, tanh and softmax reads the result; the others the input
        keeps_output = self.name in KEEP_OUTPUT
        return Saved(input=not keeps_output, output=keeps_output)

    def build(self, p: Params, shape: Shape) -> Any:
        from torch import nn

        return getattr(nn, self.torch_name)(**p.model_dump())


class PRelu(Activation):
    def __init__(self) -> None:
        super().__init__("prelu", "PReLU", PReluParams)

    def output_shape(self, p: Params, shape: Shape) -> Shape:
        assert isinstance(p, PReluParams)
        if p.num_parameters not in (1, shape[0]):
            raise ShapeError(
                f"num_parameters={p.num_parameters} must be 1 or the {shape[0]} channels",
                "num_parameters",
            )
        return shape

    def num_params(self, p: Params, shape: Shape) -> int:
        assert isinstance(p, PReluParams)
        return p.num_parameters

    def tensors(self, p: Params, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        assert isinstance(p, PReluParams)
        return [TensorSpec("weight", (p.num_parameters,))]


ACTIVATIONS: tuple[Activation, ...] = (
    Activation("relu", "ReLU", relu=True),
    Activation("relu6", "ReLU6"),
    Activation("leaky_relu", "LeakyReLU", LeakyReluParams),
    Activation("elu", "ELU", AlphaParams),
    Activation("celu", "CELU", AlphaParams),
    Activation("selu", "SELU"),
    Activation("gelu", "GELU", GeluParams),
    Activation("silu", "SiLU"),
    Activation("mish", "Mish"),
    Activation("hardswish", "Hardswish"),
    Activation("hardsigmoid", "Hardsigmoid"),
    Activation("hardtanh", "Hardtanh", HardtanhParams),
    Activation("sigmoid", "Sigmoid"),
    Activation("tanh", "Tanh"),
    Activation("softplus", "Softplus", SoftplusParams),
    Activation("softmax", "Softmax", DimParams),
    Activation("log_softmax", "LogSoftmax", DimParams),
    PRelu(),
)


@hookimpl
def register_layers(register: Register) -> None:
    for act in ACTIVATIONS:
        register(act)
