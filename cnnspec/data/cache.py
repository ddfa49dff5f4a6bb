"""The decoded image cache: pictures decoded and resized once, in worker processes, into one uint8
N x C x H x W file per split that later runs map instead of decoding again.

A cache folder is ``<root>/<key>/`` where the key hashes the listing (every path, label, size and
mtime) and the decode settings, so a changed folder or setting is another key: it is rebuilt,
never patched. A cache is written under a temporary name, its files fsynced, its manifest written
last, then renamed into place: a folder with the key's name is complete, and a build cut short
(Ctrl-C, a full disk, a killed process) leaves only a temporary folder, removed by the next build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnspec.data.decode import decode_chunk
from cnnspec.errors import DataError

__all__ = ["CACHE_ENV", "Cached", "CachedSplit", "Listing", "cache_root", "find_cache", "open_cache"]

CACHE_ENV = "CNNSPEC_CACHE_DIR"
FORMAT = 1  # bump when the decoding or the layout changes: older caches are then other keys
CHUNK = 64  # pictures per task handed to a worker
IN_PROCESS_BELOW = 256  # fewer pictures than this are decoded without starting workers
MANIFEST = "manifest.json"


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
    """The cache of ``listing``, built first (in ``workers`` processes, default: every core) if missing."""
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
    tmp = base / f"{folder.name}.tmp-{os.getpid()}"
    try:
        _build(tmp, listing, size, channels, workers, quiet)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: use theirs
            if _open(folder) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(base)
    except BaseException as e:  # Ctrl-C, a full disk: nothing half-written is left under the key
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise DataError(f"cannot write the image cache in {base} ({e}): free some space or set "
                            f"{CACHE_ENV} to another folder") from e
        raise
    cached = _open(folder)
    assert cached is not None, "a cache just renamed into place opens"
    cached.built, cached.seconds = True, time.perf_counter() - started
    return cached


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


def _build(tmp: Path, listing: Listing, size: tuple[int, int], channels: int, workers: int | None,
           quiet: bool) -> None:
    """Decode every picture into ``tmp``: the pixel files, labels, and the manifest last."""
    tmp.mkdir()
    shape = (channels, *size)
    total = sum(len(e) for e in listing.splits.values())
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = 1 if total < IN_PROCESS_BELOW else max(1, min(workers, -(-total // CHUNK)))
    progress = _Progress(total, workers, quiet)
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    manifest: dict[str, Any] = {"format": FORMAT, "shape": list(shape), "classes": listing.classes, "splits": {}}
    for name, entries in listing.splits.items():
        file = tmp / f"{name}.u8"
        with open(file, "wb") as f:
            f.truncate(len(entries) * int(np.prod(shape)))
        tasks = [(str(file), (len(entries), *shape), [(i, p) for i, (p, _) in enumerate(entries[k:k + CHUNK], k)],
                  size, channels) for k in range(0, len(entries), CHUNK)]
        bad: dict[int, str] = {}
        for results in _run(tasks, workers):
            for row, why, found, mode in results:
                if why is not None:
                    bad[row] = why
                else:
                    sizes[f"{found[0]} x {found[1]}"] += 1
                    modes[mode] += 1
            progress.advance(len(results))
        keep = [i for i in range(len(entries)) if i not in bad]
        if bad:
            _compact(file, (len(entries), *shape), keep)
        _fsync(file)
        labels = np.asarray([entries[i][1] for i in keep], dtype=np.int64)
        with open(tmp / f"{name}.labels.npy", "wb") as f:
            np.save(f, labels)
            f.flush()
            os.fsync(f.fileno())
        manifest["splits"][name] = {"count": len(keep), "unreadable": [[entries[i][0], bad[i]] for i in sorted(bad)]}
    manifest["sizes"] = dict(sizes.most_common(20))
    manifest["modes"] = dict(modes.most_common())
    with open(tmp / MANIFEST, "w") as f:  # last: its presence says the rest is complete
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    progress.done(tmp.parent / tmp.name.split(".tmp-")[0])


def _run(tasks: list[Any], workers: int) -> Any:
    """Each task's results, decoded here (one worker) or in ``workers`` spawned processes."""
    if workers <= 1:
        yield from map(decode_chunk, tasks)
        return
    import multiprocessing

    # fork where there is one, as torch's DataLoader does: the workers use only PIL and numpy, never
    # torch's threads, and a script without an `if __name__ == "__main__"` guard is not run again
    methods = multiprocessing.get_all_start_methods()
    with multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(decode_chunk, tasks)


def _compact(file: Path, shape: tuple[int, ...], keep: list[int]) -> None:
    """Move the rows ``keep`` (ascending) to the front of ``file`` and cut it to their length."""
    pixels = np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)
    for dst, src in enumerate(keep):
        if dst != src:
            pixels[dst] = pixels[src]
    pixels.flush()
    del pixels
    os.truncate(file, len(keep) * int(np.prod(shape[1:])))


def _fsync(file: Path) -> None:
    with open(file, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(base: Path) -> None:
    """Remove temporary folders of builds whose process is gone (cut short by Ctrl-C or a kill)."""
    for tmp in base.glob("*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


class _Progress:
    """A one-line progress count on a terminal's stderr; a summary line when done."""

    def __init__(self, total: int, workers: int, quiet: bool) -> None:
        self.total, self.workers, self.quiet = total, workers, quiet
        self.done_count, self.started, self.shown = 0, time.perf_counter(), 0.0
        self.live = not quiet and sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done_count += n
        now = time.perf_counter()
        if self.live and (now - self.shown > 0.2 or self.done_count == self.total):
            self.shown = now
            rate = self.done_count / max(now - self.started, 1e-9)
            sys.stderr.write(f"\rdecoding images into the cache ({self.workers} processes): "
                             f"{self.done_count:,}/{self.total:,}, {rate:,.0f}/s ")
            sys.stderr.flush()

    def done(self, folder: Path) -> None:
        if self.quiet:
            return
        if self.live:
            sys.stderr.write("\n")
        seconds = time.perf_counter() - self.started
        print(f"cached {self.total:,} images in {seconds:.1f} s ({self.workers} processes): {folder}",
              file=sys.stderr)
