"""MNIST and Fashion-MNIST: IDX files read whole into memory, downloaded through torchvision if allowed."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.errors import DataError
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.types import DatasetType, NoParams, Shape

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from cnnspec.data.splits import Splits

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {e}") from e


def read_idx(path: Path, expect_images: bool) -> np.ndarray:
    """An IDX file as uint8: N x H x W images (magic 2051) or N labels (magic 2049)."""
    import numpy as np

    buf = _read_bytes(path)
    # Header: big-endian int32 magic, then one big-endian int32 per dimension.
    ndim, magic = (3, 2051) if expect_images else (1, 2049)
    header = 4 + 4 * ndim
    kind = "image" if expect_images else "label"
    if len(buf) < header:
        raise DataError(f"{path} is truncated ({len(buf)} bytes): not an IDX {kind} file; "
                        "delete it and put a fresh copy there")
    head = np.frombuffer(buf, dtype=">i4", count=1 + ndim)
    if int(head[0]) != magic:
        raise DataError(f"{path} is not an IDX {kind} file (magic number {int(head[0])}, expected "
                        f"{magic}); delete it and put a fresh copy there")
    dims = tuple(int(d) for d in head[1:])
    size = 1
    for d in dims:  # Python ints: a header whose product overflows int64 is still just wrong
        size *= d
    if min(dims) < 0 or len(buf) - header != size:
        raise DataError(f"{path} is truncated or corrupt: header says {'x'.join(map(str, dims))} "
                        f"= {size} bytes of data, the file has {len(buf) - header}; "
                        "delete it and put a fresh copy there")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


class IdxDataset(DatasetType[NoParams]):
    """An MNIST-format dataset: four IDX files in torchvision's layout (ROOT/FOLDER/raw) or flat."""

    def __init__(self, name: str, folder: str, classes: list[str], description: str) -> None:
        self.name = name
        self.folder = folder  # torchvision's class name, also its folder under the root
        self.classes = classes
        self.description = description

    def sample_shape(self, p: NoParams) -> Shape:
        return (1, 28, 28)

    def num_classes(self, p: NoParams) -> int:
        return len(self.classes)

    def num_samples(self, p: NoParams) -> tuple[int, int]:
        return (60_000, 10_000)

    def how_to_fix(self, base: Path) -> str:
        return (f"put {', '.join(IDX_FILES)} (or the same names with .gz) in {base / self.folder / 'raw'}/ "
                f"(torchvision's layout) or directly in {base}/; or allow download on a connected machine")

    def read(self, base: Path) -> Splits | None:
        """The four files under ``base`` as Splits, or None when any is missing."""
        from cnnspec.data.splits import Splits, images_from_uint8, labels_from_ints

        dirs = [base / self.folder / "raw", base]
        paths = [_find(name, dirs) for name in IDX_FILES]
        if any(p is None for p in paths):
            return None
        tri, trl, tei, tel = (read_idx(p, i % 2 == 0) for i, p in enumerate(paths) if p is not None)
        top = len(self.classes) - 1
        for images, labels, ip, lp in ((tri, trl, paths[0], paths[1]), (tei, tel, paths[2], paths[3])):
            if len(images) != len(labels):
                raise DataError(f"{ip} has {len(images)} images but {lp} has {len(labels)} labels")
            if len(labels) == 0:
                raise DataError(f"{ip} holds no samples; delete it and put a fresh copy there")
            if int(labels.max()) > top:
                raise DataError(f"{lp} has label {int(labels.max())}; {self.name} labels are 0..{top}")
        return Splits(images_from_uint8(tri[:, None]), labels_from_ints(trl),
                      images_from_uint8(tei[:, None]), labels_from_ints(tel), list(self.classes))

    def load(self, p: NoParams, root: str | None, download: bool) -> Any:
        return read_or_download(self.folder, root, download, self.read, self.how_to_fix)


def read_or_download(cls: str, root: str | None, download: bool, read: Callable[[Path], Splits | None],
                     how_to_fix: Callable[[Path], str]) -> Splits:
    """The dataset's files under ``root`` read by ``read``; downloaded first through torchvision's
    ``cls`` when missing and allowed; a DataError saying which files to put where otherwise."""
    from cnnspec.data.splits import data_root

    base = data_root(root)
    found = read(base)
    if found is not None:
        return found
    if not download:
        raise DataError(f"{cls} not found under {base}: {how_to_fix(base)}")
    fetch_with_torchvision(cls, base, how_to_fix(base))
    found = read(base)
    if found is None:
        raise DataError(f"{cls} was downloaded but its files are not under {base}: {how_to_fix(base)}")
    return found


def fetch_with_torchvision(cls: str, base: Path, how_to_fix: str) -> None:
    """Download torchvision's dataset ``cls`` into ``base``; a DataError saying what to do if it fails.

    A failed download leaves behind none of the folders it created that are still empty."""
    made = [d for d in (base / cls / "raw", base / cls, base, *base.parents) if not d.exists()]
    try:
        import torchvision.datasets

        base.mkdir(parents=True, exist_ok=True)
        # One call fetches the train and test files of the whole dataset.
        getattr(torchvision.datasets, cls)(str(base), train=True, download=True)
    except Exception as e:  # URLError, HTTPError, RuntimeError, OSError (offline, no space, ...)
        for d in made:  # deepest first; a folder holding anything (a partial file) stays
            with suppress(OSError):
                d.rmdir()
        raise DataError(f"{cls} not found under {base} and the download failed "
                        f"({type(e).__name__}: {download_reason(e)}): {how_to_fix}") from e


def download_reason(e: BaseException) -> str:
    """One line saying why a download failed, never empty.

    torchvision's MNIST error is "Error downloading FILE:" then, per mirror, "Tried URL, got:" and
    the reason on its own line: the file and the last reason are kept, the rest runs long."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reasons = [line for line in lines[1:] if not (line.startswith("Tried ") and line.endswith("got:"))]
    head = lines[0] if lines else ""
    if reasons:
        head = f"{head} {reasons[-1]}" if head.endswith(":") else head
    elif head.endswith(":") or not head:  # nothing after the colon: say what is known
        cause = e.__cause__ or e.__context__
        why = download_reason(cause) if cause is not None else "no reason given; is there a network connection?"
        head = f"{head} {why}".strip()
    return head[:300]


DATASETS = (
    IdxDataset("mnist", "MNIST", [str(i) for i in range(10)], "handwritten digits, 60k/10k (torchvision)"),
    IdxDataset("fashion_mnist", "FashionMNIST", FASHION_CLASSES,
               "Zalando clothing pictures, 60k/10k (torchvision)"),
)


@hookimpl
def register_datasets(register: Register) -> None:
    for ds in DATASETS:
        register(ds)
