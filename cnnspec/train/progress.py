"""Progress display for training: a rich bar per epoch and a table at the end, or silence."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from cnnspec.spec.metrics import MEASURES, SPLITS, metric


class Progress(Protocol):
    """What the training loop tells the person watching."""

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def update(self, step: int, loss: float, samples_per_second: float) -> None: ...
    def end_epoch(self, row: dict[str, Any]) -> None: ...
    def interrupted(self, epoch: int, step: int) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self, rows: list[dict[str, Any]]) -> None: ...


class QuietProgress:
    """Shows nothing (``--quiet``, and ranks other than 0)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def update(self, step: int, loss: float, samples_per_second: float) -> None: ...
    def end_epoch(self, row: dict[str, Any]) -> None: ...
    def interrupted(self, epoch: int, step: int) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self, rows: list[dict[str, Any]]) -> None: ...


class RichProgress(QuietProgress):
    """A live bar with throughput and running loss per epoch; one line kept per finished epoch."""

    def __init__(self) -> None:
        from cnnspec.util.console import Console

        self.console = Console(file=sys.stderr, highlight=False)
        self._bar: Any = None
        self._task: Any = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        console=self.console)
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps, completed=done, info="")

    def update(self, step: int, loss: float, samples_per_second: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step,
                             info=f"loss {loss:.4f}  {samples_per_second:,.0f} samples/s")

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def end_epoch(self, row: dict[str, Any]) -> None:
        if self._bar is not None:  # the finished bar stays, with the epoch's results
            val_acc = metric("val", "accuracy")
            val = f" val {row[val_acc]:.4f}" if val_acc in row else ""
            self._bar.update(self._task, info=f"loss {row[metric('train', 'loss')]:.4f}{val} "
                             f"test {row[metric('test', 'accuracy')]:.4f} {row['samples_per_second']:,.0f}/s")
        self._close()

    def interrupted(self, epoch: int, step: int) -> None:
        self._close()

    def message(self, text: str) -> None:
        # one line as written: never wrapped at the width (a run folder's path stays whole in an
        # 80-column pipe, for scripts and readers to copy), and never read as rich markup or emoji
        self._close()
        self.console.print(text, soft_wrap=True, markup=False, emoji=False)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        from rich import box
        from rich.table import Table

        self._close()
        if not rows:
            return
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
        # two-line headers keep every column as narrow as its numbers: 68 columns, so an
        # 80-column terminal shows them whole (one-line headers made rich cut the lr to "0.000…")
        short = {"loss": "loss", "accuracy": "acc"}
        cols = [("epoch", "epoch", "{}"),
                *[(metric(s, m), f"{s}\n{short[m]}", "{:.4f}") for s in SPLITS for m in MEASURES],
                ("lr", "lr", "{:.2g}"), ("seconds", "secs", "{:.1f}")]
        cols = [c for c in cols if c[0] in rows[-1]]
        for _, head, _ in cols:
            table.add_column(head, justify="right")
        for r in rows:
            table.add_row(*[fmt.format(r[key]) for key, _, fmt in cols])
        self.console.print(table)
