"""spec/overrides.py: ``--set key.path=value`` parsed, applied to nested keys, and its errors."""

from __future__ import annotations

import pytest

from cnnspec.errors import OverrideError
from cnnspec.registry.manager import default_registry
from cnnspec.spec.check import check
from cnnspec.spec.overrides import apply, parse, set_path
from cnnspec.spec.yamlpos import load

SPEC = "input: [1, 8, 8]\nlayers:\n  - {type: conv2d, out_channels: 4, kernel_size: 3}\n  - relu\n" \
       "train:\n  epochs: 2\n  loss: cross_entropy\n"


@pytest.mark.parametrize("arg, path, value", [
    ("train.epochs=3", ("train", "epochs"), 3),
    ("train.optimizer.lr=3e-4", ("train", "optimizer", "lr"), 0.0003),  # YAML 1.1 text, read as a number
    ("layers.0.kernel_size=[3, 5]", ("layers", 0, "kernel_size"), [3, 5]),
    ("name=hello", ("name",), "hello"),
    ("train.scheduler={type: cosine}", ("train", "scheduler"), {"type": "cosine"}),
    ("data.augment=", ("data", "augment"), ""),
    (" train.epochs =7", ("train", "epochs"), 7),
])
def test_parse_reads_the_key_path_and_a_yaml_value(arg, path, value) -> None:
    assert parse(arg) == (path, value)


@pytest.mark.parametrize("arg, message", [
    ("nonsense", "--set 'nonsense': expected KEY.PATH=VALUE, e.g. train.epochs=1"),
    ("=3", "--set '=3': expected KEY.PATH=VALUE"),
    ("train..epochs=1", "--set 'train..epochs=1': empty key in 'train..epochs'"),
    (".".join(["a"] * 21) + "=1", "the key has 21 parts; no spec key is that deep"),
    ("train.seed=[1, 2", "the value is not valid YAML"),
    ("train.seed=!!python/name:os.system x", "the value is not valid YAML (unsupported YAML tag"),
    ("x=# only a comment", "the value is empty (only a comment?)"),
])
def test_parse_errors_quote_the_argument(arg, message) -> None:
    with pytest.raises(OverrideError) as e:
        parse(arg)
    assert message in str(e.value)


def test_a_huge_argument_is_quoted_short() -> None:
    with pytest.raises(OverrideError) as e:
        parse("x" * 5000)
    assert len(str(e.value)) < 200 and "..." in str(e.value)


def test_set_path_walks_nested_mappings_and_lists() -> None:
    data = load(SPEC, "s.yaml").data
    set_path(data, ("layers", 0, "kernel_size"), 5)
    assert data["layers"][0] == {"type": "conv2d", "out_channels": 4, "kernel_size": 5}
    set_path(data, ("layers", 1, "inplace"), True)  # a bare layer name becomes {type: NAME}
    assert data["layers"][1] == {"type": "relu", "inplace": True}
    set_path(data, ("train", "loss", "label_smoothing"), 0.1)  # so does a bare component name
    assert data["train"]["loss"] == {"type": "cross_entropy", "label_smoothing": 0.1}
    set_path(data, ("train", "optimizer", "lr"), 0.1)  # left out: its default type, then the key
    assert data["train"]["optimizer"] == {"type": "adam", "lr": 0.1}
    set_path(data, ("train", "scheduler", "type"), "cosine")  # no default: an empty mapping first
    assert data["train"]["scheduler"] == {"type": "cosine"}
    set_path(data, ("data", "batch_size"), 8)  # a missing section is made
    assert data["data"] == {"batch_size": 8}
    set_path(data, ("layers", 1), "flatten")  # a whole list item
    assert data["layers"][1] == "flatten"


@pytest.mark.parametrize("path, message", [
    (("layers", 5, "kernel_size"), "'layers.5' is not in the spec"),
    (("layers", 9), "'layers.9' is not in the spec"),
    (("input", "x"), "'input.x' is not in the spec"),
    (("train", "epochs", "x"), "'train.epochs.x' is not in the spec"),
])
def test_set_path_names_the_first_part_not_in_the_spec(path, message) -> None:
    data = load(SPEC, "s.yaml").data
    with pytest.raises(OverrideError, match=message.replace(".", r"\.")):
        set_path(data, path, 1)


def test_apply_records_each_override_so_problems_can_name_it() -> None:
    located = apply(load(SPEC, "s.yaml"), ["train.epochs=0", "layers.0.kernel_size=30"])
    assert located.data["train"]["epochs"] == 0
    assert located.overridden == {("train", "epochs"): "train.epochs=0",
                                  ("layers", 0, "kernel_size"): "layers.0.kernel_size=30"}
    messages = [p.message for p in check(located, default_registry()).problems]
    assert any(m.startswith("train.epochs: must be >= 1, got 0") and m.endswith("(from --set train.epochs=0)")
               for m in messages), messages
    assert any("(from --set layers.0.kernel_size=30)" in m for m in messages), messages


def test_apply_names_the_argument_that_failed() -> None:
    with pytest.raises(OverrideError, match=r"^--set 'layers\.7\.x=1': 'layers\.7' is not in the spec$"):
        apply(load(SPEC, "s.yaml"), ["train.epochs=1", "layers.7.x=1"])
