"""Property: whatever validate accepts builds and runs with exactly the static shapes and counts;
whatever it rejects at a conv or pool layer, torch rejects too."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec import SpecError
from cnnspec.plugins import default_registry

torch = pytest.importorskip("torch")

EXAMPLES = int(os.environ.get("CNNSPEC_PROPERTY_EXAMPLES", "400"))

small = st.integers(1, 4)
pair_or_int = st.one_of(small, st.tuples(small, small).map(list))
pad = st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)).map(list))


@st.composite
def conv(draw):
    layer = {"type": "conv2d", "out_channels": draw(st.sampled_from([1, 2, 3, 4, 6, 8])),
             "kernel_size": draw(pair_or_int)}
    if draw(st.booleans()):
        layer["stride"] = draw(pair_or_int)
    if draw(st.booleans()):
        layer["padding"] = draw(st.one_of(pad, st.sampled_from(["same", "valid"])))
    if draw(st.booleans()):
        layer["dilation"] = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), small).map(list)))
    if draw(st.booleans()):
        layer["groups"] = draw(st.sampled_from([1, 2, 3]))
    if draw(st.booleans()):
        layer["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if draw(st.booleans()):
        layer["bias"] = draw(st.booleans())
    return layer


@st.composite
def pool(draw):
    kind = draw(st.sampled_from(["maxpool2d", "avgpool2d"]))
    layer = {"type": kind, "kernel_size": draw(pair_or_int)}
    if draw(st.booleans()):
        layer["stride"] = draw(pair_or_int)
    if draw(st.booleans()):
        layer["padding"] = draw(pad)
    if draw(st.booleans()):
        layer["ceil_mode"] = draw(st.booleans())
    if kind == "maxpool2d" and draw(st.booleans()):
        layer["dilation"] = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 2), small).map(list)))
    if kind == "avgpool2d" and draw(st.booleans()):
        layer["count_include_pad"] = draw(st.booleans())
    return layer


other = st.one_of(
    st.sampled_from(["relu", "gelu", "tanh", "flatten", "dropout", "dropout2d", "batchnorm2d",
                     "batchnorm1d", "identity", "sigmoid", "silu"]),
    st.builds(lambda n: {"type": "linear", "out_features": n}, st.integers(1, 12)),
    st.builds(lambda o: {"type": "adaptiveavgpool2d", "output_size": o},
              st.one_of(small, st.tuples(st.one_of(small, st.none()), small).map(list))),
    st.builds(lambda o: {"type": "adaptivemaxpool2d", "output_size": o}, small),
    st.builds(lambda s, e: {"type": "flatten", "start_dim": s, "end_dim": e},
              st.integers(1, 3), st.integers(-3, 3)),
    st.builds(lambda d: {"type": "softmax", "dim": d}, st.integers(-4, 4)),
    st.builds(lambda n: {"type": "prelu", "num_parameters": n}, st.sampled_from([1, 2, 3, 4])),
)

stack = st.lists(st.one_of(conv(), conv(), pool(), pool(), other), min_size=1, max_size=6)
inputs = st.tuples(st.integers(1, 4), st.integers(1, 16), st.integers(1, 16)).map(list)


def torch_module(layer: dict, in_channels: int):
    """The torch module a conv/pool entry means, built straight from torch (not from cnnspec)."""
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in layer.items() if k != "type"}
    if layer["type"] == "conv2d":
        return torch.nn.Conv2d(in_channels, **args)
    return {"maxpool2d": torch.nn.MaxPool2d, "avgpool2d": torch.nn.AvgPool2d}[layer["type"]](**args)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inp=inputs, layers=stack)
def test_validate_agrees_with_torch(inp, layers):
    text = yaml.safe_dump({"input": inp, "layers": layers}, sort_keys=False)
    try:
        spec = cnnspec.loads_spec(text, "gen.yaml", default_registry())
    except SpecError as e:
        assert e.problems
        for p in e.problems:
            assert p.line >= 1 and p.column >= 1 and p.message
        # Every rejection of a conv or pool layer must be one torch makes too.
        result = cnnspec.check.check(cnnspec.yamlpos.load(text, "gen.yaml"), default_registry())
        t = result.trace
        if t is not None and t.error is not None:
            i, err = t.error
            layer = layers[i]
            if isinstance(layer, dict) and layer["type"] in ("conv2d", "maxpool2d", "avgpool2d"):
                shape = t.rows[-1].output_shape if t.rows else tuple(inp)
                if len(shape) == 3:
                    try:
                        out = torch_module(layer, shape[0])(torch.zeros(2, *shape))
                    except (RuntimeError, ValueError):
                        pass  # torch rejects it too
                    else:
                        assert out.numel() == 0, f"validate rejected {layer} on {shape}: {err.message}"
        return
    model = cnnspec.build_model(spec).eval()
    x = torch.randn(2, *inp)
    with torch.no_grad():
        for module, row in zip(model, spec.trace.rows):
            x = module(x)
            assert tuple(x.shape[1:]) == row.output_shape, (module, row)
            assert sum(p.numel() for p in module.parameters()) == row.params, (module, row)
    assert len(model) == len(spec.trace.rows)
