"""train.capture: a no-op on the CPU (auto is off, cuda_graph a located error); where it would capture,
what it decides and how the graphed step keeps its bookkeeping, with a stand-in for CUDA graphs."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from test_run import small_spec

import cnnspec.train.step
from cnnspec.train import capture
from cnnspec.train.distributed import World
from cnnspec.train.runner import RunOptions, run_command

KEYS = ("train_loss", "train_accuracy", "val_loss", "test_loss", "test_accuracy", "lr")
CUDA = torch.device("cuda", 0)  # only its type is read: decide() on the CPU as it would decide on a GPU


def _rows(run: Path) -> list[list[float]]:
    return [[json.loads(ln)[k] for k in KEYS] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _run(spec: str, out: Path, *overrides: str) -> dict:
    run_command(RunOptions(spec=spec, output=str(out), quiet=True, overrides=("train.epochs=2", *overrides)))
    return json.loads((out / "summary.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="what capture does on a machine without CUDA")
def test_on_the_cpu_auto_captures_nothing_and_changes_no_number(write, tmp_path, cli) -> None:
    spec = small_spec(write)
    auto, off = _run(spec, tmp_path / "auto"), _run(spec, tmp_path / "off", "train.capture=off")
    assert _rows(tmp_path / "auto") == _rows(tmp_path / "off")
    assert auto["fast_paths"]["cuda_graph"] is False and off["fast_paths"]["cuda_graph"] is False
    res = cli("run", spec, "--output", str(tmp_path / "shown"), "--set", "train.epochs=1")
    assert res.code == 0 and "training small" in res.text and "CUDA graph" not in res.text  # said on CUDA only


@pytest.mark.skipif(torch.cuda.is_available(), reason="what capture does on a machine without CUDA")
def test_cuda_graph_on_the_cpu_is_a_located_error_and_writes_nothing(cli, write, tmp_path) -> None:
    spec = small_spec(write, "  capture: cuda_graph\n")
    res = cli("run", spec, "--output", str(tmp_path / "r"))
    assert res.code == 1 and not (tmp_path / "r").exists()
    (line,) = res.err.strip().splitlines()
    assert line.startswith(f"{spec}:20:12: error: train.capture: cuda_graph cannot capture this run's step: "
                           "CUDA graphs need a CUDA device, and this run is on cpu"), line
    res = cli("run", small_spec(write), "--output", str(tmp_path / "s"), "--set", "train.capture=cuda_graph")
    assert res.code == 1 and "(from --set train.capture=cuda_graph)" in res.err and not (tmp_path / "s").exists()
    assert cli("validate", spec).code == 0  # the device is known only when it runs


def _parts(write, extra: str = "", **overrides: str):
    from cnnspec.data.splits import prepare_data
    from cnnspec.train.parts import build_parts
    from cnnspec.train.runner import load_for_run

    spec = load_for_run(small_spec(write, extra), [f"{k}={v}" for k, v in overrides.items()], None)
    return build_parts(spec, prepare_data(spec, torch.device("cpu")), torch.device("cpu"))


def test_auto_captures_on_cuda_only_where_nothing_blocks_it(write) -> None:
    parts = _parts(write)  # sgd (fused), nesterov, a step schedule, EMA-free, fp32
    assert capture.blockers(parts, parts.optimizer, CUDA, parts.scheduler) == []
    assert capture.decide(parts, parts.optimizer, CUDA, parts.scheduler)
    assert not capture.decide(parts, parts.optimizer, torch.device("cpu"), parts.scheduler)
    off = dataclasses.replace(parts, spec=_parts(write, "  capture: 'off'\n").spec)
    assert not capture.decide(off, off.optimizer, CUDA, off.scheduler)

    def why(p, optimizer=None, scheduler=None) -> list[str]:
        return capture.blockers(p, optimizer or p.optimizer, CUDA, scheduler or p.scheduler)

    assert why(parts, torch.optim.RMSprop(parts.model.parameters())) == [
        "only the fused sgd, adam and adamw updates are captured (this optimizer: RMSprop, not fused)"]
    assert "not fused" in why(parts, torch.optim.Adam(parts.model.parameters(), foreach=True))[0]
    adam = _parts(write, **{"train.optimizer": "adamw", "train.grad_clip.norm": "1", "train.ema.decay": "0.9",
                            "train.warmup.steps": "3", "train.precision": "bf16"})
    assert why(adam) == []  # clipping, EMA, warm-up and bf16 autocast are captured or stay outside
    handle = adam.optimizer.register_step_post_hook(lambda o, a, k: None)
    assert "step hooks" in why(adam)[0]
    handle.remove()
    onecycle = torch.optim.lr_scheduler.OneCycleLR(parts.optimizer, max_lr=0.1, total_steps=10)
    assert "cycles the momentum" in why(parts, scheduler=onecycle)[0]
    assert "torchrun" in why(dataclasses.replace(parts, world=World(rank=0, size=2)))[0]


class Rerun:
    """Stands in for CUDA graphs on the CPU: a capture records the body without running it, and a
    replay runs it again (on the static tensors, as a graph would)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.captures = fail, 0

    @contextmanager
    def side_stream(self):
        yield

    def capture(self, body):
        if self.fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
        self.captures += 1
        return body


@pytest.fixture
def graphed(monkeypatch):
    """Runs decide as on a GPU, with the Rerun stand-in as the backend; yields the Steps made."""
    made: list = []
    real = cnnspec.train.step.GraphedStep

    def make(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(cnnspec.train.step, "decide", lambda parts, opt, device, sched: True)
    monkeypatch.setattr(cnnspec.train.step, "CudaGraphs", lambda device: Rerun())
    monkeypatch.setattr(cnnspec.train.step, "GraphedStep", make)
    return made


def test_the_graphed_step_gives_the_eager_numbers(write, tmp_path, graphed, monkeypatch) -> None:
    """Warm-up steps, a capture, replays on copied batches with the rates of the moment; unfreezing
    changes what trains, which captures again; the optimizer keeps plain numbers throughout."""
    spec = small_spec(write, "  grad_clip: {norm: 1.0}\n  warmup: {steps: 6}\n  ema: {decay: 0.9}\n"
                             "  freeze: ['0']\n  callbacks: [{type: unfreeze, epoch: 1}]\n")
    summary = _run(spec, tmp_path / "graphed", "train.optimizer=adam")  # fused sgd with momentum cannot unfreeze
    (step,) = graphed
    assert step.captures == 2 and step.backend.captures == 2  # once, and again once layer 0 trains
    assert step.replays == 2 * 13 - 2 * capture.WARMUP_STEPS and summary["fast_paths"]["cuda_graph"] is True
    saved = torch.load(tmp_path / "graphed" / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert all(type(g["lr"]) is float for g in saved)
    graphed.clear()
    monkeypatch.setattr(cnnspec.train.step, "decide", lambda parts, opt, device, sched: False)
    _run(spec, tmp_path / "eager", "train.optimizer=adam")
    assert not graphed and _rows(tmp_path / "graphed") == _rows(tmp_path / "eager")


def test_a_capture_that_fails_warns_and_runs_eagerly_or_is_an_error_when_insisted_on(write, capsys) -> None:
    parts = _parts(write)
    model, opt = parts.model, parts.optimizer
    calls = []

    def update(x, target, labels):
        calls.append(len(x))
        return torch.tensor(0.5), torch.tensor(3)

    step = capture.GraphedStep(update, model, opt, Rerun(fail=True))
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    lrs = [g["lr"] for g in opt.param_groups]
    for _ in range(capture.WARMUP_STEPS + 2):
        loss, hits = step(x, y, y)
    assert len(calls) == capture.WARMUP_STEPS + 2 and not step.active and step.replays == 0
    assert [g["lr"] for g in opt.param_groups] == lrs and float(loss) == 0.5
    err = capsys.readouterr().err
    assert err.count("warning: the training step could not be captured as a CUDA graph (CUDA error: operation "
                     "not permitted when stream is capturing); it runs without") == 1
    insist = capture.GraphedStep(update, model, opt, Rerun(fail=True), insist=True)
    with pytest.raises(RuntimeError, match="train.capture cuda_graph: the step could not be captured"):
        for _ in range(capture.WARMUP_STEPS + 1):
            insist(x, y, y)


def test_a_batch_of_another_shape_is_run_eagerly_after_the_captures_are_spent(write) -> None:
    parts = _parts(write)
    seen: list[int] = []

    def update(x, target, labels):
        seen.append(len(x))
        return x.sum(), labels.sum()

    step = capture.GraphedStep(update, parts.model, parts.optimizer, Rerun())
    a, b = torch.ones(4, 1, 8, 8), torch.ones(2, 1, 8, 8)
    for _ in range(capture.WARMUP_STEPS + 1):
        step(a, a[:, 0, 0, 0].long(), a[:, 0, 0, 0].long())
    assert step.active and step.captures == 1
    loss, _ = step(2 * a, a[:, 0, 0, 0].long(), a[:, 0, 0, 0].long())
    assert float(loss) == 2 * 4 * 64  # the replay ran on the new batch, copied into the static one
    for _ in range(capture.MAX_CAPTURES * (capture.WARMUP_STEPS + 1) + 1):  # alternating shapes
        step(b if len(seen) % 2 else a, b[:, 0, 0, 0].long() if len(seen) % 2 else a[:, 0, 0, 0].long(),
             b[:, 0, 0, 0].long() if len(seen) % 2 else a[:, 0, 0, 0].long())
    assert step.captures == capture.MAX_CAPTURES and not step.active


def test_an_unknown_capture_mode_is_a_located_validate_error(cli, write) -> None:
    spec = small_spec(write, "  capture: graph\n")
    res = cli("validate", spec)
    assert res.code == 1 and f"{spec}:20:12: error: train.capture:" in res.out and "'cuda_graph'" in res.out
