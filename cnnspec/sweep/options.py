"""What a sweep is asked to do (the options of ``cnnspec sweep``, typed) and how it refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cnnspec.errors import CnnspecError

# -j: each trial is a process of its own that loads torch (hundreds of MB), so a machine runs far fewer
# at once; the bound also keeps a mistyped -j from becoming work or memory that grows with it.
MAX_JOBS = 256


def jobs_problem(jobs: int, shown: str) -> str | None:
    """Why ``-j`` cannot be ``jobs`` (written ``shown``), or None: it is from 1 to MAX_JOBS."""
    if jobs < 1:
        return f"{shown} is less than 1: at least one trial runs at a time"
    if jobs > MAX_JOBS:
        return (f"{shown} is more than {MAX_JOBS} trials at once: each trial is a process of its own that loads "
                "torch, so more would only share the same cores and memory")
    return None


@dataclass(frozen=True)
class SweepOptions:
    """The command line of one sweep worker (``cli.cmd_sweep`` builds it from its arguments)."""

    spec: str  # the spec file, with a sweep: section
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, in order
    jobs: int = 1  # -j: trials at once on this machine
    storage: str | None = None  # --storage URL; None: a SQLite file in the sweep folder
    study: str | None = None  # --study NAME; None: NAME-HASH of spec and space
    device: str | None = None  # --device, passed on to every trial
    output: str | None = None  # --output DIR; None: the latest unfinished sweep of this spec, or a new folder
    quiet: bool = False  # --quiet: print only the sweep folder
    plugins: tuple[str, ...] = ()  # -p MODULE, passed on to every trial
    trust: bool = False  # --trust: the spec's plugin files trusted for this sweep (its check and every trial)
    # the command line's main(argv, exiting=...), which a warm trial runs (cli hands it down, as sweep
    # sits below cli); None: every trial a fresh `python -m cnnspec run`
    main: Callable[..., int] | None = field(default=None, compare=False)


class SweepError(CnnspecError):
    """The sweep cannot start or go on: a folder, storage or data problem (exit status 2)."""
