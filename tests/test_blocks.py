"""Composite layers and named blocks: ResNets equal to torchvision's, located errors, nested output."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

import cnnspec

RESNET18 = ROOT / "specs" / "resnet18.yaml"


def resnet34_text() -> str:
    """resnet18.yaml with only its repeat counts changed: stages of 3, 4, 6, 3 blocks."""
    text = RESNET18.read_text()
    for channels, n in ((64, 3), (128, 3), (256, 5), (512, 2)):
        text, k = re.subn(rf"(channels: {channels}, repeat: )\d+", rf"\g<1>{n}", text)
        assert k == 1
    return text


def copy_by_position(src, dst) -> None:
    """Load src's state_dict into dst tensor for tensor, in order; shapes must agree one by one."""
    a, b = src.state_dict(), dst.state_dict()
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a.items(), b.items()):
        assert va.shape == vb.shape, (ka, kb)
    dst.load_state_dict({kb: va for (_, va), kb in zip(a.items(), b)})


@pytest.mark.parametrize("depth, params", [(18, 11_689_512), (34, 21_797_672)])
def test_resnet_matches_torchvision(depth, params):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    spec = (cnnspec.load_spec(str(RESNET18)) if depth == 18
            else cnnspec.loads_spec(resnet34_text(), "resnet34.yaml"))
    assert spec.trace.total_params == params
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")()
    with torch.no_grad():  # non-trivial batchnorm statistics, so a swapped tensor would show
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model = cnnspec.build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == params
    copy_by_position(tv, model)
    tv.eval(), model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (model(x) - tv(x)).abs().max().item()
    assert diff < 1e-4


def test_validate_table_nests_blocks(cli):
    res = cli("validate", str(RESNET18))
    assert res.code == 0
    lines = res.out.splitlines()
    assert "total params: 11,689,512   output shape: 1000" in res.out
    row = next(ln for ln in lines if ln.startswith("5 "))
    assert "basic (block)" in row and "128 x 28 x 28" in row and "230,144" in row
    short = next(ln for ln in lines if ln.startswith("5.0.1 "))
    assert "    shortcut (auto)" in short and "8,448" in short  # indented under the residual
    conv = next(ln for ln in lines if ln.startswith("5.0.1.0 "))
    assert "conv2d" in conv and "8,192" in conv


def test_json_nests_layers_in_composite_rows(cli):
    doc = json.loads(cli("validate", "--format", "json", str(RESNET18)).out)["specs"][0]
    assert doc["total_params"] == 11_689_512
    top = doc["layers"]
    assert top[0] == {"index": 0, "type": "conv2d", "output_shape": [64, 112, 112], "params": 9408,
                      "macs": 64 * 112 * 112 * 3 * 7 * 7, "param_bytes": 9408 * 4,
                      "activation_bytes": 64 * 112 * 112 * 4}
    stage = top[4]
    assert stage["type"] == "repeat" and stage["times"] == 2 and len(stage["layers"]) == 2
    block = stage["layers"][0]
    assert block["type"] == "basic" and block["kind"] == "block" and block["output_shape"] == [64, 56, 56]
    residual = block["layers"][0]
    main, shortcut = residual["layers"]
    assert main["type"] == "main" and shortcut["shortcut"] == "identity" and shortcut["layers"] == []
    assert main["layers"][0] == {"index": 0, "type": "conv2d", "output_shape": [64, 56, 56], "params": 36864,
                                 "macs": 64 * 56 * 56 * 64 * 9, "param_bytes": 36864 * 4,
                                 "activation_bytes": 64 * 56 * 56 * 4}

    def total(rows):  # every level's params are its children's sum
        for r in rows:
            if "layers" in r:
                assert r["params"] == sum(c["params"] for c in r["layers"]) * (1 if r["type"] != "main" else 1)
                total(r["layers"])
    total(top)


def test_every_parameter_registers_in_reading_order():
    torch = pytest.importorskip("torch")
    spec = cnnspec.loads_spec("""
input: [2, 8, 8]
layers:
  - type: residual
    layers: [{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}, batchnorm2d]
    shortcut: [{type: conv2d, out_channels: 4, kernel_size: 1}]
  - type: parallel
    merge: sum
    branches: [[{type: conv2d, out_channels: 3, kernel_size: 1}], \
{type: conv2d, out_channels: 3, kernel_size: 3, padding: 1}]
""")
    model = cnnspec.build_model(spec)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.main.0.weight", "0.main.0.bias", "0.main.1.weight", "0.main.1.bias",
                     "0.shortcut.0.weight", "0.shortcut.0.bias", "1.0.0.weight", "1.0.0.bias",
                     "1.1.0.weight", "1.1.0.bias"]
    assert model(torch.randn(3, 2, 8, 8)).shape == (3, 3, 8, 8)


def test_resolved_spec_checks_back_to_the_same_model():
    import yaml

    spec = cnnspec.load_spec(str(ROOT / "specs" / "inception_cifar.yaml"))
    again = cnnspec.loads_spec(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    assert again.trace.rows == spec.trace.rows and again.trace.total_params == spec.trace.total_params


BASIC = """\
input: [3, 16, 16]
blocks:
  basic:
    params:
      channels: int
      stride: {type: int, default: 1}
    layers:
      - type: residual
        layers:
          - {type: conv2d, out_channels: $channels, kernel_size: 3, stride: $stride, padding: 1}
          - relu
        shortcut: auto
"""


def errors(cli, write, text: str) -> list[str]:
    res = cli("validate", write(text))
    assert res.code == 1, res.out
    return [ln for ln in res.out.splitlines() if ": error: " in ln]


def test_branch_shape_mismatch_names_both_shapes_and_the_branch(cli, write):
    (err,) = errors(cli, write, """\
input: [3, 16, 16]
layers:
  - type: parallel
    branches:
      - [{type: conv2d, out_channels: 8, kernel_size: 1}]
      - [{type: conv2d, out_channels: 8, kernel_size: 3, stride: 2}]
""")
    assert re.search(r"spec.yaml:6:9: error: layers\[0\] parallel: branch 1 gives 8 x 7 x 7 but branch 0 "
                     r"gives 8 x 16 x 16; concat needs every branch to have the same height and width", err)
    (err,) = errors(cli, write, "input: [4]\nlayers:\n  - {type: parallel, merge: sum, branches: "
                    "[[{type: linear, out_features: 3}], []]}\n")
    assert ":3:80: error: layers[0] parallel: branch 1 gives 4 but branch 0 gives 3; sum needs" in err


def test_identity_shortcut_must_keep_the_shape(cli, write):
    (err,) = errors(cli, write, """\
input: [3, 16, 16]
layers:
  - type: residual
    layers: [{type: conv2d, out_channels: 8, kernel_size: 3, padding: 1}]
    shortcut: identity
""")
    assert ("spec.yaml:5:5: error: layers[0] residual: the main path turns 3 x 16 x 16 into 8 x 16 x 16 "
            "but the shortcut is identity; write shortcut: auto") in err
    (err,) = errors(cli, write, "input: [3, 16, 16]\nlayers:\n  - type: residual\n"
                    "    layers: [{type: conv2d, out_channels: 8, kernel_size: 1}]\n"
                    "    shortcut: [{type: conv2d, out_channels: 4, kernel_size: 1}]\n")
    assert ":5:5: error: layers[0] residual: the shortcut gives 4 x 16 x 16 but the main path gives 8 x 16 x 16" in err


def test_unknown_block_suggests_the_name(cli, write):
    (err,) = errors(cli, write, BASIC + "layers:\n  - {block: basci, channels: 8}\n")
    assert "spec.yaml:14:13: error: layers[0]: unknown block 'basci' (did you mean 'basic'?)" in err
    (err,) = errors(cli, write, "input: [3, 8, 8]\nlayers:\n  - {block: conv2d}\n")
    assert "unknown block 'conv2d' ('conv2d' is a layer type: write {type: conv2d, ...})" in err


def test_missing_or_mistyped_arguments_are_errors_at_the_use(cli, write):
    errs = errors(cli, write, BASIC + "layers:\n  - {block: basic}\n  - {block: basic, channels: wide}\n"
                  "  - {block: basic, channels: 8, strid: 2}\n")
    assert errs == [
        f"{errs[0].split(':')[0]}:14:5: error: layers[0] block 'basic': missing required key 'channels'",
        f"{errs[0].split(':')[0]}:15:30: error: layers[1] block 'basic': channels: must be an integer, got 'wide'",
        f"{errs[0].split(':')[0]}:16:33: error: layers[2] block 'basic': unknown key 'strid' (did you mean 'stride'?)",
    ]


def test_error_inside_a_block_points_at_its_definition_and_names_the_use(cli, write):
    (err,) = errors(cli, write, BASIC + "layers:\n  - {type: flatten}\n  - {block: basic, channels: 8}\n")
    assert re.search(r":10:13: error: blocks\.basic\.layers\[0\]\.layers\[0\] conv2d: conv2d expects an image .*"
                     r"\(in block 'basic' used at line 15\)$", err), err
    (err,) = errors(cli, write,
                    BASIC + "layers:\n  - {block: basic, channels: 0}\n  - {block: basic, channels: 0}\n")
    assert re.search(r":10:42: error: .*out_channels: must be >= 1, got 0 "
                     r"\(in block 'basic' used at line 14\)$", err)


def test_unknown_parameter_in_a_body_is_an_error_in_the_definition(cli, write):
    misspelt = BASIC.replace("stride: $stride", "stride: $strde")
    errs = errors(cli, write, misspelt + "layers:\n  - {block: basic, channels: 8}\n")
    want = ":10:77: error: blocks.basic: '$strde' is not a parameter of block 'basic' (did you mean '$stride'?)"
    assert any(want in e for e in errs), errs
    errs = errors(cli, write, "input: [1, 4, 4]\nblocks:\n  b:\n    params: {n: integer}\n    layers: [relu]\n"
                  "layers: [{block: b, n: 1}]\n")
    assert any(":4:17: error: blocks.b: params.n: unknown parameter type 'integer' (did you mean 'int'?)" in e
               for e in errs)


def test_recursion_between_blocks_is_an_error(cli, write):
    errs = errors(cli, write, """\
input: [3, 8, 8]
blocks:
  a:
    layers: [relu, {block: b}]
  b:
    layers: [{block: a}]
layers:
  - {block: a}
""")
    assert errs == [f"{errs[0].split(':')[0]}:6:22: error: blocks.b.layers[0]: block 'a' uses itself (a -> b -> a); "
                    "blocks cannot be recursive (in block 'b' used at line 4; in block 'a' used at line 8)"]


@pytest.mark.parametrize("item, where, message", [
    ("{type: relu, repeat: 0}", "3:26", "layers[0]: repeat must be at least 1, got 0"),
    ("{type: relu, repeat: 5000}", "3:26", "layers[0]: repeat 5,000 is more than the limit of 1,000"),
    ("{type: relu, repeat: two}", "3:26", "layers[0]: repeat must be a whole number of copies, got 'two'"),
    ("{type: repeat, times: 0, layers: [relu]}", "3:27", "layers[0] repeat: times: must be >= 1, got 0"),
    ("{type: sequence, layers: [{type: relu, repeat: 1000}], repeat: 20}", "3:68",
     "layers[0]: repeat 20 of 1,000 layers makes 20,000, more than the limit of 10,000 layers in a model"),
    ("{type: repeat, times: 1000, layers: [{type: relu, repeat: 20}]}", "2:1",
     "layers: the model expands to more than the limit of 10,000 layers"),
])
def test_repeat_counts_are_checked(cli, write, item, where, message):
    (err,) = errors(cli, write, f"input: [3, 8, 8]\nlayers:\n  - {item}\n")
    assert f"spec.yaml:{where}: error: {message}" in err, err


def test_a_plugin_can_ship_blocks(cli, write, tmp_path):
    (tmp_path / "blocklib.py").write_text('''
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import BlockType

@hookimpl
def register_blocks(register):
    register(BlockType("conv_relu", params={"channels": "int", "kernel": {"type": "int", "default": 3}},
                       layers=[{"type": "conv2d", "out_channels": "$channels", "kernel_size": "$kernel"}, "relu"]))
''')
    spec = write("plugins: [blocklib.py]\ninput: [1, 8, 8]\nlayers:\n  - {block: conv_relu, channels: 4, repeat: 2}\n")
    res = cli("validate", "--format", "json", spec)
    assert res.code == 1 and "is not trusted" in res.out  # a plugin file runs only once trusted
    res = cli("validate", "--trust", "--format", "json", spec)
    assert res.code == 0, res.out
    doc = json.loads(res.out)["specs"][0]
    assert doc["output_shape"] == [4, 4, 4] and doc["total_params"] == (4 * 9 + 4) + (4 * 4 * 9 + 4)
    res = cli("validate", "--trust",
              write("plugins: [blocklib.py]\ninput: [1, 2, 2]\nlayers:\n  - {block: conv_relu, channels: 4}\n",
                    "b.yaml"))
    assert res.code == 1
    assert "b.yaml:4:5: error: blocks.conv_relu.layers[0] conv2d: kernel 3 x 3 does not fit" in res.out
    assert "(in block 'conv_relu' (from plugin" in res.out and "used at line 4)" in res.out
    assert "conv_relu" in cli("plugins", "-p", str(tmp_path / "blocklib.py")).out


def test_cifar_resnet_trains_resumes_and_exports(cli, tmp_path):
    """ResNet-20 for an epoch on synthetic CIFAR-size data, resumed for a second, exported twice."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from cnnspec.train.trained import load_run

    run = tmp_path / "r20"
    spec = str(ROOT / "specs" / "resnet20_cifar.yaml")
    synth = "data.dataset={type: synthetic, shape: [3, 32, 32], classes: 10, train_size: 64, test_size: 16}"
    res = cli("run", spec, "--quiet", "--output", str(run), "--set", "train.epochs=1", "--set", synth,
              "--set", "data.batch_size=32", "--set", "data.val_split=0", "--set", "train.device=cpu")
    assert res.code == 0, res.err
    res = cli("run", "--resume", str(run), "--quiet", "--set", "train.epochs=2")
    assert res.code == 0, res.err
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    trained = load_run(run)
    assert sum(p.numel() for p in trained.model.parameters()) == 272_474
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        want = trained.model(trained.preprocess(x))
    assert cli("export", str(run), "--format", "torchscript", "-o", str(tmp_path / "m.pt")).code == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        got = torch.jit.load(str(tmp_path / "m.pt"))(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    res = cli("export", str(run), "--format", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert res.code == 0, res.err
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.numpy().argmax(1)).all()
