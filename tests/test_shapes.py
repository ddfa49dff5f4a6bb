"""spec/shapes.py: torch's output-size formulas, the layer-by-layer trace, and the pooled-relu rewrite."""

from __future__ import annotations

import math

import pytest

from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.manager import build_registry, default_registry, get_plugin_manager
from cnnspec.registry.types import LayerType, NoParams, Saved, ShapeError
from cnnspec.spec.check import check
from cnnspec.spec.shapes import (
    conv_out,
    ends_in_relu,
    expect_chw,
    expect_flat,
    fmt,
    is_relu,
    pair,
    pool_out,
    pooled_relus,
    trace,
)
from cnnspec.spec.yamlpos import load


@pytest.mark.parametrize("size, k, s, p, d", [
    (28, 3, 1, 2, 1), (28, 5, 2, 0, 1), (7, 3, 2, 2, 2), (32, 7, 2, 6, 1), (5, 5, 1, 0, 1), (9, 2, 3, 1, 3),
])
def test_conv_out_is_the_readme_formula(size, k, s, p, d) -> None:
    # README: out = floor((in + 2p - d(k-1) - 1)/s) + 1; conv_out takes the total padding 2p
    assert conv_out(size, k, s, p, d) == math.floor((size + p - d * (k - 1) - 1) / s) + 1


def test_conv_out_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    for size, k, s, p, d in [(28, 3, 1, 1, 1), (28, 5, 2, 2, 1), (17, 3, 3, 0, 2), (8, 4, 2, 1, 1)]:
        x = torch.zeros(1, 1, size, size)
        out = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(x)
        assert out.shape[-1] == conv_out(size, k, s, 2 * p, d)


@pytest.mark.parametrize("size, k, s, p, d", [(28, 2, 2, 0, 1), (7, 3, 2, 1, 1), (6, 3, 2, 1, 2), (5, 2, 2, 1, 1)])
def test_pool_out_floor_is_the_readme_formula(size, k, s, p, d) -> None:
    assert pool_out(size, k, s, p, d, False) == math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1


def test_pool_out_ceil_mode_drops_a_window_starting_in_the_right_padding() -> None:
    # ceil mode: ceil((in + 2p - d(k-1) - 1) / s) + 1, less one if the last window starts at in + p or later
    assert pool_out(5, 2, 2, 0, 1, True) == 3  # ceil(3 / 2) + 1; the last window starts at 4 < 5: kept
    assert pool_out(6, 2, 2, 1, 1, True) == 4  # ceil(7 / 2) + 1; it starts at 6 < 7: kept
    assert pool_out(4, 3, 5, 1, 1, True) == 1  # ceil(3 / 5) + 1 = 2, but window 2 starts at 5 >= 4 + 1
    torch = pytest.importorskip("torch")
    for size, k, s, p in [(5, 2, 2, 0), (6, 2, 2, 1), (4, 3, 5, 1), (7, 3, 2, 1), (10, 3, 3, 1)]:
        out = torch.nn.MaxPool2d(k, s, p, ceil_mode=True)(torch.zeros(1, 1, size, size))
        assert out.shape[-1] == pool_out(size, k, s, p, 1, True), (size, k, s, p)


def test_small_helpers() -> None:
    assert pair(3) == (3, 3) and pair([2, 5]) == (2, 5)
    assert fmt((64, 7, 7)) == "64 x 7 x 7"
    assert expect_chw("conv2d", (3, 8, 9)) == (3, 8, 9)
    with pytest.raises(ShapeError, match="conv2d expects an image .* but receives 10"):
        expect_chw("conv2d", (10,))
    assert expect_flat("linear", (12,)) == 12
    with pytest.raises(ShapeError, match=r"add 'flatten' before it \(it would give 36 features\)"):
        expect_flat("linear", (4, 3, 3))


def _layers(text: str, registry=None):
    return check(load(f"input: [1, 8, 8]\nlayers: {text}\n", "s.yaml"), registry or default_registry()).spec


def test_trace_gives_each_rows_shape_params_and_macs() -> None:
    spec = _layers("[{type: conv2d, out_channels: 4, kernel_size: 3}, relu, flatten, {type: linear, out_features: 2}]")
    t = trace((1, 8, 8), spec.layers)
    assert [(r.type, r.output_shape, r.params) for r in t.rows] == [
        ("conv2d", (4, 6, 6), 4 * 9 + 4), ("relu", (4, 6, 6), 0), ("flatten", (144,), 0), ("linear", (2,), 290)]
    assert t.rows[0].macs == 4 * 6 * 6 * 9 and t.total_macs == 4 * 6 * 6 * 9 + 288
    assert t.complete and t.output_shape == (2,) and t.total_params == 330


def test_trace_stops_at_the_first_layer_that_cannot_take_its_input() -> None:
    relu, flatten = _layers("[relu, flatten]").layers
    (conv,) = _layers("[{type: conv2d, out_channels: 2, kernel_size: 3}]").layers
    t = trace((1, 8, 8), [relu, flatten, conv, relu])
    assert [r.type for r in t.rows] == ["relu", "flatten"] and not t.complete
    i, err = t.error
    assert i == 2 and err.component is conv
    assert err.message == "conv2d expects an image (channels x height x width) but receives 64"
    assert t.output_shape == (64,)  # where the trace stopped


class MyRelu(LayerType[NoParams]):
    """A plugin's own relu: the flag makes the builder and the cost model treat it as the built-in."""

    name = "my_relu"
    relu = True

    def output_shape(self, p, shape):
        return shape

    def macs(self, p, in_shape, out_shape):
        return 0

    def saved(self, p, in_shape, out_shape):
        return Saved(input=False, output=True)  # as torch's relu: backward reads the result

    def build(self, p, shape):
        from torch import nn

        return nn.ReLU()


class MyReluPlugin:
    @hookimpl
    def register_layers(self, register):
        register(MyRelu())


POOLED = ("[{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}, LAYER, {type: maxpool2d, kernel_size: 2}, "
          "flatten]")


def test_a_plugin_layer_flagged_relu_moves_after_max_pooling_like_the_built_in() -> None:
    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[MyReluPlugin()]))
    mine = _layers(POOLED.replace("LAYER", "my_relu"), reg).trace
    builtin = _layers(POOLED.replace("LAYER", "relu")).trace
    other = _layers(POOLED.replace("LAYER", "relu6")).trace  # not a relu: stays where it is
    assert is_relu(mine.rows[1]) and is_relu(builtin.rows[1]) and not is_relu(other.rows[1])
    assert ends_in_relu(mine.rows[1]) and not ends_in_relu(other.rows[1])
    assert pooled_relus(mine.rows) == pooled_relus(builtin.rows) == [1]
    assert pooled_relus(other.rows) == []


def test_the_flagged_plugin_relu_is_built_and_costed_after_the_pooling() -> None:
    torch = pytest.importorskip("torch")
    from cnnspec.build.model import build_model
    from cnnspec.spec.cost import activation_profile

    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[MyReluPlugin()]))
    spec = _layers(POOLED.replace("LAYER", "my_relu"), reg)
    model = build_model(spec)
    assert isinstance(model[1], torch.nn.Identity)  # the relu left its place ...
    assert isinstance(model[2], torch.nn.Sequential) and isinstance(model[2][0], torch.nn.MaxPool2d)
    assert isinstance(model[2][1], torch.nn.ReLU)  # ... and runs on the pooled tensor
    builtin = _layers(POOLED.replace("LAYER", "relu"))

    def kept(t):  # what each layer keeps for backward, in the order cost runs them
        prof = activation_profile(t)
        return prof.peak, [prof.kept.get(id(r), 0) for r in t.rows]

    # the relu keeps its output after the 4 x 4 pooling (256 bytes), not before it (1024)
    assert kept(spec.trace) == kept(builtin.trace) == (kept(builtin.trace)[0], [1024, 256, 512, 0])
    unflagged = MyRelu()
    unflagged.relu = False
    reg.entries["layer"]["my_relu"] = unflagged
    assert kept(_layers(POOLED.replace("LAYER", "my_relu"), reg).trace)[1][1] == 1024  # 4 x 8 x 8 floats
