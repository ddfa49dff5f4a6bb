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
from cnnspec.registry.manager import default_registry

torch = pytest.importorskip("torch")
from autograd_memory import assert_kept_exact  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

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
        result = cnnspec.spec.check.check(cnnspec.spec.yamlpos.load(text, "gen.yaml"), default_registry())
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
    assert_macs_exact(model, spec)
    assert_kept_exact(model, spec)


# -- nested structures: residual, parallel branches, repeat, sequence and blocks ------------------

same_conv = st.builds(lambda c, k: {"type": "conv2d", "out_channels": c, "kernel_size": k, "padding": "same"},
                      st.sampled_from([2, 3, 4]), st.sampled_from([1, 3]))
leaf = st.one_of(same_conv, same_conv, conv(), pool(), st.sampled_from(["relu", "batchnorm2d", "identity", "tanh"]),
                 st.builds(lambda o: {"type": "adaptiveavgpool2d", "output_size": o}, st.integers(2, 4)))


def _composites(children):
    lists = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.builds(lambda ls, sc: {"type": "residual", "layers": ls, "shortcut": sc},
                  lists, st.one_of(st.sampled_from(["identity", "auto", "auto"]), lists)),
        st.builds(lambda bs, m: {"type": "parallel", "branches": bs, "merge": m},
                  st.lists(st.one_of(lists, children, st.just([])), min_size=2, max_size=3),
                  st.sampled_from(["concat", "concat", "sum"])),
        st.builds(lambda ls, n: {"type": "repeat", "times": n, "layers": ls}, lists, st.integers(1, 3)),
        st.builds(lambda ls: {"type": "sequence", "layers": ls}, lists),
        st.builds(lambda it, n: {**({"type": it} if isinstance(it, str) else it), "repeat": n},
                  children, st.integers(1, 3)),
        st.builds(lambda c: {"block": "blk", "c": c}, st.sampled_from([2, 3, 4])),
    )


nested = st.lists(st.one_of(leaf, _composites(st.recursive(leaf, _composites, max_leaves=6))), min_size=1, max_size=3)
nested_inputs = st.tuples(st.integers(1, 4), st.integers(2, 10), st.integers(2, 10)).map(list)
SEEN = {"accepted": 0, "nested": 0, "composite rows": 0, "depth": 0}


def check_tree(module, row, outputs, depth=0):
    """The module of ``row`` gave exactly the shape it printed and holds exactly its parameters."""
    assert tuple(outputs[module].shape[1:]) == row.output_shape, (module, row)
    assert sum(p.numel() for p in module.parameters()) == row.params, (module, row)
    if row.composite:
        SEEN["composite rows"] += 1
        SEEN["depth"] = max(SEEN["depth"], depth)
        kids = list(module.children())
        assert len(kids) == len(row.children), (module, row)
        for m, r in zip(kids, row.children):
            check_tree(m, r, outputs, depth + 1)


@settings(max_examples=max(EXAMPLES // 4, 10), deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)  # the same examples every run: the coverage check below is then not flaky
@given(inp=nested_inputs, layers=nested, body=st.lists(leaf, min_size=0, max_size=2))
def _nested_agrees_with_torch(inp, layers, body):
    blocks = {"blk": {"params": {"c": "int"},
                      "layers": [{"type": "conv2d", "out_channels": "$c", "kernel_size": 1}, *body]}}
    text = yaml.safe_dump({"input": inp, "blocks": blocks, "layers": layers}, sort_keys=False)
    try:
        spec = cnnspec.loads_spec(text, "gen.yaml", default_registry())
    except SpecError as e:
        for p in e.problems:  # rejected: located, one line each
            assert p.line >= 1 and p.column >= 1 and p.message and "\n" not in p.message
        return
    SEEN["accepted"] += 1
    SEEN["nested"] += any(r.children for r in spec.trace.rows)
    model = cnnspec.build_model(spec).eval()
    outputs = {}
    for m in model.modules():
        m.register_forward_hook(lambda mod, args, out: outputs.__setitem__(mod, out))
    with torch.no_grad():
        model(torch.randn(2, *inp))
    assert len(model) == len(spec.trace.rows)
    for module, row in zip(model, spec.trace.rows):
        check_tree(module, row, outputs)
    assert_macs_exact(model, spec)
    assert_kept_exact(model, spec)


def assert_macs_exact(model, spec):
    """validate's MACs (total and the layers' sum) are FlopCounterMode's forward FLOPs / 2 at batch 1."""
    t = spec.trace
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *t.input_shape))
    flops = counter.get_total_flops()
    assert t.total_macs == sum(r.macs for r in t.rows) == flops / 2, (t.total_macs, flops)


def test_nested_structures_agree_with_torch():
    _nested_agrees_with_torch()
    # the property is only worth something if many nested models were accepted and checked
    assert SEEN["nested"] >= max(EXAMPLES // 80, 3) and SEEN["depth"] >= 2, SEEN
