"""The training loop: batches by index (in memory or streamed), the optimisation step, hooks, resume, Ctrl-C."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cnnspec.data.splits import Images
from cnnspec.data.stream import batches
from cnnspec.errors import NonFiniteLoss, RunFolderError, without_cpp_stack
from cnnspec.train.checkpoint import Checkpoint, Position, Resume, Stateful, cpu_weights, rank_rng
from cnnspec.train.context import Context
from cnnspec.train.distributed import all_sum, any_rank, gather, shard
from cnnspec.train.evaluate import evaluate
from cnnspec.train.history import History, epoch_row
from cnnspec.train.parts import Parts
from cnnspec.train.progress import Progress
from cnnspec.train.rundir import BEST, LAST, RunDir
from cnnspec.train.step import Step
from cnnspec.train.summary import run_summary, train_flops_per_sample

CHECK_EVERY = 20  # steps between loss checks: .item() and the all-reduce sync the device


class Trainer:
    """Trains one spec's Parts, writing the run folder as it goes.

    ``run_dir``: where checkpoints, metrics and the summary go (None: nowhere, as on ranks other
    than 0); ``resume``: a resumable checkpoint of this spec to continue from, applied after the
    before_training hooks, so a model or optimizer they bring gets its state; ``on_setup``: called
    once the state is in place, before any step."""

    def __init__(self, parts: Parts, pm: Any, progress: Progress, *, run_dir: RunDir | None = None,
                 resume: Checkpoint | None = None, on_setup: Callable[[], None] | None = None) -> None:
        assert resume is None or resume.resume is not None, "resume from a resumable checkpoint"
        self.parts, self.pm, self.progress, self.run_dir = parts, pm, progress, run_dir
        self.spec, self.data, self.world, self.precision = parts.spec, parts.data, parts.world, parts.precision
        self.resume, self.on_setup = resume, on_setup
        self.seed = parts.seed
        self.gen = torch.Generator().manual_seed(self.seed)  # shuffling only
        self.ctx = Context(parts.spec, parts.model, parts.optimizer, parts.scheduler, parts.loss_fn, parts.device,
                           run_dir, epoch_indices=lambda: self.epoch_indices(self.gen.get_state()),
                           rank=parts.world.rank, world_size=parts.world.size)
        self.history = History(self.ctx.metrics, parts.callbacks)
        self.stop_requested = False

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.ctx.metrics

    def interrupt(self) -> None:
        """Ask the loop to stop after the current step and save a resumable checkpoint."""
        self.stop_requested = True

    # -- the whole run ----------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; return the summary (status: completed, stopped early,
        interrupted). Raises NonFiniteLoss, or whatever a plugin raised, after writing the
        summary; ``after_training`` runs in every case."""
        status, error, started = "failed", None, time.perf_counter()
        old_handler = _install_sigint(self)
        set_up = False  # a resume that fails to restore its state writes nothing
        try:
            self._setup()
            pos = self._restore()
            for cb in self.parts.callbacks:  # after a resume's restore: they begin from their saved state
                cb.on_train_begin(self.ctx)
            set_up = True
            if self.on_setup is not None:
                self.on_setup()
            status = self._epochs(pos)
        except NonFiniteLoss as e:
            status, error = "diverged", str(e)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the previous epoch's end
            status = "interrupted"
            raise
        except Exception as e:
            status, error = "failed", f"{type(e).__name__}: {without_cpp_stack(str(e))}"
            raise
        except SystemExit as e:  # a plugin may not end the process, nor decide its status
            status, error = "failed", f"SystemExit({e.code!r})"
            raise RuntimeError(f"a plugin tried to end the process with SystemExit({e.code!r})") from None
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            summary = self.summary(status, time.perf_counter() - started, error)
            failing = status in ("diverged", "failed")
            # a resume that failed to restore its state writes nothing: the folder stays as it was
            self._after_training(summary, failing=failing, write=set_up or self.resume is None)
        return summary

    def _epochs(self, pos: Position) -> str:
        """Train the epochs from ``pos`` on; how they ended: completed, interrupted or stopped early."""
        c = self.ctx
        for epoch in range(pos.epoch, self.spec.train.epochs):
            c.epoch = epoch + 1
            row = self._epoch(pos)
            if row is None:
                return "interrupted"
            stops = [cb.on_epoch_end(c, row) for cb in self.parts.callbacks]  # every one sees every epoch
            pos = Position(epoch + 1, 0, self.gen.get_state())
            self._save(LAST, pos)  # after the callbacks: their state is part of the checkpoint
            stops += self.pm.hook.after_epoch(context=c, metrics=row)
            if any_rank(any(stops), c.device, self.world):
                return "stopped early"
        return "completed"

    def _setup(self) -> None:
        """Run the before_training hooks, then place everything on the device they leave."""
        c = self.ctx
        device, optimizer = c.device, c.optimizer
        self.pm.hook.before_training(context=c)  # may replace model, optimizer, device
        if c.optimizer is not optimizer and c.scheduler is not None:
            c.scheduler = self.parts.scheduler_for(c.optimizer)  # the schedule drives the optimizer in use
        if c.device != device:
            self.data = self.data.to(c.device)
            c.loss_fn.to(c.device)
        c.model.to(c.device).to(memory_format=self.precision.memory_format)
        self.step = Step(self.parts, c)

    def _restore(self) -> Position:
        """Where training starts: the beginning, or the resumed checkpoint's state put in place."""
        if self.resume is None:
            return Position(0, 0, self.gen.get_state())
        saved, state = self.resume, self.resume.resume
        assert state is not None
        own = state.restore(self._stateful(), saved.model, self.world.rank, self.world.size)
        if self.world.rank and not own:  # saved by another number of processes: branch off rank 0's stream
            torch.manual_seed(int(torch.randint(2**62, (1,))) + self.world.rank)
        self.history.restore(saved.metrics, saved.best)
        self.seed = saved.seed
        return state.position

    def _after_training(self, summary: dict[str, Any], failing: bool, write: bool = True) -> None:
        """Callbacks' and hooks' ends of training, and the summary written between them; while a
        failure is on its way up, theirs must not hide it (nor a summary that a full disk kept
        from being written)."""
        unwritten: RunFolderError | None = None
        try:
            for cb in self.parts.callbacks:
                cb.on_train_end(self.ctx, summary)
        except Exception:
            if not failing:
                raise
        finally:
            if self.run_dir and write:
                try:
                    self.run_dir.write_summary(summary)
                except RunFolderError as e:  # a full disk: the error on its way up says more
                    unwritten = e
        try:
            self.pm.hook.after_training(context=self.ctx, summary=summary)
        except Exception:
            if not (failing or unwritten):
                raise
        if unwritten is not None and not failing:
            raise unwritten

    # -- one epoch --------------------------------------------------------------------------

    def epoch_indices(self, epoch_gen: Tensor) -> tuple[Tensor, int]:
        """This rank's sample indices for an epoch (from the shuffling state at its start) and steps."""
        gen = torch.Generator().set_state(epoch_gen)
        return shard(torch.randperm(len(self.data.train[0]), generator=gen), self.world, self.parts.train_batch,
                     self.spec.train.limit_batches)

    def _epoch(self, pos: Position) -> dict[str, Any] | None:
        """Train one epoch from ``pos``; the metrics row, or None when stopped by Ctrl-C."""
        c, world = self.ctx, self.world
        x, y = self.data.train
        bs = self.parts.train_batch
        self.gen.set_state(pos.gen)  # every rank draws the same permutation, then takes its shard
        mine, steps = shard(torch.randperm(len(x), generator=self.gen), world, bs, self.spec.train.limit_batches)
        mine = mine.to(c.device)
        sums = pos.sums or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if world.rank:  # resumed partial sums are global; they live on rank 0 only
            sums = {**sums, "loss": 0.0, "correct": 0, "seen": 0}
        # running sums continue from a resumed checkpoint in the same order and precision
        loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=c.device)
        correct = torch.tensor(sums["correct"], dtype=torch.long, device=c.device)
        seen = sums["seen"]
        # reported: the rate this epoch's first step uses (warm-up included)
        lr = c.optimizer.param_groups[0]["lr"] * self.parts.warmup.factor(pos.epoch * steps)
        c.model.train()
        self.progress.start_epoch(pos.epoch + 1, self.spec.train.epochs, steps, pos.step)
        t0 = time.perf_counter()
        feed = batches(x, y, mine, bs, pos.step, steps)
        for step in range(pos.step, steps):
            check = step % CHECK_EVERY == 0 or step == steps - 1
            if self._stop_now(check):
                sums = self._reduced(sums, loss_sum, correct, seen, time.perf_counter() - t0)
                self._save(LAST, Position(pos.epoch, step, pos.gen, sums))
                self.progress.interrupted(pos.epoch + 1, step)
                feed.close()
                return None
            xb, yb = next(feed)
            loss, hits = self.step(xb, yb, pos.epoch * steps + step)
            loss_sum += loss.double() * len(yb)
            correct += hits
            seen += len(yb)
            if check:
                (value,) = all_sum([loss.item()], c.device, world)  # every rank decides alike
                value /= world.size
                if not math.isfinite(value):
                    raise NonFiniteLoss(f"the training loss became {value} at epoch {pos.epoch + 1}, step {step + 1}")
                self.progress.update(step + 1, value, seen * world.size / (sums["seconds"] + time.perf_counter() - t0))
        sums = self._reduced(sums, loss_sum, correct, seen, time.perf_counter() - t0)
        if not math.isfinite(sums["loss"]):
            raise NonFiniteLoss(f"the training loss became non-finite during epoch {pos.epoch + 1}")
        return self._end_epoch(pos.epoch, sums, lr)

    def _stop_now(self, check: bool) -> bool:
        """Whether Ctrl-C was pressed (on any rank: ranks agree only at check steps)."""
        if self.world.distributed and not check:
            return False
        return any_rank(self.stop_requested, self.ctx.device, self.world)

    def _reduced(self, sums: dict[str, Any], loss_sum: Tensor, correct: Tensor, seen: int,
                 seconds: float) -> dict[str, Any]:
        """The epoch's running sums over all ranks, as plain numbers (seconds add up across a resume)."""
        loss, hits, count = all_sum([loss_sum.item(), correct.item(), seen], self.ctx.device, self.world)
        return {"loss": loss, "correct": int(hits), "seen": int(count), "seconds": sums["seconds"] + seconds}

    def _end_epoch(self, epoch: int, sums: dict[str, Any], lr: float) -> dict[str, Any]:
        """Evaluate, record the epoch's row, keep the best (validation) weights, write metrics."""
        t1 = time.perf_counter()
        splits = {"val": self.data.val, "test": self.data.test}
        scores = {name: self.evaluate(*split) for name, split in splits.items() if split is not None}
        row = epoch_row(epoch + 1, sums, lr, scores, time.perf_counter() - t1, train_flops_per_sample(self.spec))
        self.history.add(row)
        self.step.end_epoch(row)
        if self.history.improves(row):
            self._save(BEST, None)
        if self.run_dir:
            self.run_dir.write_metrics(self.metrics)
        self.progress.end_epoch(row)
        return row

    def evaluate(self, x: Images, y: Tensor) -> tuple[float, float]:
        """Mean loss and accuracy over (x, y) of the model that is saved, in eval mode."""
        c = self.ctx
        return evaluate(self.step.eval_model, c.loss_fn, (x, y), batch_size=self.parts.eval_batch,
                        precision=self.precision, device=c.device, world=self.world)

    # -- state ------------------------------------------------------------------------------

    def _stateful(self) -> Stateful:
        c = self.ctx
        return Stateful(c.model, c.optimizer, c.scheduler, self.precision.scaler, self.parts.callbacks, self.step.ema)

    def _save(self, name: str, pos: Position | None) -> None:
        """Write ``name`` into the run folder; resumable (with the training state) when ``pos`` is given.
        Every rank calls it: a resumable one holds each rank's random-number streams."""
        ranks = gather(rank_rng(self.ctx.device), self.world) if pos is not None and self.world.distributed else None
        if self.run_dir is None:
            return
        Checkpoint(
            model=cpu_weights(self.step.eval_model),  # what eval, predict and export load
            spec=self.spec.to_dict(), classes=self.data.classes, mean=self.data.mean, std=self.data.std,
            metrics=self.metrics, best=self.history.best, seed=self.seed,
            resume=None if pos is None else Resume.capture(pos, self._stateful(), ranks),
            pixels=self.data.pixels,
        ).save(self.run_dir.path / name)

    def summary(self, status: str, seconds: float, error: str | None = None) -> dict[str, Any]:
        """summary.json: how the run ended, its last and best epochs, and what ran where."""
        c = self.ctx
        graph = getattr(getattr(self, "step", None), "graph", None)  # no step yet when the set-up failed
        return run_summary(self.parts, self.metrics, self.history.best, status=status, seconds=seconds,
                           error=error, device=c.device, seed=self.seed, optimizer=c.optimizer,
                           sources=getattr(self.pm, "sources", {}), cuda_graph=bool(graph and graph.replays))


def _install_sigint(trainer: Trainer) -> Any:
    """First Ctrl-C: finish the step, save, stop. Second: stop at once."""
    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.interrupt()

    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        return None
