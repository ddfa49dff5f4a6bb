"""The Keras-style plugin, used through its entry point: Keras shapes, parameters and TensorFlow's
definitions of 'same' and 'valid' padding, checked against loops written from those definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import ROOT

import cnnspec
from cnnspec.registry.manager import default_plugin_manager, default_registry


def test_plugin_comes_from_its_entry_point():
    reg = default_registry()
    assert reg.owners[("layer", "Conv2D")] == "keras"
    assert default_plugin_manager().sources["keras"].startswith("cnnspec-keras ")


def test_the_plugin_names_exactly_the_layers_it_defines_and_loads_them_on_first_use():
    import cnnspec_keras
    from cnnspec.registry.manager import build_registry, get_plugin_manager
    from cnnspec_keras.layers import LAYERS

    assert sorted(cnnspec_keras.NAMES) == sorted(layer.name for layer in LAYERS)
    reg = build_registry(get_plugin_manager())
    assert all(type(reg.entries["layer"][n]).__name__ == "Lazy" for n in cnnspec_keras.NAMES)
    assert type(reg.get("layer", "Conv2D")).__module__ == "cnnspec_keras.layers"
    from cnnspec_keras.more_layers import LAYERS as MORE

    assert sorted(cnnspec_keras.MORE) == sorted(layer.name for layer in MORE)
    assert all(type(reg.entries["layer"][n]).__name__ == "Lazy" for n in cnnspec_keras.MORE)
    assert type(reg.get("layer", "DepthwiseConv2D")).__module__ == "cnnspec_keras.more_layers"


def test_keras_reference_shapes_and_params():
    spec = cnnspec.load_spec(str(ROOT / "specs" / "keras_mnist_cnn.yaml"))
    shapes = [r.output_shape for r in spec.trace.rows]
    assert [s[1] for s in shapes[:6] if len(s) == 3] == [28, 14, 14, 7, 7, 4]
    assert shapes[6] == (2048,) and spec.trace.total_params == 619_786
    model = cnnspec.build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == 619_786


def tf_window(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) exactly as TensorFlow documents them."""
    if padding == "valid":
        return (size - d * (k - 1) - 1) // s + 1, 0
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return out, total // 2


def ref_conv(x, w, b, s, d, padding):
    """NCHW convolution by loops: positions outside the input count as zero."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, pt = tf_window(h, kh, s, d, padding)
    ow, pl = tf_window(wd, kw, s, d, padding)
    out = np.zeros((n, o, oh, ow))
    for i, j, u, v in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        r, q = i * s - pt + u * d, j * s - pl + v * d
        if 0 <= r < h and 0 <= q < wd:
            out[:, :, i, j] += x[:, :, r, q] @ w[:, :, u, v].T
    return out + b[None, :, None, None]


def ref_pool(x, k, s, padding, mode):
    """Pooling by loops over the real values of each window (padding is never a value)."""
    n, c, h, wd = x.shape
    oh, pt = tf_window(h, k, s, 1, padding)
    ow, pl = tf_window(wd, k, s, 1, padding)
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, q0 = i * s - pt, j * s - pl
        win = x[:, :, max(r0, 0):min(r0 + k, h), max(q0, 0):min(q0 + k, wd)]
        out[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return out


def build_one(layer: str, size: int, channels: int = 2):
    spec = cnnspec.loads_spec(f"input: [{channels}, {size}, {size}]\nlayers:\n  - {layer}\n")
    return spec, cnnspec.build_model(spec).eval()


@pytest.mark.parametrize("size", [5, 6, 7, 8, 9])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [2, 3, 5])
@pytest.mark.parametrize("padding", ["SAME", "valid"])
def test_conv2d_matches_tensorflow(size, stride, kernel, padding):
    if padding == "valid" and kernel > size:
        pytest.skip("kernel larger than the input")
    spec, model = build_one(f"{{type: Conv2D, filters: 3, kernel_size: {kernel}, strides: {stride}, "
                            f"padding: {padding}}}", size)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][0]
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 2, size, size, dtype=torch.float64)
    model = model.double()
    got = model(x).detach().numpy()
    want = ref_conv(x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy(), stride, 1,
                    padding.lower())
    assert got.shape[1:] == spec.trace.output_shape
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("size", [5, 6, 7, 8, 9])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [2, 3, 5])
@pytest.mark.parametrize("padding", ["same", "VALID"])
@pytest.mark.parametrize("kind", ["MaxPool2D", "AveragePooling2D"])
def test_pooling_matches_tensorflow(size, stride, kernel, padding, kind):
    if padding == "VALID" and kernel > size:
        pytest.skip("window larger than the input")
    spec, model = build_one(f"{{type: {kind}, pool_size: {kernel}, strides: {stride}, padding: {padding}}}", size)
    x = -torch.rand(2, 2, size, size, dtype=torch.float64) - 1  # all negative: a padded 0 would win a max
    got = model(x).numpy()
    want = ref_pool(x.numpy(), kernel, stride, padding.lower(), "max" if kind == "MaxPool2D" else "avg")
    assert got.shape[1:] == spec.trace.output_shape
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_keras_defaults():
    spec, model = build_one("{type: Conv2D, filters: 4, kernel_size: 3, activation: relu}", 8)
    conv = model[0][0]
    assert torch.count_nonzero(conv.bias) == 0  # zero bias
    limit = (6 / (2 * 9 + 4 * 9)) ** 0.5  # glorot uniform
    assert conv.weight.abs().max() <= limit and conv.weight.abs().max() > 0.5 * limit
    assert isinstance(model[0][1], torch.nn.ReLU)
    spec = cnnspec.loads_spec("input: [1, 9, 9]\nlayers:\n  - {type: MaxPooling2D, pool_size: 3}\n")
    assert spec.trace.output_shape == (1, 3, 3)  # strides default to pool_size
    bn = cnnspec.build_model(cnnspec.loads_spec("input: [3, 4, 4]\nlayers: [BatchNormalization]\n"))[0]
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)


def test_keras_errors_are_located(cli, write):
    path = write("input: [1, 4, 4]\nlayers:\n  - {type: Conv2D, filter: 3, kernel_size: 5, padding: sam}\n"
                 "  - {type: Dense, units: 2}\n")
    res = cli("validate", path)
    assert res.code == 1
    assert "layers[0] Conv2D: unknown key 'filter' (did you mean 'filters'?)" in res.out
    assert "padding: must be 'valid' or 'same', got 'sam' (did you mean 'same'?)" in res.out
    path = write("input: [1, 4, 4]\nlayers:\n  - {type: Conv2D, filters: 3, kernel_size: 5}\n", "b.yaml")
    res = cli("validate", path)
    assert f"{path}:3:32: error: layers[0] Conv2D: window 5 x 5 does not fit the input 4 x 4" in res.out


def test_add_and_concatenate_are_keras_residuals_and_joins(cli, write):
    spec = cnnspec.load_spec(str(ROOT / "specs" / "keras_residual_mnist.yaml"))
    # Keras counts: 3x3 convs 32->32 are 9,248 each, Dense 3136->128 is 401,536
    assert spec.trace.total_params == 320 + 2 * 9_248 + 1_056 + 9_248 + 401_536 + 1_290
    model = cnnspec.build_model(spec).eval()
    x = torch.randn(2, 32, 28, 28)
    add, cat = model[1], model[4]
    branch, identity = list(add.children())
    torch.testing.assert_close(add(x), branch(x) + x)  # Add()([f(x), x])
    y = torch.randn(2, 32, 14, 14)
    one, three = list(cat.children())
    torch.testing.assert_close(cat(y), torch.cat([one(y), three(y)], dim=1))  # channels, in order
    res = cli("validate", write("input: [1, 8, 8]\nlayers:\n  - type: Add\n    branches:\n"
                                "      - [{type: Conv2D, filters: 4, kernel_size: 3}]\n      - []\n"))
    assert res.code == 1
    assert ":6:9: error: layers[0] Add: branch 1 gives 1 x 8 x 8 but branch 0 gives 4 x 6 x 6; sum needs" in res.out


KERAS_POOLS = """input: [3, 11, 11]
layers:
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, activation: relu}
  - {type: MaxPool2D, pool_size: 2, padding: same}      # -inf padding on the odd row and column
  - {type: Conv2D, filters: 6, kernel_size: 2, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Conv2D, filters: 6, kernel_size: 1, activation: tanh}   # not a relu: stays where it is
  - {type: MaxPool2D, pool_size: 1}
  - Flatten
  - {type: Dense, units: 3}
"""


def test_conv_relu_before_max_pooling_runs_after_it_with_the_same_numbers(monkeypatch):
    from autograd_memory import assert_kept_exact, assert_same_numbers, unrewritten
    from torch import nn

    spec = cnnspec.loads_spec(KERAS_POOLS, "k.yaml")
    torch.manual_seed(0)
    model = cnnspec.build_model(spec)
    assert isinstance(model[0][-1], nn.Identity) and isinstance(model[1][-1], nn.ReLU)
    assert isinstance(model[2][-1], nn.Identity) and isinstance(model[3][-1], nn.ReLU)
    assert isinstance(model[4][-1], nn.Tanh) and not isinstance(model[5], nn.Sequential)
    ref = unrewritten(spec, model, monkeypatch)  # the same parameter names: old checkpoints still load
    x = torch.randn(5, 3, 11, 11)
    x[0] = -1.0
    assert_same_numbers(model, ref, x)
    assert_kept_exact(model, spec)  # the memory estimate follows the built order


def test_depthwise_conv_is_a_grouped_conv_and_zero_padding_and_rescaling_compute_what_keras_does():
    import torch.nn.functional as F

    from cnnspec import build_model, loads_spec

    spec = loads_spec("""
input: [3, 7, 6]
layers:
  - {type: ZeroPadding2D, padding: [[1, 2], [0, 1]]}
  - {type: Rescaling, scale: 0.5, offset: -1.0}
  - {type: DepthwiseConv2D, kernel_size: 3, strides: 2, padding: same, depth_multiplier: 2, use_bias: false}
""")
    assert [r.output_shape for r in spec.trace.rows] == [(3, 10, 7), (3, 10, 7), (6, 5, 4)]
    assert spec.trace.rows[2].params == 6 * 9
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 7, 6)
    w = model.state_dict()["2.inner.weight"]  # TensorFlow pads 'same' unevenly here: a padded copy
    assert w.shape == (6, 1, 3, 3)
    y = F.pad(x, (0, 1, 1, 2)) * 0.5 - 1.0
    want = F.conv2d(F.pad(y, (1, 1, 0, 1)), w, stride=2, groups=3)  # 10 x 7 -> 5 x 4: pads (0, 1) rows, (1, 1) columns
    torch.testing.assert_close(model(x), want)
