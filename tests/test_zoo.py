"""specs/zoo/: each spec equals torchvision's builder (weights=None): the same parameter count in
validate, torchvision's state_dict checked by validate and loaded by cnnspec's own weights loader
(``weights: {mapping: torchvision}``), the same logits in eval, and it trains."""

from __future__ import annotations

import math

import pytest
from conftest import ROOT

import cnnspec
from cnnspec.build.weights import load_weights
from cnnspec.spec.load import check_file

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# spec name -> torchvision builder's keyword arguments (besides weights=None)
MODELS: dict[str, dict[str, object]] = {
    "resnet18": {},
    "resnet50": {},
    "resnext50_32x4d": {},
    "vgg11_bn": {},
    "alexnet": {},
    "squeezenet1_1": {},
    "mobilenet_v2": {},
    "densenet121": {},
    "googlenet": {"aux_logits": False, "transform_input": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "transform_input": False, "init_weights": False},
    "mnasnet0_5": {},
    "shufflenet_v2_x0_5": {},
    "mobilenet_v3_small": {},
    "efficientnet_b0": {},
    "regnet_y_400mf": {},
    "convnext_tiny": {},
}
MODELS = {name: kw for name, kw in MODELS.items() if (ROOT / "specs" / "zoo" / f"{name}.yaml").exists()}


def _perturbed(tv):
    """Non-trivial normalisation statistics and scales, so a swapped tensor would show."""
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        for name, p in tv.named_parameters():
            if name.endswith("layer_scale"):  # ConvNeXt's 1e-6 would hide its blocks
                p.uniform_(0.5, 1.5)
    return tv


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_spec_equals_torchvision(name, tmp_path):
    torch.manual_seed(0)
    tv = _perturbed(getattr(torchvision.models, name)(weights=None, **MODELS[name]))
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    # (b) validate checks torchvision's file against the spec, tensor for tensor, without torch
    result = check_file(str(ROOT / "specs" / "zoo" / f"{name}.yaml"),
                        overrides=[f"weights={{file: {tmp_path / 'tv.pth'}, mapping: torchvision}}"])
    assert result.spec is not None and result.spec.weights is not None, result.problems
    spec = result.spec
    assert not result.warnings and not spec.weights.unused and not spec.weights.fresh
    # (a) validate's parameter count is torchvision's
    assert spec.trace.total_params == sum(p.numel() for p in tv.parameters())
    assert spec.trace.output_shape == (1000,)
    # ... and cnnspec's loader puts every tensor where the check said
    model = cnnspec.build_model(spec)
    load_weights(model, spec.weights)
    # (c) the same logits in eval mode
    size = spec.input_shape[1:]
    x = torch.randn(1, 3, *size)
    tv.eval(), model.eval()
    with torch.no_grad():
        want, got = tv(x), model(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # (d) one training step on a batch of 2
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, *size)), torch.tensor([0, 999]))
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
