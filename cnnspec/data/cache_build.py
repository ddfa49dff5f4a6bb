"""Building an image cache folder, resumably: pictures decoded in chunks (in worker processes) into the
uint8 files of a partial folder, each finished chunk recorded once its pixels are on disk, so a build
cut short (Ctrl-C, a killed process, a full disk) continues where it stopped.

The partial folder's ``progress.json`` names the build (format, shape, chunk size, split sizes, the
picture folder) and, per finished chunk, what it found (unreadable rows, picture sizes, modes). It is
replaced atomically, at most every SAVE_EVERY seconds and when the build stops, always after the pixel
files are fsynced, so every chunk it lists is on disk. A partial folder is never opened as a cache: the
caller renames it into place only after ``build`` returns, with the labels and the manifest written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from cnnspec.data.decode import decode_chunk

__all__ = ["CHUNK", "FORMAT", "IN_PROCESS_BELOW", "MANIFEST", "PROGRESS", "build", "fsync_dir", "source_of"]

FORMAT = 1  # bump when the decoding or the layout changes: older caches are then other keys
CHUNK = 64  # pictures per task handed to a worker (and per entry of the progress file)
IN_PROCESS_BELOW = 256  # fewer pictures than this are decoded without starting workers
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
SAVE_EVERY = 1.0  # seconds between progress records (each fsyncs the pixel files first)

Entries = dict[str, list[tuple[str, int]]]  # per split, (path, label) in a fixed order
Done = dict[str, dict[str, Any]]  # chunk id "split:first row" -> {"bad": {row: why}, "sizes": {}, "modes": {}}


def source_of(splits: Entries) -> str:
    """The folder the pictures are in (their common parent): a partial build of the same folder under
    another key (the folder changed, or the settings did) is discarded when a new build starts."""
    paths = [p for e in splits.values() for p, _ in e]
    try:
        return os.path.commonpath(paths) if paths else ""
    except ValueError:  # relative and absolute paths mixed
        return ""


def build(partial: Path, splits: Entries, classes: list[str], size: tuple[int, int], channels: int,
          workers: int | None, quiet: bool) -> None:
    """Decode every picture not yet recorded in ``partial`` (made or resumed), then write its labels and
    manifest. Interrupted, it records the chunks finished so far before the exception goes on."""
    shape = (channels, *size)
    plan = {"format": FORMAT, "shape": list(shape), "chunk": CHUNK, "source": source_of(splits),
            "counts": {name: len(e) for name, e in splits.items()}}
    done = _resume(partial, plan)
    if done is None:
        done = _start(partial, plan, splits, shape)
    items = [(f"{name}:{k}", (str(partial / f"{name}.u8"), (len(e), *shape),
                              [(i, p) for i, (p, _) in enumerate(e[k:k + CHUNK], k)], size, channels))
             for name, e in splits.items() for k in range(0, len(e), CHUNK) if f"{name}:{k}" not in done]
    total = sum(len(e) for e in splits.values())
    todo = sum(len(task[2]) for _, task in items)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = 1 if todo < IN_PROCESS_BELOW else max(1, min(workers, len(items)))
    progress = _Progress(total, total - todo, workers, quiet, partial)
    record = _Recorder(partial, plan, done, list(splits))
    decoded = _run(items, workers)
    try:
        for cid, results in decoded:
            record.add(cid, results)
            progress.advance(len(results))
    except BaseException:
        decoded.close()  # the workers stopped before the pixel files are synced
        record.save(final=True)
        progress.stopped()
        raise
    record.save(final=True)
    _finish(partial, plan, splits, classes, done)
    progress.done()


def _start(partial: Path, plan: dict[str, Any], splits: Entries, shape: tuple[int, ...]) -> Done:
    """A fresh partial folder: zero-filled pixel files of the full size, an empty progress record."""
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name, entries in splits.items():
        with open(partial / f"{name}.u8", "wb") as f:
            f.truncate(len(entries) * int(np.prod(shape)))
    _write_json(partial / PROGRESS, {"plan": plan, "done": {}})
    fsync_dir(partial)
    return {}


def _resume(partial: Path, plan: dict[str, Any]) -> Done | None:
    """The chunks a partial build of the same plan finished, or None (no such build: start afresh)."""
    try:
        state = json.loads((partial / PROGRESS).read_text())
        if state.get("plan") != plan or state.get("compacting"):
            return None
        per_row = int(np.prod(plan["shape"]))
        for name, n in plan["counts"].items():
            if (partial / f"{name}.u8").stat().st_size != n * per_row:
                return None
        done = state["done"]
        return done if isinstance(done, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Recorder:
    """The progress file: finished chunks recorded after their pixels are fsynced, at most every
    SAVE_EVERY seconds (and when asked)."""

    def __init__(self, partial: Path, plan: dict[str, Any], done: Done, names: list[str]) -> None:
        self.partial, self.plan, self.done, self.names = partial, plan, done, names
        self.saved, self.unsaved = time.monotonic(), False

    def add(self, cid: str, results: list[tuple[int, str | None, Any, str]]) -> None:
        bad = {str(row): why for row, why, _, _ in results if why is not None}
        sizes = Counter(f"{found[0]} x {found[1]}" for _, why, found, _ in results if why is None)
        modes = Counter(mode for _, why, _, mode in results if why is None)
        self.done[cid] = {"bad": bad, "sizes": dict(sizes), "modes": dict(modes)}
        self.unsaved = True
        if time.monotonic() - self.saved >= SAVE_EVERY:
            self.save()

    def save(self, final: bool = False) -> None:
        """Fsync the pixel files, then replace the progress file; a failure here (a full disk) only
        means those chunks are decoded again next time."""
        if not self.unsaved:
            return
        try:
            for name in self.names:
                _fsync(self.partial / f"{name}.u8")
            _write_json(self.partial / PROGRESS, {"plan": self.plan, "done": self.done})
        except OSError:
            if not final:
                raise
            return
        self.saved, self.unsaved = time.monotonic(), False


def _finish(partial: Path, plan: dict[str, Any], splits: Entries, classes: list[str], done: Done) -> None:
    """Every chunk decoded: unreadable rows compacted away, the labels, the manifest last."""
    shape = tuple(plan["shape"])
    bad = {name: {int(row): why for cid, d in done.items() if cid.split(":")[0] == name
                  for row, why in d["bad"].items()} for name in splits}
    if any(bad.values()):  # compacting moves rows in place: a build cut short from here starts over
        _write_json(partial / PROGRESS, {"plan": plan, "done": done, "compacting": True})
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    for d in done.values():
        sizes.update(d["sizes"])
        modes.update(d["modes"])
    manifest: dict[str, Any] = {"format": FORMAT, "shape": list(shape), "classes": classes, "splits": {}}
    for name, entries in splits.items():
        file = partial / f"{name}.u8"
        keep = [i for i in range(len(entries)) if i not in bad[name]]
        if bad[name]:
            _compact(file, (len(entries), *shape), keep)
        _fsync(file)
        with open(partial / f"{name}.labels.npy", "wb") as f:
            np.save(f, np.asarray([entries[i][1] for i in keep], dtype=np.int64))
            f.flush()
            os.fsync(f.fileno())
        manifest["splits"][name] = {"count": len(keep),
                                    "unreadable": [[entries[i][0], bad[name][i]] for i in sorted(bad[name])]}
    manifest["sizes"] = dict(_most_common(sizes)[:20])
    manifest["modes"] = dict(_most_common(modes))
    (partial / PROGRESS).unlink()
    _write_json(partial / MANIFEST, manifest)  # last: its presence says the rest is complete
    fsync_dir(partial)


def _most_common(c: Counter[str]) -> list[tuple[str, int]]:
    """Most common first, ties by name: the same order however the chunks finished."""
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))


def _decode(item: tuple[str, Any]) -> tuple[str, list[tuple[int, str | None, Any, str]]]:
    cid, task = item
    return cid, decode_chunk(task)


def _run(items: list[tuple[str, Any]], workers: int) -> Generator[tuple[str, Any], None, None]:
    """Each chunk's (id, results), decoded here (one worker) or in ``workers`` processes."""
    if workers <= 1:
        yield from map(_decode, items)
        return
    import multiprocessing

    # fork where there is one, as torch's DataLoader does: the workers use only PIL and numpy, never
    # torch's threads, and a script without an `if __name__ == "__main__"` guard is not run again
    methods = multiprocessing.get_all_start_methods()
    with multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_decode, items)


def _compact(file: Path, shape: tuple[int, ...], keep: list[int]) -> None:
    """Move the rows ``keep`` (ascending) to the front of ``file`` and cut it to their length."""
    pixels = np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)
    for dst, src in enumerate(keep):
        if dst != src:
            pixels[dst] = pixels[src]
    pixels.flush()
    del pixels
    os.truncate(file, len(keep) * int(np.prod(shape[1:])))


def _write_json(path: Path, data: Any) -> None:
    """``path`` replaced atomically by ``data``, synced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(file: Path) -> None:
    with open(file, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Sync a folder's entries (renames into it), where the system allows."""
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


class _Progress:
    """A one-line progress count on a terminal's stderr; a summary line when done or stopped."""

    def __init__(self, total: int, already: int, workers: int, quiet: bool, partial: Path) -> None:
        self.total, self.already, self.workers, self.quiet, self.partial = total, already, workers, quiet, partial
        self.done_count, self.started, self.shown = already, time.perf_counter(), 0.0
        self.live = not quiet and sys.stderr.isatty()
        if already and not quiet:
            print(f"resuming the image cache build: {already:,} of {total:,} images were decoded before",
                  file=sys.stderr)

    def advance(self, n: int) -> None:
        self.done_count += n
        now = time.perf_counter()
        if self.live and (now - self.shown > 0.2 or self.done_count == self.total):
            self.shown = now
            rate = (self.done_count - self.already) / max(now - self.started, 1e-9)
            sys.stderr.write(f"\rdecoding images into the cache ({_processes(self.workers)}): "
                             f"{self.done_count:,}/{self.total:,}, {rate:,.0f}/s ")
            sys.stderr.flush()

    def stopped(self) -> None:
        if self.quiet:
            return
        if self.live:
            sys.stderr.write("\n")
        print(f"image cache build stopped at {self.done_count:,} of {self.total:,} images; the decoded ones "
              f"are kept in {self.partial} and the next run continues from there", file=sys.stderr)

    def done(self) -> None:
        if self.quiet:
            return
        if self.live:
            sys.stderr.write("\n")
        seconds = time.perf_counter() - self.started
        folder = self.partial.with_suffix("")
        print(f"cached {self.total - self.already:,} images in {seconds:.1f} s ({_processes(self.workers)})"
              + (f", {self.already:,} decoded before" if self.already else "") + f": {folder}", file=sys.stderr)


def _processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"
