"""eval, predict, export and plot on a finished run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT

from cnnspec.train.trained import load_run

QUICK = str(ROOT / "specs" / "quickstart.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cnnspec.cli import main

    out = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["run", QUICK, "--quiet", "--output", str(out), "--set", "train.epochs=3",
                 "--set", "data.normalize=true"]) == 0
    return out


def test_run_folder_has_curves(run_dir):
    png = (run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_eval_reports_accuracy_and_confusion(cli, run_dir):
    res = cli("eval", str(run_dir), "--format", "json")
    assert res.code == 0
    doc = json.loads(res.out)
    conf = np.array(doc["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == doc["samples"] == 360
    assert doc["accuracy"] == pytest.approx(np.trace(conf) / 360)
    best = json.loads((run_dir / "summary.json").read_text())["best"]
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # best.pt evaluated again, with the same (normalised) preprocessing, gives the same accuracy
    assert doc["accuracy"] == pytest.approx(rows[best["epoch"] - 1]["test_accuracy"])
    text = cli("eval", str(run_dir))
    assert "confusion matrix" in text.out and "accuracy" in text.out


def test_predict_an_image(cli, run_dir, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    img = (digits.images[0] / 16 * 255).astype("uint8")  # a real 0, written as a 16x16 PNG
    Image.fromarray(img).resize((16, 16)).save(tmp_path / "zero.png")
    res = cli("predict", str(run_dir), str(tmp_path / "zero.png"), "--top", "2", "--format", "json")
    assert res.code == 0
    (pred,) = json.loads(res.out)
    assert len(pred["top"]) == 2 and pred["top"][0]["probability"] >= pred["top"][1]["probability"]
    assert pred["top"][0]["class"] == "0"  # a real digit 0, resized, is recognised
    assert pred["warnings"] == [f"{tmp_path / 'zero.png'}: 16 x 16 pixels resized to 8 x 8, the model's input; "
                                "a picture of that size predicts more reliably"]
    assert "cnnspec: warning: " in res.err and "resized to 8 x 8" in res.err
    assert cli("predict", str(run_dir), str(tmp_path / "zero.png")).out.startswith(str(tmp_path / "zero.png"))
    (tmp_path / "bad.png").write_text("not an image")
    res = cli("predict", str(run_dir), str(tmp_path / "bad.png"))
    assert res.code == 2 and "not a readable image" in res.err


def test_the_checkpoint_records_what_the_training_pictures_look_like(run_dir):
    from sklearn.datasets import load_digits

    pixels = torch.load(run_dir / "best.pt", weights_only=True)["pixels"]
    digits = torch.from_numpy(load_digits().images / 16)  # light ink on black, before normalisation
    assert pixels["mean"][0] == pytest.approx(float(digits.mean()), abs=0.02)
    ring = torch.ones(8, 8, dtype=torch.bool)
    ring[1:7, 1:7] = False
    assert pixels["border"][0] == pytest.approx(float(digits[:, ring].mean()), abs=0.02) and pixels["border"][0] < 0.3


def _digit_pictures(folder):
    """The quick start's first digit as an 8 x 8 PNG, light ink on black (as trained), and dark on white."""
    from PIL import Image
    from sklearn.datasets import load_digits

    img = (load_digits().images[0] / 16 * 255).astype("uint8")
    Image.fromarray(img).save(folder / "light.png")
    Image.fromarray(255 - img).save(folder / "paper.png")
    Image.fromarray(np.full((8, 8), 128, dtype="uint8")).save(folder / "grey.png")
    return str(folder / "light.png"), str(folder / "paper.png"), str(folder / "grey.png")


def test_predict_warns_when_the_polarity_is_the_opposite_of_the_training_pictures(cli, run_dir, tmp_path):
    light, paper, grey = _digit_pictures(tmp_path)
    res = cli("predict", str(run_dir), light, paper, grey, "--format", "json")
    assert res.code == 0, res.err
    found = {r["image"]: r for r in json.loads(res.out)}
    assert found[light]["warnings"] == [] and found[grey]["warnings"] == []  # agrees; neither dark nor light
    (note,) = found[paper]["warnings"]
    assert note.startswith(f"{paper}: a light background (border mean 0.87) but the training pictures have "
                           "dark ones (0.17)")
    assert note.endswith("; --invert flips the picture (1 - pixel) to match them")
    assert res.err.count("cnnspec: warning: ") == 1 and f"cnnspec: warning: {note}" in res.err
    assert found[light]["top"][0]["class"] == "0"
    # --invert fixes the picture on paper, and is named as the mistake for the one that matched already
    res = cli("predict", str(run_dir), light, paper, "--invert", "--format", "json")
    found = {r["image"]: r for r in json.loads(res.out)}
    assert found[paper]["warnings"] == [] and found[paper]["top"][0]["class"] == "0"
    (note,) = found[light]["warnings"]
    assert note.startswith(f"{light}: with --invert, a light background") and "matches them without --invert" in note


def test_predict_on_a_run_without_pixel_statistics_says_nothing_of_polarity(cli, run_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    for name in ("best.pt", "last.pt"):  # a checkpoint as runs made before the statistics were recorded
        state = torch.load(old / name, weights_only=True)
        del state["pixels"]
        torch.save(state, old / name)
    _, paper, _ = _digit_pictures(tmp_path)
    res = cli("predict", str(old), paper, "--format", "json")
    assert res.code == 0 and json.loads(res.out)[0]["warnings"] == [] and "warning" not in res.err, res.err


def test_torchscript_export_round_trip(cli, run_dir, tmp_path):
    res = cli("export", str(run_dir), "--format", "torchscript", "--output", str(tmp_path / "m.pt"))
    assert res.code == 0
    trained = load_run(run_dir)
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:64] / 16, dtype=torch.float32).unsqueeze(1)
    want = trained.model(trained.preprocess(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
        scripted = torch.jit.load(str(tmp_path / "m.pt"))
    got = scripted(x)
    torch.testing.assert_close(got, want)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_onnx_export_round_trip(cli, run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    res = cli("export", str(run_dir), "--format", "onnx", "--output", str(tmp_path / "m.onnx"))
    assert res.code == 0, res.err
    trained = load_run(run_dir)
    x = torch.rand(7, 1, 8, 8)
    want = trained.model(trained.preprocess(x)).detach().numpy()
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_plot_compares_runs(cli, run_dir, tmp_path):
    res = cli("plot", str(run_dir), str(run_dir), "-o", str(tmp_path / "c.png"))
    assert res.code == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    res = cli("plot", str(tmp_path), "-o", str(tmp_path / "d.png"))
    assert res.code == 2 and "no metrics.jsonl" in res.err
    # `plot runs/*` with a sweep's folder or a run stopped in its first epoch among them
    (tmp_path / "stopped").mkdir()
    res = cli("plot", str(run_dir), str(tmp_path / "stopped"), "-o", str(tmp_path / "e.png"))
    assert res.code == 0 and (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert f"cnnspec: warning: {tmp_path / 'stopped'}: no metrics.jsonl with epochs in it; left out" in res.err


def test_plot_draws_a_sweep_folder_as_its_trials_runs(cli, run_dir, tmp_path, monkeypatch):
    import shutil

    import cnnspec.train.curves as curves

    sweep = tmp_path / "mnist-sweep-1"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    for trial in ("0000", "0001"):
        (sweep / trial).mkdir()
        shutil.copy(run_dir / "metrics.jsonl", sweep / trial / "metrics.jsonl")
    (sweep / "0002").mkdir()  # a trial still in its first epoch: left out
    drawn: list[str] = []
    real = curves.plot_runs
    monkeypatch.setattr(curves, "plot_runs", lambda runs, out: (drawn.extend(r for r, _ in runs), real(runs, out))[1])
    res = cli("plot", str(sweep), "-o", str(tmp_path / "s.png"))
    assert res.code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG", res.err
    assert drawn == ["mnist-sweep-1/0000", "mnist-sweep-1/0001"]
    (sweep / "0000" / "metrics.jsonl").unlink()
    (sweep / "0001" / "metrics.jsonl").unlink()
    res = cli("plot", str(sweep), "-o", str(tmp_path / "t.png"))
    assert res.code == 2 and "no metrics.jsonl" in res.err


def test_plot_puts_the_legend_of_many_runs_outside_the_panels():
    from cnnspec.train.curves import curves_figure

    rows = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 1 / e, "test_loss": 1.1 / e,
             "test_accuracy": 0.9 - 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.8 - 1 / e} for e in (1, 2, 3)]
    fig = curves_figure([(f"run{i}", rows) for i in range(4)])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent(renderer)
    assert len(fig.legends[0].get_texts()) == 12
    for ax in fig.axes:  # no overlap with either panel
        box = ax.get_window_extent(renderer)
        assert legend.x0 >= box.x1 or legend.y1 <= box.y0, (legend, box)
    one = curves_figure([("run0", rows)])  # a single run keeps its legends in the panels
    assert all(ax.get_legend() is not None for ax in one.axes) and not one.legends


def test_tools_on_a_missing_run_say_so(cli, tmp_path):
    for cmd in (["eval"], ["export"], ["predict", "--top", "1"]):
        args = [cmd[0], str(tmp_path / "nope"), *cmd[1:]] + (["x.png"] if cmd[0] == "predict" else [])
        res = cli(*args)
        assert res.code == 2 and "no such file" in res.err, res.err


def test_eval_of_a_spec_file_says_it_is_not_a_run_folder(cli):
    res = cli("eval", QUICK)
    assert res.code == 2 and res.out == ""
    assert res.err.splitlines() == [f"cnnspec: error: {QUICK}: not a run folder (give the folder `cnnspec run` "
                                    "made, e.g. runs/latest)"], res.err


def test_export_and_plot_help_name_the_files_they_write(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help at the width: one option per line here
    res = cli("export", "--help")
    assert res.code == 0
    assert "default RUN_DIR/model.torchscript.pt or RUN_DIR/model.onnx" in res.out, res.out
    res = cli("plot", "--help")
    assert res.code == 0
    assert "the PNG to write (default: curves.png in the current folder)" in res.out, res.out


def test_tool_output_paths_and_devices_are_checked(cli, run_dir, tmp_path):
    res = cli("export", str(run_dir), "-o", str(tmp_path / "no" / "m.pt"))
    assert res.code == 2 and "its folder does not exist" in res.err
    res = cli("plot", str(run_dir), "-o", str(tmp_path / "no" / "c.png"))
    assert res.code == 2
    res = cli("eval", str(run_dir), "--device", "gpu")
    assert res.code == 2 and "not one of auto, cpu" in res.err


@pytest.mark.parametrize("command", [["plugins"], ["eval", "RUN"], ["validate", "SPEC"]])
def test_a_reader_that_leaves_ends_the_command_quietly(run_dir, command):
    """`cnnspec eval RUN | head -1`: rich's tables as well as plain prints end with status 0."""
    import subprocess
    import sys

    args = [{"RUN": str(run_dir), "SPEC": str(ROOT / "specs" / "mnist_cnn.yaml")}.get(a, a) for a in command]
    p = subprocess.Popen([sys.executable, "-m", "cnnspec", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait() == 0 and err == "", err
