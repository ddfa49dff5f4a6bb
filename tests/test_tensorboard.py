"""The first-party TensorBoard plugin (plugins/cnnspec-tensorboard): the event files, read back with
tensorboard's own reader, hold every epoch's metrics and the model graph; a resumed run appends."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard plugin needs tensorboard (pip install -e '.[tensorboard]')")
pytest.importorskip("cnnspec_tensorboard", reason="install plugins/cnnspec-tensorboard (pip install -e)")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from test_run import metrics, small_spec  # noqa: E402

from cnnspec_tensorboard import TensorBoardCallback, TensorBoardParams  # noqa: E402

ON = ("-p", "cnnspec_tensorboard", "--set", "train.callbacks=[tensorboard]")


def read(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def rows(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def assert_scalars_match(acc: EventAccumulator, run: Path) -> None:
    """Every number of every metrics.jsonl row is a scalar at step = epoch, once, with its value."""
    table = rows(run)
    keys = [k for k in table[0] if k != "epoch"]
    assert set(acc.Tags()["scalars"]) == set(keys)
    for key in keys:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["epoch"] for r in table], key
        assert [e.value for e in events] == pytest.approx([r[key] for r in table], rel=1e-6), key  # float32


def test_every_epoch_is_written_with_the_graph_and_training_is_unchanged(cli, write, tmp_path):
    spec = small_spec(write)
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "tb"), *ON)
    assert res.code == 0, res.err
    assert "torch.jit" not in res.err  # torch's deprecation of the tracer add_graph uses is not the user's
    acc = read(tmp_path / "tb" / "tensorboard")
    assert len(rows(tmp_path / "tb")) == 3
    assert {"train_loss", "val_accuracy", "test_accuracy", "lr", "samples_per_second", "seconds"} <= set(
        acc.Tags()["scalars"])
    assert_scalars_match(acc, tmp_path / "tb")
    assert acc.Tags()["graph"]
    names = [n.name for n in acc.Graph().node]
    assert any("Conv2d" in n for n in names) and any("Linear" in n for n in names), names
    # tracing the graph draws no random numbers and changes no weights: the run is the same without it
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "plain")).code == 0
    assert metrics(tmp_path / "tb") == metrics(tmp_path / "plain")
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_a_resumed_run_appends_the_remaining_epochs(cli, write, tmp_path, monkeypatch, ctrl_c_on_third_update):
    spec = small_spec(write)
    ctrl_c_on_third_update()  # a real SIGINT in the middle of epoch 2
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "cut"), *ON).code == 130
    monkeypatch.undo()
    log_dir = tmp_path / "cut" / "tensorboard"
    assert [e.step for e in read(log_dir).Scalars("train_loss")] == [1]
    res = cli("run", "--resume", str(tmp_path / "cut"), "--quiet")  # the run folder remembers -p
    assert res.code == 0, res.err
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per session, in the same folder
    assert_scalars_match(read(log_dir), tmp_path / "cut")
    assert [read(f).Tags()["graph"] for f in files].count(True) == 1  # the graph is written once


def _context(run: Path, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(run_dir=SimpleNamespace(path=run), rank=rank)


def _row(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "train_loss": loss, "note": "not a number", "flag": True}


def test_only_rank_0_writes_and_a_relative_log_dir_is_in_the_run_folder(tmp_path):
    p = TensorBoardParams(log_dir="tb", graph=False)
    other = TensorBoardCallback(p)
    other.on_epoch_end(_context(tmp_path, rank=1), _row(1, 0.5))
    other.on_train_end(_context(tmp_path, rank=1), {})
    assert not (tmp_path / "tb").exists()
    main = TensorBoardCallback(p)
    main.on_epoch_end(_context(tmp_path), _row(1, 0.5))
    main.on_train_end(_context(tmp_path), {})
    acc = read(tmp_path / "tb")
    assert acc.Tags()["scalars"] == ["train_loss"] and not acc.Tags()["graph"]  # numbers only, no bools
    no_folder = TensorBoardCallback(TensorBoardParams())  # no run folder and no log_dir: nothing to write
    no_folder.on_epoch_end(SimpleNamespace(run_dir=None, rank=0), _row(1, 0.5))
    assert no_folder.writer is None


def test_epochs_an_earlier_session_logged_past_its_checkpoint_are_replaced(tmp_path):
    first = TensorBoardCallback(TensorBoardParams(graph=False))
    for epoch in (1, 2, 3):  # epoch 3 was logged, but the process died before its checkpoint
        first.on_epoch_end(_context(tmp_path), _row(epoch, 1.0 / epoch))
    first.on_train_end(_context(tmp_path), {})
    resumed = TensorBoardCallback(TensorBoardParams(graph=False))
    resumed.load_state_dict(first.state_dict())
    for epoch in (3, 4):
        resumed.on_epoch_end(_context(tmp_path), _row(epoch, 10.0 * epoch))
    resumed.on_train_end(_context(tmp_path), {})
    events = read(tmp_path / "tensorboard").Scalars("train_loss")
    assert [(e.step, e.value) for e in events] == [(1, 1.0), (2, 0.5), (3, 30.0), (4, 40.0)]


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, cnnspec_tensorboard; print('torch' in sys.modules, 'tensorboard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # so `cnnspec validate` stays fast with it installed


@pytest.mark.skipif("tensorboard" not in {ep.name for ep in entry_points(group="cnnspec")},
                    reason="plugins/cnnspec-tensorboard is not pip-installed (no entry point)")
def test_the_installed_entry_point_makes_it_available_without_p(cli, write):
    res = cli("validate", small_spec(write, "  callbacks: [{type: tensorboard, graph: false}]\n"))
    assert res.code == 0, res.text
    res = cli("plugins")
    assert "tensorboard" in res.out and "cnnspec-tensorboard" in res.out
