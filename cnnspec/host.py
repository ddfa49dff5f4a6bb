"""Process-wide tuning done once at start-up, before training allocates anything."""

from __future__ import annotations

import sys


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the OS after every step.

    Each training step frees and reallocates activations of several MB; by default glibc
    serves those with mmap and unmaps them on free, so every step page-faults its memory in
    again. Raising the mmap and trim thresholds made the reference CPU step about 20% faster
    (the effect jemalloc or tcmalloc give). A no-op where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 28) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False
