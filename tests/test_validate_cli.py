"""`cnnspec validate`: shape tables, JSON, exit codes, and located errors for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SPECS

GOOD = """\
name: t
input: [1, 28, 28]
layers:
  - {type: conv2d, out_channels: 32, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - {type: conv2d, out_channels: 64, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: linear, out_features: 10, init: xavier_uniform}
data: {dataset: mnist, batch_size: 100}
train: {epochs: 15, seed: 777, optimizer: {type: adam, lr: 0.001}}
"""


def lines(res, path):
    return [ln for ln in res.out.splitlines() if ln.startswith(f"{path}:") and ": error: " in ln]


def test_reference_spec_table(cli):
    res = cli("validate", str(ROOT / "specs" / "mnist_cnn.yaml"))
    assert res.code == 0
    assert "total params: 50,186" in res.out
    assert "64 x 7 x 7" in res.out and "3136" in res.out and "32 x 14 x 14" in res.out


def test_json_output(cli, write):
    path = write(GOOD)
    res = cli("validate", "--format", "json", path)
    assert res.code == 0
    doc = json.loads(res.out)
    (entry,) = doc["specs"]
    assert entry["valid"] is True and entry["errors"] == []
    assert entry["input_shape"] == [1, 28, 28] and entry["output_shape"] == [10]
    assert entry["total_params"] == 50186
    assert entry["layers"][0] == {"index": 0, "type": "conv2d", "output_shape": [32, 28, 28], "params": 320,
                                  "macs": 32 * 28 * 28 * 9, "param_bytes": 320 * 4,
                                  "activation_bytes": 32 * 28 * 28 * 4}
    assert [layer["params"] for layer in entry["layers"]] == [320, 0, 0, 18496, 0, 0, 0, 31370]


def test_json_shape_error_lists_layers_up_to_the_bad_one(cli, write):
    path = write(GOOD.replace("{type: linear, out_features: 10", "{type: linear, in_features: 2048, out_features: 10"))
    res = cli("validate", "--format", "json", path)
    assert res.code == 1
    entry = json.loads(res.out)["specs"][0]
    assert entry["valid"] is False
    (err,) = entry["errors"]
    assert (err["line"], err["column"]) == (11, 20)
    assert "in_features=2048 but 3136 features arrive" in err["message"]
    assert len(entry["layers"]) == 7 and entry["output_shape"] is None


def test_typo_suggests_the_key(cli, write):
    path = write(GOOD.replace("kernel_size: 3, padding: 1}\n  - relu\n  - {type: maxpool2d",
                              "kernal_size: 3, padding: 1}\n  - relu\n  - {type: maxpool2d", 1))
    res = cli("validate", path)
    assert res.code == 1
    (line,) = lines(res, path)
    assert line == f"{path}:4:38: error: layers[0] conv2d: unknown key 'kernal_size' (did you mean 'kernel_size'?)"


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


@pytest.mark.parametrize(
    "content, where, message",
    [
        (b"", (1, 1), "the file is empty"),
        (b"# only a comment\n", (1, 1), "the file is empty"),
        (b"input: [1, 2\nlayers: [relu]\n", (2, 7), "YAML syntax"),
        (b"input: [1, 2, 2]\nlayers: !!python/object/apply:os.system ['echo pwned']\n", (2, 9),
         "unsupported YAML tag"),
        (b"input: [1, 2, 2]\nlayers:\n  - !!python/name:os.system relu\n", (3, 5), "unsupported YAML tag"),
        (b"input: [1, 2, 2]\nlayers: [relu]\nname: caf\xe9\n", (3, 10), "not UTF-8"),
        (b"- just\n- a list\n", (1, 1), "a spec is a mapping"),
        (b"input: [1, 2, 2]\ninput: [1, 2, 2]\nlayers: [relu]\n", (2, 1), "duplicate key 'input'"),
        (b"layers: [relu]\n", (1, 1), "missing required key 'input'"),
        (b"input: [1, 2, 2]\nlayers: []\n", (2, 9), "layers: needs at least 1 item, got []"),
    ],
)
def test_bad_files_are_located(cli, write, content, where, message):
    path = write(content)
    res = cli("validate", path)
    assert res.code == 1
    got = lines(res, path)
    assert got and got[0].startswith(f"{path}:{where[0]}:{where[1]}: error: "), res.out
    assert message in got[0]


def test_alias_bomb_is_refused_quickly(cli, write):
    bomb = ["input: [1, 2, 2]", "a0: &a0 [relu, relu, relu, relu, relu, relu, relu, relu, relu, relu]"]
    for i in range(1, 9):
        bomb.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb.append("layers: *a8")
    path = write("\n".join(bomb) + "\n")
    import time

    t = time.perf_counter()
    res = cli("validate", path)
    assert time.perf_counter() - t < 5
    assert res.code == 1
    assert "more than 100000 nodes" in res.out


def test_unreadable_files_exit_2(cli, tmp_path):
    res = cli("validate", str(tmp_path / "missing.yaml"))
    assert res.code == 2 and "no such file" in res.err
    res = cli("validate", str(tmp_path))
    assert res.code == 2 and "is a directory" in res.err


def test_several_files_in_one_call(cli, write):
    good = write(GOOD, "good.yaml")
    bad = write("input: [1, 2, 2]\nlayers: [rellu]\n", "bad.yaml")
    res = cli("validate", good, bad)
    assert res.code == 1
    assert "total params: 50,186" in res.out and "unknown layer type 'rellu'" in res.out
    res = cli("validate", "--format", "json", good, bad)
    assert [s["valid"] for s in json.loads(res.out)["specs"]] == [True, False]


def test_usage_errors_exit_2(cli):
    assert cli().code == 2
    assert cli("validate").code == 2
    assert cli("frobnicate").code == 2
    assert cli("validate", "--format", "xml", "x.yaml").code == 2


def test_every_example_spec_validates(cli):
    assert SPECS
    res = cli("validate", *map(str, SPECS))
    assert res.code == 0, res.out


def test_validate_never_imports_torch(tmp_path):
    """Run validate with a torch that raises on import: it must still work."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch is poisoned')\n")
    # keep any inherited PYTHONPATH (plugins from a work tree) behind the poisoned torch
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(poison.parent), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, "-m", "cnnspec", "validate", *map(str, SPECS)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "total params" in res.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, cnnspec.cli; cnnspec.cli.main(['validate', sys.argv[1]]);"
         " print('torch' in sys.modules)", str(SPECS[0])],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert probe.stdout.strip().endswith("False"), probe.stdout + probe.stderr


def test_merge_keys_work_and_count_toward_the_limit(cli, write):
    path = write("input: [1, 8, 8]\nlayers:\n  - &c {type: conv2d, out_channels: 4, kernel_size: 3}\n"
                 "  - {<<: *c, out_channels: 8}\n")
    res = cli("validate", "--format", "json", path)
    assert res.code == 0, res.out
    assert json.loads(res.out)["specs"][0]["layers"][1]["output_shape"] == [8, 4, 4]
    bad = write("input: [1, 8, 8]\nlayers: [{<<: 5, type: relu}]\n", "bad.yaml")
    res = cli("validate", bad)
    assert res.code == 1 and "'<<' merges mappings only" in res.out
    bomb = ["input: [1, 8, 8]", "a0: &a0 {k0: 1, k1: 2}"]
    bomb += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 21)]
    res = cli("validate", write("\n".join(bomb + ["layers: [{<<: *a20}]"]) + "\n", "bomb.yaml"))
    assert res.code == 1 and "more than 100000 nodes" in res.out and res.out.count("error:") == 1


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


def test_yaml_messages_help(cli, write):
    res = cli("validate", write("input: [1, 8, 8]\nlayers:\n\t- relu\n"))
    assert "YAML does not allow tabs for indentation" in res.out
    res = cli("validate", write("input: [1,8,8]\nlayers:\n  - {type: conv2d, out_channels: 2\n  - relu\n", "b.yaml"))
    assert "which started at line 3, column 5" in res.out


def test_the_program_skips_the_shutdown_garbage_collection_only_after_commands_that_print():
    # main(exiting=True) is what the `cnnspec` program runs; tests call main() in-process, untouched
    code = """
import gc, io, sys, contextlib
from cnnspec.cli import main
spec = sys.argv[1]
with contextlib.redirect_stdout(io.StringIO()):
    counts = [main(["graph", spec, "--format", "mermaid"], exiting=True), gc.get_freeze_count(),
              main(["validate", spec]), gc.get_freeze_count(),
              main(["validate", spec], exiting=True), gc.get_freeze_count() > 1000]
print(counts)
"""
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "mnist_cnn.yaml")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[0, 0, 0, 0, 0, True]"


@pytest.mark.parametrize(("before", "after"), [(None, "__all__"), ("", ""), ("logfire", "logfire")])
def test_the_program_turns_pydantic_plugins_off_unless_the_user_decided(before, after):
    code = ("import os, sys; from cnnspec.cli import entry; sys.argv = ['cnnspec', '--version']\n"
            "try:\n    entry()\nexcept SystemExit:\n    print(repr(os.environ.get('PYDANTIC_DISABLE_PLUGINS')))")
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if before is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = before
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == repr(after)
