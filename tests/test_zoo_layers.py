"""The zoo's layer types (cnnspec.plugins.zoo_layers): torch's numbers, exact MACs, located errors."""

from __future__ import annotations

import pytest

import cnnspec

torch = pytest.importorskip("torch")

ALL_NEW = """input: [8, 6, 6]
layers:
  - type: gate
    layers: [{type: adaptiveavgpool2d, output_size: 1}, {type: conv2d, out_channels: 2, kernel_size: 1},
             relu, {type: conv2d, out_channels: 8, kernel_size: 1}, sigmoid]
  - {type: split, branches: [[], [{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}]]}
  - {type: channel_shuffle, groups: 2}
  - {type: layernorm2d, eps: 0.000001}
  - type: residual
    layers:
      - type: layer_scale
        init: 0.5
        layers: [{type: channel_linear, out_features: 16}, gelu, {type: channel_linear, out_features: 8}]
      - {type: stochastic_depth, p: 0.5}
  - {type: adaptiveavgpool2d, output_size: 1}
  - flatten
  - {type: linear, out_features: 3}
"""


def test_new_layers_build_with_the_traced_shapes_params_and_exact_macs(write):
    from torch.utils.flop_counter import FlopCounterMode

    spec = cnnspec.load_spec(write(ALL_NEW))
    model = cnnspec.build_model(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == spec.trace.total_params
    x = torch.randn(1, 8, 6, 6)
    with FlopCounterMode(display=False) as counter:
        assert model(x).shape == (1, 3)
    assert spec.trace.total_macs == counter.get_total_flops() // 2
    # the layer scale's own tensor comes before its layers', as in torchvision's CNBlock
    keys = list(model.state_dict())
    i = keys.index("4.main.0.scale")
    assert keys[i + 1] == "4.main.0.layers.0.weight" and model.state_dict()[keys[i]].shape == (8, 1, 1)


def test_split_shuffle_and_layernorm_compute_what_torchvision_does(write):
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.models.shufflenetv2 import channel_shuffle

    spec = cnnspec.load_spec(write("input: [8, 3, 3]\nlayers:\n"
                                   "  - {type: split, branches: [[], {type: conv2d, out_channels: 4,"
                                   " kernel_size: 1}]}\n"
                                   "  - {type: channel_shuffle, groups: 2}\n  - layernorm2d\n"))
    model = cnnspec.build_model(spec).eval()
    x = torch.randn(2, 8, 3, 3)
    conv = getattr(model[0], "1")[0]  # the second branch's convolution
    ln = LayerNorm2d(8)
    ln.load_state_dict(model[2].state_dict())
    a, b = x.chunk(2, dim=1)
    want = ln(channel_shuffle(torch.cat([a, conv(b)], 1), 2))
    torch.testing.assert_close(model(x), want)


def test_stochastic_depth_is_torchvisions(write):
    from torchvision.ops import StochasticDepth

    for mode in ("row", "batch"):
        layer = f"{{type: stochastic_depth, p: 0.5, mode: {mode}}}"
        spec = cnnspec.load_spec(write(f"input: [4, 2, 2]\nlayers:\n  - {layer}\n"))
        model = cnnspec.build_model(spec)
        x = torch.randn(64, 4, 2, 2)
        torch.manual_seed(3)
        got = model(x)
        torch.manual_seed(3)
        want = StochasticDepth(0.5, mode)(x)
        torch.testing.assert_close(got, want)
        assert not torch.equal(got, x)  # something was dropped and the rest scaled
        assert torch.equal(model.eval()(x), x)  # identity in eval


@pytest.mark.parametrize("layer, message, line, col", [
    ("{type: split, branches: [[], []], }", "7 channels do not split into 2 equal parts", 3, 19),
    ("{type: channel_shuffle, groups: 2}", "groups=2 does not divide the 7 channels", 3, 29),
    ("{type: gate, layers: [{type: conv2d, out_channels: 3, kernel_size: 1}]}",
     "the gate gives 3 x 4 x 4, which does not broadcast to the input 7 x 4 x 4", 3, 18),
    ("{type: layer_scale, layers: [{type: conv2d, out_channels: 3, kernel_size: 1}]}",
     "its layers turn 7 channels into 3; a layer scale's layers must keep the channels", 3, 25),
    ("{type: channel_linear, out_features: 2}\n  - {type: layernorm2d, eps: -1}",
     "eps: must be >= 0.0, got -1", 4, 30),
])
def test_errors_are_located(write, cli, layer, message, line, col):
    """Each error points at the parameter (or value) at fault."""
    path = write(f"input: [7, 4, 4]\nlayers:\n  - {layer}\n")
    res = cli("validate", path)
    assert res.code != 0
    assert f"{path}:{line}:{col}: error:" in res.text and message in res.text, res.text


def test_a_flat_input_is_refused_where_an_image_is_needed(write, cli):
    path = write("input: [8]\nlayers:\n  - {type: channel_linear, out_features: 2}\n")
    res = cli("validate", path)
    assert f"{path}:3:5: error:" in res.text and "expects an image" in res.text, res.text
