"""Process-wide tuning done once at start-up, before training allocates anything, and what the
host can give a run (memory, address space)."""

from __future__ import annotations

import os
import sys
from typing import Any

# Under an address-space cap (`ulimit -v`), what the process reserves without using matters:
# each glibc malloc arena reserves 64 MiB (one per thread that allocates, up to 8 per core), and
# numpy's OpenBLAS starts a thread per core and maps a buffer of about 32 MiB for each thread a
# call uses; when that mapping fails it prints "OpenBLAS error: Memory allocation still failed
# after 10 retries" and exits the process. cnnspec's training does not use numpy's BLAS.
CAPPED_ENV = {"OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
_M_ARENA_MAX = -8  # glibc's mallopt parameter
# what a run maps beyond its training estimate once torch is loaded (numpy, matplotlib, Pillow,
# threads, the allocator, the report): the quick start's peak was 400 MiB (500 MiB with the
# report) above the address space held when `run` checks it (torch 2.14.1 CUDA build, 2-core Xeon)
ADDRESS_RESERVE = 512 << 20


def address_space_limit() -> int | None:
    """The process's address-space cap in bytes (RLIMIT_AS: `ulimit -v`), or None when it has none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def fit_address_space() -> bool:
    """Under an address-space cap, reserve less of it: one OpenBLAS thread, one malloc arena
    (in the environment, for the processes this one starts, and through mallopt for this one, whose
    glibc read its environment before Python ran). Whatever the user set stays. Call it before numpy
    or torch is imported (OpenBLAS reads its variable when it loads); True when a cap was found."""
    if address_space_limit() is None:
        return False
    for name, value in CAPPED_ENV.items():
        os.environ.setdefault(name, value)
    arenas = os.environ["MALLOC_ARENA_MAX"]
    if sys.platform.startswith("linux") and arenas.isdigit() and int(arenas) > 0:
        _mallopt(_M_ARENA_MAX, int(arenas))
    return True


def _mallopt(param: int, value: int) -> bool:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, value))
    except (OSError, AttributeError):  # not glibc
        return False


def limit_text(cap: int) -> str:
    """The cap as the user set it: ``ulimit -v 4194304`` (KiB)."""
    return f"ulimit -v {cap // 1024}"


def capped_failure(e: BaseException) -> str | None:
    """One line for ``e`` when the address-space cap is its cause (a library that could not be
    mapped, memory that could not be had while importing), else None (also without a cap)."""
    cap = address_space_limit()
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    mapped = isinstance(e, (ImportError, OSError)) and any(
        s in text.lower() for s in ("failed to map segment", "cannot allocate memory"))
    if cap is None or not (mapped or isinstance(e, MemoryError)):
        return None
    return (f"the address-space limit ({limit_text(cap)}) is too small to load what this command needs "
            f"({text[:200]}); raise it: torch's CUDA build maps about 3.1 GiB of libraries when it is "
            "imported (its CPU-only build far less), and a run needs about 512 MiB more")


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``FIELD:  N kB`` line of a /proc file, in bytes; None where there is none (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def address_space_used() -> int | None:
    """Bytes of address space this process holds now (VmSize), or None where it cannot be told."""
    return _proc_bytes("/proc/self/status", "VmSize")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the OS after every step.

    Each training step frees and reallocates activations of several MB; by default glibc
    serves those with mmap and unmaps them on free, so every step page-faults its memory in
    again. Raising the mmap and trim thresholds made the reference CPU step about 20% faster
    (the effect jemalloc or tcmalloc give). A no-op where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return _mallopt(m_mmap_threshold, 1 << 28) and _mallopt(m_trim_threshold, 1 << 30)


def cpu_model() -> str:
    """The processor's model name as the OS reports it (AMD and Intel differ by a quarter here)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: Any) -> str:
    """What a torch device is in words: the GPU's name, or the CPU model and its core count."""
    import os

    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def versions(plugin_sources: dict[str, str]) -> dict[str, Any]:
    """Versions of what ran: Python, torch, torchvision, cnnspec, and every non-built-in plugin."""
    import platform

    import torch

    from cnnspec.version import __version__

    return {
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": torchvision_version(),
        "cnnspec": __version__,
        "plugins": {name: src for name, src in plugin_sources.items() if src != "built-in"},
    }


def torchvision_version() -> str:
    """torchvision's ``__version__``, read from its ``version.py`` rather than by importing it:
    importing torchvision imports torch._dynamo (its ops register fake kernels), a second here."""
    import importlib
    import importlib.util
    import re
    from pathlib import Path

    module: Any = sys.modules.get("torchvision")
    if module is None:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return "not installed"
        try:
            text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
        except OSError:
            text = ""
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found.group(1)
        module = importlib.import_module("torchvision")
    return str(module.__version__)


def available_memory(device: Any) -> int | None:
    """Bytes a run on ``device`` can still allocate: free CUDA memory, or the host's MemAvailable
    (/proc/meminfo) for CPU (and MPS, which shares it); None where it cannot be told."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _proc_bytes("/proc/meminfo", "MemAvailable")
