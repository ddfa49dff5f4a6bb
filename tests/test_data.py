"""Tests of the dataset plugins (IDX, CIFAR, image folders, digits, synthetic) and cnnspec.data.splits's splits."""

from __future__ import annotations

import gzip
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnspec.data import splits as data
from cnnspec.data.splits import DataError, Splits
from cnnspec.plugins import cifar, datasets, image_folder, mnist
from cnnspec.registry.manager import default_registry
from cnnspec.registry.types import NoParams


def load(name: str, root: str | None, download: bool) -> Splits:
    """A dataset through its registered plugin, as `cnnspec run` loads it."""
    return default_registry().get("dataset", name).load(NoParams(), root, download)

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return np.array([2051, n, h, w], dtype=">i4").tobytes() + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return np.array([2049, len(labels)], dtype=">i4").tobytes() + labels.astype(np.uint8).tobytes()


def write_mnist(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    """Fake MNIST IDX files in folder; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        raw = idx_images(arr) if arr.ndim == 3 else idx_labels(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
@pytest.mark.parametrize("cls", ["MNIST", "FashionMNIST"])
def test_idx_layouts(tmp_path: Path, gz: bool, layout: str, cls: str) -> None:
    folder = tmp_path / cls / "raw" if layout == "torchvision" else tmp_path
    arrays = write_mnist(folder, gz)
    s = load({"MNIST": "mnist", "FashionMNIST": "fashion_mnist"}[cls], str(tmp_path), download=False)
    assert s.train_x.shape == (12, 1, 28, 28) and s.test_x.shape == (5, 1, 28, 28)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert 0.0 <= float(s.train_x.min()) and float(s.train_x.max()) <= 1.0
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    assert torch.allclose(s.train_x[:, 0], expected)
    assert s.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert s.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert len(s.classes) == 10 and (s.classes[0] == "0") == (cls == "MNIST")


def test_truncated_idx_names_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load("mnist", str(tmp_path), download=False)


def test_wrong_magic_names_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(np.array([2051, 5], dtype=">i4").tobytes() + bytes(5))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*magic number 2051"):
        load("mnist", str(tmp_path), download=False)


def test_corrupt_gzip_names_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load("mnist", str(tmp_path), download=False)


def test_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_labels(np.zeros(4)))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load("mnist", str(tmp_path), download=False)


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load("mnist", str(tmp_path), download=False)
    msg = str(err.value)
    for name in mnist.IDX_FILES:
        assert name in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "not found under" in msg


def test_offline_download_gives_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def offline(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as err:
        load("fashion_mnist", str(tmp_path), download=True)
    msg = str(err.value)
    assert calls and calls[0][1]["download"] is True
    assert "download failed" in msg and "URLError" in msg
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg


def test_a_failed_download_says_why_and_leaves_no_empty_folders(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    # the real torchvision download, pointed at a port where nothing listens: its error is
    # "Error downloading FILE:" with the reason on later lines (issue 22: the reason was dropped)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    base = tmp_path / "data" / "deeper"
    with pytest.raises(DataError) as err:
        load("mnist", str(base), download=True)
    msg = str(err.value)
    assert "Error downloading train-images-idx3-ubyte.gz: <urlopen error" in msg, msg
    assert not (tmp_path / "data").exists()  # the folders it made, all empty, are gone
    assert list(tmp_path.iterdir()) == []

    # a folder that was there before stays; one holding a file stays too
    (tmp_path / "kept").mkdir()

    def partial(root: str, **kwargs: object) -> None:
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"part")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n")  # no reason at all

    monkeypatch.setattr(torchvision.datasets, "MNIST", partial)
    with pytest.raises(DataError) as err:
        load("mnist", str(tmp_path / "kept"), download=True)
    assert "Error downloading train-images-idx3-ubyte.gz: no reason given; is there a network connection?" in str(
        err.value)
    assert (tmp_path / "kept" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


def test_download_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def fake_download(root: str, train: bool, download: bool) -> None:
        write_mnist(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    s = load("mnist", str(tmp_path / "new"), download=True)
    assert len(s.train_y) == 12 and len(s.test_y) == 5


def write_cifar(folder: Path, n: int = 4, meta: bool = True) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate(cifar.CIFAR_FILES):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [(i + j) % 10 for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    if meta:
        names = [f"c{i}".encode() for i in range(10)]
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_cifar_pickles(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    s = load("cifar10", str(tmp_path), download=False)
    assert s.train_x.shape == (20, 3, 32, 32) and s.test_x.shape == (4, 3, 32, 32)
    assert s.train_x.dtype == torch.float32 and s.test_y.dtype == torch.int64
    assert float(s.train_x.max()) <= 1.0 and s.test_y.tolist() == [5, 6, 7, 8]
    assert s.classes == [f"c{i}" for i in range(10)]
    # the first 1024 bytes of a row are the red plane
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert torch.allclose(s.train_x[0, 0].flatten() * 255, torch.tensor(raw[b"data"][0, :1024], dtype=torch.float32))


def test_cifar_default_names_and_errors(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py", meta=False)
    s = load("cifar10", str(tmp_path), download=False)
    assert s.classes == cifar.CIFAR10_CLASSES
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch"):
        load("cifar10", str(tmp_path), download=False)
    with pytest.raises(DataError, match="data_batch_1.*test_batch.*cifar-10-batches-py"):
        load("cifar10", str(tmp_path / "empty"), download=False)


def make_image_folder(root: Path, classes: dict[str, dict[str, int]]) -> None:
    from PIL import Image

    for split, counts in classes.items():
        for k, (cls, n) in enumerate(counts.items()):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                size = (10 + 3 * i, 7 + 5 * k)  # different sizes
                Image.new("RGB", size, (40 * i, 200, 10 * k)).save(d / f"img{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path: Path, channels: int) -> None:
    make_image_folder(tmp_path, {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 2}})
    s = image_folder.load_image_folder(str(tmp_path), "train", "test", (12, 9), channels)
    assert s.train_x.shape == (5, channels, 12, 9) and s.test_x.shape == (3, channels, 12, 9)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert 0.0 <= float(s.train_x.min()) and float(s.train_x.max()) <= 1.0
    assert s.classes == ["cat", "dog"]
    assert s.train_y.tolist() == [0, 0, 0, 1, 1] and s.test_y.tolist() == [0, 1, 1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs data.root"):
        image_folder.load_image_folder(None, "train", "test", (8, 8), 3)
    with pytest.raises(DataError, match="does not exist"):
        image_folder.load_image_folder(str(tmp_path / "nope"), "train", "test", (8, 8), 3)
    make_image_folder(tmp_path, {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "eel": 1}})
    with pytest.raises(DataError, match=r"only in train: \['dog'\], only in test: \['eel'\]"):
        image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 3)
    with pytest.raises(DataError, match="valid.*does not exist"):
        image_folder.load_image_folder(str(tmp_path), "train", "valid", (8, 8), 3)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no images"):
        image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 3)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        image_folder.load_image_folder(str(tmp_path), "bare", "test", (8, 8), 3)


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 1)


def test_digits() -> None:
    s = datasets.load_digits()
    assert s.train_x.shape == (1437, 1, 8, 8) and s.test_x.shape == (360, 1, 8, 8)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert float(s.train_x.max()) == 1.0 and float(s.train_x.min()) == 0.0
    assert s.classes == [str(i) for i in range(10)]
    assert torch.equal(s.test_y, datasets.load_digits().test_y)  # deterministic split


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        datasets.load_digits()


def test_synthetic_deterministic_and_balanced() -> None:
    a = datasets.make_synthetic((3, 5, 4), 4, 40, 12, 0.3, seed=7)
    b = datasets.make_synthetic((3, 5, 4), 4, 40, 12, 0.3, seed=7)
    c = datasets.make_synthetic((3, 5, 4), 4, 40, 12, 0.3, seed=8)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (40, 3, 5, 4) and a.test_x.shape == (12, 3, 5, 4)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert 0.0 <= float(a.train_x.min()) and float(a.train_x.max()) <= 1.0
    assert torch.bincount(a.train_y).tolist() == [10] * 4
    assert torch.bincount(a.test_y).tolist() == [3] * 4
    assert len(a.classes) == 4 and a.sample_shape == (3, 5, 4)


def test_synthetic_is_learnable() -> None:
    # nearest class mean from train classifies test well: the classes are separable
    s = datasets.make_synthetic((1, 8, 8), 4, 200, 100, 0.3, seed=0)
    means = torch.stack([s.train_x[s.train_y == k].mean(0) for k in range(4)])
    dist = ((s.test_x[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dist.argmin(1) == s.test_y).float().mean() > 0.9


def test_validation_split() -> None:
    x = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1, 1)
    y = torch.arange(100)
    tx, ty, vx, vy = data.validation_split(x, y, 0.2, seed=3)
    assert vx is not None and vy is not None
    assert len(tx) == 80 and len(vx) == 20
    assert set(ty.tolist()).isdisjoint(vy.tolist()) and sorted(ty.tolist() + vy.tolist()) == list(range(100))
    assert torch.equal(tx.flatten().long(), ty) and torch.equal(vx.flatten().long(), vy)
    again = data.validation_split(x, y, 0.2, seed=3)
    assert torch.equal(again[3], vy)  # type: ignore[arg-type]
    assert not torch.equal(data.validation_split(x, y, 0.2, seed=4)[3], vy)  # type: ignore[arg-type]
    assert data.validation_split(x, y, 0.0, seed=3)[2:] == (None, None)
    with pytest.raises(DataError):
        data.validation_split(x, y, 1.0, seed=0)


def test_splits_split_validation_and_stats() -> None:
    s = datasets.make_synthetic((2, 4, 4), 2, 50, 10, 0.1, seed=1)
    rest, val = s.split_validation(0.1, seed=0)
    assert val is not None and len(val[0]) == 5 and len(rest.train_x) == 45
    assert torch.equal(rest.test_x, s.test_x)
    assert s.split_validation(0.0, seed=0)[1] is None
    mean, std = data.channel_stats(s.train_x)
    assert mean.shape == (2,) and std.shape == (2,)
    assert torch.allclose(mean, s.train_x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(std, s.train_x.std(dim=(0, 2, 3), correction=0), atol=1e-5)
    _, flat = data.channel_stats(torch.zeros(3, 1, 2, 2))
    assert float(flat[0]) > 0  # safe to divide by


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="real MNIST not present under shared/data/mnist")
def test_real_mnist() -> None:
    s = load("mnist", str(REAL_MNIST), download=False)
    assert s.train_x.shape == (60000, 1, 28, 28) and s.test_x.shape == (10000, 1, 28, 28)
    assert len(s.train_y) == 60000 and len(s.test_y) == 10000
    assert torch.bincount(s.train_y).tolist()[:2] == [5923, 6742]
    assert float(s.train_x.max()) == 1.0 and float(s.train_x.min()) == 0.0


@pytest.mark.parametrize(("overrides", "want"), [
    ([], 1000),  # MNIST: 1000 inputs are 3 MiB
    (["input=[3, 64, 64]", "data.dataset={type: image_folder, size: [64, 64]}"], 682),  # 32 MiB // 48 KiB
    (["input=[3, 256, 256]", "data.dataset={type: image_folder, size: [256, 256]}", "data.batch_size=128"],
     128),  # 42 would fit in 32 MiB: never below batch_size
    (["input=[3, 256, 256]", "data.dataset={type: image_folder, size: [256, 256]}", "data.eval_batch_size=7"],
     7),  # said in the spec: as said
])
def test_the_evaluation_batch_is_sized_by_the_input(overrides, want):
    from conftest import ROOT

    from cnnspec.spec.load import check_file

    result = check_file(str(ROOT / "specs" / "mnist_cnn.yaml"), overrides=overrides)
    assert result.spec is not None, result.problems
    assert result.spec.eval_batch_size == want
    assert result.spec.to_dict()["data"]["eval_batch_size"] == want  # the run folder records what ran
