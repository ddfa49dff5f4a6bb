"""The decoded image cache: pictures decoded and resized once, in worker processes, into one uint8
N x C x H x W file per split that later runs map instead of decoding again.

A cache folder is ``<root>/<key>/`` where the key hashes the listing (every path, label, size and
mtime) and the decode settings, so a changed folder or setting is another key: it is rebuilt,
never patched. A cache is built in ``<key>.partial/`` (``cache_build``: resumable, chunk by chunk),
its manifest written last, then renamed into place: a folder with the key's name is complete, and
only such a folder, its files of the promised sizes, is ever opened. One process builds a key at a
time (``<key>.lock``); another waits, then uses what it built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from cnnspec.data import cache_build
from cnnspec.data.cache_build import FORMAT, MANIFEST, PROGRESS, fsync_dir
from cnnspec.errors import DataError

__all__ = ["CACHE_ENV", "Cached", "CachedSplit", "Listing", "cache_root", "find_cache", "open_cache"]

CACHE_ENV = "CNNSPEC_CACHE_DIR"
PARTIAL = ".partial"  # the suffix of a build in progress (or cut short, to be resumed)
LOCK = ".lock"


@dataclass
class Listing:
    """What a dataset reader found: per split, (path, label) pairs in a fixed order; class names."""

    splits: dict[str, list[tuple[str, int]]]
    classes: list[str]


@dataclass
class CachedSplit:
    """One split of a cache: pixels (a read-only map), labels, and the pictures left out."""

    pixels: np.ndarray  # uint8 N x C x H x W, file-backed
    labels: np.ndarray  # int64 N
    unreadable: list[tuple[str, str]]  # (path, why)


@dataclass
class Cached:
    """An opened cache folder: its splits, classes, and what the pictures were like."""

    folder: Path
    shape: tuple[int, int, int]
    classes: list[str]
    splits: dict[str, CachedSplit]
    sizes: dict[str, int] = field(default_factory=dict)  # "W x H" -> pictures, most common first
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> pictures
    built: bool = False  # this call decoded the pictures
    seconds: float = 0.0  # how long the build took

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        return [u for s in self.splits.values() for u in s.unreadable]


def cache_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where caches live: ``root``, else $CNNSPEC_CACHE_DIR, else ~/.cache/cnnspec/images."""
    return Path(root or os.environ.get(CACHE_ENV) or "~/.cache/cnnspec/images").expanduser()


def cache_key(listing: Listing, size: tuple[int, int], channels: int) -> str:
    """A hash of every (split, path, label, bytes, mtime) and the decode settings."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "size": list(size), "channels": channels,
                                   "classes": listing.classes}).encode())
    for split, entries in sorted(listing.splits.items()):
        for path, label in entries:
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{split}\0{path}\0{label}\0{stamp}\n".encode())
    return h.hexdigest()[:32]


def find_cache(listing: Listing, size: tuple[int, int], channels: int,
               root: str | os.PathLike[str] | None = None) -> Cached | None:
    """The complete cache of this listing and these settings, or None."""
    return _open(cache_root(root) / cache_key(listing, size, channels))


def open_cache(listing: Listing, size: tuple[int, int], channels: int, *,
               root: str | os.PathLike[str] | None = None, workers: int | None = None,
               quiet: bool = False) -> Cached:
    """The cache of ``listing``, built first (in ``workers`` processes, default: every core) if missing,
    or finished if a build of the same key was cut short."""
    base = cache_root(root)
    folder = base / cache_key(listing, size, channels)
    found = _open(folder)
    if found is not None:
        return found
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot make the image cache folder {base} ({e}): set {CACHE_ENV} to a writable "
                        "folder") from e
    _remove_stale(base)
    started = time.perf_counter()
    partial = folder.with_name(folder.name + PARTIAL)
    try:
        with _locked(folder, quiet):
            found = _open(folder)  # another process built it while this one waited
            if found is not None:
                return found
            _discard_others(base, folder.name, cache_build.source_of(listing.splits))
            cache_build.build(partial, listing.splits, listing.classes, size, channels, workers, quiet)
            if folder.exists():  # there but not a cache that opens (files cut short on disk): replaced
                shutil.rmtree(folder)
            os.rename(partial, folder)
            fsync_dir(base)
            _unlink(folder.with_name(folder.name + LOCK))  # renamed first: a waiter finds the cache
    except OSError as e:  # a full disk: what was decoded is kept for the next run
        raise DataError(f"cannot write the image cache in {base} ({e}): free some space or set "
                        f"{CACHE_ENV} to another folder; the images decoded so far are kept") from e
    cached = _open(folder)
    assert cached is not None, "a cache just renamed into place opens"
    cached.built, cached.seconds = True, time.perf_counter() - started
    return cached


@contextmanager
def _locked(folder: Path, quiet: bool) -> Iterator[None]:
    """Hold ``<key>.lock`` (waiting, with a word, while another process builds the same cache)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): builds of one key in two processes are not kept apart
        yield
        return
    with open(folder.with_name(folder.name + LOCK), "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another process to finish the image cache {folder}", file=sys.stderr)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _discard_others(base: Path, key: str, source: str) -> None:
    """Remove partial builds of the same picture folder under other keys (the folder or the settings
    changed since), unless a live process is building one: at most one partial build per folder."""
    for other in base.glob(f"*{PARTIAL}"):
        name = other.name[:-len(PARTIAL)]
        if name == key:
            continue
        try:
            plan = json.loads((other / PROGRESS).read_text())["plan"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not source or plan.get("source") != source:
            continue
        lock = base / (name + LOCK)
        with open(lock, "a") as f:
            if _try_lock(f):  # the lock file stays: unlinking it would let a process waiting on the
                shutil.rmtree(other, ignore_errors=True)  # old file and a newcomer on a new one both build


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _open(folder: Path) -> Cached | None:
    """The cache in ``folder`` if its manifest is there and every file has the size it promises."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            return None
        shape = tuple(int(v) for v in manifest["shape"])
        splits = {}
        for name, info in manifest["splits"].items():
            n = int(info["count"])
            file = folder / f"{name}.u8"
            if file.stat().st_size != n * int(np.prod(shape)):
                return None
            # copy-on-write: writable for torch.from_numpy, and no write ever reaches the file
            pixels = np.memmap(file, dtype=np.uint8, mode="c", shape=(n, *shape)) if n else \
                np.zeros((0, *shape), dtype=np.uint8)
            labels = np.load(folder / f"{name}.labels.npy", allow_pickle=False)
            if labels.shape != (n,):
                return None
            splits[name] = CachedSplit(pixels, labels.astype(np.int64), [tuple(u) for u in info["unreadable"]])
        return Cached(folder, (shape[0], shape[1], shape[2]), list(manifest["classes"]), splits,
                      dict(manifest.get("sizes", {})), dict(manifest.get("modes", {})))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(base: Path) -> None:
    """Remove the temporary folders of builds by earlier versions (``<key>.tmp-PID``) whose process is gone."""
    for tmp in base.glob("*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue
