"""TensorBoard for cnnspec runs: ``train: {callbacks: [tensorboard]}``.

Every number of each epoch's metrics row becomes a scalar (tag = the metrics.jsonl key, step =
the epoch), and the model graph is written once. Only rank 0 writes. torch and tensorboard are
imported when a run uses the callback, never at import, so ``cnnspec validate`` stays fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from cnnspec.plugin import Callback, CallbackType, Params, Register, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

LOG_DIR = "tensorboard"  # inside the run folder


class TensorBoardParams(Params):
    log_dir: str | None = Field(
        None, description=f"where the event files go; default RUN_FOLDER/{LOG_DIR}, a relative path is "
                          "taken from the run folder"
    )
    graph: bool = Field(True, description="write the model graph (traced once on a zero input)")

    @field_validator("log_dir")
    @classmethod
    def _inside_the_run_folder(cls, v: str | None) -> str | None:
        """A relative log_dir stays inside the run folder: one that climbs out of it with '..' is
        refused (an absolute path, or one from ~, is explicit and goes where it says)."""
        if v is None or os.path.isabs(os.path.expanduser(v)):
            return v
        if "\0" in v:
            raise ValueError("a path cannot contain a NUL character")
        parts = os.path.normpath(v).split(os.sep)
        if parts[0] == os.pardir:
            raise ValueError(f"{v!r} leaves the run folder: give a path inside it, or an absolute path")
        return v


class TensorBoardCallback(Callback):
    """Opens its writer at the first epoch end of a session, so that on --resume it knows
    (from its restored state and the epoch) not to draw the graph again and where to purge."""

    def __init__(self, p: TensorBoardParams) -> None:
        self.p = p
        self.writer: SummaryWriter | None = None
        self.graph_written = False

    def log_dir(self, context: Any) -> Path | None:
        base = Path(context.run_dir.path) if context.run_dir is not None else None
        if self.p.log_dir is None:
            return base / LOG_DIR if base is not None else None  # no run folder: nothing to write
        path = Path(self.p.log_dir).expanduser()
        return path if base is None else base / path  # an absolute path stays as it is

    def open(self, context: Any, step: int) -> SummaryWriter | None:
        if self.writer is not None or context.rank != 0:
            return self.writer
        log_dir = self.log_dir(context)
        if log_dir is None:
            return None
        import torch
        from torch.utils.tensorboard import SummaryWriter

        # resumed: hide what an earlier session logged from this epoch on (it ran past its last
        # checkpoint), so each epoch is on the curves once
        self.writer = SummaryWriter(str(log_dir), purge_step=step if step > 1 else None)
        if self.p.graph and not self.graph_written:
            example = torch.zeros((1, *context.spec.input_shape), device=context.device)
            try:
                with warnings.catch_warnings():  # add_graph traces with torch.jit, which torch deprecates
                    warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
                    self.writer.add_graph(context.model, example)
            except Exception as e:  # a model the tracer can't follow still trains and logs scalars
                print(f"cnnspec: warning: tensorboard: no graph written: {type(e).__name__}: {e}", file=sys.stderr)
            self.graph_written = True
        return self.writer

    def on_epoch_end(self, context: Any, metrics: dict[str, Any]) -> None:
        step = int(metrics["epoch"])
        writer = self.open(context, step)
        if writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def on_train_end(self, context: Any, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()  # flushes
            self.writer = None

    def state_dict(self) -> dict[str, Any]:
        return {"graph_written": self.graph_written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.graph_written = bool(state.get("graph_written"))


class TensorBoard(CallbackType[TensorBoardParams]):
    name = "tensorboard"
    Params = TensorBoardParams
    description = "write every epoch's metrics (and the model graph) for TensorBoard"

    def build(self, p: TensorBoardParams) -> Callback:
        return TensorBoardCallback(p)


@hookimpl
def register_callbacks(register: Register) -> None:
    register(TensorBoard())
