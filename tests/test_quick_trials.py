"""Quick trials: --fast-dev-run, data.limit, and runs/latest pointing at the newest run folder."""

from __future__ import annotations

import json
import os

from conftest import ROOT

QUICK = str(ROOT / "specs" / "quickstart.yaml")


def _rows(run) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_fast_dev_run_trains_two_batches_of_one_epoch_and_keeps_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    res = cli("run", QUICK, "--fast-dev-run")
    assert res.code == 0, res.err
    assert "fast dev run: one epoch on two batches of each split went through; the run folder was not kept" \
        in res.out
    assert not (tmp_path / "runs").exists() and not any((tmp_path / "tmp").iterdir())


def test_fast_dev_run_with_output_keeps_the_folder(cli, tmp_path):
    res = cli("run", QUICK, "--fast-dev-run", "--output", str(tmp_path / "r"), "--quiet")
    assert res.code == 0, res.err
    (row,) = _rows(tmp_path / "r")
    assert row["epoch"] == 1
    spec = (tmp_path / "r" / "spec.yaml").read_text()
    assert "limit: 64" in spec and "epochs: 1" in spec  # two batches of the quick start's 32


def test_fast_dev_run_does_not_resume(cli, tmp_path):
    res = cli("run", "--resume", str(tmp_path), "--fast-dev-run")
    assert res.code == 2 and "does not resume" in res.err


def test_data_limit_takes_the_first_samples_of_each_split(cli, tmp_path):
    res = cli("run", QUICK, "--quiet", "--output", str(tmp_path / "r"), "--set", "train.epochs=1",
              "--set", "data.limit=40", "--set", "data.batch_size=20")
    assert res.code == 0, res.err
    (row,) = _rows(tmp_path / "r")
    assert abs(row["samples_per_second"] * row["seconds"] - 40) < 0.5  # 40 training samples went through
    for split in ("train", "val", "test"):  # each split holds 40: accuracies are multiples of 1/40
        assert abs(row[f"{split}_accuracy"] * 40 - round(row[f"{split}_accuracy"] * 40)) < 1e-6


def test_limit_batches_trains_and_evaluates_n_batches_per_epoch_and_keeps_the_folder(cli, tmp_path):
    run = tmp_path / "r"
    res = cli("run", QUICK, "--quiet", "--output", str(run), "--limit-batches", "3", "--set", "train.epochs=2",
              "--set", "data.eval_batch_size=50")
    assert res.code == 0, res.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_per_epoch"] == 3 and summary["epochs_completed"] == 2
    assert "limit_batches: 3" in (run / "spec.yaml").read_text()
    rows = _rows(run)
    for row in rows:
        assert abs(row["samples_per_second"] * row["seconds"] - 3 * 32) < 0.5  # 3 batches of 32 each epoch
        # test: the first 3 batches of 50 (the digits' test split holds 360); validation: its 144, fewer than 150
        assert abs(row["test_accuracy"] * 150 - round(row["test_accuracy"] * 150)) < 1e-6
        assert abs(row["val_accuracy"] * 144 - round(row["val_accuracy"] * 144)) < 1e-6
    # the run's test metric is over those 150 samples: eval of best.pt measures the same ones again
    doc = json.loads(cli("eval", str(run), "--format", "json").out)
    assert doc["samples"] == 150
    assert doc["accuracy"] == rows[summary["best"]["epoch"] - 1]["test_accuracy"]


def test_limit_batches_takes_the_first_batches_of_each_epochs_order():
    import torch

    from cnnspec.train.distributed import SINGLE, shard

    perm = torch.randperm(100)
    mine, steps = shard(perm, SINGLE, 8, limit=3)
    assert steps == 3 and torch.equal(mine, perm[:24])
    assert shard(perm, SINGLE, 8, limit=50)[1] == 12  # a limit past the split changes nothing


def test_runs_latest_points_at_the_newest_run(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli("run", QUICK, "--quiet", "--set", "train.epochs=1", "--set", "data.limit=32").code == 0
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))
    newest = max((p for p in (tmp_path / "runs").iterdir() if p.name != "latest"), key=lambda p: p.stat().st_mtime)
    assert latest.resolve() == newest.resolve()
    res = cli("eval", "runs/latest")
    assert res.code == 0, res.err


def test_predict_export_plot_and_report_accept_runs_latest(cli, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    res = cli("run", QUICK, "--quiet", "--no-report", "--set", "train.epochs=1", "--set", "data.limit=32")
    assert res.code == 0, res.err
    run = (tmp_path / "runs" / "latest").resolve()
    assert run.name != "latest" and not (run / "report.html").exists()
    picture = np.zeros((8, 8), dtype=np.uint8)
    picture[2:6, 3:5] = 255  # light ink on black, the digits' way
    Image.fromarray(picture).save(tmp_path / "one.png")
    res = cli("predict", "runs/latest", "one.png")
    assert res.code == 0 and res.out.startswith("one.png: "), res.err
    res = cli("export", "runs/latest")
    assert res.code == 0 and res.out.startswith("wrote runs/latest/model.torchscript.pt "), res.err
    res = cli("report", "runs/latest")
    assert res.code == 0 and res.out.strip() == "wrote runs/latest/report.html", res.err
    assert (run / "model.torchscript.pt").is_file() and (run / "report.html").is_file()  # in the run folder
    res = cli("plot", "runs/latest")
    assert res.code == 0 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG", res.err


def test_a_quick_run_imports_no_heavy_module_it_does_not_use(tmp_path):
    """The digits are read from scikit-learn's data file, not through scikit-learn; the optimizer is
    built, stepped, saved and loaded without torch._dynamo (and sympy, ~1 s of start-up), and
    summary.json names torchvision's version without importing it (which imports torch._dynamo)."""
    import subprocess
    import sys

    run = str(tmp_path / "r")
    first = [QUICK, "--quiet", "--output", run, "--set", "train.epochs=1", "--set", "data.limit=64",
             "--set", "train.scheduler.T_max=2", "--set", "train.grad_clip.norm=1", "--set", "train.ema.decay=0.9",
             "--set", "train.warmup.steps=2", "--set", "train.lr_multipliers={'-1': 2}"]
    code = ("import sys; from cnnspec.cli import main; "
            f"rc = main(['run', *{first!r}]) or main(['run', '--resume', {run!r}, '--set', 'train.epochs=2']); "
            "print('HEAVY', sorted(m for m in ('sklearn', 'scipy', 'pandas', 'torch._dynamo', 'sympy', "
            "'torchvision') if m in sys.modules)); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    assert [row["epoch"] for row in _rows(tmp_path / "r")] == [1, 2]  # trained, saved, resumed, saved again
    assert (tmp_path / "r" / "report.html").is_file()
