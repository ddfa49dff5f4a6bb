"""Located problems in a spec file, and the exception that carries them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# Exit statuses of the command line (SPEC.md section 2, plus 3 and 130 for `run`).
EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# A path into the spec's plain data: keys and list indices, e.g. ("layers", 2, "kernel_size").
Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One error in a spec, pointing at a 1-based line and column of its file."""

    line: int
    column: int
    message: str
    path: Path = field(default=(), compare=False)
    file: str = field(default="", compare=False)

    def format(self) -> str:
        """The compiler-style line: ``file:line:col: error: message``."""
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "path": path_str(self.path),
        }


class SpecError(Exception):
    """A spec is invalid; ``problems`` lists every located problem found in one pass."""

    def __init__(self, problems: Sequence[Problem], file: str = "") -> None:
        self.problems = sorted(problems)
        self.file = file
        super().__init__("\n".join(p.format() for p in self.problems) or "invalid spec")


class UnreadableSpec(Exception):
    """The spec file cannot be read at all (missing, a directory, no permission)."""


def path_str(path: Path) -> str:
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
