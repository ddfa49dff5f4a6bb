"""Datasets: MNIST, Fashion-MNIST, CIFAR-10, image folders, the offline digits, and a synthetic set."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..hookspecs import hookimpl
from ..registry import DatasetType, NoParams, Params, Shape
from ..types import Int, PosInt, PosPair


class Torchvision(DatasetType[NoParams]):
    """A torchvision dataset that is read whole into memory as uint8 tensors."""

    def __init__(self, name: str, cls: str, shape: Shape, classes: int, note: str) -> None:
        self.name = name  # type: ignore[misc]
        self.cls = cls
        self.shape = shape
        self.classes = classes
        self.description = note  # type: ignore[misc]

    def sample_shape(self, p: NoParams) -> Shape:
        return self.shape

    def num_classes(self, p: NoParams) -> int:
        return self.classes

    def load(self, p: NoParams, root: str | None, download: bool) -> Any:
        from .. import data

        return data.load_torchvision(self.cls, root, download)


class ImageFolderParams(Params):
    size: PosPair = Field(description="resize every image to [height, width]")
    channels: Literal[1, 3] = Field(3, description="1 = greyscale, 3 = RGB")
    test_dir: str = Field("test", description="sub-folder of data.root with the test images")
    train_dir: str = Field("train", description="sub-folder of data.root with the training images")


class ImageFolder(DatasetType[ImageFolderParams]):
    name = "image_folder"
    Params = ImageFolderParams
    description = "your own pictures: ROOT/train/CLASS/*.png and ROOT/test/CLASS/*.png"

    def sample_shape(self, p: ImageFolderParams) -> Shape:
        return (p.channels, *p.size)

    def load(self, p: ImageFolderParams, root: str | None, download: bool) -> Any:
        from .. import data

        return data.load_image_folder(root, p.train_dir, p.test_dir, p.size, p.channels)


class Digits(DatasetType[NoParams]):
    name = "digits"
    description = (
        "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); "
        "no network needed"
    )

    def sample_shape(self, p: NoParams) -> Shape:
        return (1, 8, 8)

    def num_classes(self, p: NoParams) -> int:
        return 10

    def load(self, p: NoParams, root: str | None, download: bool) -> Any:
        from .. import data

        return data.load_digits()


class SyntheticParams(Params):
    shape: tuple[PosInt, PosInt, PosInt] = Field((1, 8, 8), description="[channels, height, width]")
    classes: Int = Field(4, ge=2, description="number of classes (at least 2)")
    train_size: PosInt = Field(256, description="training samples")
    test_size: PosInt = Field(64, description="test samples")
    noise: float = Field(0.3, ge=0.0, description="std of the noise added to each class pattern")
    seed: int = Field(0, ge=0, description="seed of the patterns and noise")


class Synthetic(DatasetType[SyntheticParams]):
    name = "synthetic"
    Params = SyntheticParams
    description = "random class patterns plus noise, made in memory (for tests and smoke runs)"

    def sample_shape(self, p: SyntheticParams) -> Shape:
        return tuple(p.shape)

    def num_classes(self, p: SyntheticParams) -> int:
        return p.classes

    def load(self, p: SyntheticParams, root: str | None, download: bool) -> Any:
        from .. import data

        return data.make_synthetic(p.shape, p.classes, p.train_size, p.test_size, p.noise, p.seed)


DATASETS: tuple[DatasetType, ...] = (
    Torchvision("mnist", "MNIST", (1, 28, 28), 10, "handwritten digits, 60k/10k (torchvision)"),
    Torchvision("fashion_mnist", "FashionMNIST", (1, 28, 28), 10,
                "Zalando clothing pictures, 60k/10k (torchvision)"),
    Torchvision("cifar10", "CIFAR10", (3, 32, 32), 10, "small colour photos, 50k/10k (torchvision)"),
    ImageFolder(), Digits(), Synthetic(),
)


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    for ds in DATASETS:
        register(ds)
