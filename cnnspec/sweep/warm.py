"""Warm trial workers: each trial is still its own process, forked from a server that imported torch
and cnnspec once, so a trial starts in milliseconds instead of paying the imports again.

multiprocessing's ``forkserver`` start method does this: the server process is started once, with
the modules below preloaded (importing torch initialises no thread pool and no CUDA, so forking it
is safe), and each trial is a fork of it. The child is what ``python -m cnnspec run`` would be: its
own session, its output in the trial's log, its environment (thread share, GPU) set before torch
runs anything, the same ``cnnspec.cli.main``. A crash, a leak or an OOM kill stays inside it.
Where forkserver is not available, the pool starts plain ``python -m cnnspec run`` processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# imported once by the server: what `cnnspec run` imports and the curves it draws at the end; and
# torch._dynamo, which a plain run avoids (build.optim) but fp16's gradient scaler, optimizers of
# other plugins and torchvision import: paid once here, it costs a trial nothing
PRELOAD = ["torch", "torch._dynamo", "cnnspec.cli", "cnnspec.train.runner", "cnnspec.train.parts",
           "cnnspec.train.loop", "cnnspec.data.splits", "cnnspec.build.model", "cnnspec.spec.check",
           "cnnspec.registry.manager", "cnnspec.train.curves", "matplotlib.pyplot"]
_CONTEXT: Any = None


def available() -> bool:
    """Whether trials can be forked from a warm server here (Linux, macOS; not Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


class WarmProcess:
    """A forked trial with the part of ``subprocess.Popen``'s interface the pool uses."""

    def __init__(self, main: Callable[..., int], argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        """``main``: the command line's ``main(argv, exiting=True)`` (pickled by name for the server)."""
        self._proc = _context().Process(target=_trial, args=(main, list(argv), str(log), dict(env)), daemon=False)
        self._proc.start()
        self.pid = self._proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._proc.is_alive():
            self._proc.join()
            self.returncode = self._proc.exitcode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self._proc.join(timeout)
        return self.poll()


def _trial(main: Callable[..., int], argv: list[str], log: str, env: dict[str, str]) -> None:
    """In the forked child: become ``cnnspec run ARGV`` with its own session, log and environment."""
    os.setsid()  # Ctrl-C reaches the sweep, which stops the trials itself
    _die_with_parent()
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():  # torch read the variable when the server imported it
        import torch

        torch.set_num_threads(int(threads))
    code = main(argv, exiting=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no multiprocessing teardown: the exit status is the command's


def _die_with_parent() -> None:
    """Get SIGTERM when the sweep dies (the server's parent is the sweep), as plain children do."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
