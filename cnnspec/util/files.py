"""Reading files that may be hostile: regular files only, opened without blocking, read capped."""

from __future__ import annotations

import os
import stat


class NotRegularFile(OSError):
    """The path is a directory, device, pipe or socket; ``is_dir`` says which kind of refusal."""

    def __init__(self, path: str, is_dir: bool) -> None:
        super().__init__(f"{path}: not a regular file")
        self.is_dir = is_dir


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a regular file (a caller sees an oversized file by its length).

    Opening never blocks (a FIFO would), and /dev/zero and the like are refused before any
    read, whatever size they claim. Raises the OSError of ``open`` or NotRegularFile.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(str(path), stat.S_ISDIR(mode))
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)
