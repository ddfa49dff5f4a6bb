"""The seams of cnnspec.train: the device resolved once, typed run options, warm-up, the best epoch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_run import small_spec

from cnnspec.errors import CnnspecError, DeviceError
from cnnspec.train.device import is_device_name, resolve_device
from cnnspec.train.history import History
from cnnspec.train.runner import RunOptions, run_command
from cnnspec.train.warmup import Warmup


def test_device_names_are_the_specs_pattern() -> None:
    assert all(is_device_name(n) for n in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"))
    assert not any(is_device_name(n) for n in ("gpu", "cuda:", "cuda:x", "cpu\n", "CPU", "", "tpu:0"))
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="device 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        resolve_device("cuda:0")


def test_the_cli_refuses_an_unknown_device_before_anything_runs(cli, write) -> None:
    res = cli("run", small_spec(write), "--device", "gpu")
    assert res.code == 2 and "'gpu' is not one of auto, cpu, cuda, cuda:N, mps" in res.err


def test_the_device_is_resolved_once_and_the_fit_check_sees_the_ranks(write, tmp_path, monkeypatch) -> None:
    import cnnspec.train.device
    import cnnspec.train.distributed
    import cnnspec.train.runner

    resolved: list[str] = []
    real = cnnspec.train.device.resolve_device
    monkeypatch.setattr(cnnspec.train.device, "resolve_device", lambda name: resolved.append(name) or real(name))
    rank_device = torch.device("cpu", 0)  # stands for the cuda:LOCAL_RANK that torchrun's ranks get
    monkeypatch.setattr(cnnspec.train.distributed, "device_for", lambda world, device: rank_device)
    checked = []

    def check_fits(spec, device):
        checked.append(device)
        raise CnnspecError("stop here")

    monkeypatch.setattr(cnnspec.train.runner, "check_fits", check_fits)
    with pytest.raises(CnnspecError, match="stop here"):
        run_command(RunOptions(spec=small_spec(write), output=str(tmp_path / "r"), quiet=True))
    assert resolved == ["cpu"] and checked == [rank_device] and not (tmp_path / "r").exists()

    monkeypatch.undo()
    monkeypatch.setattr(cnnspec.train.device, "resolve_device", lambda name: resolved.append(name) or real(name))
    run_command(RunOptions(spec=small_spec(write), output=str(tmp_path / "r"), quiet=True,
                           overrides=("train.epochs=1",)))
    assert resolved == ["cpu", "cpu"]  # a whole run, once


def test_run_options_are_typed_and_frozen(write, tmp_path, capsys) -> None:
    opts = RunOptions(spec=small_spec(write), output=str(tmp_path / "r"), quiet=True, overrides=("train.epochs=1",),
                      device="cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.quiet = False  # type: ignore[misc]
    run_command(opts)
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")  # --quiet prints the run folder only
    assert (tmp_path / "r" / "last.pt").is_file()
    with pytest.raises(CnnspecError, match="give either a SPEC file or --resume RUN_DIR"):
        run_command(RunOptions())
    with pytest.raises(CnnspecError, match="give either a SPEC file or --resume RUN_DIR"):
        run_command(dataclasses.replace(opts, resume=str(tmp_path / "r")))


def test_warmup_rises_linearly_and_puts_the_rates_back() -> None:
    class Section:
        steps, epochs, start_factor = None, 2, 0.1

    warm = Warmup(Section(), steps_per_epoch=5)  # type: ignore[arg-type]
    assert warm.steps == 10
    assert [warm.factor(s) for s in (0, 5, 10, 11)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    assert Warmup(None, 5).factor(0) == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    with warm.applied(opt, 5):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.55)
    assert opt.param_groups[0]["lr"] == 0.2


def test_the_best_epoch_follows_the_metric_and_its_direction() -> None:
    class Watch:
        best_metric = ("val_loss", "min")

    rows: list[dict] = []
    loss = History(rows, [Watch()])  # type: ignore[list-item]
    improved = [loss.improves({"epoch": e, "val_loss": v}) for e, v in ((1, 0.5), (2, 0.7), (3, 0.4))]
    assert improved == [True, False, True]
    assert loss.best == {"epoch": 3, "metric": "val_loss", "value": 0.4}
    acc = History(rows, [])
    assert acc.metric == "val_accuracy" and acc.mode == "max"
    assert not acc.improves({"epoch": 1, "test_accuracy": 0.9})  # never chosen on the test set
    assert acc.improves({"epoch": 1, "val_accuracy": 0.5}) and not acc.improves({"epoch": 2, "val_accuracy": 0.5})


def test_a_trainer_is_configured_through_its_constructor(write, tmp_path) -> None:
    import cnnspec
    from cnnspec.data.splits import Batches
    from cnnspec.registry.manager import default_plugin_manager
    from cnnspec.train.loop import Trainer
    from cnnspec.train.parts import build_parts
    from cnnspec.train.progress import QuietProgress
    from cnnspec.train.rundir import RunDir

    spec = cnnspec.load_spec(small_spec(write, "  ema: {decay: 0.9}\n"))
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 3, (40,))
    data = Batches(train=(x, y), test=(x[:8], y[:8]), val=None, classes=["a", "b", "c"])
    (tmp_path / "r").mkdir()
    calls: list[int] = []
    trainer = Trainer(build_parts(spec, data, torch.device("cpu")), default_plugin_manager(), QuietProgress(),
                      run_dir=RunDir(tmp_path / "r"), on_setup=lambda: calls.append(len(trainer.metrics)))
    summary = trainer.fit()
    assert calls == [0] and summary["status"] == "completed" and summary["epochs_completed"] == 3
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["ema_steps"] == 3 * 2 and "train_model" in state  # 40 samples, batches of 16: 2 steps an epoch
    assert list(state)[8:10] == ["train_model", "ema_steps"]  # where the old trainer wrote them
