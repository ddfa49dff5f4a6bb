"""``train.capture``: the training step captured once as a CUDA graph and replayed, where that is safe.

A small model's step on a GPU is hundreds of kernel launches of a few microseconds each, so the
CPU launching them, not the GPU, sets its pace. A CUDA graph records the launches of one step
(forward, loss, backward, clipping, the optimizer's fused update) and replays them with one
call. What the graph bakes in must then stay fixed: the batch's shape (the loop takes whole
batches only), the tensors it reads (the batch is copied into the same static tensors every
step, the learning rates into device tensors the fused update reads), which parameters train and
the optimizer's other settings. Those are compared before every replay, and a change captures the
step again. What runs on the host between steps (augmentations, the moving average, schedulers,
warm-up) stays outside the graph.

``auto`` captures only where nothing in ``blockers`` applies; ``cuda_graph`` makes each of them
a located error. On a CPU, ``auto`` is off and nothing here runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from cnnspec.build import optim
from cnnspec.errors import SetupError
from cnnspec.train.parts import Parts

WARMUP_STEPS = 3  # eager steps before a capture: lazily made state (optimizer moments, cuBLAS workspaces)
MAX_CAPTURES = 3  # then the step stays eager (something the graph bakes in keeps changing)
# torch.optim classes whose fused CUDA update reads the learning rate from a device tensor
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)

Update = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]  # (x, target, labels) -> (loss, hits)


def blockers(parts: Parts, optimizer: torch.optim.Optimizer, device: torch.device, scheduler: Any) -> list[str]:
    """Why this run's step cannot be captured as a CUDA graph (empty: it can)."""
    why = []
    if device.type != "cuda":
        why.append(f"CUDA graphs need a CUDA device, and this run is on {device.type}")
    if parts.world.distributed:
        why.append("runs under torchrun (DDP) are not captured")
    if parts.precision.scaler.is_enabled():
        why.append("fp16's gradient scaler checks for overflow on the host at every step (bf16 needs no scaler)")
    if type(optimizer) not in CAPTURABLE or not all(g.get("fused") for g in optimizer.param_groups):
        why.append(f"only the fused sgd, adam and adamw updates are captured (this optimizer: "
                   f"{type(optimizer).__name__}{'' if optimizer.defaults.get('fused') else ', not fused'})")
    elif optim.plain_step(optimizer) is None:
        why.append("the optimizer has step hooks (which a replay would skip) or is differentiable")
    if getattr(scheduler, "cycle_momentum", False):
        why.append("the scheduler cycles the momentum at every step, which a graph would keep fixed")
    if parts.data.streamed:
        why.append("the images are streamed by a background thread, whose copies a capture would catch")
    return why


def decide(parts: Parts, optimizer: torch.optim.Optimizer, device: torch.device, scheduler: Any) -> bool:
    """Whether to capture the step: ``train.capture`` against ``blockers``; ``cuda_graph`` where
    one applies is a SetupError located at the setting."""
    spec = parts.spec
    mode = spec.train.capture
    if mode == "off":
        return False
    why = blockers(parts, optimizer, device, scheduler)
    if mode == "cuda_graph" and why:
        raise SetupError([spec.problem(("train", "capture"), f"train.capture: cuda_graph cannot capture this "
                                       f"run's step: {why[0]} (auto captures only where it can; off never)")],
                         spec.file)
    return not why


class Backend(Protocol):
    """How steps are warmed up and captured: CUDA graphs, or a stand-in in the tests."""

    def side_stream(self) -> Any: ...

    def capture(self, body: Callable[[], None]) -> Callable[[], None]: ...


class CudaGraphs:
    """Warm-up steps on a side stream, and captures with torch.cuda.graph, as torch's docs do."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    @contextmanager
    def side_stream(self) -> Iterator[None]:
        here = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(here)
        with torch.cuda.stream(self.stream):
            yield
        here.wait_stream(self.stream)

    def capture(self, body: Callable[[], None]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        previous = torch.cuda.current_stream(self.device)
        try:  # on the run's device (cuda:1 in a plain run leaves cuda:0 current), on a stream of it
            with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device)):
                body()
        finally:  # a capture that fails inside torch's exit leaves its stream current: not for the run
            torch.cuda.set_stream(previous)
        return graph.replay


class GraphedStep:
    """``update`` run eagerly for WARMUP_STEPS steps, then captured once and replayed.

    ``update(x, target, labels)`` does one whole step (it clears the gradients, does forward,
    loss, backward, clipping and the optimizer's update) and returns the loss and the number of
    correct predictions. A replay returns the same two as static tensors, valid until the next
    step. ``insist``: a capture that fails is an error (``cuda_graph``), not a warning (``auto``)."""

    def __init__(self, update: Update, model: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend,
                 insist: bool = False) -> None:
        self.update, self.model, self.optimizer, self.backend = update, model, optimizer, backend
        self.insist = insist
        self.eager_left, self.captures = WARMUP_STEPS, 0
        self.replay: Callable[[], None] | None = None
        self.key: Any = None
        self.inputs: list[Tensor] = []  # the static batch: x, target, labels
        self.outputs: list[Tensor] = []  # the static loss and hits
        self.lrs: list[Tensor] = []  # each parameter group's rate, read by the graph
        self.replays = 0

    @property
    def active(self) -> bool:
        """Whether the steps are replayed now."""
        return self.replay is not None

    def __call__(self, x: Tensor, target: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        key = self._key(x, target, labels)
        if self.replay is not None:
            if key == self.key:
                return self._replay(x, target, labels)
            self.replay, self.eager_left = None, WARMUP_STEPS  # something it baked in changed
        if self.captures >= MAX_CAPTURES:
            return self.update(x, target, labels)
        if self.eager_left > 0:
            self.eager_left -= 1
            with self.backend.side_stream():
                return self.update(x, target, labels)
        self.captures += 1
        if not self._capture(x, target, labels, key):
            return self.update(x, target, labels)
        return self._replay(x, target, labels)

    def _key(self, x: Tensor, target: Tensor, labels: Tensor) -> Any:
        """What a graph bakes in besides the tensors' contents."""
        groups = self.optimizer.param_groups
        return (x.shape, x.dtype, x.stride(), target.shape, target.dtype, labels.shape, labels.dtype,
                self.model.training, tuple(p.requires_grad for g in groups for p in g["params"]),
                [[(k, v) for k, v in g.items() if k not in ("params", "lr")] for g in groups])

    def _capture(self, x: Tensor, target: Tensor, labels: Tensor, key: Any) -> bool:
        """Record one step into a graph (nothing runs yet); False when the capture failed."""
        groups = self.optimizer.param_groups
        saved = [(g["lr"], g.get("capturable")) for g in groups]
        self.inputs = [x.clone(), target.clone(), labels.clone()]
        self.lrs = [torch.tensor(float(lr), dtype=torch.float32, device=x.device) for lr, _ in saved]
        self.outputs = [torch.zeros((), device=x.device), torch.zeros((), dtype=torch.long, device=x.device)]
        optim.clear_grads(self.optimizer)  # the graph's backward makes the gradients in its own memory

        def body() -> None:
            loss, hits = self.update(*self.inputs)
            self.outputs[0].copy_(loss)
            self.outputs[1].copy_(hits)

        try:
            for g, lr in zip(groups, self.lrs):
                g["lr"] = lr
                if "capturable" in g:
                    g["capturable"] = True  # Adam's check; its fused update is the same either way
            self.replay = self.backend.capture(body)
        except RuntimeError as e:
            optim.clear_grads(self.optimizer)
            self.replay, self.captures = None, MAX_CAPTURES
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if self.insist:
                raise RuntimeError(f"train.capture cuda_graph: the step could not be captured as a CUDA graph "
                                   f"({first}); train.capture: off runs it without") from e
            print(f"cnnspec: warning: the training step could not be captured as a CUDA graph ({first}); "
                  "it runs without", file=sys.stderr)
            return False
        finally:  # the optimizer keeps plain numbers: schedulers, warm-up and checkpoints see no change
            for g, (lr, capturable) in zip(groups, saved):
                g["lr"] = lr
                if capturable is not None:
                    g["capturable"] = capturable
        self.key = key
        return True

    def _replay(self, x: Tensor, target: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        for static, new in zip(self.inputs, (x, target, labels)):
            static.copy_(new)
        for lr, g in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(g["lr"])  # the scheduler's and warm-up's rate of this step
        assert self.replay is not None
        self.replay()
        self.replays += 1
        return self.outputs[0], self.outputs[1]
