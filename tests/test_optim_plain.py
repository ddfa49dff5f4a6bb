"""cnnspec.build.optim: the optimizer stepped, zeroed, saved and loaded without torch._dynamo gives
bit for bit what torch's methods give, and falls back to them wherever it cannot."""

from __future__ import annotations

import json

import pytest
import torch
from test_run import small_spec
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from cnnspec.build import optim
from cnnspec.build.finetune import scale_lrs
from cnnspec.plugins.optimizers import OPTIMIZERS
from cnnspec.train.runner import RunOptions, run_command
from cnnspec.train.warmup import Warmup

BY_NAME = {o.name: o for o in OPTIMIZERS}
# every built-in optimizer, plainly and with the options that change its update
CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("sgd", {"momentum": 0.8, "dampening": 0.1}),
    ("adam", {}), ("adam", {"amsgrad": True, "weight_decay": 1e-2}), ("adamw", {}), ("adamw", {"amsgrad": True}),
    ("rmsprop", {}), ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 1e-3}),
    ("adagrad", {"lr_decay": 0.01, "weight_decay": 1e-3}),
]


def test_every_built_in_optimizer_is_covered() -> None:
    assert {name for name, _ in CASES} == set(BY_NAME)


def _setup(name: str, params: dict, schedule: str):
    """A small model (fixed weights), its optimizer in two lr groups as fine-tuning makes them, a scheduler."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    kind = BY_NAME[name]
    groups = [{"params": list(model[0].parameters()), "lr_mult": 0.5},
              {"params": list(model[3].parameters()), "lr_mult": 1.0}]
    opt = kind.build(kind.Params(**params), groups)
    scale_lrs(opt)
    if schedule == "onecycle":  # stepped every batch: the rate changes at every step
        cycle = "momentum" in opt.defaults or "betas" in opt.defaults
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.1], total_steps=20, cycle_momentum=cycle)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 5)
    return model, opt, sched


def _train(model, opt, sched, steps: int, plain: bool, first: int = 0) -> None:
    warm = Warmup(None, 1)
    warm.steps, warm.start_factor = 3, 0.2  # warm-up over the first 3 steps, as train.warmup does it
    gen = torch.Generator().manual_seed(first)
    for i in range(first, first + steps):
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        if plain:
            optim.clear_grads(opt)
        else:
            opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        with warm.applied(opt, i):
            if plain:
                assert optim.plain_step(opt) is not None  # the plain update really ran
                optim.step(opt)
            else:
                opt.step()
        sched.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{'-'.join(p) or 'plain'}" for n, p in CASES])
def test_the_plain_step_is_bit_identical_to_optimizer_step(name: str, params: dict, schedule: str) -> None:
    ref, plain = _setup(name, params, schedule), _setup(name, params, schedule)
    _train(*ref, steps=4, plain=False)
    _train(*plain, steps=4, plain=True)
    assert _same(ref[0], plain[0])
    saved = optim.state_dict(plain[1])
    assert str(saved) == str(ref[1].state_dict())  # the same state, saved the plain way
    # a checkpoint loaded the plain way continues exactly like one loaded by torch
    again, resumed = _setup(name, params, schedule), _setup(name, params, schedule)
    for (model, opt, sched), load in ((again, False), (resumed, True)):
        model.load_state_dict(ref[0].state_dict())
        sched.load_state_dict(ref[2].state_dict())
        if load:
            optim.load_state_dict(opt, saved)
        else:
            opt.load_state_dict(ref[1].state_dict())
    _train(*again, steps=3, plain=False, first=4)
    _train(*resumed, steps=3, plain=True, first=4)
    assert _same(again[0], resumed[0]) and not _same(again[0], ref[0])


def test_built_optimizers_are_torchs_own_and_fused_where_torch_has_it() -> None:
    model = nn.Linear(3, 2)
    adam = BY_NAME["adam"].build(BY_NAME["adam"].Params(), model.parameters())
    assert type(adam) is torch.optim.Adam and adam.defaults["fused"] is True
    assert "add_param_group" not in vars(adam) and len(adam.param_groups) == 1
    adam.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})  # still torch's method afterwards
    assert len(adam.param_groups) == 2


def test_it_falls_back_to_torchs_methods_where_it_cannot_be_exact() -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert optim.plain_step(opt) is not None
    seen: list[str] = []
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("hook"))
    assert optim.plain_step(opt) is None
    model(torch.ones(1, 3)).sum().backward()
    optim.step(opt)  # through opt.step(): the hook runs
    assert seen == ["hook"]
    handle.remove()
    glob = register_optimizer_step_post_hook(lambda o, args, kwargs: None)
    assert optim.plain_step(opt) is None
    glob.remove()
    assert optim.plain_step(torch.optim.SGD(model.parameters(), lr=0.1, differentiable=True)) is None
    assert optim.plain_step(torch.optim.LBFGS(model.parameters())) is None  # its step needs a closure

    class Own(torch.optim.SGD):
        def step(self, closure=None):  # type: ignore[override]
            seen.append("own")

    own = Own(model.parameters(), lr=0.1)
    assert optim.plain_step(own) is None
    optim.step(own)
    assert seen[-1] == "own"
    opt.step = lambda closure=None: seen.append("replaced")  # type: ignore[method-assign]
    assert optim.plain_step(opt) is None
    model(torch.ones(1, 3)).sum().backward()
    optim.clear_grads(opt)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_gives_the_same_numbers_whichever_way_the_optimizer_steps(write, tmp_path, precision) -> None:
    """A global step hook makes every step go through ``optimizer.step()``: the metrics are the same."""
    spec = small_spec(write, "  grad_clip: {norm: 1.0}\n  warmup: {steps: 5}\n  lr_multipliers: {'-1': 2}\n"
                             f"  precision: {precision}\n")
    rows = []
    for name, hooked in (("plain", False), ("hooked", True)):
        handle = register_optimizer_step_pre_hook(lambda o, a, k: None) if hooked else None
        try:
            run_command(RunOptions(spec=spec, output=str(tmp_path / name), quiet=True, overrides=("train.epochs=2",)))
        finally:
            if handle is not None:
                handle.remove()
        rows.append([json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    keys = ("train_loss", "train_accuracy", "val_loss", "test_loss", "test_accuracy", "lr")
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]


def test_an_enabled_gradient_scaler_steps_the_optimizer_itself(write, tmp_path, monkeypatch) -> None:
    """fp16's scaler (CUDA only; here a CPU scaler at scale 1) calls optimizer.step() itself, to skip
    steps whose gradients overflowed: the step goes through it, and scaling by 1 changes no number."""
    spec = small_spec(write)
    run_command(RunOptions(spec=spec, output=str(tmp_path / "plain"), quiet=True, overrides=("train.epochs=1",)))
    stepped: list[int] = []

    class Scaler(torch.amp.GradScaler):
        def step(self, optimizer, *args, **kwargs):  # type: ignore[no-untyped-def]
            stepped.append(1)
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: Scaler("cpu", init_scale=1.0))
    run_command(RunOptions(spec=spec, output=str(tmp_path / "scaled"), quiet=True, overrides=("train.epochs=1",)))
    assert len(stepped) == 13  # every step of the epoch
    rows = [json.loads((tmp_path / name / "metrics.jsonl").read_text()) for name in ("plain", "scaled")]
    assert [rows[0][k] for k in ("train_loss", "test_loss")] == [rows[1][k] for k in ("train_loss", "test_loss")]
