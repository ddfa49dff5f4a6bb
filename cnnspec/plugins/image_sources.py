"""Where the image_folder dataset finds its pictures: class folders, or a CSV of path,label rows, with
the test split given or held out (a seeded fraction per class). Lists paths; decodes nothing."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from cnnspec.data.cache import Listing
from cnnspec.errors import DataError
from cnnspec.util.files import read_regular

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_CSV_BYTES = 256 * 2**20
HOLD_OUT_SEED = 0  # test_fraction draws the same pictures every time


def class_dirs(folder: Path) -> list[str]:
    """The class sub-folders of ``folder`` (sorted, hidden ones skipped), each with a picture."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist: make it, with one sub-folder "
                        "of pictures per class")
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class sub-folders: put the pictures of each class "
                        f"in {folder}/CLASS_NAME/")
    for name in names:
        if not any(_is_image(f) for f in (folder / name).rglob("*")):
            raise DataError(f"class folder {folder / name} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder")
    return names


def _is_image(f: Path) -> bool:
    return f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()


def folder_entries(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) of every picture under ``folder/CLASS/``, by class then path."""
    return [(str(f), label) for label, name in enumerate(classes)
            for f in sorted((folder / name).rglob("*")) if _is_image(f)]


def csv_entries(file: Path) -> tuple[list[tuple[str, str]], Path]:
    """(path, label name) rows of a CSV (a ``path,label`` header is skipped); paths are relative to
    the CSV's folder."""
    try:
        raw = read_regular(file, MAX_CSV_BYTES)
    except OSError as e:
        raise DataError(f"cannot read the image list {file} ({e})") from e
    if len(raw) > MAX_CSV_BYTES:
        raise DataError(f"{file} is larger than {MAX_CSV_BYTES // 2**20} MiB; refused")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{file} is not UTF-8 text ({e})") from e
    rows: list[tuple[str, str]] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or (n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{file}:{n}: expected 'path,label', got {','.join(row)!r}")
        rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise DataError(f"{file} lists no images: write one 'path,label' row per picture")
    return rows, file.parent


def hold_out(entries: list[tuple[str, int]], fraction: float) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(kept, held out): a seeded ``fraction`` of each class's pictures held out (at least one of a
    class with two or more), so both splits see every class."""
    rng = random.Random(HOLD_OUT_SEED)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for e in entries:
        by_class.setdefault(e[1], []).append(e)
    kept, held = [], []
    for label in sorted(by_class):
        group = by_class[label]
        order = list(range(len(group)))
        rng.shuffle(order)
        k = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        chosen = set(order[:k])
        held += [group[i] for i in sorted(chosen)]
        kept += [group[i] for i in range(len(group)) if i not in chosen]
    return kept, held


def list_folders(base: Path, train_dir: str, test_dir: str, test_fraction: float) -> Listing:
    """ROOT/train_dir/CLASS/* and ROOT/test_dir/CLASS/* (or a fraction of train_dir held out)."""
    train_classes = class_dirs(base / train_dir)
    if test_fraction:
        kept, held = hold_out(folder_entries(base / train_dir, train_classes), test_fraction)
        return Listing({"train": kept, "test": held}, train_classes)
    test_classes = class_dirs(base / test_dir)
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(f"{base / train_dir} and {base / test_dir} must have the same class "
                        f"folders; only in {train_dir}: {only_train or 'none'}, "
                        f"only in {test_dir}: {only_test or 'none'}")
    return Listing({"train": folder_entries(base / train_dir, train_classes),
                    "test": folder_entries(base / test_dir, test_classes)}, train_classes)


def list_csv(base: Path, train_csv: str, test_csv: str | None, test_fraction: float) -> Listing:
    """The rows of ROOT/train_csv (and ROOT/test_csv, or a fraction held out); classes: the labels, sorted."""
    if test_csv is None and not test_fraction:
        raise DataError(f"image_folder with csv: {train_csv} needs a test split: test_csv: FILE, or "
                        "test_fraction: 0.2 to hold out a fifth of each class")
    train_rows, train_at = csv_entries(base / train_csv)
    test_rows, test_at = csv_entries(base / test_csv) if test_csv is not None else ([], base)
    classes = sorted({label for _, label in train_rows})
    unknown = sorted({label for _, label in test_rows} - set(classes))
    if unknown:
        raise DataError(f"{base / str(test_csv)} has labels that {base / train_csv} does not: {unknown}")
    index = {c: i for i, c in enumerate(classes)}
    train = [(str(train_at / p), index[c]) for p, c in train_rows]
    if test_fraction:
        train, test = hold_out(train, test_fraction)
    else:
        test = [(str(test_at / p), index[c]) for p, c in test_rows]
    return Listing({"train": train, "test": test}, classes)
