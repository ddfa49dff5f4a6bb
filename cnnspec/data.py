"""Load datasets whole into memory as float tensors in [0, 1] with int64 labels."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEFAULT_ROOT = Path("~/.cache/cnnspec/data")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DataError(Exception):
    """A dataset is missing, unreadable or inconsistent; the message says what to do."""


@dataclass
class Splits:
    """A train and a test set: x is float32 N x C x H x W in [0, 1], y is int64 N."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def split_validation(self, fraction: float, seed: int) -> tuple[Splits, tuple[Tensor, Tensor] | None]:
        """Move a seeded random ``fraction`` of train into a validation set (None when 0)."""
        tx, ty, vx, vy = validation_split(self.train_x, self.train_y, fraction, seed)
        rest = Splits(tx, ty, self.test_x, self.test_y, list(self.classes))
        return rest, (None if vx is None or vy is None else (vx, vy))


def validation_split(x: Tensor, y: Tensor, fraction: float, seed: int
                     ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(train_x, train_y, val_x, val_y) from a seeded permutation; val is None when fraction is 0."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be at least 0 and below 1, got {fraction}")
    if len(x) != len(y):
        raise DataError(f"{len(x)} samples but {len(y)} labels")
    if fraction == 0.0:
        return x, y, None, None
    n = len(x)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"a validation fraction of {fraction} leaves no training samples out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (each of shape C) of N x C x H x W; std is floored at 1e-6."""
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"channel_stats needs a non-empty N x C x H x W tensor, got shape {tuple(x.shape)}")
    xd = x.to(torch.float64)
    mean = xd.mean(dim=(0, 2, 3))
    std = xd.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6)
    return mean.to(torch.float32), std.to(torch.float32)


def _root(root: str | None) -> Path:
    return (Path(root) if root else DEFAULT_ROOT).expanduser()


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)

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
    size = int(np.prod(dims))
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


def _load_idx_set(cls: str, base: Path) -> Splits | None:
    dirs = [base / cls / "raw", base]
    paths = [_find(name, dirs) for name in IDX_FILES]
    if any(p is None for p in paths):
        return None
    tri, trl, tei, tel = (read_idx(p, i % 2 == 0) for i, p in enumerate(paths) if p is not None)
    for images, labels, ip, lp in ((tri, trl, paths[0], paths[1]), (tei, tel, paths[2], paths[3])):
        if len(images) != len(labels):
            raise DataError(f"{ip} has {len(images)} images but {lp} has {len(labels)} labels")
        if len(labels) and int(labels.max()) > 9:
            raise DataError(f"{lp} has label {int(labels.max())}; {cls} labels are 0..9")
    names = [str(i) for i in range(10)]
    if cls == "FashionMNIST":
        names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return Splits(_images(tri[:, None]), _labels(trl), _images(tei[:, None]), _labels(tel), names)


def _images(a: np.ndarray) -> Tensor:
    return torch.from_numpy(a.astype(np.float32)).mul_(1.0 / 255.0)


def _labels(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(a).astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10 (python pickles)

def _unpickle(path: Path) -> dict:
    # Only read the files you put there yourself: pickle can run code (as in torchvision).
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DataError(f"cannot read {path} as a CIFAR-10 pickle ({e}); "
                        "delete it and put a fresh copy there") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a pickled dict)")
    return obj


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
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


def _load_cifar(base: Path) -> Splits | None:
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
    return Splits(_images(train_x), _labels(train_y), _images(test_x), _labels(test_y), classes)


# ---------------------------------------------------------------- torchvision datasets

def _how_to_fix(cls: str, base: Path) -> str:
    if cls == "CIFAR10":
        return (f"put {', '.join(CIFAR_FILES)} (and batches.meta) in {base / CIFAR_DIR}/ "
                f"(the folder inside cifar-10-python.tar.gz) or directly in {base}/; "
                "or allow download on a connected machine")
    names = ", ".join(IDX_FILES)
    return (f"put {names} (or the same names with .gz) in {base / cls / 'raw'}/ "
            f"(torchvision's layout) or directly in {base}/; or allow download on a connected machine")


def load_torchvision(cls: str, root: str | None, download: bool) -> Splits:
    """MNIST, FashionMNIST or CIFAR10 from ``root``, downloading through torchvision if allowed."""
    if cls not in ("MNIST", "FashionMNIST", "CIFAR10"):
        raise DataError(f"unknown torchvision dataset {cls!r}; known: MNIST, FashionMNIST, CIFAR10")
    base = _root(root)
    load = _load_cifar if cls == "CIFAR10" else (lambda b: _load_idx_set(cls, b))
    found = load(base)
    if found is not None:
        return found
    if not download:
        raise DataError(f"{cls} not found under {base}: {_how_to_fix(cls, base)}")
    try:
        import torchvision.datasets

        base.mkdir(parents=True, exist_ok=True)
        # One call fetches the train and test files of the whole dataset.
        getattr(torchvision.datasets, cls)(str(base), train=True, download=True)
    except Exception as e:  # URLError, HTTPError, RuntimeError, OSError (offline, no space, ...)
        first = (str(e).strip().splitlines() or [""])[0][:200]  # torchvision's errors run long
        raise DataError(f"{cls} not found under {base} and the download failed "
                        f"({type(e).__name__}: {first}): {_how_to_fix(cls, base)}") from e
    found = load(base)
    if found is None:
        raise DataError(f"{cls} was downloaded but its files are not under {base}: "
                        f"{_how_to_fix(cls, base)}")
    return found


# ---------------------------------------------------------------- image folders

def _class_dirs(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist: make it, with one sub-folder "
                        "of pictures per class")
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class sub-folders: put the pictures of each class "
                        f"in {folder}/CLASS_NAME/")
    for name in names:
        if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in (folder / name).rglob("*")):
            raise DataError(f"class folder {folder / name} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder")
    return names


def _read_folder(folder: Path, size: tuple[int, int], channels: int) -> tuple[Tensor, Tensor]:
    from torchvision import datasets, transforms

    steps: list = [transforms.Resize(tuple(size))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    tf = transforms.Compose(steps)

    class Folder(datasets.ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            names = _class_dirs(Path(directory))  # the same classes we checked, no hidden dirs
            return names, {c: i for i, c in enumerate(names)}

    try:
        ds = Folder(str(folder), is_valid_file=lambda f: f.lower().endswith(IMAGE_EXTENSIONS))
    except (OSError, RuntimeError) as e:
        raise DataError(f"cannot list the images in {folder}: {e}") from e
    xs = []
    for path, _ in ds.samples:
        try:
            img = ds.loader(path)  # PIL, converted to RGB
        except OSError as e:
            raise DataError(f"cannot read image {path} ({e}): fix or remove it") from e
        xs.append(tf(img))
    return torch.stack(xs), torch.tensor(ds.targets, dtype=torch.int64)


def load_image_folder(root: str | None, train_dir: str, test_dir: str,
                      size: tuple[int, int], channels: int) -> Splits:
    """ROOT/train_dir/CLASS/*.png and ROOT/test_dir/CLASS/*.png, resized to size (h, w)."""
    if root is None:
        raise DataError("the image_folder dataset needs data.root: the folder that holds "
                        f"{train_dir}/CLASS/*.png and {test_dir}/CLASS/*.png")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data.root {base} does not exist or is not a folder")
    train_classes = _class_dirs(base / train_dir)
    test_classes = _class_dirs(base / test_dir)
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(f"{base / train_dir} and {base / test_dir} must have the same class "
                        f"folders; only in {train_dir}: {only_train or 'none'}, "
                        f"only in {test_dir}: {only_test or 'none'}")
    train_x, train_y = _read_folder(base / train_dir, size, channels)
    test_x, test_y = _read_folder(base / test_dir, size, channels)
    return Splits(train_x, train_y, test_x, test_y, train_classes)


# ---------------------------------------------------------------- in-memory datasets

def load_digits() -> Splits:
    """scikit-learn's bundled 8x8 digits, seeded split: 1437 train, 360 test."""
    try:
        from sklearn import datasets as skdatasets
    except ImportError as e:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    digits = skdatasets.load_digits()
    x = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360], perm[360:]
    return Splits(x[train], y[train], x[test], y[test], [str(i) for i in range(10)])


def make_synthetic(shape: tuple[int, int, int], classes: int, train_size: int,
                   test_size: int, noise: float, seed: int) -> Splits:
    """Seeded random class patterns plus Gaussian noise, clamped to [0, 1]; balanced labels."""
    if classes < 2 or train_size < 1 or test_size < 1 or noise < 0:
        raise DataError("synthetic data needs classes >= 2, sizes >= 1 and noise >= 0")
    g = torch.Generator().manual_seed(seed)
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    prototypes = torch.rand((classes, *shape), generator=g)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
        x = prototypes[y] + torch.randn((n, *shape), generator=g) * noise
        return x.clamp_(0.0, 1.0), y

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    return Splits(train_x, train_y, test_x, test_y, [str(i) for i in range(classes)])
