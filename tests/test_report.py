"""`cnnspec report`: what user-controlled text reaches the page is escaped; the page is whole,
self-contained and small; `run` writes it, `eval` refreshes it, `--no-report` leaves it out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("PIL", reason="the report's thumbnails need Pillow (a torchvision dependency)")

EVIL = "<script>alert('x')</script>\"&amp;"  # a tag, both quotes, and an ampersand that is already an entity

# a local plugin with a layer that takes a free-text argument, so a block argument can carry any text
PLUGIN = '''
from typing import Any
from pydantic import Field
from cnnspec.plugin import LayerType, Params, Register, Saved, Shape, hookimpl

class TagParams(Params):
    label: str = Field("", description="any text; does nothing")

class Tag(LayerType[TagParams]):
    name = "tag"
    Params = TagParams
    description = "identity with a label"
    def output_shape(self, p: TagParams, shape: Shape) -> Shape:
        return shape
    def num_params(self, p: TagParams, shape: Shape) -> int:
        return 0
    def macs(self, p: TagParams, in_shape: Shape, out_shape: Shape) -> int:
        return 0
    def saved(self, p: TagParams, in_shape: Shape, out_shape: Shape) -> Saved:
        return Saved(input=False, output=False)
    def build(self, p: TagParams, shape: Shape) -> Any:
        import torch
        return torch.nn.Identity()

@hookimpl
def register_layers(register: Register) -> None:
    register(Tag())
'''

SPEC = """\
name: evil-run
plugins: [tag.py]
input: [3, 8, 8]
blocks:
  labelled:
    params:
      text: str
    layers:
      - {type: tag, label: $text}
layers:
  - {block: labelled, text: %s}
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - flatten
  - {type: linear, out_features: 2}
data:
  dataset: {type: image_folder, size: [8, 8]}
  root: %s
  batch_size: 4
train:
  epochs: 2
  seed: 0
  device: cpu
  optimizer: {type: sgd, lr: 0.05}
"""

CLASSES = ("<script>alert(1)", "quote\"s & 'apostrophes'")  # a folder name holds no "/"


def _images(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)  # noise: the model makes mistakes, so the galleries have pictures
    for split, n in (("train", 6), ("test", 6)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose class folders, folder name, block argument and summary carry markup."""
    from cnnspec.cli import main

    base = tmp_path_factory.mktemp("evil")
    _images(base / "data")
    (base / "tag.py").write_text(PLUGIN)
    (base / "spec.yaml").write_text(SPEC % (json.dumps(EVIL), json.dumps(str(base / "data"))))
    run = base / "<b>run \"one\" & 'two'"
    assert main(["run", str(base / "spec.yaml"), "--trust", "--quiet", "--output", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    summary["device_name"] = EVIL  # the other files of a run folder are user-controlled text too
    summary["versions"]["<img src=x onerror=alert(1)>"] = EVIL
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _no_markup_from_user(html: str) -> None:
    """None of the hostile strings appears unescaped, and the page has no script at all."""
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")  # only as escaped text
    assert "<b>run" not in html


def test_run_writes_the_report_and_every_user_string_is_escaped(evil_run, cli):
    page = evil_run / "report.html"
    assert page.is_file()  # written by run
    res = cli("report", str(evil_run), "--trust")
    assert res.code == 0, res.text
    html = page.read_text()
    _no_markup_from_user(html)
    assert "<td class=\"l\">&lt;script&gt;alert(1)</td>" in html  # the class folder's name, as text
    assert "quote&quot;s &amp; &#x27;apostrophes&#x27;" in html
    assert "&lt;b&gt;run &quot;one&quot; &amp; &#x27;two&#x27;" in html  # the run folder's name
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;amp;" in html  # summary, block argument
    assert html.count("&amp;amp;") >= 3  # spec text, graph label and summary each escaped once, not twice
    assert "data:image/png;base64," in html  # the thumbnails are in the page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)  # nothing to fetch
    assert "Content-Security-Policy" in html


def test_report_sections_and_size(evil_run):
    html = (evil_run / "report.html").read_text()
    for section in ("Training curves", "Timings", "Test split", "Model", "Versions and fast paths",
                    "precision", "recall", "F1", "support", "confusion matrix"):
        assert section in html, section
    assert len(html.encode()) < 5_000_000
    assert html.count("<svg") >= 5  # loss, accuracy, lr, timings, heat map, graph


def test_eval_refreshes_the_report_and_no_report_leaves_it_out(evil_run, cli, tmp_path):
    page = evil_run / "report.html"
    page.write_text("stale")
    res = cli("eval", str(evil_run), "--trust")
    assert res.code == 0, res.text
    assert "Test split" in page.read_text()
    res = cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--set", "train.epochs=1", "--no-report",
              "--quiet", "--output", str(tmp_path / "q"))
    assert res.code == 0, res.text
    assert not (tmp_path / "q" / "report.html").exists() and (tmp_path / "q" / "curves.png").exists()


def test_several_runs_are_compared(evil_run, cli, tmp_path):
    other = tmp_path / "q"
    assert cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--set", "train.epochs=1", "--quiet",
               "--output", str(other)).code == 0
    out = tmp_path / "both.html"
    res = cli("report", str(evil_run), str(other), "-o", str(out), "--trust")
    assert res.code == 0, res.text
    html = out.read_text()
    _no_markup_from_user(html)
    assert "2 runs compared" in html
    assert html.count("<tr>") == 3  # the head and one row per run
    assert "sgd" in html and "adam" in html  # their optimizers side by side


def test_a_sweep_folder_is_escaped_too(cli, tmp_path):
    """A sweep's results.json (hand-made here: its parameter values come from the spec's space)."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"format": "cnnspec-sweep-1", "name": "s", "study": EVIL,
                                                   "storage": "postgresql://db", "metric": "val_accuracy"}))
    trials = [{"trial": i, "status": "complete", "value": 0.5 + i / 10, "last_value": 0.5,
               "params": {"train.optimizer.lr": 10 ** -i, "layers.6": [EVIL, "identity"][i % 2]},
               "epochs": 2, "seconds": 1.0, "run_dir": None, "errors": []} for i in range(4)]
    (folder / "results.json").write_text(json.dumps({"study": EVIL, "metric": "val_accuracy",
                                                     "direction": "maximize", "trials": trials,
                                                     "best": trials[-1], "trials_done": 4}))
    res = cli("report", str(folder))
    assert res.code == 0, res.text
    html = (folder / "report.html").read_text()
    _no_markup_from_user(html)
    assert "Parallel coordinates" in html and "<polyline" in html and "(log)" in html  # lr spans decades
    assert 'class="best"' in html and "importances not computed" in html


def test_report_of_a_missing_folder_is_a_usage_error(cli, tmp_path):
    res = cli("report", str(tmp_path / "nope"))
    assert res.code == 2 and "no such file or directory" in res.err
