"""The builder's fast paths change speed, never numbers: each against the plain torch.nn model."""

from __future__ import annotations

import pytest

import cnnspec

torch = pytest.importorskip("torch")
from autograd_memory import assert_kept_exact, assert_same_numbers, unrewritten  # noqa: E402
from torch import nn  # noqa: E402

SPEC = """input: [3, 12, 12]
layers:
  - {type: conv2d, out_channels: 8, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 3, stride: 2, padding: 1, ceil_mode: true}
  - {type: residual, layers: [{type: conv2d, out_channels: 8, kernel_size: 3, padding: same}, relu,
                              {type: maxpool2d, kernel_size: 2, stride: 1, padding: 1}, \
{type: conv2d, out_channels: 8, kernel_size: 2}]}
  - relu
  - {type: adaptivemaxpool2d, output_size: 3}
  - flatten
  - {type: linear, out_features: 4}
"""


def plain(model: nn.Module) -> nn.Module:
    """The model as torch.nn would build it: each relu before its pooling, plain Flatten."""
    m = nn.Sequential(
        model[0], nn.ReLU(), model[2][0],
        type(model[3])(nn.Sequential(model[3].main[0], nn.ReLU(), model[3].main[2][0], model[3].main[3]),
                       model[3].shortcut),
        nn.ReLU(), model[5][0], nn.Flatten(), model[7])
    return m


@pytest.mark.parametrize("channels_last", [False, True])
def test_pool_first_and_flatten_give_the_same_numbers_and_gradients(channels_last: bool) -> None:
    spec = cnnspec.loads_spec(SPEC, "f.yaml")
    torch.manual_seed(0)
    model = cnnspec.build_model(spec)
    # the rewrite happened: identities where the relus were, pooling then relu after them
    assert isinstance(model[1], nn.Identity) and isinstance(model[2][1], nn.ReLU)
    assert isinstance(model[3].main[1], nn.Identity) and isinstance(model[5][1], nn.ReLU)
    ref = plain(model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model, ref = model.to(memory_format=fmt), ref.to(memory_format=fmt)
    x = torch.randn(6, 3, 12, 12).contiguous(memory_format=fmt)
    x[0] = -1.0  # a sample whose windows are all negative: no gradient through either order
    assert_same_numbers(model, ref, x)


def test_flatten_hands_a_channels_last_gradient_back_channels_last() -> None:
    from cnnspec.build.modules import Flatten

    x = torch.randn(4, 5, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = Flatten()(x)
    assert torch.equal(y, x.reshape(4, -1))
    y.backward(torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape))
    assert x.grad is not None and x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.grad, torch.arange(y.numel(), dtype=torch.float32).reshape(4, 5, 3, 3))


CHAINS = """input: [3, 12, 12]
blocks:
  conv_pool:
    params: {c: int}
    layers: [{type: conv2d, out_channels: $c, kernel_size: 3, padding: 1}, relu, {type: maxpool2d, kernel_size: 2}]
layers:
  - {type: sequence, layers: [{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}, relu,
                              {type: maxpool2d, kernel_size: 2, stride: 1}]}
  - sigmoid  # keeps only its output: memory differs between the two orders (the check below sees it)
  - {type: repeat, times: 2, layers: [{type: conv2d, out_channels: 4, kernel_size: 1}, relu, \
{type: maxpool2d, kernel_size: 1}]}
  - {block: conv_pool, c: 6}
  - flatten
  - {type: linear, out_features: 3}
"""


def test_pool_first_inside_sequences_repeats_and_blocks(monkeypatch) -> None:
    spec = cnnspec.loads_spec(CHAINS, "f.yaml")
    torch.manual_seed(0)
    model = cnnspec.build_model(spec)
    assert [type(m).__name__ for m in model[0]] == ["Conv2d", "Identity", "Sequential"]
    assert [type(m).__name__ for m in model[2]] == ["Conv2d", "Identity", "Sequential"] * 2
    assert [type(m).__name__ for m in model[3]] == ["Conv2d", "Identity", "Sequential"]
    ref = unrewritten(spec, model, monkeypatch)  # the model as torch.nn would have it
    assert isinstance(ref[0][1], nn.ReLU)
    x = torch.randn(5, 3, 12, 12)
    x[0] = -1.0
    assert_same_numbers(model, ref, x)
    assert_kept_exact(model, spec)  # the memory estimate follows the reordered model
