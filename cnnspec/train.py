"""The training loop: in-memory batches by index, evaluation, checkpoints, hooks, resume, Ctrl-C."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .build import build_model
from .distributed import SINGLE, World, all_sum, any_rank, shard
from .plugins import call_plugin
from .progress import Progress
from .rundir import BEST, LAST, RunDir
from .spec import Spec


class DeviceError(Exception):
    """The requested device is not available on this machine."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


class SetupError(Exception):
    """The spec cannot train as written (found before training starts); ``path`` locates it."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
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
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' requested but MPS is not available here")
    return dev


@dataclass
class Batches:
    """The splits as tensors on the device, already scaled (and normalised if asked)."""

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor] | None
    classes: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None

    def to(self, device: torch.device) -> "Batches":
        """The same splits on another device."""
        def move(pair: tuple[Tensor, Tensor] | None) -> Any:
            return None if pair is None else (pair[0].to(device), pair[1].to(device))

        return Batches(move(self.train), move(self.test), move(self.val), self.classes, self.mean, self.std)


@dataclass
class Context:
    """What run hooks see; before_training may replace model, optimizer or device."""

    spec: Spec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    device: torch.device
    run_dir: RunDir | None
    epoch: int = 0
    rank: int = 0  # under torchrun every process runs the hooks; print from rank 0 only
    world_size: int = 1
    trainer: Any = None  # the Trainer, e.g. for trainer.epoch_indices(epoch)


class Trainer:
    """Trains one spec on prepared Batches, writing the run folder as it goes."""

    def __init__(self, spec: Spec, data: Batches, device: torch.device, run: RunDir | None,
                 pm: Any, progress: Progress, channels_last: bool | None = None,
                 world: World = SINGLE) -> None:
        self.spec, self.data, self.run, self.pm, self.progress = spec, data, run, pm, progress
        self.world = world
        self.train_cfg = spec.train
        assert spec.data is not None, "run checks that the spec has a data section"
        self.batch_size = spec.data.batch_size
        self.eval_batch = spec.data.eval_batch_size
        self.seed = spec.train.seed if spec.train.seed is not None else int(torch.seed() % 2**31)
        # channels-last made the reference step ~1.5x faster on CPU; conv nets gain on CUDA too
        use_cl = channels_last if channels_last is not None else device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if use_cl and len(spec.input_shape) == 3 else None
        # mixed precision: forward and loss under autocast; fp16 needs a gradient scaler
        precision = spec.train.precision
        if precision == "fp16" and device.type != "cuda":
            raise DeviceError("precision fp16 needs a CUDA device; use bf16 on this machine")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

        if device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(self.seed)  # weights, then dropout, draw from this stream
        model = build_model(spec).to(device)
        if self.memory_format is not None:
            model = model.to(memory_format=self.memory_format)
        reg = spec.registry
        opt = call_plugin(reg, "optimizer", spec.optimizer.name, spec.optimizer.type.build,
                          spec.optimizer.params, model.parameters())
        if world.rank:  # other dropout draws on every rank; weights were made identical above
            torch.manual_seed(self.seed + 1_000_003 * world.rank)
        self.forward: nn.Module = model  # set again in fit(), after the hooks
        mine, self.steps_per_epoch = shard(torch.arange(len(data.train[0])), world, self.batch_size)
        if min(len(mine), self.batch_size) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                      for m in model.modules()):
            raise SetupError(("data", "batch_size"), "data.batch_size: batch normalisation needs at least 2 samples "
                             f"per batch while training, but batches here hold {min(len(mine), self.batch_size)}")
        sched = self._scheduler(opt)
        loss_fn = call_plugin(reg, "loss", spec.loss.name, spec.loss.type.build, spec.loss.params)
        self.ctx = Context(spec, model, opt, sched, loss_fn.to(device), device, run,
                           rank=world.rank, world_size=world.size, trainer=self)
        self.gen = torch.Generator().manual_seed(self.seed)  # shuffling only
        self.metrics: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._stop_requested = False

    # -- public -------------------------------------------------------------------------

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        sc = self.spec.scheduler
        if sc is None:
            return None
        return call_plugin(self.spec.registry, "scheduler", sc.name, sc.type.build, sc.params, optimizer,
                           self.spec.train.epochs, self.steps_per_epoch)

    def attach(self, run: RunDir | None) -> None:
        """Write checkpoints, metrics and the summary into ``run`` from now on."""
        self.run = run
        self.ctx.run_dir = run

    def interrupt(self) -> None:
        """Ask the loop to stop after the current step and save a resumable checkpoint."""
        self._stop_requested = True

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by this trainer (same spec); applied in fit(),
        after the before_training hooks, so a model or optimizer they bring gets the state."""
        self._resume = state["position"]
        self._state = state

    def _apply_state(self, state: dict[str, Any]) -> None:
        c = self.ctx
        c.model.load_state_dict(state["model"])
        c.optimizer.load_state_dict(state["optimizer"])
        if c.scheduler is not None and state.get("scheduler") is not None:
            c.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.world.rank:  # the checkpoint holds rank 0's stream; the others branch off it
            torch.manual_seed(int(torch.randint(2**62, (1,))) + self.world.rank)
        self.metrics = list(state["metrics"])
        self.best = state.get("best")
        self.seed = state["seed"]

    def fit(self) -> dict[str, Any]:
        """Train for the remaining epochs; returns the summary (status: completed, stopped, interrupted)."""
        c = self.ctx
        device, optimizer = c.device, c.optimizer
        self.pm.hook.before_training(context=c)  # may replace model, optimizer, device
        if c.optimizer is not optimizer and c.scheduler is not None:
            c.scheduler = self._scheduler(c.optimizer)  # the schedule drives the optimizer in use
        if c.device != device:
            self.data = self.data.to(c.device)
            c.loss_fn.to(c.device)
        c.model.to(c.device)
        if self.memory_format is not None:
            c.model.to(memory_format=self.memory_format)
        # DDP averages gradients over ranks in backward; the plain model is what gets saved
        self.forward = c.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [c.device.index] if c.device.type == "cuda" else None
            self.forward = DistributedDataParallel(c.model, device_ids=ids)
        if getattr(self, "_state", None) is not None:
            self._apply_state(self._state)
        pos = getattr(self, "_resume", {"epoch": 0, "step": 0, "gen": self.gen.get_state(), "sums": None})
        status = "completed"
        started = time.perf_counter()
        old = _install_sigint(self)
        try:
            for epoch in range(pos["epoch"], self.train_cfg.epochs):
                c.epoch = epoch + 1
                row = self._epoch(epoch, pos)
                if row is None:
                    status = "interrupted"
                    break
                pos = {"epoch": epoch + 1, "step": 0, "gen": self.gen.get_state(), "sums": None}
                self._save(LAST, pos)
                stops = self.pm.hook.after_epoch(context=c, metrics=row)
                if any_rank(any(stops), c.device, self.world):
                    status = "stopped early"
                    break
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        summary = self._summary(status, time.perf_counter() - started)
        if self.run:
            self.run.write_summary(summary)
        self.pm.hook.after_training(context=c, summary=summary)
        return summary

    # -- one epoch ----------------------------------------------------------------------

    def epoch_indices(self, epoch_gen: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's sample indices for an epoch (from the shuffling state at its start) and steps."""
        gen = torch.Generator().set_state(epoch_gen)
        return shard(torch.randperm(len(self.data.train[0]), generator=gen), self.world, self.batch_size)

    def _epoch(self, epoch: int, pos: dict[str, Any]) -> dict[str, Any] | None:
        c, world = self.ctx, self.world
        x, y = self.data.train
        bs = self.batch_size
        epoch_gen = pos["gen"]  # the permutation is made from the generator state at epoch start
        self.gen.set_state(epoch_gen)  # every rank draws the same permutation, then takes its shard
        mine, steps = shard(torch.randperm(len(x), generator=self.gen), world, bs)
        mine = mine.to(c.device)
        sums = pos["sums"] or {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if world.rank:  # resumed partial sums are global; they live on rank 0 only
            sums = {**sums, "loss": 0.0, "correct": 0, "seen": 0}
        # running sums continue from a resumed checkpoint in the same order and precision
        loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=c.device)
        correct = torch.tensor(sums["correct"], dtype=torch.long, device=c.device)
        seen = sums["seen"]
        interval = self.spec.scheduler.type.interval if self.spec.scheduler else None
        lr = c.optimizer.param_groups[0]["lr"]  # reported: the rate this epoch starts with
        c.model.train()
        self.progress.start_epoch(epoch + 1, self.train_cfg.epochs, steps, pos["step"])
        t0 = time.perf_counter()
        for step in range(pos["step"], steps):
            check = step % 20 == 0 or step == steps - 1  # .item() and all-reduce sync: not every step
            if any_rank(self._stop_requested, c.device, world) if (check or not world.distributed) else False:
                sums = self._reduced(sums, loss_sum, correct, seen, time.perf_counter() - t0)
                self._save(LAST, {"epoch": epoch, "step": step, "gen": epoch_gen, "sums": sums})
                self.progress.interrupted(epoch + 1, step)
                return None
            idx = mine[step * bs:(step + 1) * bs]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            if self.memory_format is not None:
                xb = xb.contiguous(memory_format=self.memory_format)
            with self._autocast():
                out = self.forward(xb)
                loss = c.loss_fn(out, yb)
            c.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(c.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                c.optimizer.step()
            if interval == "batch":
                c.scheduler.step()
            n = len(idx)
            loss_sum += loss.detach().double() * n
            correct += (out.detach().argmax(1) == yb).sum()
            seen += n
            if check:
                (value,) = all_sum([loss.item()], c.device, world)  # every rank decides alike
                value /= world.size
                if not math.isfinite(value):
                    raise NonFiniteLoss(f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}")
                rate = seen * world.size / (sums["seconds"] + time.perf_counter() - t0)
                self.progress.update(step + 1, value, rate)
        sums = self._reduced(sums, loss_sum, correct, seen, time.perf_counter() - t0)
        if not math.isfinite(sums["loss"]):
            raise NonFiniteLoss(f"the training loss became non-finite during epoch {epoch + 1}")
        if interval == "epoch":
            c.scheduler.step()
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
        self.metrics.append(row)
        key = "val_accuracy" if "val_accuracy" in row else "test_accuracy"
        if self.best is None or row[key] > self.best["value"]:
            self.best = {"epoch": epoch + 1, "metric": key, "value": row[key]}
            self._save(BEST, None)
        if self.run:
            self.run.write_metrics(self.metrics)
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
        was_training = c.model.training
        c.model.eval()
        n = len(x)
        if world.distributed:  # each rank a contiguous slice; the sums below make it whole again
            lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
            x, y = x[lo:hi], y[lo:hi]
        loss = torch.zeros((), dtype=torch.float64, device=c.device)
        correct = torch.zeros((), dtype=torch.long, device=c.device)
        for i in range(0, len(x), self.eval_batch):
            xb, yb = x[i:i + self.eval_batch], y[i:i + self.eval_batch]
            if self.memory_format is not None:
                xb = xb.contiguous(memory_format=self.memory_format)
            with self._autocast():
                out = c.model(xb)
                loss += c.loss_fn(out, yb).double() * len(yb)
            correct += (out.argmax(1) == yb).sum()
        c.model.train(was_training)
        total, hits = all_sum([loss.item(), correct.item()], c.device, world)
        return total / n, hits / n

    def _autocast(self) -> Any:
        dtype = self.autocast_dtype
        return torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None)

    # -- state --------------------------------------------------------------------------

    def _save(self, name: str, pos: dict[str, Any] | None) -> None:
        if self.run is None:
            return
        c = self.ctx
        state: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in c.model.state_dict().items()},
            "spec": self.spec.to_dict(),
            "classes": self.data.classes,
            "normalization": {"mean": self.data.mean, "std": self.data.std},
            "metrics": self.metrics,
            "best": self.best,
            "seed": self.seed,
        }
        if pos is not None:  # a resumable checkpoint: everything the loop needs to continue
            state.update({
                "optimizer": c.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "scheduler": c.scheduler.state_dict() if c.scheduler is not None else None,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "position": pos,
            })
        self.run.save_checkpoint(name, state)

    def _summary(self, status: str, seconds: float) -> dict[str, Any]:
        last = self.metrics[-1] if self.metrics else None
        return {
            "name": self.spec.name,
            "status": status,
            "epochs_completed": len(self.metrics),
            "epochs_planned": self.train_cfg.epochs,
            "final": last,
            "best": self.best,
            "device": str(self.ctx.device),
            "seed": self.seed,
            "params": self.spec.trace.total_params,
            "batch_size": self.batch_size,
            "processes": self.world.size,
            "effective_batch_size": self.batch_size * self.world.size,
            "seconds_this_session": seconds,
        }


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the OS after every step.

    Each training step frees and reallocates activations of several MB; by default glibc
    serves those with mmap and unmaps them on free, so every step page-faults its memory in
    again. Raising the mmap and trim thresholds made the reference CPU step about 20% faster
    here (the effect jemalloc or tcmalloc give). A no-op where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 28) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def _install_sigint(trainer: Trainer) -> Any:
    """First Ctrl-C: finish the step, save, stop. Second: stop at once."""
    try:
        def handler(signum: int, frame: Any) -> None:
            if trainer._stop_requested:
                raise KeyboardInterrupt
            trainer.interrupt()

        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        return None
