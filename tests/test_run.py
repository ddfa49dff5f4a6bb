"""`cnnspec run`: every example spec trains, runs repeat, resume matches, failures are clean."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SPECS

from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.manager import default_plugin_manager

SYNTH = "data.dataset={type: synthetic, shape: %s, classes: %d, train_size: 200, test_size: 50}"
TIMING = {"seconds", "eval_seconds", "samples_per_second", "train_gflops_per_second"}


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def small_spec(write, extra: str = "") -> str:
    return write(
        "name: small\ninput: [1, 8, 8]\nlayers:\n"
        "  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n  - relu\n"
        "  - {type: maxpool2d, kernel_size: 2}\n  - flatten\n  - {type: dropout, p: 0.2}\n"
        "  - {type: linear, out_features: 3}\n"
        "data:\n  dataset: {type: synthetic, classes: 3, train_size: 240, test_size: 60}\n"
        "  batch_size: 16\n  val_split: 0.1\n"
        "train:\n  epochs: 3\n  seed: 5\n  device: cpu\n"
        "  optimizer: {type: sgd, lr: 0.05, momentum: 0.9, nesterov: true}\n"
        "  scheduler: {type: step, step_size: 1, gamma: 0.5}\n" + extra
    )


@pytest.fixture
def plugin():
    """Register a throwaway plugin object on the process's plugin manager for one test."""
    pm = default_plugin_manager()
    added = []

    def add(obj):
        pm.register(obj)
        added.append(obj)

    yield add
    for obj in added:
        pm.unregister(obj)


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_every_example_spec_trains_a_few_batches(cli, tmp_path, spec):
    import cnnspec

    s = cnnspec.load_spec(str(spec))
    shape = list(s.input_shape)
    classes = s.trace.output_shape[0]
    small = []
    if len(shape) == 3 and shape[1] * shape[2] > 64 * 64:  # ImageNet-size specs (resnet18): 32 x 32 keeps this quick
        shape = [shape[0], 32, 32]
        small = ["--set", f"input={shape}"]
    res = cli("run", str(spec), "--quiet", "--output", str(tmp_path / "run"), "--set", "train.epochs=1",
              "--set", SYNTH % (shape, classes), "--set", "data.batch_size=50",
              *small)
    assert res.code == 0, res.err
    (row,) = metrics(tmp_path / "run")
    assert row["epoch"] == 1 and 0 <= row["test_accuracy"] <= 1


def test_quickstart_needs_no_network(cli, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    res = cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--quiet", "--output", str(tmp_path / "q"),
              "--set", "train.epochs=3")
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert summary["final"]["test_accuracy"] > 0.85  # 8x8 digits learn fast; chance is 0.1
    for name in ("spec.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (tmp_path / "q" / name).is_file()


def test_same_seed_same_metrics(cli, write, tmp_path):
    spec = small_spec(write)
    for name in ("a", "b"):
        assert cli("run", spec, "--quiet", "--output", str(tmp_path / name)).code == 0
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert len(metrics(tmp_path / "a")) == 3
    lrs = [r["lr"] for r in metrics(tmp_path / "a")]
    assert lrs == pytest.approx([0.05, 0.025, 0.0125])  # each epoch's rate; step scheduler, gamma 0.5


def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(
        cli, write, tmp_path, monkeypatch, ctrl_c_on_third_update):
    spec = small_spec(write)
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "full")).code == 0

    ctrl_c_on_third_update()  # a real SIGINT in the middle of epoch 2
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "cut"))
    assert res.code == 130 and "--resume" in res.err
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert state["position"]["epoch"] == 1 and state["position"]["step"] == 1
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()

    res = cli("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert res.code == 0, res.err
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    assert cli("run", "--resume", str(tmp_path / "cut"), "--quiet").code == 0  # already finished


def test_tampered_checkpoint_is_refused(cli, write, tmp_path):
    spec = small_spec(write)
    run = tmp_path / "r"
    assert cli("run", spec, "--quiet", "--output", str(run), "--set", "train.epochs=1").code == 0

    class Evil:
        def __reduce__(self):
            return (print, ("this ran code",))

    state = torch.load(run / "last.pt", weights_only=True)
    state["evil"] = Evil()
    torch.save(state, run / "last.pt")
    res = cli("run", "--resume", str(run), "--quiet")
    assert res.code == 2
    assert "refused: not a plain weights file" in res.err and "this ran code" not in res.out
    (run / "last.pt").write_bytes(b"garbage")
    res = cli("run", "--resume", str(run), "--quiet")
    assert res.code == 2 and "not a readable checkpoint" in res.err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cli, write, tmp_path, plugin):
    class Explode:
        @hookimpl
        def after_epoch(self, context, metrics):
            for group in context.optimizer.param_groups:
                group["lr"] = 1e30

    plugin(Explode())
    run = tmp_path / "r"
    res = cli("run", small_spec(write), "--quiet", "--output", str(run))
    assert res.code == 3
    assert "the training loss became" in res.err and "last good checkpoint" in res.err
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["position"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_hooks_see_the_run_and_can_stop_it(cli, write, tmp_path, plugin):
    seen = []

    class Watch:
        @hookimpl
        def before_training(self, context):
            seen.append(("before", type(context.model).__name__, str(context.device)))

        @hookimpl
        def after_epoch(self, context, metrics):
            seen.append(("epoch", metrics["epoch"]))
            return metrics["epoch"] >= 2

    plugin(Watch())
    run = tmp_path / "r"
    assert cli("run", small_spec(write), "--quiet", "--output", str(run)).code == 0
    assert seen == [("before", "Sequential", "cpu"), ("epoch", 1), ("epoch", 2)]
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped early"


def test_overrides_are_validated_like_the_file(cli, write, tmp_path):
    spec = small_spec(write)
    res = cli("run", spec, "--quiet", "--set", "train.epochs=0", "--output", str(tmp_path / "x"))
    assert res.code == 1
    assert ":15:11: error: train.epochs: must be >= 1, got 0 (from --set train.epochs=0)" in res.err
    res = cli("run", spec, "--quiet", "--set", "train.optimizr.lr=1", "--output", str(tmp_path / "x"))
    assert res.code == 1 and "unknown key 'optimizr' (did you mean 'optimizer'?)" in res.err
    res = cli("run", spec, "--quiet", "--set", "nonsense", "--output", str(tmp_path / "x"))
    assert res.code == 2 and "expected KEY.PATH=VALUE" in res.err
    res = cli("run", spec, "--quiet", "--set", "train.optimizer.lr=3e-4", "--set", "train.epochs=1",
              "--output", str(tmp_path / "ok"))
    assert res.code == 0
    assert "lr: 0.0003" in (tmp_path / "ok" / "spec.yaml").read_text()


def test_data_that_does_not_fit_the_spec_is_a_located_error(cli, write, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (10, 12), color=40 * i).save(d / f"{i}.png")
    spec = write(f"input: [1, 8, 8]\nlayers:\n  - flatten\n  - {{type: linear, out_features: 5}}\n"
                 f"data:\n  dataset: {{type: image_folder, size: [8, 8], channels: 1}}\n  root: {tmp_path / 'imgs'}\n")
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 1
    assert ":4:5: error: layers[1] linear: the model ends in 5 but dataset 'image_folder' has 2 classes" in res.err


def test_missing_offline_data_says_which_files_to_put_where(cli, tmp_path):
    res = cli("run", str(ROOT / "specs" / "mnist_cnn.yaml"), "--quiet", "--set", f"data.root={tmp_path}",
              "--set", "data.download=false", "--output", str(tmp_path / "r"))
    assert res.code == 2
    assert "train-images-idx3-ubyte" in res.err and str(tmp_path / "MNIST" / "raw") in res.err


def test_unavailable_device_is_a_clear_error(cli, write, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = cli("run", small_spec(write), "--quiet", "--device", "cuda", "--output", str(tmp_path / "r"))
    assert res.code == 2 and "CUDA is not available" in res.err
    assert "(--device cpu, or train.device: auto, uses what there is)" in res.err  # what to do instead
    assert len(res.err.splitlines()) == 1 and not (tmp_path / "r").exists()


def test_run_lines_keep_the_run_folder_whole_in_an_80_column_pipe(cli, write, tmp_path, monkeypatch):
    """rich wraps at the width (80 in a pipe): the lines that name the run folder are printed as
    one line each, the path whole, and the path is not read as rich markup."""
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / ("a-folder-with-a-long-name-[b]-" * 3) / "run"
    res = cli("run", small_spec(write), "--set", "train.epochs=1", "--output", str(out))
    assert res.code == 0, res.err
    lines = res.err.splitlines()
    assert any(ln.startswith("training small: ") and ln.endswith(f" -> {out}") for ln in lines), res.err
    assert any(ln.startswith("completed: test accuracy ") and ln.endswith(f"; run folder {out}")
               for ln in lines), res.err
    res = cli("run", "--resume", str(out))
    assert res.code == 0, res.err
    assert any(ln.startswith(f"{out}: already finished (") and ln.endswith(f"--resume {out} --set train.epochs=N")
               for ln in res.err.splitlines()), res.err


def test_run_needs_exactly_one_of_spec_and_resume(cli, write, tmp_path):
    assert cli("run").code == 2
    assert cli("run", small_spec(write), "--resume", str(tmp_path)).code == 2
    res = cli("run", "--resume", str(tmp_path / "nothing"))
    assert res.code == 2 and "no such file" in res.err


def test_before_training_may_replace_model_and_optimizer(cli, write, tmp_path, plugin):
    import cnnspec

    swapped = {}

    class Swap:
        @hookimpl
        def before_training(self, context):
            model = cnnspec.build_model(context.spec)
            swapped["start"] = [p.detach().clone() for p in model.parameters()]
            context.model = model
            context.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            swapped["model"] = model

        @hookimpl
        def after_training(self, context, summary):
            swapped["end_model"] = context.model

    plugin(Swap())
    assert cli("run", small_spec(write), "--quiet", "--output", str(tmp_path / "r"),
               "--set", "train.epochs=1", "--set", "train.scheduler=null").code == 0
    assert swapped["end_model"] is swapped["model"]
    moved = [not torch.equal(a, b) for a, b in zip(swapped["start"], swapped["model"].parameters())]
    assert all(moved)  # the replacement is what trained
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(saved["5.weight"], swapped["model"][5].weight.detach())


def test_set_reaches_bare_and_omitted_components(cli, write, tmp_path):
    spec = small_spec(write)
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"), "--set", "train.epochs=1",
              "--set", "train.loss.label_smoothing=0.1", "--set", "train.optimizer.type=adam",
              "--set", "train.optimizer.momentum=", "--set", "train.scheduler=null")
    assert res.code == 1 and "unknown key 'momentum'" in res.err  # sgd's keys stay: validated as adam
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r2"), "--set", "train.epochs=1",
              "--set", "train.loss.label_smoothing=0.1")
    assert res.code == 0, res.err
    assert res.out.strip() == str(tmp_path / "r2")  # --quiet prints only where the run went
    assert "label_smoothing: 0.1" in (tmp_path / "r2" / "spec.yaml").read_text()


def test_resume_may_change_only_epochs_and_device(cli, write, tmp_path):
    run = tmp_path / "r"
    assert cli("run", small_spec(write), "--quiet", "--output", str(run), "--set", "train.epochs=1").code == 0
    res = cli("run", "--resume", str(run), "--set", "layers.0.out_channels=6", "--quiet")
    assert res.code == 2 and "this would change layers" in res.err
    res = cli("run", "--resume", str(run), "--set", "train.epochs=2", "--quiet")
    assert res.code == 0, res.err
    assert "epochs: 2" in (run / "spec.yaml").read_text()  # recorded for the next --resume
    assert len(metrics(run)) == 2


def test_bf16_mixed_precision_trains(cli, write, tmp_path):
    res = cli("run", small_spec(write), "--quiet", "--output", str(tmp_path / "r"), "--set", "train.precision=bf16")
    assert res.code == 0, res.err
    assert metrics(tmp_path / "r")[-1]["test_accuracy"] > 0.5
    res = cli("run", small_spec(write), "--quiet", "--output", str(tmp_path / "h"), "--set", "train.precision=fp16")
    assert res.code == 2 and "fp16 needs a CUDA device" in res.err
    assert not (tmp_path / "h").exists()  # nothing half-made when the setup fails


def test_batchnorm_with_batches_of_one_is_a_located_error(cli, write, tmp_path):
    spec = write("input: [1, 4, 4]\nlayers: [batchnorm2d, flatten, {type: linear, out_features: 2}]\n"
                 "data:\n  dataset: {type: synthetic, shape: [1, 4, 4], classes: 2, train_size: 8, test_size: 4}\n"
                 "  batch_size: 1\n")
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 1 and ":5:15: error: data.batch_size: batch normalisation needs at least 2 samples" in res.err


def test_a_plugin_failing_mid_training_ends_the_run_cleanly(cli, write, tmp_path, plugin):
    class Boom:
        @hookimpl
        def after_epoch(self, context, metrics):
            raise ValueError("plugin broke")

    plugin(Boom())
    run = tmp_path / "r"
    res = cli("run", small_spec(write), "--quiet", "--output", str(run))
    assert res.code == 3 and "training failed: ValueError: plugin broke" in res.err
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert (run / "last.pt").is_file()


def test_the_end_of_run_table_fits_an_80_column_terminal():
    import io

    from cnnspec.train.progress import RichProgress
    from cnnspec.util.console import Console

    progress = RichProgress()
    progress.console = Console(file=io.StringIO(), width=80, highlight=False)
    row = {"epoch": 10, "train_loss": 0.4013, "train_accuracy": 0.9891, "val_loss": 0.3829, "val_accuracy": 0.9931,
           "test_loss": 0.4105, "test_accuracy": 0.9806, "lr": 4.9e-05, "seconds": 12.5}
    progress.finish([row])
    out = progress.console.file.getvalue()
    assert "…" not in out and "4.9e-05" in out and "0.9806" in out and "12.5" in out, out
