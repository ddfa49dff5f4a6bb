"""The training loop: in-memory batches by index, evaluation, checkpoints, hooks, resume, Ctrl-C."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cnnspec.build.model import build_model
from cnnspec.data.splits import Batches
from cnnspec.errors import CheckpointError, DeviceError, NonFiniteLoss, RunFolderError, SetupError
from cnnspec.registry.manager import call_plugin
from cnnspec.registry.types import Callback
from cnnspec.spec.sections import Spec
from cnnspec.train.distributed import SINGLE, World, all_sum, any_rank, shard
from cnnspec.train.host import device_name, versions
from cnnspec.train.progress import Progress
from cnnspec.train.rundir import BEST, LAST, RunDir

CHECK_EVERY = 20  # steps between loss checks: .item() and the all-reduce sync the device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N, mps")
    if dev.type == "mps" and not mps_ok:
        raise DeviceError("device 'mps' requested but MPS is not available here")
    return dev


@dataclass
class Context:
    """What run hooks see. ``before_training`` may replace model, optimizer or device."""

    spec: Spec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    device: torch.device
    run_dir: RunDir | None
    epoch_indices: Callable[[], tuple[Tensor, int]]  # this rank's samples and steps, next epoch
    epoch: int = 0
    rank: int = 0  # under torchrun every process runs the hooks; print from rank 0 only
    world_size: int = 1
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch


@dataclass
class Position:
    """Where training stands: the epoch and step to run next, the epoch's shuffling state at
    its start, and the running sums of an epoch interrupted part-way."""

    epoch: int
    step: int
    gen: Tensor
    sums: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "gen": self.gen, "sums": self.sums}


class Pipeline:
    """The spec's augmentations in order, applied to each training batch."""

    def __init__(self, ops: list[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]]) -> None:
        self.ops = ops

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for op in self.ops:
            x, y = op(x, y)
        return x, y


class Trainer:
    """Trains one spec on prepared Batches, writing the run folder as it goes."""

    def __init__(self, spec: Spec, data: Batches, device: torch.device, pm: Any, progress: Progress,
                 world: World = SINGLE) -> None:
        assert spec.data is not None, "run checks that the spec has a data section"
        self.spec, self.data, self.pm, self.progress, self.world = spec, data, pm, progress, world
        self.run_dir: RunDir | None = None
        self.seed = spec.train.seed if spec.train.seed is not None else int(torch.seed() % 2**31)
        # channels-last made the reference step ~1.5x faster on CPU; conv nets gain on CUDA too
        cl = spec.train.channels_last
        use_cl = cl if cl is not None else device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if use_cl and len(spec.input_shape) == 3 else torch.contiguous_format
        # mixed precision: forward and loss under autocast; fp16 needs a gradient scaler
        precision = spec.train.precision
        if precision == "fp16" and device.type != "cuda":
            raise DeviceError("precision fp16 needs a CUDA device; use bf16 on this machine")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

        torch.manual_seed(self.seed)  # weights, then dropout, draw from this stream
        model = build_model(spec).to(device).to(memory_format=self.memory_format)
        reg = spec.registry
        opt = call_plugin(reg, "optimizer", spec.optimizer.name, spec.optimizer.type.build,
                          spec.optimizer.params, model.parameters())
        if world.rank:  # other dropout draws on every rank; weights were made identical above
            torch.manual_seed(self.seed + 1_000_003 * world.rank)
        self.train_batch, self.eval_batch = spec.data.batch_size, spec.data.eval_batch_size
        mine, self.steps_per_epoch = shard(torch.arange(len(data.train[0])), world, self.train_batch)
        # what a step really holds: the configured batch, or the whole (shard of the) split if smaller
        self.batch_size = min(self.train_batch, len(mine))
        if self.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise SetupError([spec.problem(("data", "batch_size"), "data.batch_size: batch normalisation needs "
                                           f"at least 2 samples per batch while training, but batches here hold "
                                           f"{self.batch_size}")], spec.file)
        loss_fn = call_plugin(reg, "loss", spec.loss.name, spec.loss.type.build, spec.loss.params)
        classes = len(data.classes)
        self.augment = Pipeline([call_plugin(reg, "augmentation", a.name, a.type.build, a.params, spec.input_shape,
                                             classes) for a in spec.augmentations])
        self.callbacks: list[Callback] = [call_plugin(reg, "callback", cb.name, cb.type.build, cb.params)
                                          for cb in spec.callbacks]
        # which epoch is "best": a callback may say (early stopping's metric), else validation accuracy
        self.best_metric = next((cb.best_metric for cb in self.callbacks if cb.best_metric), ("val_accuracy", "max"))
        warm = spec.train.warmup
        self.warmup_steps = 0 if warm is None else warm.steps or (warm.epochs or 0) * self.steps_per_epoch
        self.ema: torch.optim.swa_utils.AveragedModel | None = None  # made in fit(), after the hooks
        self.gen = torch.Generator().manual_seed(self.seed)  # shuffling only
        self.ctx = Context(spec, model, opt, self._scheduler(opt), loss_fn.to(device), device, None,
                           epoch_indices=lambda: self.epoch_indices(self.gen.get_state()),
                           rank=world.rank, world_size=world.size)
        self.forward: nn.Module = model  # wrapped in DistributedDataParallel in fit()
        self.best: dict[str, Any] | None = None  # chosen on validation metrics only
        self.stop_requested = False
        self.resume_state: dict[str, Any] | None = None
        self.on_setup: Callable[[], None] | None = None  # once the state is in place, before any step

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.ctx.metrics

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        sc = self.spec.scheduler
        if sc is None:
            return None
        return call_plugin(self.spec.registry, "scheduler", sc.name, sc.type.build, sc.params, optimizer,
                           self.spec.train.epochs, self.steps_per_epoch)

    def attach(self, run_dir: RunDir | None) -> None:
        """Write checkpoints, metrics and the summary into ``run_dir`` from now on."""
        self.run_dir = self.ctx.run_dir = run_dir

    def interrupt(self) -> None:
        """Ask the loop to stop after the current step and save a resumable checkpoint."""
        self.stop_requested = True

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by this trainer (same spec); applied in fit(),
        after the before_training hooks, so a model or optimizer they bring gets the state."""
        self.resume_state = state

    # -- the whole run ----------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; return the summary (status: completed, stopped early,
        interrupted). Raises NonFiniteLoss, or whatever a plugin raised, after writing the
        summary; ``after_training`` runs in every case."""
        c = self.ctx
        status, error, started = "failed", None, time.perf_counter()
        old_handler = _install_sigint(self)
        set_up = False  # a resume that fails to restore its state writes nothing
        try:
            pos = self._setup()
            set_up = True
            if self.on_setup is not None:
                self.on_setup()
            status = "completed"
            for epoch in range(pos.epoch, self.spec.train.epochs):
                c.epoch = epoch + 1
                row = self._epoch(pos)
                if row is None:
                    status = "interrupted"
                    break
                stops = [cb.on_epoch_end(c, row) for cb in self.callbacks]  # every one sees every epoch
                pos = Position(epoch + 1, 0, self.gen.get_state())
                self._save(LAST, pos)  # after the callbacks: their state is part of the checkpoint
                stops += self.pm.hook.after_epoch(context=c, metrics=row)
                if any_rank(any(stops), c.device, self.world):
                    status = "stopped early"
                    break
        except NonFiniteLoss as e:
            status, error = "diverged", str(e)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the previous epoch's end
            status = "interrupted"
            raise
        except Exception as e:
            status, error = "failed", f"{type(e).__name__}: {e}"
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
            self._after_training(summary, failing=failing, write=set_up or self.resume_state is None)
        return summary

    def _setup(self) -> Position:
        """Run the before_training hooks, place everything on the device, apply a resumed state."""
        c = self.ctx
        device, optimizer = c.device, c.optimizer
        self.pm.hook.before_training(context=c)  # may replace model, optimizer, device
        if c.optimizer is not optimizer and c.scheduler is not None:
            c.scheduler = self._scheduler(c.optimizer)  # the schedule drives the optimizer in use
        if c.device != device:
            self.data = self.data.to(c.device)
            c.loss_fn.to(c.device)
        c.model.to(c.device).to(memory_format=self.memory_format)
        # DDP averages gradients over ranks in backward; the plain model is what gets saved
        self.forward = c.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [c.device.index] if c.device.type == "cuda" else None
            self.forward = DistributedDataParallel(c.model, device_ids=ids)
        if self.spec.train.ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(c.model, multi_avg_fn=get_ema_multi_avg_fn(self.spec.train.ema.decay),
                                     use_buffers=True)
        for cb in self.callbacks:
            cb.on_train_begin(c)
        if self.resume_state is None:
            return Position(0, 0, self.gen.get_state())
        state = self.resume_state
        try:
            c.model.load_state_dict(state.get("train_model") or state["model"])
            if self.ema is not None:
                self.ema.module.load_state_dict(state["model"])
                self.ema.n_averaged.fill_(int(state.get("ema_steps", 0)))
            for cb, cb_state in zip(self.callbacks, state.get("callbacks") or []):
                cb.load_state_dict(cb_state)
            c.optimizer.load_state_dict(state["optimizer"])
            if c.scheduler is not None and state.get("scheduler") is not None:
                c.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{LAST} does not fit this run: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0][:300]}") from None
        if self.world.rank:  # the checkpoint holds rank 0's stream; the others branch off it
            torch.manual_seed(int(torch.randint(2**62, (1,))) + self.world.rank)
        c.metrics[:] = state["metrics"]
        self.best = state.get("best")
        self.seed = state["seed"]
        return Position(**state["position"])

    def _after_training(self, summary: dict[str, Any], failing: bool, write: bool = True) -> None:
        """Callbacks' and hooks' ends of training, and the summary written between them; while a
        failure is on its way up, theirs must not hide it (nor a summary that a full disk kept
        from being written)."""
        unwritten: RunFolderError | None = None
        try:
            for cb in self.callbacks:
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
        return shard(torch.randperm(len(self.data.train[0]), generator=gen), self.world, self.train_batch)

    def _epoch(self, pos: Position) -> dict[str, Any] | None:
        """Train one epoch from ``pos``; the metrics row, or None when stopped by Ctrl-C."""
        c, world = self.ctx, self.world
        x, y = self.data.train
        bs = self.train_batch
        self.gen.set_state(pos.gen)  # every rank draws the same permutation, then takes its shard
        mine, steps = shard(torch.randperm(len(x), generator=self.gen), world, bs)
        mine = mine.to(c.device)
        sums = pos.sums or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if world.rank:  # resumed partial sums are global; they live on rank 0 only
            sums = {**sums, "loss": 0.0, "correct": 0, "seen": 0}
        # running sums continue from a resumed checkpoint in the same order and precision
        loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=c.device)
        correct = torch.tensor(sums["correct"], dtype=torch.long, device=c.device)
        seen = sums["seen"]
        # reported: the rate this epoch's first step uses (warm-up included)
        lr = c.optimizer.param_groups[0]["lr"] * self.warmup_factor(pos.epoch * steps)
        c.model.train()
        self.progress.start_epoch(pos.epoch + 1, self.spec.train.epochs, steps, pos.step)
        t0 = time.perf_counter()
        for step in range(pos.step, steps):
            check = step % CHECK_EVERY == 0 or step == steps - 1
            if self._stop_now(check):
                sums = self._reduced(sums, loss_sum, correct, seen, time.perf_counter() - t0)
                self._save(LAST, Position(pos.epoch, step, pos.gen, sums))
                self.progress.interrupted(pos.epoch + 1, step)
                return None
            idx = mine[step * bs:(step + 1) * bs]
            loss, hits = self._step(x.index_select(0, idx), y.index_select(0, idx), pos.epoch * steps + step)
            loss_sum += loss.double() * len(idx)
            correct += hits
            seen += len(idx)
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

    def _step(self, xb: Tensor, yb: Tensor, global_step: int) -> tuple[Tensor, Tensor]:
        """One optimisation step on a batch; returns the (detached) loss and correct predictions."""
        c, train = self.ctx, self.spec.train
        target = yb
        if self.augment:
            xb, target = self.augment(xb, yb)  # target: class probabilities after mixup or cutmix
        xb = xb.contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.forward(xb)
            loss = c.loss_fn(out, target)
        c.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # scale() and step() pass through when disabled
        if train.grad_clip is not None:
            self.scaler.unscale_(c.optimizer)  # clip the true gradients, not the scaled ones
            if train.grad_clip.norm is not None:
                nn.utils.clip_grad_norm_(c.model.parameters(), train.grad_clip.norm)
            else:
                nn.utils.clip_grad_value_(c.model.parameters(), train.grad_clip.value or 0.0)
        with self._warmup(global_step):
            self.scaler.step(c.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(c.model)
        if self.spec.scheduler and self.spec.scheduler.type.interval == "batch":
            c.scheduler.step()
        return loss.detach(), (out.detach().argmax(1) == yb).sum()

    def warmup_factor(self, global_step: int) -> float:
        """The warm-up's multiplier of the learning rate at an optimizer step (0-based)."""
        warm = self.spec.train.warmup
        if warm is None or global_step >= self.warmup_steps:
            return 1.0
        return warm.start_factor + (1 - warm.start_factor) * global_step / self.warmup_steps

    @contextmanager
    def _warmup(self, global_step: int) -> Iterator[None]:
        """During warm-up, the optimizer steps with the scheduler's rate times a factor rising
        linearly from start_factor (first step) to 1 (step ``warmup_steps``); the scheduler's
        own rates are put back after, so any scheduler composes with it."""
        factor = self.warmup_factor(global_step)
        if factor == 1.0:
            yield
            return
        groups = self.ctx.optimizer.param_groups
        rates = [g["lr"] for g in groups]
        for g, lr in zip(groups, rates):
            g["lr"] = lr * factor
        try:
            yield
        finally:
            for g, lr in zip(groups, rates):
                g["lr"] = lr

    def _stop_now(self, check: bool) -> bool:
        """Whether Ctrl-C was pressed (on any rank: ranks agree only at check steps)."""
        if self.world.distributed and not check:
            return False
        return any_rank(self.stop_requested, self.ctx.device, self.world)

    def _end_epoch(self, epoch: int, sums: dict[str, Any], lr: float) -> dict[str, Any]:
        """Evaluate, record the epoch's row, keep the best (validation) weights, write metrics."""
        t1 = time.perf_counter()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": sums["loss"] / sums["seen"],
            "train_accuracy": sums["correct"] / sums["seen"],
        }
        if self.data.val is not None:
            row["val_loss"], row["val_accuracy"] = self.evaluate(*self.data.val)
        row["test_loss"], row["test_accuracy"] = self.evaluate(*self.data.test)
        row["lr"] = lr
        row["seconds"] = sums["seconds"]
        row["eval_seconds"] = time.perf_counter() - t1
        row["samples_per_second"] = sums["seen"] / sums["seconds"] if sums["seconds"] else 0.0
        flops = self.train_flops_per_sample()  # this process's training FLOP rate, as samples_per_second
        row["train_gflops_per_second"] = None if flops is None else flops * row["samples_per_second"] / 1e9
        self.metrics.append(row)
        sched = self.spec.scheduler
        if sched is not None and sched.type.interval == "epoch":  # after evaluation: it may watch a metric
            watched = sched.type.monitor(sched.params)
            if watched:
                self.ctx.scheduler.step(row[watched])
            else:
                self.ctx.scheduler.step()
        # "best" is chosen on validation data only (validate refuses test metrics): choosing on
        # the test set would make it part of training
        metric, mode = self.best_metric
        value = row.get(metric)
        if value is not None and (self.best is None or (value < self.best["value"] if mode == "min"
                                                         else value > self.best["value"])):
            self.best = {"epoch": epoch + 1, "metric": metric, "value": value}
            self._save(BEST, None)
        if self.run_dir:
            self.run_dir.write_metrics(self.metrics)
        self.progress.end_epoch(row)
        return row

    def _reduced(self, sums: dict[str, Any], loss_sum: Tensor, correct: Tensor, seen: int,
                 seconds: float) -> dict[str, Any]:
        """The epoch's running sums over all ranks, as plain numbers (seconds add up across a resume)."""
        loss, hits, count = all_sum([loss_sum.item(), correct.item(), seen], self.ctx.device, self.world)
        return {"loss": loss, "correct": int(hits), "seen": int(count), "seconds": sums["seconds"] + seconds}

    @torch.inference_mode()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        """Mean loss and accuracy over (x, y), in eval mode, in batches of eval_batch_size."""
        c, world = self.ctx, self.world
        model = self.eval_model
        was_training = model.training
        model.eval()
        n = len(x)
        if world.distributed:  # each rank a contiguous slice; the sums below make it whole again
            lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
            x, y = x[lo:hi], y[lo:hi]
        loss = torch.zeros((), dtype=torch.float64, device=c.device)
        correct = torch.zeros((), dtype=torch.long, device=c.device)
        step = self.eval_batch
        for i in range(0, len(x), step):
            xb, yb = x[i:i + step].contiguous(memory_format=self.memory_format), y[i:i + step]
            with self._autocast():
                out = model(xb)
                loss += c.loss_fn(out, yb).double() * len(yb)
            correct += (out.argmax(1) == yb).sum()
        model.train(was_training)
        total, hits = all_sum([loss.item(), correct.item()], c.device, world)
        return total / n, hits / n

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the moving average of the weights with ``train.ema``."""
        return self.ema.module if self.ema is not None else self.ctx.model

    def _autocast(self) -> Any:
        dtype = self.autocast_dtype
        return torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None)

    # -- state ------------------------------------------------------------------------------

    def _save(self, name: str, pos: Position | None) -> None:
        if self.run_dir is None:
            return
        c = self.ctx
        def cpu(module: nn.Module) -> dict[str, Tensor]:
            return {k: v.detach().cpu() for k, v in module.state_dict().items()}

        state: dict[str, Any] = {
            "model": cpu(self.eval_model),  # what eval, predict and export load
            "spec": self.spec.to_dict(),
            "classes": self.data.classes,
            "normalization": {"mean": self.data.mean, "std": self.data.std},
            "metrics": self.metrics,
            "best": self.best,
            "seed": self.seed,
        }
        if pos is not None:  # a resumable checkpoint: everything the loop needs to continue
            if self.ema is not None:
                state["train_model"] = cpu(c.model)
                state["ema_steps"] = int(self.ema.n_averaged)
            state.update({
                "callbacks": [cb.state_dict() for cb in self.callbacks],
                "optimizer": c.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "scheduler": c.scheduler.state_dict() if c.scheduler is not None else None,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "position": pos.to_dict(),
            })
        self.run_dir.save_checkpoint(name, state)

    def train_flops_per_sample(self) -> int | None:
        """FLOPs of one sample's training step: 3 x 2 x forward MACs (the backward pass counted as
        twice the forward); None when a layer declares no MAC rule."""
        macs = self.spec.trace.total_macs
        return None if macs is None else 6 * macs

    def fast_paths(self) -> dict[str, Any]:
        """What makes this run fast, for the start-up line and summary.json."""
        return {"channels_last": self.memory_format == torch.channels_last,
                "precision": self.spec.train.precision,
                "fused_optimizer": bool(self.ctx.optimizer.defaults.get("fused")),
                "compiled": False}

    def summary(self, status: str, seconds: float, error: str | None = None) -> dict[str, Any]:
        """summary.json: how the run ended, its last and best epochs, and what ran where."""
        flops = self.train_flops_per_sample()
        trained = sum(r["seconds"] for r in self.metrics)
        samples = sum(r["samples_per_second"] * r["seconds"] for r in self.metrics)
        out = {
            "name": self.spec.name,
            "status": status,
            "epochs_completed": len(self.metrics),
            "epochs_planned": self.spec.train.epochs,
            "final": self.metrics[-1] if self.metrics else None,
            "best": self.best,
            "device": str(self.ctx.device),
            "seed": self.seed,
            "params": self.spec.trace.total_params,
            "macs_per_sample": self.spec.trace.total_macs,
            "train_flops_per_sample": flops,
            "train_gflops_per_second": (flops * samples / trained / 1e9
                                        if flops is not None and trained else None),
            "batch_size": self.batch_size,
            "processes": self.world.size,
            "effective_batch_size": self.batch_size * self.world.size,
            "seconds_this_session": seconds,
            "device_name": device_name(self.ctx.device),
            "fast_paths": self.fast_paths(),
            "versions": versions(getattr(self.pm, "sources", {})),
        }
        if error is not None:
            out["error"] = error
        return out


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
