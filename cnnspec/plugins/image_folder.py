"""Your own pictures: ROOT/train/CLASS/*.png and ROOT/test/CLASS/*.png (or a CSV of path,label rows, or
one folder with a test fraction held out), decoded once into the image cache and streamed from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from cnnspec.errors import DataError
from cnnspec.plugins.image_sources import IMAGE_EXTENSIONS, class_dirs, list_csv, list_folders
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.params import NonNegInt, PosPair
from cnnspec.registry.types import DatasetType, Params, Shape

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.data.cache import Cached, Listing
    from cnnspec.data.splits import Splits

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "ImageFolderParams", "class_dirs", "describe_cache",
           "load_image_folder", "listing"]

_class_dirs = class_dirs  # the name tests and older plugins used


class ImageFolderParams(Params):
    size: PosPair = Field(description="resize every image to [height, width]")
    channels: Literal[1, 3] = Field(3, description="1 = greyscale, 3 = RGB")
    test_dir: str = Field("test", description="sub-folder of data.root with the test images")
    train_dir: str = Field("train", description="sub-folder of data.root with the training images "
                           "('.' for data.root itself, with test_fraction)")
    csv: str | None = Field(None, description="a CSV file (in data.root) of path,label rows for the training "
                            "images, paths relative to the file, instead of class folders")
    test_csv: str | None = Field(None, description="a CSV file of path,label rows for the test images")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="hold out this fraction of each class of "
                                 "the training images as the test split (seeded; test_dir/test_csv unused)")
    max_unreadable: NonNegInt = Field(0, description="pictures that cannot be read are left out and listed; "
                                      "more than this many stop the run")
    in_memory: bool | None = Field(None, description="true: hold the decoded set in memory as float32; false: "
                                   "stream batches from the image cache; unset: in memory when it takes at most "
                                   "a quarter of the free memory")


def listing(p: ImageFolderParams, root: str | None) -> Listing:
    """The (path, label) pairs of each split and the class names, as the parameters say."""
    if root is None:
        raise DataError("the image_folder dataset needs data.root: the folder that holds "
                        f"{p.train_dir}/CLASS/*.png and {p.test_dir}/CLASS/*.png")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data.root {base} does not exist or is not a folder")
    if p.csv is not None:
        return list_csv(base, p.csv, p.test_csv, p.test_fraction)
    return list_folders(base, p.train_dir, p.test_dir, p.test_fraction)


def load_cached(p: ImageFolderParams, root: str | None, quiet: bool = False) -> tuple[Cached, Listing]:
    """The decoded cache of the dataset (built if missing); DataError when too many pictures are unreadable."""
    from cnnspec.data.cache import open_cache

    found = listing(p, root)
    cached = open_cache(found, tuple(p.size), p.channels, quiet=quiet)  # type: ignore[arg-type]
    bad = cached.unreadable
    if len(bad) > p.max_unreadable:
        shown = "; ".join(f"{path} ({why})" for path, why in bad[:20]) + ("; ..." if len(bad) > 20 else "")
        raise DataError(f"{len(bad)} of {sum(len(e) for e in found.splits.values())} images cannot be read "
                        f"(max_unreadable is {p.max_unreadable}): {shown}: fix or remove them, or raise "
                        "data.dataset.max_unreadable to leave them out")
    return cached, found


def load_image_folder(root: str | None, train_dir: str, test_dir: str, size: tuple[int, int], channels: int,
                      stream: bool = False, **options: Any) -> Splits:
    """ROOT/train_dir/CLASS/*.png and ROOT/test_dir/CLASS/*.png, resized to size (h, w): float32
    tensors, or (``stream``) StreamedImages over the cache for prepare_data to place."""
    import torch

    from cnnspec.data.splits import Splits
    from cnnspec.data.stream import StreamedImages

    p = ImageFolderParams(size=size, channels=channels, train_dir=train_dir, test_dir=test_dir, **options)
    cached, _ = load_cached(p, root)
    if cached.unreadable:
        import sys

        print(f"left out {len(cached.unreadable)} unreadable images: "
              + "; ".join(f"{path} ({why})" for path, why in cached.unreadable), file=sys.stderr)
    xs = [StreamedImages.from_array(cached.splits[s].pixels, in_memory=p.in_memory, source=str(cached.folder))
          for s in ("train", "test")]
    ys = [torch.from_numpy(cached.splits[s].labels) for s in ("train", "test")]
    if not stream:
        return Splits(xs[0].resident(), ys[0], xs[1].resident(), ys[1], cached.classes)
    return Splits(xs[0], ys[0], xs[1], ys[1], cached.classes)


def describe_cache(p: ImageFolderParams, root: str | None) -> dict[str, Any]:
    """What ``cnnspec data`` shows of the cache: folder, whether it was built now, picture sizes and modes."""
    cached, _ = load_cached(p, root, quiet=False)
    return {"cache": str(cached.folder), "built": cached.built, "seconds": round(cached.seconds, 2),
            "sizes": cached.sizes, "modes": cached.modes,
            "unreadable": [list(u) for u in cached.unreadable]}


class ImageFolder(DatasetType[ImageFolderParams]):
    name = "image_folder"
    Params = ImageFolderParams
    description = "your own pictures: ROOT/train/CLASS/*.png and ROOT/test/CLASS/*.png, or a CSV"

    def sample_shape(self, p: ImageFolderParams) -> Shape:
        return (p.channels, *p.size)

    def streamed(self, p: ImageFolderParams) -> bool:
        """Streamed from the cache unless ``in_memory: true`` (unset: held only when it takes at most a
        quarter of the memory free beside the training estimate, so counting the stream is safe)."""
        return p.in_memory is not True

    def describe(self, p: ImageFolderParams, root: str | None) -> dict[str, Any]:
        """The cache and the pictures found, for ``cnnspec data``."""
        return describe_cache(p, root)

    def load(self, p: ImageFolderParams, root: str | None, download: bool) -> Any:
        options = p.model_dump(exclude={"size", "channels", "train_dir", "test_dir"})
        return load_image_folder(root, p.train_dir, p.test_dir, p.size, p.channels, stream=True, **options)


@hookimpl
def register_datasets(register: Register) -> None:
    register(ImageFolder())
