"""Augmentations of training batches (``data.augment``): random crop, random resized crop, horizontal
flip, random affine, random erasing, mixup and cutmix. Static rules here; the batch-wise tensor work is in
``augment_ops`` (imported by ``build``, so validate stays free of torch)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegInt, PosFloat, Probability, Size2
from cnnspec.registry.types import AugmentationType, Params, Shape, ShapeError
from cnnspec.spec.shapes import BYTES, fmt, pair


def _image(name: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"needs image samples (channels x height x width), but the input is {fmt(shape)}")
    c, h, w = shape
    return c, h, w


class RandomCropParams(Params):
    padding: NonNegInt = Field(4, description="pixels of fill added on every side before cropping")
    size: Size2 | None = Field(None, description="crop [height, width]; default the input's size")
    fill: float = Field(0.0, allow_inf_nan=False, description="value of the added pixels (a finite number)")


class RandomCrop(AugmentationType[RandomCropParams]):
    name = "random_crop"
    Params = RandomCropParams
    description = "pad every side, then crop at a random place (each sample its own)"

    def check(self, p: RandomCropParams, shape: Shape) -> None:
        _, h, w = _image(self.name, shape)
        if p.padding > max(h, w):  # the padded batch is made on the device: (h + 2p) x (w + 2p) per sample
            raise ShapeError(f"padding {p.padding:,} is more than the image's size {h} x {w} (at most "
                             f"{max(h, w)}: the padded batch is made in memory)", "padding")
        ch, cw = pair(p.size) if p.size is not None else (h, w)
        if ch > h + 2 * p.padding or cw > w + 2 * p.padding:
            raise ShapeError(f"a crop of {ch} x {cw} is larger than the padded image "
                             f"{h + 2 * p.padding} x {w + 2 * p.padding}", "size")
        if (ch, cw) != (h, w):
            raise ShapeError(f"crops of {ch} x {cw} would change the input shape {fmt(shape)} that the "
                             "layers expect; crop the input's size", "size")

    def build(self, p: RandomCropParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import RandomCropOp

        return RandomCropOp(p.padding, p.fill)

    def sample_bytes(self, p: RandomCropParams, shape: Shape, num_classes: int) -> int:
        if p.padding == 0:  # the op returns the batch as it is
            return 0
        c, h, w = _image(self.name, shape)
        hp, wp = h + 2 * p.padding, w + 2 * p.padding
        # held at once: the padded copy C x (H+2p) x (W+2p), the rows kept C x H x (W+2p), the crop C x H x W
        return BYTES * c * (hp * wp + h * wp + h * w)


Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class ResizedCropParams(Params):
    scale: tuple[Fraction, Fraction] = Field((0.08, 1.0), description="area of the crop as a fraction of the "
                                             "picture's, drawn uniformly from [low, high]")
    ratio: tuple[PosFloat, PosFloat] = Field((3 / 4, 4 / 3), description="aspect ratio (width / height) of the "
                                             "crop, drawn log-uniformly from [low, high]")


class RandomResizedCrop(AugmentationType[ResizedCropParams]):
    name = "random_resized_crop"
    Params = ResizedCropParams
    description = "crop a random area and aspect ratio, resized back to the input's size (each sample its own)"

    def check(self, p: ResizedCropParams, shape: Shape) -> None:
        _image(self.name, shape)
        for key in ("scale", "ratio"):
            low, high = getattr(p, key)
            if low > high:
                raise ShapeError(f"{key} is [low, high] with low <= high, not [{low:g}, {high:g}]", key)

    def build(self, p: ResizedCropParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import RandomResizedCropOp

        _, h, w = _image(self.name, shape)
        return RandomResizedCropOp(p.scale, p.ratio, (h, w))

    def sample_bytes(self, p: ResizedCropParams, shape: Shape, num_classes: int) -> int:
        c, h, w = _image(self.name, shape)
        return BYTES * (2 * h * w + c * h * w)  # the sampling grid (x, y per output pixel) and the output


class FlipParams(Params):
    p: Probability = Field(0.5, description="probability of flipping each sample")


class HorizontalFlip(AugmentationType[FlipParams]):
    name = "horizontal_flip"
    Params = FlipParams
    description = "mirror left to right, each sample with probability p"

    def check(self, p: FlipParams, shape: Shape) -> None:
        _image(self.name, shape)

    def build(self, p: FlipParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import HorizontalFlipOp

        return HorizontalFlipOp(p.p)


class AffineParams(Params):
    degrees: float = Field(0.0, ge=0.0, le=180.0, description="rotate by up to this many degrees either way")
    translate: tuple[Probability, Probability] = Field(
        (0.0, 0.0), description="shift by up to these fractions of [height, width] either way")
    scale: tuple[PosFloat, PosFloat] = Field((1.0, 1.0), description="zoom by a factor in [low, high]")

    @model_validator(mode="after")
    def _ordered(self) -> AffineParams:
        if self.scale[0] > self.scale[1]:
            raise ValueError("scale is [low, high] with low <= high")
        return self


class RandomAffine(AugmentationType[AffineParams]):
    name = "random_affine"
    Params = AffineParams
    description = "rotate, shift and zoom each sample at random (bilinear, zeros outside)"

    def check(self, p: AffineParams, shape: Shape) -> None:
        _image(self.name, shape)

    def build(self, p: AffineParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import RandomAffineOp

        return RandomAffineOp(p.degrees, p.translate, p.scale)


class ErasingParams(Params):
    p: Probability = Field(0.5, description="probability of erasing a rectangle in each sample")
    scale: tuple[Probability, Probability] = Field((0.02, 0.33), description="area fraction [low, high]")
    ratio: tuple[PosFloat, PosFloat] = Field((0.3, 3.3), description="aspect ratio [low, high]")
    value: float = Field(0.0, description="value written into the rectangle")

    @model_validator(mode="after")
    def _ordered(self) -> ErasingParams:
        if self.scale[0] > self.scale[1] or self.ratio[0] > self.ratio[1]:
            raise ValueError("scale and ratio are [low, high] with low <= high")
        return self


class RandomErasing(AugmentationType[ErasingParams]):
    name = "random_erasing"
    Params = ErasingParams
    description = "erase a random rectangle of each sample (Zhong et al. 2017)"

    def check(self, p: ErasingParams, shape: Shape) -> None:
        _image(self.name, shape)

    def build(self, p: ErasingParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import RandomErasingOp

        return RandomErasingOp(p.p, p.scale, p.ratio, p.value)


class MixParams(Params):
    alpha: PosFloat = Field(0.2, description="the mixing weight is drawn from Beta(alpha, alpha)")


class Mixup(AugmentationType[MixParams]):
    name = "mixup"
    Params = MixParams
    description = "blend each batch with a shuffled copy of itself, labels too (Zhang et al. 2018)"
    mixes_labels = True

    def build(self, p: MixParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import MixupOp

        return MixupOp(p.alpha, num_classes)

    def sample_bytes(self, p: MixParams, shape: Shape, num_classes: int) -> int:
        n = 1
        for d in shape:
            n *= d
        # lam * x, the shuffled copy x[perm] and its weighted copy, then their sum: three images held at
        # once; the labels as probabilities: the one-hot, its shuffled copy, two weighted, the sum
        return BYTES * (3 * n + 5 * num_classes)


class CutMixParams(Params):
    alpha: PosFloat = Field(1.0, description="the kept area fraction is drawn from Beta(alpha, alpha)")


class CutMix(AugmentationType[CutMixParams]):
    name = "cutmix"
    Params = CutMixParams
    description = "paste a rectangle from a shuffled copy of the batch, labels by area (Yun et al. 2019)"
    mixes_labels = True

    def check(self, p: CutMixParams, shape: Shape) -> None:
        _image(self.name, shape)

    def build(self, p: CutMixParams, shape: Shape, num_classes: int) -> Any:
        from cnnspec.plugins.augment_ops import CutMixOp

        return CutMixOp(p.alpha, num_classes)

    def sample_bytes(self, p: CutMixParams, shape: Shape, num_classes: int) -> int:
        n = 1
        for d in shape:
            n *= d
        # the batch's copy and the shuffled box pasted into it (at most a whole image); the labels as
        # for mixup
        return BYTES * (2 * n + 5 * num_classes)


AUGMENTATIONS: tuple[AugmentationType[Any], ...] = (
    RandomCrop(), RandomResizedCrop(), HorizontalFlip(), RandomAffine(), RandomErasing(), Mixup(), CutMix(),
)


@hookimpl
def register_augmentations(register: Register) -> None:
    for a in AUGMENTATIONS:
        register(a)
