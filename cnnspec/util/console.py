"""The rich Console cnnspec prints with: a reader that leaves (`cnnspec eval RUN | head`) ends it quietly."""

from __future__ import annotations

from rich.console import Console as _RichConsole


class Console(_RichConsole):
    """rich's Console, except that a closed pipe raises BrokenPipeError for ``cli.main`` to end
    the command with status 0, as for plain prints, instead of rich's ``SystemExit(1)``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
