"""Every way cnnspec fails for a user: located problems, one error tree, one ExitCode enum.

``cli.main`` is the only place that turns an error into an exit status: each error class
carries its ``exit_code``, and ``lines()`` is what the user reads on stderr.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar


class ExitCode(enum.IntEnum):
    """Exit statuses of the command line (the README, "Commands and exit codes", documents them)."""

    OK = 0
    INVALID = 1  # the spec is invalid: YAML, schema, shapes, fit with the data
    USAGE = 2  # the command line is wrong, or a file, dataset, device or plugin cannot be used
    FAILED = 3  # training started and failed (diverged, a plugin raised mid-run)
    INTERRUPTED = 130  # Ctrl-C; a resumable checkpoint is saved where one could be


# A path into the spec's plain data: keys and list indices, e.g. ("layers", 2, "kernel_size").
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One error in a spec, pointing at a 1-based line and column of its file."""

    line: int
    column: int
    message: str
    path: KeyPath = field(default=(), compare=False)
    file: str = field(default="", compare=False)
    severity: str = field(default="error", compare=False)  # or "warning": reported, the spec stays valid
    # "note" problems that point from this symptom to its cause (a compiler's note: lines)
    notes: tuple[Problem, ...] = field(default=(), compare=False)

    def format(self) -> str:
        """The compiler-style line ``file:line:col: error: message``, then its notes' lines."""
        own = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        return "\n".join([own, *(n.format() for n in self.notes)])

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "path": path_str(self.path),
        }
        if self.notes:
            out["notes"] = [n.to_json() for n in self.notes]
        return out


def cause_first(problems: Sequence[Problem]) -> list[Problem]:
    """Problems in reading order, except that a ``plugins:`` problem comes first: a plugin that did
    not load is the cause of the "unknown type" errors further up or down the file."""
    return sorted(problems, key=lambda p: (not (p.path[:1] == ("plugins",)), p))


class CnnspecError(Exception):
    """Base of every user-facing failure; ``exit_code`` says how the command ends.

    ``message=None`` means the failure was already reported (another rank of a
    data-parallel run said it): the status still counts, nothing more is printed.
    """

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE

    def __init__(self, message: str | None = "") -> None:
        super().__init__(message or "")
        self.silent = message is None

    def lines(self) -> list[str]:
        """What the user reads on stderr, one line each."""
        return [] if self.silent else [f"cnnspec: error: {self}"]


# what the device-memory refusal says after the spec's file name; a sweep finds it in a trial's log
MEMORY_REFUSAL = ": training needs ~"


class ResourceError(CnnspecError):
    """The run would need more memory than the device has (checked before anything is allocated)."""

    exit_code = ExitCode.USAGE


class OutOfMemory(ResourceError):
    """torch (or Python) could not allocate memory: past the memory check (``--force``), or where the
    estimate fell short. ``requested``: the bytes asked for, when the allocator said."""

    def __init__(self, message: str | None = "", requested: int | None = None, amount: str = "",
                 during: str = "") -> None:
        super().__init__(message)
        self.requested = requested
        self.amount = amount  # what was asked for, as the allocator said it ("" when it did not)
        self.during = during  # what was being built, e.g. "layer type 'linear'" ("" when not known)


# where torch appends its C++ stack to a message (always for some errors, for every one with
# TORCH_SHOW_CPP_STACKTRACES=1): the user's line ends before it
_CPP_STACK = re.compile(r"\n(?:C\+\+ CapturedTraceback:|Exception raised from |frame #0: )")
_CPU_BYTES = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
_ASKED = re.compile(r"[Tt]ried to allocate ([\d.]+ ?[KMGTPE]?i?B)")
_ALLOCATORS = ("DefaultCPUAllocator: can't allocate memory", "[enforce fail at alloc_cpu",
               "CUDA out of memory", "MPS backend out of memory", "CUDNN_STATUS_NOT_ENOUGH_MEMORY")


def without_cpp_stack(text: str) -> str:
    """An exception's message without the C++ stack frames torch may append to it."""
    found = _CPP_STACK.search(text)
    return (text[:found.start()] if found else text).strip()


def out_of_memory(e: BaseException) -> OutOfMemory | None:
    """``e`` as an OutOfMemory when it is an allocation failure (MemoryError, torch's
    OutOfMemoryError, an allocator's RuntimeError), with the bytes asked for; else None."""
    if isinstance(e, OutOfMemory):
        return e
    text = without_cpp_stack(str(e))
    if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and any(a in text for a in _ALLOCATORS))):
        return None
    cpu, asked = _CPU_BYTES.search(text), _ASKED.search(text)
    requested = int(cpu.group(1)) if cpu else None
    amount = f"{requested:,} bytes" if requested is not None else asked.group(1) if asked else ""
    where = "the CPU allocator" if cpu else "torch" if isinstance(e, RuntimeError) else "Python"
    what = f"could not allocate {amount}" if amount else f"could not allocate what it asked for ({type(e).__name__})"
    return OutOfMemory(f"out of memory: {where} {what}", requested, amount)


class SpecError(CnnspecError):
    """A spec is invalid; ``problems`` lists every located problem found in one pass."""

    exit_code = ExitCode.INVALID

    def __init__(self, problems: Sequence[Problem], file: str = "") -> None:
        self.problems = cause_first(problems)
        self.file = file
        super().__init__("\n".join(p.format() for p in self.problems) or "invalid spec")

    def lines(self) -> list[str]:
        return [p.format() for p in self.problems]


class UsageError(CnnspecError):
    """The command line is wrong (argparse's message, or arguments that contradict)."""

    def lines(self) -> list[str]:
        return [str(self)]


class UnreadableSpec(CnnspecError):
    """The spec file cannot be read at all (missing, a directory, no permission)."""


class OverrideError(CnnspecError):
    """A --set argument is malformed or names no place in the spec."""


class PluginError(CnnspecError):
    """A plugin failed to load, to register or to build; the message names the plugin."""


class DataError(CnnspecError):
    """A dataset is missing, unreadable or inconsistent; the message says what to do."""


class DeviceError(CnnspecError):
    """The requested device is not available on this machine."""


class CheckpointError(CnnspecError):
    """A checkpoint is missing, corrupt, or not a plain weights file."""


class ToolError(CnnspecError):
    """A finished-run tool (eval, predict, export, plot) cannot do what was asked."""


class RunFolderError(CnnspecError):
    """A run folder cannot be made, resumed or written (exists, not empty, no space...)."""


class DiskFull(RunFolderError):
    """The disk (or quota) filled up while writing the run folder."""


class SetupError(SpecError):
    """The spec cannot train as written, found while setting up (located like validate's errors)."""


class TrainingFailed(CnnspecError):
    """Training started and could not go on; what was saved is kept."""

    exit_code = ExitCode.FAILED


class NonFiniteLoss(TrainingFailed):
    """The training loss became NaN or infinite."""


class Interrupted(CnnspecError):
    """The user pressed Ctrl-C; the message says what was saved and how to continue."""

    exit_code = ExitCode.INTERRUPTED


def path_str(path: KeyPath) -> str:
    """Render a path the way a user reads it: ``layers[2].kernel_size``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix when a close match exists, else ``""``."""
    options = list(choices)
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:  # case slips (Conv2d for conv2d) are below difflib's cutoff
        match = [c for c in options if c.lower() == word.lower()]
    return f" (did you mean '{match[0]}'?)" if match else ""
