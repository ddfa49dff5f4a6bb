"""spec.tensors: the built model's state_dict known without torch, for every example spec and layer variant."""

from __future__ import annotations

import pytest
from conftest import ROOT

import cnnspec
from cnnspec.spec.tensors import Unknown, plan, trainable_params

ALL_SPECS = sorted((ROOT / "specs").rglob("*.yaml"))


def _built(spec: cnnspec.Spec) -> list[tuple[str, tuple[int, ...], str]]:
    sd = cnnspec.build_model(spec).state_dict()
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]


def _planned(spec: cnnspec.Spec) -> list[tuple[str, tuple[int, ...], str]]:
    return [(e.key, e.shape, e.tensor.dtype) for e in plan(spec.trace)]


@pytest.mark.parametrize("path", [p for p in ALL_SPECS if "sweep" not in p.name],
                         ids=[str(p.relative_to(ROOT / "specs")) for p in ALL_SPECS if "sweep" not in p.name])
def test_the_plan_is_the_built_state_dict(path):
    result = cnnspec.check_file(str(path), trust=True)
    assert result.spec is not None, result.problems
    assert _planned(result.spec) == _built(result.spec)
    assert trainable_params(plan(result.spec.trace)) == result.spec.trace.total_params


VARIANTS = {
    "conv-no-bias-groups": "{type: conv2d, out_channels: 4, kernel_size: [3, 1], groups: 2, bias: false}",
    "batchnorm-no-affine": "{type: batchnorm2d, affine: false}",
    "batchnorm-no-stats": "{type: batchnorm2d, track_running_stats: false}",
    "prelu": "{type: prelu, num_parameters: 2}",
    "residual-auto": "{type: residual, shortcut: auto, layers: [{type: conv2d, out_channels: 4, kernel_size: 3,"
                     " stride: 2, padding: 1}]}",
    "parallel-and-repeat": "{type: parallel, branches: [[{type: conv2d, out_channels: 1, kernel_size: 1}],"
                           " {type: repeat, times: 2, layers: [{type: conv2d, out_channels: 2, kernel_size: 1},"
                           " batchnorm2d]}]}",
    "keras-same-uneven-relu": "{type: Conv2D, filters: 3, kernel_size: 2, padding: same, activation: relu}",
    "keras-same-even-linear": "{type: Conv2D, filters: 3, kernel_size: 3, padding: same, use_bias: false}",
    "keras-bn": "{type: BatchNormalization}",
}


@pytest.mark.parametrize("layer", VARIANTS.values(), ids=VARIANTS.keys())
def test_each_layer_variant(layer, write):
    spec = cnnspec.load_spec(write(f"plugins: [cnnspec_keras]\ninput: [2, 6, 6]\nlayers:\n  - {layer}\n  - relu\n"
                                   "  - {type: maxpool2d, kernel_size: 2}\n  - flatten\n"
                                   "  - {type: linear, out_features: 3}\n"))
    assert _planned(spec) == _built(spec)


def test_a_layer_without_a_rule_is_unknown(write):
    from cnnspec.registry.hookspecs import hookimpl
    from cnnspec.registry.manager import registry_with
    from cnnspec.registry.types import LayerType

    class Mystery(LayerType):
        name = "mystery"

        def output_shape(self, p, shape):
            return shape

        def num_params(self, p, shape):
            return 7

    class Plugin:
        @hookimpl
        def register_layers(self, register):
            register(Mystery())

    spec = cnnspec.load_spec(write("input: [2, 4, 4]\nlayers: [relu, mystery]\n"), registry=registry_with([Plugin()]))
    with pytest.raises(Unknown) as e:
        plan(spec.trace)
    assert e.value.module == "1" and e.value.component.name == "mystery"
