"""Callbacks and training options: early stopping, reduce-on-plateau, warm-up, gradient clipping,
the weights' moving average, and a resume with all of them (and augmentation) equal to a run
that was never interrupted."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from test_run import TIMING, metrics

from cnnspec.plugins.callbacks import EarlyStoppingCallback, EarlyStoppingParams


def _context_with_weights(value: float) -> SimpleNamespace:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    return SimpleNamespace(model=model)


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights():
    cb = EarlyStoppingCallback(EarlyStoppingParams(monitor="val_loss", patience=2, restore_best=True))
    ctx = _context_with_weights(0.0)
    scripted = [1.0, 0.8, 0.9, 0.85, 0.7]  # best at epoch 2, then two epochs without improvement
    stopped_at = None
    for epoch, loss in enumerate(scripted, 1):
        with torch.no_grad():
            ctx.model.weight.fill_(float(epoch))  # the weights "of" each epoch
        if cb.on_epoch_end(ctx, {"epoch": epoch, "val_loss": loss}):
            stopped_at = epoch
            break
    assert stopped_at == 4
    summary: dict = {}
    cb.on_train_end(ctx, summary)
    assert summary["restored_epoch"] == 2 and float(ctx.model.weight.detach()[0, 0]) == 2.0
    # max mode, min_delta: a gain of 0.005 is no improvement at min_delta 0.01
    cb = EarlyStoppingCallback(EarlyStoppingParams(monitor="val_accuracy", patience=1, min_delta=0.01))
    assert cb.mode == "max" and not cb.on_epoch_end(ctx, {"epoch": 1, "val_accuracy": 0.90})
    assert cb.on_epoch_end(ctx, {"epoch": 2, "val_accuracy": 0.905})
    # its state goes through a checkpoint and back
    again = EarlyStoppingCallback(EarlyStoppingParams(monitor="val_accuracy", patience=1, min_delta=0.01))
    again.load_state_dict(cb.state_dict())
    assert (again.best, again.wait, again.best_epoch) == (0.90, 1, 1)


RECORDING_OPTIMIZER = '''
import json, os
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import OptimizerType, NoParams

class Recording(OptimizerType[NoParams]):
    name = "recording_sgd"
    def build(self, p, parameters):
        import torch
        class Opt(torch.optim.SGD):
            def step(self, closure=None):
                with open(os.environ["CNNSPEC_LR_LOG"], "a") as f:
                    f.write(json.dumps(self.param_groups[0]["lr"]) + "\\n")
                return super().step(closure)
        return Opt(parameters, lr=0.1)

@hookimpl
def register_optimizers(register):
    register(Recording())
'''


def test_warmup_rises_linearly_then_hands_over_to_the_schedule(cli, write, tmp_path, monkeypatch):
    (tmp_path / "recording.py").write_text(RECORDING_OPTIMIZER)
    log = tmp_path / "lr.log"
    monkeypatch.setenv("CNNSPEC_LR_LOG", str(log))
    spec = write("plugins: [recording.py]\ninput: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\n"
                 "data: {dataset: {type: synthetic, shape: [1, 4, 4], classes: 2, train_size: 24, test_size: 4}, "
                 "batch_size: 8}\n"
                 "train: {epochs: 3, device: cpu, optimizer: recording_sgd, "
                 "warmup: {steps: 4, start_factor: 0.25}, scheduler: {type: step, step_size: 1, gamma: 0.5}}\n")
    res = cli("run", spec, "--trust", "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err
    lrs = [json.loads(ln) for ln in log.read_text().splitlines()]
    # 3 steps an epoch; warm-up factor 0.25, 0.4375, 0.625, 0.8125 on steps 0-3, then the schedule's own
    assert lrs == pytest.approx([0.025, 0.04375, 0.0625, 0.05 * 0.8125, 0.05, 0.05, 0.025, 0.025, 0.025])
    assert [r["lr"] for r in metrics(tmp_path / "r")] == pytest.approx([0.025, 0.05 * 0.8125, 0.025])


@pytest.mark.parametrize(("callback", "message"), [
    ("{type: early_stopping, monitor: test_accuracy}",
     "8:47: error: train.callbacks[0] early_stopping: watching 'test_accuracy' would choose on the test set; "
     "watch 'val_accuracy' and hold out a validation set with data.val_split"),
    ("{type: early_stopping, monitor: val_acuracy}", "unknown metric 'val_acuracy' (did you mean 'val_accuracy'?)"),
    ("early_stopping", "8:15: error: train.callbacks[0] early_stopping: 'val_loss' needs a validation set: set "
     "data.val_split (for example 0.1)"),
])
def test_watched_metrics_are_checked_at_validate_time(cli, write, callback, message):
    spec = write("input: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\ndata:\n"
                 "  dataset: {type: synthetic, shape: [1, 4, 4], classes: 2}\n"
                 "train:\n  epochs: 2\n  scheduler: null\n"
                 f"  callbacks: [{callback}]\n")
    res = cli("validate", spec)
    assert res.code == 1 and message in res.out, res.out


def test_plateau_scheduler_needs_its_metric(cli, write):
    spec = write("input: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\n"
                 "data: {dataset: {type: synthetic, shape: [1, 4, 4], classes: 2}}\n"
                 "train: {scheduler: reduce_on_plateau}\n")
    res = cli("validate", spec)
    assert res.code == 1 and "train.scheduler reduce_on_plateau: 'val_loss' needs a validation set" in res.out
    text = open(spec).read().replace("classes: 2}}", "classes: 2}, val_split: 0.2}")
    open(spec, "w").write(text)
    assert cli("validate", spec).code == 0  # the same spec passes once a validation split exists


EVERYTHING = """\
name: everything
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - batchnorm2d
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: dropout, p: 0.2}
  - {type: linear, out_features: 3}
data:
  dataset: {type: synthetic, classes: 3, train_size: 240, test_size: 60}
  batch_size: 16
  val_split: 0.1
  augment:
    - {type: random_crop, padding: 1}
    - horizontal_flip
    - {type: random_affine, degrees: 10, translate: [0.1, 0.1]}
    - random_erasing
    - mixup
train:
  epochs: 3
  seed: 5
  device: cpu
  optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
  scheduler: {type: reduce_on_plateau, patience: 1, factor: 0.5}
  warmup: {epochs: 1}
  grad_clip: {norm: 1.0}
  ema: {decay: 0.9}
  callbacks: [{type: early_stopping, monitor: val_accuracy, patience: 10, restore_best: true}]
"""


def test_resume_with_augmentation_and_every_callback_equals_an_uninterrupted_run(
        cli, write, tmp_path, monkeypatch, ctrl_c_on_third_update):
    spec = write(EVERYTHING)
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "full")).code == 0
    ctrl_c_on_third_update()  # a real SIGINT in the middle of epoch 2
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "cut")).code == 130
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["position"]["epoch"] == 1
    res = cli("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert res.code == 0, res.err
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key in ("model", "train_model"):
        for name, value in full[key].items():
            assert torch.equal(value, cut[key][name]), (key, name)
    assert full["callbacks"][0]["best_epoch"] == cut["callbacks"][0]["best_epoch"]
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["best"]["metric"] == "val_accuracy" and summary["restored_epoch"] == summary["best"]["epoch"]


def test_ema_weights_are_what_is_evaluated_and_saved(cli, write, tmp_path):
    spec = write(EVERYTHING.replace("  callbacks: [{type: early_stopping, monitor: val_accuracy, patience: 10, "
                                    "restore_best: true}]\n", ""))
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "r"), "--set", "train.epochs=2").code == 0
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["ema_steps"] == 2 * 13  # every optimizer step updates the average (216 / 16 = 13 steps)
    differs = [name for name, v in state["model"].items()
               if v.is_floating_point() and not torch.equal(v, state["train_model"][name])]
    assert "0.weight" in differs  # the saved model is the average, not the last step's weights
    res = cli("eval", str(tmp_path / "r"), "--format", "json", "--checkpoint", "last")
    assert res.code == 0, res.err
    last = {k: v for k, v in metrics(tmp_path / "r")[-1].items() if k not in TIMING}
    assert json.loads(res.out)["accuracy"] == pytest.approx(last["test_accuracy"])
