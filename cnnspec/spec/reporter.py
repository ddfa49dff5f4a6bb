"""Collects a check's located problems: once each, with the block uses a problem came through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cnnspec.errors import KeyPath, Problem
from cnnspec.spec.yamlpos import Located

MAX_NOTES = 4  # "in block ... used at line N" notes on one problem; a longer trail is cut in the middle
Trail = tuple[tuple[str, KeyPath], ...]  # the block uses being expanded, outermost first: (name, use)


class Reporter:
    """Turns (path, message) into located Problems for one file.

    ``trail`` is the block uses being expanded when a problem is found: a problem inside a
    block's body names the use (its line) it came from, and a body used many times reports its
    problem once. ``block_owners`` names the plugin of each plugin-shipped block seen so far.
    """

    def __init__(self, located: Located) -> None:
        self.loc = located
        self.problems: list[Problem] = []
        self.seen: set[tuple[int, int, str]] = set()
        self.trail: Trail = ()
        self.block_owners: dict[str, str] = {}  # block name -> its owner ("spec" or a plugin)

    def fail(self, path: KeyPath, message: str, *, key: bool = False) -> None:
        """Record a located problem; inside a block's body, say which use (line) it came from."""
        notes = []
        for name, use in reversed(self.trail):
            owner = self.block_owners.get(name, "spec")
            by = f" (from plugin '{owner}')" if owner != "spec" else ""
            notes.append(f"in block '{name}'{by} used at line {self.loc.where(use)[0]}")
        if len(notes) > MAX_NOTES:  # a deep chain of blocks: the innermost uses and the outermost one
            notes[MAX_NOTES - 1:-1] = [f"... {len(notes) - MAX_NOTES} more block uses ..."]
        if self.trail and path[:1] == ("blocks",) and path[:3] not in self.loc.values:
            # inside a plugin's block: point at the innermost use written in this file
            uses = [u for _, u in self.trail if u[:1] != ("blocks",) or u[:3] in self.loc.values]
            path, key = uses[-1], True
        p = self.loc.problem(path, message, key=key)
        seen = (p.line, p.column, p.message)  # a block used many times: report its body's problem once
        if seen in self.seen:
            return
        self.seen.add(seen)
        if notes:
            p = Problem(p.line, p.column, f"{p.message} ({'; '.join(notes)})", p.path, p.file)
        self.problems.append(p)

    @contextmanager
    def inside(self, trail: Trail) -> Iterator[None]:
        """Report as if expanding the block uses ``trail`` (a component's own trail, say)."""
        outer = self.trail
        self.trail = trail
        try:
            yield
        finally:
            self.trail = outer
