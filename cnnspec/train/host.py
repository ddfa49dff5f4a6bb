"""Process-wide tuning done once at start-up, before training allocates anything."""

from __future__ import annotations

import sys
from typing import Any


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
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
