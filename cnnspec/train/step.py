"""One optimisation step as the spec's train section says, and the scheduler stepping around it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cnnspec.build import optim
from cnnspec.train.capture import CudaGraphs, GraphedStep, decide
from cnnspec.train.context import Context
from cnnspec.train.parts import Parts


class Step:
    """Forward and loss under autocast, backward through the gradient scaler, clipping, warm-up,
    the optimizer (replayed from a CUDA graph with ``train.capture``), the moving average of the
    weights (``train.ema``), a per-batch scheduler.

    Made once the before_training hooks have run, from the model, optimizer, scheduler, loss and
    device they left in ``ctx``."""

    def __init__(self, parts: Parts, ctx: Context) -> None:
        self.parts, self.ctx = parts, ctx
        self.spec, self.precision = parts.spec, parts.precision
        # DDP averages gradients over ranks in backward; the plain model is what gets saved
        self.forward: nn.Module = ctx.model
        if parts.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.forward = DistributedDataParallel(ctx.model, device_ids=ids)
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if self.spec.train.ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(ctx.model, multi_avg_fn=get_ema_multi_avg_fn(self.spec.train.ema.decay),
                                     use_buffers=True)
        self.graph: GraphedStep | None = None  # train.capture: the update replayed from a CUDA graph
        if decide(parts, ctx.optimizer, ctx.device, ctx.scheduler):
            self.graph = GraphedStep(self.update, ctx.model, ctx.optimizer, CudaGraphs(ctx.device),
                                     insist=self.spec.train.capture == "cuda_graph")

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the moving average of the weights with ``train.ema``."""
        return self.ema.module if self.ema is not None else self.ctx.model

    def __call__(self, xb: Tensor, yb: Tensor, global_step: int) -> tuple[Tensor, Tensor]:
        """One step on a batch; returns the (detached) loss and the number of correct predictions
        (from a CUDA graph: tensors that the next step overwrites)."""
        c = self.ctx
        target = yb
        if self.parts.augment:
            xb, target = self.parts.augment(xb, yb)  # target: class probabilities after mixup or cutmix
        xb = self.precision.layout(xb)
        with self.parts.warmup.applied(c.optimizer, global_step):
            loss, hits = (self.graph or self.update)(xb, target, yb)
        self.precision.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(c.model)
        if self.spec.scheduler and self.spec.scheduler.type.interval == "batch":
            c.scheduler.step()
        return loss, hits

    def update(self, xb: Tensor, target: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and loss, backward, clipping and the optimizer's update: what a CUDA graph captures."""
        c, clip, scaler = self.ctx, self.spec.train.grad_clip, self.precision.scaler
        with self.precision.autocast(c.device, cache=self.graph is None):
            out = self.forward(xb)
            loss = c.loss_fn(out, target)
        optim.clear_grads(c.optimizer)
        scaler.scale(loss).backward()  # scale(), unscale_() and update() pass through when disabled
        if clip is not None:
            scaler.unscale_(c.optimizer)  # clip the true gradients, not the scaled ones
            if clip.norm is not None:
                nn.utils.clip_grad_norm_(c.model.parameters(), clip.norm)
            else:
                nn.utils.clip_grad_value_(c.model.parameters(), clip.value or 0.0)
        if scaler.is_enabled():  # fp16: the scaler skips the step when the gradients overflowed
            scaler.step(c.optimizer)
        else:
            optim.step(c.optimizer)
        return loss.detach(), (out.detach().argmax(1) == yb).sum()

    def end_epoch(self, row: dict[str, Any]) -> None:
        """A per-epoch scheduler's step, after evaluation: it may watch a metric of ``row``."""
        sched = self.spec.scheduler
        if sched is None or sched.type.interval != "epoch":
            return
        watched = sched.type.monitor(sched.params)
        if watched:
            self.ctx.scheduler.step(row[watched])
        else:
            self.ctx.scheduler.step()
