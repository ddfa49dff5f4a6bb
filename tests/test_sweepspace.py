"""spec.sweepspace: the sweep section's keys, values, grid arithmetic and each trial's spec, without torch."""

from __future__ import annotations

import pytest

from cnnspec.spec.sweepspace import Param, check_sweep, check_trial, label, parse_key
from cnnspec.spec.yamlpos import load

BASE = """\
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - flatten
  - {type: linear, out_features: 3}
data: {dataset: {type: synthetic, classes: 3}, val_split: 0.2}
train: {optimizer: {type: adam, lr: 0.01}}
"""


@pytest.mark.parametrize(("key", "path"), [
    ("train.optimizer.lr", ("train", "optimizer", "lr")),
    ("layers.0.out_channels", ("layers", 0, "out_channels")),
    ("layers[0].out_channels", ("layers", 0, "out_channels")),
    ("layers[2][1]", ("layers", 2, 1)),
    ("", None), ("a..b", None), ("[0]", None),
])
def test_parse_key(key, path):
    assert parse_key(key) == path


def test_label_is_one_line_of_flow_yaml():
    assert label({"type": "dropout", "p": 0.25}) == "{type: dropout, p: 0.25}"
    assert label([]) == "[]" and label(3) == "3"


def test_grid_points_are_arithmetic():
    assert Param("k", ("k",), "choice", choices=(1, 2, 3)).grid_points() == 3
    assert Param("k", ("k",), "int", low=1, high=10, step=3).grid_points() == 4  # 1, 4, 7, 10
    assert Param("k", ("k",), "uniform", low=0.0, high=1.0, step=0.25).grid_points() == 5
    assert Param("k", ("k",), "int", low=1, high=10**12).grid_points() == 10**12  # counted, never listed
    assert Param("k", ("k",), "log_uniform", low=1e-4, high=1e-1).grid_points() is None
    assert Param("k", ("k",), "int", low=1, high=10, step=3).grid() == [1, 4, 7, 10]


def test_choices_of_sub_trees_are_labels_and_come_back_as_values():
    p = Param("layers.1", ("layers", 1), "choice", choices=({"type": "dropout", "p": 0.25}, "identity"))
    assert p.labels == ["{type: dropout, p: 0.25}", "identity"]
    assert p.value("{type: dropout, p: 0.25}") == {"type": "dropout", "p": 0.25}


def test_check_sweep_and_a_trials_spec():
    located = load(BASE + "sweep:\n  trials: 4\n  space:\n    train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}\n"
                   "    layers.0.out_channels: [2, 4]\n", "s.yaml")
    sweep, problems = check_sweep(located, None)
    assert not problems and sweep is not None
    assert [p.key for p in sweep.params] == ["train.optimizer.lr", "layers.0.out_channels"]
    assert sweep.metric == "val_accuracy" and sweep.direction == "maximize" and sweep.trials == 4
    data, problems = check_trial(located, None, sweep, {"train.optimizer.lr": 0.001, "layers.0.out_channels": 2})
    assert not problems and "sweep" not in data
    assert data["train"]["optimizer"]["lr"] == 0.001 and data["layers"][0]["out_channels"] == 2


def test_a_problem_inside_a_swept_value_points_at_the_value():
    located = load(BASE + "sweep:\n  space:\n    layers.0.kernel_size: [3, 99]\n", "s.yaml")
    sweep, problems = check_sweep(located, None)
    assert sweep is not None
    _, problems = check_trial(located, None, sweep, {"layers.0.kernel_size": 99})
    (p,) = problems
    assert (p.line, p.column) == (11, 31) and "(sweep: layers.0.kernel_size=99)" in p.message


def test_section_errors_are_located():
    located = load(BASE + "sweep:\n  metric: val_acc\n  space:\n    nope..key: [1, 2]\n", "s.yaml")
    _, problems = check_sweep(located, None)
    messages = " ".join(p.message for p in problems)
    assert "val_acc" in messages and "did you mean 'val_accuracy'" in messages and "nope..key" in messages
