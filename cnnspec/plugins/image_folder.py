"""Your own pictures: ROOT/train/CLASS/*.png and ROOT/test/CLASS/*.png, resized and read into memory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from cnnspec.errors import DataError
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import PosPair
from cnnspec.registry.types import DatasetType, Params, Shape

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from cnnspec.data.splits import Splits

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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
    import torch
    from torchvision import datasets, transforms

    steps: list[Any] = [transforms.Resize(tuple(size))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    tf = transforms.Compose(steps)

    class Folder(datasets.ImageFolder):
        def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
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
    from cnnspec.data.splits import Splits

    if root is None:
        raise DataError("the image_folder dataset needs data.root: the folder that holds "
                        f"{train_dir}/CLASS/*.png and {test_dir}/CLASS/*.png")
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
        return load_image_folder(root, p.train_dir, p.test_dir, p.size, p.channels)


@hookimpl
def register_datasets(register: Register) -> None:
    register(ImageFolder())
