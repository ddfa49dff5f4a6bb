"""CIFAR-10 from its Python pickles, read with an unpickler that admits data and nothing else."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.errors import DataError
from cnnspec.plugins.mnist import read_or_download
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.types import DatasetType, NoParams, Shape

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from cnnspec.data.splits import Splits

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# What a CIFAR batch pickle may name: numpy's array reconstruction and nothing else.
# dicts, lists, strings, bytes and numbers need no global at all.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is code, not data; not loaded")


def load_data_pickle(path: Path) -> Any:
    """Unpickle a data file, refusing any global but numpy arrays: a crafted file runs nothing."""
    try:
        return _DataOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"cannot read {path} as a CIFAR-10 pickle ({e}); "
                        "delete it and put a fresh copy there") from None


def _unpickle(path: Path) -> dict[Any, Any]:
    obj = load_data_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a pickled dict)")
    return obj


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    d = _unpickle(path)
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"data shape {data.shape}, {len(labels)} labels")
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected b'data' N x 3072 uint8 and "
                        f"N b'labels' ({e})") from e
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} has labels outside 0..9")
    # Each row is 1024 red, then 1024 green, then 1024 blue bytes, row-major 32 x 32.
    return data.reshape(-1, 3, 32, 32), labels


class Cifar10(DatasetType[NoParams]):
    name = "cifar10"
    description = "small colour photos, 50k/10k (torchvision)"

    def sample_shape(self, p: NoParams) -> Shape:
        return (3, 32, 32)

    def num_classes(self, p: NoParams) -> int:
        return 10

    def num_samples(self, p: NoParams) -> tuple[int, int]:
        return (50_000, 10_000)

    @staticmethod
    def how_to_fix(base: Path) -> str:
        return (f"put {', '.join(CIFAR_FILES)} (and batches.meta) in {base / CIFAR_DIR}/ "
                f"(the folder inside cifar-10-python.tar.gz) or directly in {base}/; "
                "or allow download on a connected machine")

    @staticmethod
    def read(base: Path) -> Splits | None:
        import numpy as np

        from cnnspec.data.splits import Splits, images_from_uint8, labels_from_ints

        folder = next((d for d in (base / CIFAR_DIR, base)
                       if all((d / n).is_file() for n in CIFAR_FILES)), None)
        if folder is None:
            return None
        batches = [_cifar_batch(folder / n) for n in CIFAR_FILES]
        train_x = np.concatenate([b[0] for b in batches[:5]])
        train_y = np.concatenate([b[1] for b in batches[:5]])
        classes = list(CIFAR10_CLASSES)
        if (folder / "batches.meta").is_file():
            names = _unpickle(folder / "batches.meta").get(b"label_names")
            if isinstance(names, list) and len(names) == 10:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        test_x, test_y = batches[5]
        return Splits(images_from_uint8(train_x), labels_from_ints(train_y),
                      images_from_uint8(test_x), labels_from_ints(test_y), classes)

    def load(self, p: NoParams, root: str | None, download: bool) -> Any:
        return read_or_download("CIFAR10", root, download, self.read, self.how_to_fix)


@hookimpl
def register_datasets(register: Register) -> None:
    register(Cifar10())
