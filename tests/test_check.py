"""spec/check.py and the steps it runs: located problems, every independent one in one pass."""

from __future__ import annotations

import json

import pytest
from conftest import GOOD, lines

from cnnspec.errors import Problem
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.manager import build_registry, default_registry, get_plugin_manager
from cnnspec.registry.params import PosInt
from cnnspec.registry.types import CompositeType, Params
from cnnspec.spec.check import check
from cnnspec.spec.components import Resolver
from cnnspec.spec.expand import Expander, size
from cnnspec.spec.registry_for import registry_for
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.shapes import MAX_LAYERS
from cnnspec.spec.yamlpos import load


def checked(text: str, registry=None):
    return check(load(text, "s.yaml"), registry or default_registry())


def test_every_independent_problem_in_one_pass(cli, write):
    text = (GOOD.replace("relu\n  - {type: maxpool2d", "rellu\n  - {type: maxpool2d", 1)
            .replace("batch_size: 100", "batch_sise: 100")
            .replace("lr: 0.001", "lr: -1")
            .replace("epochs: 15", "epochs: 0"))
    path = write(text)
    res = cli("validate", path)
    assert res.code == 1
    got = lines(res, path)
    assert len(got) == 4, res.out
    assert f"{path}:5:5: error: layers[1]: unknown layer type 'rellu' (did you mean 'relu'?)" in got
    assert any(":12:24: error: data: unknown key 'batch_sise' (did you mean 'batch_size'?)" in g for g in got)
    assert any("train.optimizer adam: lr: must be > 0.0, got -1" in g for g in got)
    assert any("train.epochs: must be >= 1, got 0" in g for g in got)


@pytest.mark.parametrize(
    "layer, key, message",
    [
        ("{type: conv2d, out_channels: 4, kernel_size: 3, padding: same, stride: 2}", "padding",
         "padding 'same' needs stride 1"),
        ("{type: conv2d, out_channels: 4, kernel_size: 9}", "kernel_size",
         "kernel 9 x 9 does not fit the padded input 2 x 2: output would be -6 x -6"),
        ("{type: maxpool2d, kernel_size: 2, padding: 2}", "padding", "more than half the kernel"),
        ("{type: linear, out_features: 3}", "{",
         "linear expects flat features but receives 1 x 2 x 2; add 'flatten' before it"),
        ("{type: conv2d, out_channels: 3, kernel_size: 1, groups: 2}", "groups",
         "groups=2 does not divide the 1 input channels"),
        ("{type: conv2d, in_channels: 3, out_channels: 3, kernel_size: 1}", "in_channels",
         "in_channels=3 but 1 channels arrive"),
        ("{type: conv2d, out_channels: 3, kernel_size: 2, padding: 2, padding_mode: reflect}",
         "padding", "reflect padding of 2 needs height above it"),
        ("{type: avgpool2d, kernel_size: 3}", "kernel_size", "window 3 x 3 does not fit the input 2 x 2"),
        ("{type: maxpool2d, kernel_size: 3, stride: 2}", "kernel_size", "output would be 0 x 0"),
        ("{type: batchnorm2d, num_features: 2}", "num_features", "num_features=2 but 1 channels arrive"),
    ],
)
def test_shape_errors_are_located(cli, write, layer, key, message):
    text = f"input: [1, 2, 2]\nlayers:\n  - {layer}\n"
    path = write(text)
    res = cli("validate", path)
    assert res.code == 1
    (line,) = lines(res, path)
    column = text.splitlines()[2].index(key) + 1
    assert line.startswith(f"{path}:3:{column}: error: layers[0] "), line
    assert message in line


def test_later_layer_errors_name_the_layer(cli, write):
    path = write("input: [1, 8, 8]\nlayers:\n  - type: conv2d\n    out_channels: 4\n"
                 "    kernel_size: 3\n  - relu\n  - type: linear\n    out_features: 2\n")
    res = cli("validate", path)
    (line,) = lines(res, path)
    assert line.startswith(f"{path}:7:5: error: layers[2] linear: linear expects flat features "
                           "but receives 4 x 6 x 6; add 'flatten' before it (it would give 144 features)")


def test_dataset_must_fit_input_and_classes(cli, write):
    path = write("input: [3, 28, 28]\nlayers:\n  - flatten\n  - {type: linear, out_features: 7}\n"
                 "data: {dataset: mnist}\n")
    res = cli("validate", path)
    got = lines(res, path)
    assert res.code == 1 and len(got) == 2
    assert "input is 3 x 28 x 28 but dataset 'mnist' gives samples of 1 x 28 x 28" in got[0]
    assert got[1].startswith(f"{path}:4:5:") and "dataset 'mnist' has 10 classes" in got[1]


def test_shape_errors_are_reported_beside_unrelated_ones(cli, write):
    path = write("input: [1, 8, 8]\nlayers:\n  - {type: conv2d, out_channels: 2, kernel_size: 3}\n"
                 "  - {type: linear, out_features: 3}\ntrain: {epochs: 0}\n")
    res = cli("validate", path)
    assert res.code == 1
    assert "add 'flatten' before it" in res.out and "train.epochs: must be >= 1" in res.out


def test_a_shape_rule_that_crashes_is_a_located_error(cli, write, tmp_path):
    (tmp_path / "badrule.py").write_text(
        "from cnnspec.registry.hookspecs import hookimpl\nfrom cnnspec.registry.types import LayerType\n"
        "class L(LayerType):\n    name = 'bad'\n    def output_shape(self, p, shape):\n        return 3\n"
        "@hookimpl\ndef register_layers(register):\n    register(L())\n")
    path = write("plugins: [badrule.py]\ninput: [1, 8, 8]\nlayers: [bad]\n")
    res = cli("validate", "--trust", path)
    assert res.code == 1
    assert f"{path}:3:10: error: layers[0] bad: the shape rule of 'bad' failed: TypeError" in res.out


# -- check() on a located document ------------------------------------------------------------


def test_a_valid_document_gives_a_spec_with_its_trace() -> None:
    result = checked(GOOD)
    assert result.valid and result.problems == []
    spec = result.spec
    assert spec is not None and spec.file == "s.yaml"
    assert [c.name for c in spec.layers][:3] == ["conv2d", "relu", "maxpool2d"]
    assert spec.optimizer.name == "adam" and spec.loss.name == "cross_entropy" and spec.dataset.name == "mnist"
    assert spec.trace is result.trace and spec.trace.output_shape == (10,) and spec.trace.total_params == 50186


def test_a_document_that_is_not_a_mapping_is_one_problem_at_its_start() -> None:
    result = checked("- relu\n- flatten\n")
    assert result.spec is None and result.trace is None
    assert result.problems == [Problem(1, 1, "a spec is a mapping of keys (input, layers, ...), not a list",
                                       (), "s.yaml")]


def test_problems_come_sorted_by_place_with_the_trace_so_far() -> None:
    train = "train: {epochs: 0, optimizer: adum}"
    result = checked(f"input: [1, 8, 8]\nlayers:\n  - relu\n  - {{type: linear, out_features: 3}}\n{train}\n")
    assert [(p.line, p.column) for p in result.problems] == [(4, 5), (5, train.index("0,") + 1),
                                                             (5, train.index("adum") + 1)]
    assert "add 'flatten' before it (it would give 64 features)" in result.problems[0].message
    assert result.problems[2].message.startswith("train.optimizer: unknown optimizer type 'adum' (did you mean")
    assert result.trace is not None and [r.type for r in result.trace.rows] == ["relu"]
    assert result.spec is None


def test_watched_metrics_must_exist_and_not_be_test_metrics() -> None:
    base = "input: [4]\nlayers: [{type: linear, out_features: 2}]\n"
    item = "    - {type: early_stopping, monitor: test_accuracy}"
    (p,) = checked(base + f"train:\n  callbacks:\n{item}\n").problems
    assert (p.line, p.column) == (5, item.index("test_") + 1)
    assert "would choose on the test set; watch 'val_accuracy'" in p.message
    (p,) = checked(base + "train:\n  callbacks: [{type: early_stopping, monitor: val_los}]\n").problems
    assert "unknown metric 'val_los' (did you mean 'val_loss'?)" in p.message
    (p,) = checked(base + "train:\n  callbacks: [early_stopping]\n").problems  # val_loss, no val_split
    assert (p.line, p.column) == (4, 15) and "'val_loss' needs a validation set" in p.message


# -- the registry a spec asks for -------------------------------------------------------------


def test_an_untrusted_listed_plugin_is_a_located_problem_and_explains_its_types(tmp_path) -> None:
    (tmp_path / "mine.py").write_text("raise SystemExit('must not run')\n")
    text = "plugins: [mine.py]\ninput: [1, 4, 4]\nlayers: [mylayer]\n"
    located = load(text, str(tmp_path / "s.yaml"))
    registry, problems = registry_for(located)
    (p,) = problems
    assert (p.line, p.column, p.path) == (1, 11, ("plugins", 0)) and p.message.startswith("plugins[0]: ")
    assert "mylayer" not in registry.names("layer")
    result = check(located)  # the same, through check(): the unknown type blames the plugin
    assert [q.line for q in result.problems] == [1, 3]
    assert result.problems[1].message == ("layers[0]: unknown layer type 'mylayer'; a plugin listed under "
                                          "'plugins:' was not loaded (see its error)")


def test_a_trusted_listed_plugin_extends_the_registry(tmp_path) -> None:
    (tmp_path / "mine.py").write_text(
        "from cnnspec.registry.hookspecs import hookimpl\nfrom cnnspec.registry.types import LayerType\n"
        "class L(LayerType):\n    name = 'mylayer'\n    def output_shape(self, p, shape):\n        return shape\n"
        "@hookimpl\ndef register_layers(register):\n    register(L())\n")
    located = load("plugins: [mine.py]\ninput: [1, 4, 4]\nlayers: [mylayer]\n", str(tmp_path / "s.yaml"))
    registry, problems = registry_for(located, trust=True)
    assert problems == [] and "mylayer" in registry.names("layer")
    assert check(located, trust=True).valid


def test_without_plugins_the_registry_is_the_default_one() -> None:
    registry, problems = registry_for(load(GOOD, "s.yaml"))
    assert problems == [] and registry.names("layer") == default_registry().names("layer")


# -- reporter and expansion -------------------------------------------------------------------


def test_reporter_reports_a_place_and_message_once_and_names_the_block_use() -> None:
    located = load("input: [1, 4, 4]\nlayers:\n  - {block: b}\n  - {block: b}\n", "s.yaml")
    report = Reporter(located)
    with report.inside((("b", ("layers", 1)),)):
        report.fail(("layers", 0), "bad")
        report.fail(("layers", 0), "bad")  # a block used twice: its body's problem once
    report.fail(("layers", 0), "worse")
    assert [p.message for p in report.problems] == ["bad (in block 'b' used at line 4)", "worse"]
    assert report.trail == ()


class ManyParams(Params):
    times: PosInt
    layers: list


class Many(CompositeType[ManyParams]):
    """A plugin's own repeating composite: ``copies`` makes the check count every copy."""

    name = "many"
    Params = ManyParams
    chain = True

    def paths(self, p):
        return [("layers",)]

    def copies(self, p):
        return p.times

    def trace(self, p, shape, t):
        for _ in range(p.times):
            shape = t.run(0, shape)
        return shape


class ManyPlugin:
    @hookimpl
    def register_layers(self, register):
        register(Many())


def test_a_plugin_composite_that_repeats_counts_every_copy_against_the_layer_limit() -> None:
    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[ManyPlugin()]))
    ok = checked("input: [1, 4, 4]\nlayers:\n  - {type: many, times: 3, layers: [relu, {type: relu, repeat: 2}]}\n",
                 reg)
    assert ok.valid and size(ok.spec.layers[0]) == 3 * (1 + 2)
    result = checked("input: [1, 4, 4]\nlayers:\n  - {type: many, times: 200, layers: [{type: relu, repeat: 100}]}\n",
                     reg)
    (p,) = result.problems
    assert (p.line, p.column) == (2, 1)
    assert p.message == (f"layers: the model expands to more than the limit of {MAX_LAYERS:,} layers "
                         "(check the repeat counts and block uses)")


def test_repeat_shorthand_expands_to_the_repeat_composite() -> None:
    located = load("input: [1, 4, 4]\nlayers: [{type: relu, repeat: 3}]\n", "s.yaml")
    expand = Expander(Resolver(Reporter(located), default_registry()))
    (comp,) = expand.layers(located.data["layers"])
    assert comp.name == "repeat" and comp.params.times == 3 and size(comp) == 3
    assert [c.name for c in comp.children[0]] == ["relu"] and comp.path == ("layers", 0)


@pytest.mark.parametrize("item, message", [
    ("{type: relu, repeat: 0}", "repeat must be at least 1, got 0"),
    ("{type: relu, repeat: two}", "repeat must be a whole number of copies, got 'two'"),
    ("{type: relu, repeat: 1001}", "repeat 1,001 is more than the limit of 1,000"),
])
def test_repeat_counts_are_located_at_the_count(item, message) -> None:
    (p,) = checked(f"input: [1, 4, 4]\nlayers:\n  - {item}\n").problems
    assert (p.line, p.column) == (3, 5 + item.index("repeat: ") + len("repeat: "))  # at the count
    assert p.message == f"layers[0]: {message}"


def test_a_size_that_collapses_names_the_layers_that_shrank_it(cli, write):
    spec = ("input: [1, 28, 28]\nlayers:\n  - {type: conv2d, out_channels: 4, kernel_size: 27}\n  - relu\n"
            "  - {type: maxpool2d, kernel_size: 2}\n  - {type: maxpool2d, kernel_size: 2}\n")
    path = write(spec)
    res = cli("validate", path)
    assert res.code == 1
    assert res.out.splitlines()[-5:-1] == [
        "the trace stops at layer 3: see the error below",
        f"{path}:6:23: error: layers[3] maxpool2d: window 2 x 2 does not fit the input 1 x 1: output would be 0 x 0",
        f"{path}:3:5: note: layers[0] conv2d shrank the height and width from 28 x 28 to 2 x 2",
        f"{path}:5:5: note: layers[2] maxpool2d shrank the height and width from 2 x 2 to 1 x 1",
    ]
    assert [ln.split()[:3] for ln in res.out.splitlines()[4:7]] == [["0", "conv2d", "4"], ["1", "relu", "4"],
                                                                   ["2", "maxpool2d", "4"]]  # rows up to the error
    doc = json.loads(cli("validate", "--format", "json", path).out)["specs"][0]
    (error,) = doc["errors"]
    assert [n["line"] for n in error["notes"]] == [3, 5]
