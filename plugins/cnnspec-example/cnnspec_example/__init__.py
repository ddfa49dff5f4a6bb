"""An example cnnspec plugin: a layer (channel_scale), an optimizer (signsgd), a dataset (stripes).

Everything at module level is torch-free, so `cnnspec validate` stays fast; torch is imported
inside build()/load() only.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cnnspec.plugin import (
    DatasetType,
    LayerType,
    OptimizerType,
    Params,
    PosFloat,
    PosInt,
    Register,
    Saved,
    Shape,
    ShapeError,
    TensorSpec,
    hookimpl,
)


class ChannelScaleParams(Params):
    init: float = Field(1.0, description="starting value of every channel's scale")


class ChannelScale(LayerType[ChannelScaleParams]):
    """Multiplies each channel by its own learnable scale."""

    name = "channel_scale"
    Params = ChannelScaleParams
    description = "a learnable scale per channel"

    def output_shape(self, p: ChannelScaleParams, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ShapeError(f"channel_scale expects C x H x W, got {' x '.join(map(str, shape))}")
        return shape

    def num_params(self, p: ChannelScaleParams, shape: Shape) -> int:
        return shape[0]

    def tensors(self, p: ChannelScaleParams, in_shape: Shape, out_shape: Shape) -> list[TensorSpec]:
        return [TensorSpec("scale", (in_shape[0], 1, 1))]

    def macs(self, p: ChannelScaleParams, in_shape: Shape, out_shape: Shape) -> int:
        return 0  # an element-wise product: no matrix product or convolution (FlopCounterMode's rule)

    def saved(self, p: ChannelScaleParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=True, output=False)  # x * scale: the scale's gradient needs x

    def build(self, p: ChannelScaleParams, shape: Shape) -> Any:
        import torch

        class Scale(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.scale = torch.nn.Parameter(torch.full((shape[0], 1, 1), p.init))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x * self.scale

        return Scale()


class SignSGDParams(Params):
    lr: PosFloat = Field(0.001, description="step size")


class SignSGD(OptimizerType[SignSGDParams]):
    """Steps each weight by -lr * sign(gradient)."""

    name = "signsgd"
    Params = SignSGDParams
    description = "sign of the gradient, times lr"

    def build(self, p: SignSGDParams, parameters: Any) -> Any:
        import torch

        class Opt(torch.optim.Optimizer):
            def __init__(self, params: Any) -> None:
                super().__init__(params, {"lr": p.lr})

            @torch.no_grad()
            def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure support
                for group in self.param_groups:
                    for w in group["params"]:
                        if w.grad is not None:
                            w.add_(w.grad.sign(), alpha=-group["lr"])

        return Opt(parameters)


class StripesParams(Params):
    size: PosInt = Field(12, ge=4, description="images are size x size")
    samples: PosInt = Field(400, description="training images (a quarter as many test images)")


class Stripes(DatasetType[StripesParams]):
    """Horizontal or vertical stripes: an easy two-class set made in memory."""

    name = "stripes"
    Params = StripesParams
    description = "horizontal vs vertical stripes"

    def sample_shape(self, p: StripesParams) -> Shape:
        return (1, p.size, p.size)

    def num_classes(self, p: StripesParams) -> int:
        return 2

    def num_samples(self, p: StripesParams) -> tuple[int, int]:
        return (p.samples, max(1, p.samples // 4))  # held in memory whole: the memory estimate counts them

    def load(self, p: StripesParams, root: str | None, download: bool) -> Any:
        import torch

        from cnnspec.plugin import Splits

        g = torch.Generator().manual_seed(0)

        def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(0, 2, (n,), generator=g)
            phase = torch.randint(0, 2, (n, 1), generator=g)
            line = (torch.arange(p.size) + phase) % 2  # n x size: 0 1 0 1 ... or 1 0 1 0 ...
            rows = line.view(n, p.size, 1).expand(n, p.size, p.size)  # horizontal stripes
            cols = line.view(n, 1, p.size).expand(n, p.size, p.size)  # vertical stripes
            x = torch.where(y.view(n, 1, 1) == 0, rows, cols).float()
            x = (x + 0.3 * torch.randn(n, p.size, p.size, generator=g)).clamp(0, 1)
            return x.unsqueeze(1), y

        tx, ty = make(p.samples)
        vx, vy = make(max(1, p.samples // 4))
        return Splits(tx, ty, vx, vy, ["horizontal", "vertical"])


@hookimpl
def register_layers(register: Register) -> None:
    register(ChannelScale())


@hookimpl
def register_optimizers(register: Register) -> None:
    register(SignSGD())


@hookimpl
def register_datasets(register: Register) -> None:
    register(Stripes())
