"""Datasets made in memory: scikit-learn's 8x8 digits (the offline quick start) and a synthetic set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from cnnspec.errors import DataError
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import Int, PosInt
from cnnspec.registry.types import DatasetType, NoParams, Params, Shape

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.data.splits import Splits


def digits_file() -> Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn (its package
    machinery costs half a second; the data is a 57 KB CSV: 64 pixel values 0..16, then the digit)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the digits dataset is the one scikit-learn ships: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"scikit-learn is installed but has no {path.name} where it keeps it ({path})")
    return path


def load_digits() -> Splits:
    """scikit-learn's bundled 8x8 digits, seeded split: 1437 train, 360 test."""
    import gzip

    import numpy as np
    import torch

    from cnnspec.data.splits import Splits

    with gzip.open(digits_file(), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)  # as sklearn.datasets.load_digits reads it
    x = torch.from_numpy(data[:, :-1].reshape(-1, 8, 8) / 16.0).unsqueeze(1)
    y = torch.from_numpy(data[:, -1].astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360], perm[360:]
    return Splits(x[train], y[train], x[test], y[test], [str(i) for i in range(10)])


def make_synthetic(shape: tuple[int, int, int], classes: int, train_size: int,
                   test_size: int, noise: float, seed: int) -> Splits:
    """Seeded random class patterns plus Gaussian noise, clamped to [0, 1]; balanced labels."""
    import torch

    from cnnspec.data.splits import Splits

    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((classes, *shape), generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
        x = prototypes[y] + torch.randn((n, *shape), generator=g) * noise
        return x.clamp_(0.0, 1.0), y

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    return Splits(train_x, train_y, test_x, test_y, [str(i) for i in range(classes)])


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

    def num_samples(self, p: NoParams) -> tuple[int, int]:
        return (1_437, 360)

    def load(self, p: NoParams, root: str | None, download: bool) -> Any:
        return load_digits()


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

    def num_samples(self, p: SyntheticParams) -> tuple[int, int]:
        return (p.train_size, p.test_size)

    def load(self, p: SyntheticParams, root: str | None, download: bool) -> Any:
        return make_synthetic(p.shape, p.classes, p.train_size, p.test_size, p.noise, p.seed)


@hookimpl
def register_datasets(register: Register) -> None:
    register(Digits())
    register(Synthetic())
