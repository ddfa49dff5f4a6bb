"""Hostile input for the report's tests: a finished run and a sweep folder whose user-controlled
strings (class folder names, the run folder's name, a block argument, summary.json values, a sweep's
name, folder, study name and parameter values) carry markup, quotes and an ampersand that is already
an entity. tests/test_report.py reads their pages as text, tests/test_report_browser.py as Chromium's DOM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
RUN_FOLDER = "<b>run \"one\" & 'two'"
VERSIONS_KEY = "<img src=x onerror=alert(1)>"  # a key written into the run's summary.json
RUN_TEXTS = (EVIL, *CLASSES, RUN_FOLDER, VERSIONS_KEY)  # what the run's page must show exactly as written

SWEEP_NAME = "<i>sweep</i> \"s\" & 't'"
SWEEP_FOLDER = "<b>sweep \"s\" & 't'"
SWEEP_TEXTS = (EVIL, SWEEP_NAME, SWEEP_FOLDER)  # the study name and a parameter's value are EVIL


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


def make_run(base: Path) -> Path:
    """Train a tiny run in ``base``; its class folders, folder name, block argument and summary carry markup."""
    from cnnspec.cli import main

    _images(base / "data")
    (base / "tag.py").write_text(PLUGIN)
    (base / "spec.yaml").write_text(SPEC % (json.dumps(EVIL), json.dumps(str(base / "data"))))
    run = base / RUN_FOLDER
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs before conftest's per-test stores are set
        mp.setenv("CNNSPEC_TRUST_FILE", str(base / "trusted.json"))
        mp.setenv("CNNSPEC_CACHE_DIR", str(base / "image-cache"))
        assert main(["run", str(base / "spec.yaml"), "--trust", "--quiet", "--output", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    summary["device_name"] = EVIL  # the other files of a run folder are user-controlled text too
    summary["versions"][VERSIONS_KEY] = EVIL
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def make_sweep(parent: Path) -> Path:
    """A sweep folder in ``parent``, hand-made (its parameter values come from the spec's space): its
    name, folder, study name and a parameter's values carry markup."""
    folder = parent / SWEEP_FOLDER
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"format": "cnnspec-sweep-1", "name": SWEEP_NAME, "study": EVIL,
                                                   "storage": "postgresql://db", "metric": "val_accuracy"}))
    trials = [{"trial": i, "status": "complete", "value": 0.5 + i / 10, "last_value": 0.5,
               "params": {"train.optimizer.lr": 10 ** -i, "layers.6": [EVIL, "identity"][i % 2]},
               "epochs": 2, "seconds": 1.0, "run_dir": None, "errors": []} for i in range(4)]
    (folder / "results.json").write_text(json.dumps({"study": EVIL, "metric": "val_accuracy",
                                                     "direction": "maximize", "trials": trials,
                                                     "best": trials[-1], "trials_done": 4}))
    return folder
