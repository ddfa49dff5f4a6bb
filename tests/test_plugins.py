"""Plugins: entry points, local plugin files, conflicts and failures named, `cnnspec plugins`."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

from cnnspec import hookspecs
from cnnspec.hookspecs import hookimpl
from cnnspec.plugins import PluginError, build_registry, get_plugin_manager
from cnnspec.registry import LayerType, NoParams
from conftest import ROOT

EXAMPLE = str(ROOT / "specs" / "example_plugin.yaml")

LOCAL_PLUGIN = '''
from cnnspec.hookspecs import hookimpl
from cnnspec.registry import LayerType, NoParams

class Double(LayerType[NoParams]):
    name = "double"
    def output_shape(self, p, shape):
        return shape
    def build(self, p, shape):
        import torch
        class M(torch.nn.Module):
            def forward(self, x):
                return 2 * x
        return M()

@hookimpl
def register_layers(register):
    register(Double())
'''


def test_example_plugin_is_found_through_its_entry_point(cli):
    pm = get_plugin_manager()
    assert pm.sources["example"] == "cnnspec-example 0.1.0"
    reg = build_registry(pm)
    assert reg.owners[("layer", "channel_scale")] == "example"
    assert reg.owners[("optimizer", "signsgd")] == "example"
    assert reg.owners[("dataset", "stripes")] == "example"
    res = cli("plugins")
    assert res.code == 0
    assert "cnnspec-example 0.1.0" in res.out and "channel_scale" in res.out and "signsgd" in res.out
    assert "built-in" in res.out and "conv2d" in res.out


def test_example_plugin_validates_and_trains(cli, tmp_path):
    res = cli("validate", "--format", "json", EXAMPLE)
    entry = json.loads(res.out)["specs"][0]
    assert entry["valid"] and entry["layers"][1] == {
        "index": 1, "type": "channel_scale", "output_shape": [8, 10, 10], "params": 8}
    res = cli("run", EXAMPLE, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] > 0.9  # stripes are easy


def test_entry_points_can_be_switched_off(tmp_path):
    env = dict(os.environ, CNNSPEC_NO_ENTRYPOINTS="1")
    res = subprocess.run([sys.executable, "-m", "cnnspec", "validate", EXAMPLE], capture_output=True,
                         text=True, env=env, cwd=ROOT)
    assert res.returncode == 1
    assert "unknown layer type 'channel_scale'" in res.stdout


def test_local_plugin_file_from_the_spec_and_from_the_command_line(cli, write, tmp_path):
    (tmp_path / "myplugin.py").write_text(LOCAL_PLUGIN)
    spec = write("plugins: [myplugin.py]\ninput: [1, 4, 4]\nlayers: [double, flatten, {type: linear, out_features: 2}]\n")
    assert cli("validate", spec).code == 1  # not trusted yet (tests/test_security.py says more)
    assert cli("validate", "--trust", spec).code == 0
    assert cli("trust", spec).code == 0
    res = cli("validate", spec)
    assert res.code == 0 and "double" in res.out
    assert cli("validate", "-p", str(tmp_path / "myplugin.py"), spec).code == 0  # named twice: fine
    assert cli("validate", "-p", "cnnspec_example", str(ROOT / "specs" / "example_plugin.yaml")).code == 0
    bare = write("input: [1, 4, 4]\nlayers: [double]\n", "bare.yaml")
    assert cli("validate", bare).code == 1
    assert cli("validate", "-p", str(tmp_path / "myplugin.py"), bare).code == 0
    run = write("plugins: [myplugin.py]\ninput: [1, 8, 8]\nlayers: [double, flatten, {type: linear, out_features: 4}]\n"
                "data: {dataset: {type: synthetic, train_size: 64, test_size: 16}, batch_size: 16}\n"
                "train: {epochs: 1, device: cpu}\n", "run.yaml")
    assert cli("run", run, "--quiet", "--output", str(tmp_path / "r")).code == 0
    # the run folder records the plugin with an absolute path, so --resume finds it from anywhere
    assert str(tmp_path / "myplugin.py") in (tmp_path / "r" / "spec.yaml").read_text()
    cut = write("input: [1, 8, 8]\nlayers: [double, flatten, {type: linear, out_features: 4}]\n"
                "data: {dataset: {type: synthetic, train_size: 64, test_size: 16}, batch_size: 16}\n"
                "train: {epochs: 1, device: cpu}\n", "cli.yaml")
    assert cli("run", cut, "-p", str(tmp_path / "myplugin.py"), "--quiet", "--output", str(tmp_path / "c")).code == 0
    res = cli("run", "--resume", str(tmp_path / "c"), "--quiet", "--set", "train.epochs=2")
    assert res.code == 0, res.err


def test_broken_plugins_are_named(cli, write, tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    spec = write("plugins: [broken.py, missing.py]\ninput: [1, 4, 4]\nlayers: [relu]\n")
    res = cli("validate", "--trust", spec)
    assert res.code == 1
    assert f"{spec}:1:11: error: plugins[0]: plugin 'broken.py' failed to import: RuntimeError: boom at import" in res.out
    assert "plugins[1]: plugin file 'missing.py' not found" in res.out
    res = cli("validate", "-p", "no_such_module_xyz", spec)
    assert res.code == 2 and "plugin 'no_such_module_xyz' failed to import: ModuleNotFoundError" in res.err


def test_a_plugin_that_raises_at_build_time_is_named(cli, write, tmp_path):
    (tmp_path / "bad.py").write_text(LOCAL_PLUGIN.replace("return M()", "raise ValueError('cannot build')"))
    spec = write("plugins: [bad.py]\ninput: [1, 8, 8]\nlayers: [double, flatten, {type: linear, out_features: 4}]\n"
                 "data: {dataset: {type: synthetic, train_size: 64, test_size: 16}, batch_size: 16}\n"
                 "train: {epochs: 1, device: cpu}\n")
    res = cli("run", spec, "--trust", "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 2
    assert "layer type 'double' (from plugin" in res.err and "ValueError: cannot build" in res.err


class Relu(LayerType[NoParams]):
    name = "relu"

    def output_shape(self, p, shape):
        return shape


class Clash:
    @hookimpl
    def register_layers(self, register):
        register(Relu())


class Raises:
    @hookimpl
    def register_optimizers(self, register):
        raise KeyError("oops")


class Typo:
    @hookimpl
    def register_layer(self, register):  # no such hook: register_layers
        pass


def test_two_plugins_with_one_name_is_an_error_naming_both():
    with pytest.raises(PluginError) as e:
        build_registry(get_plugin_manager(entrypoints=False, extra=[Clash()]))
    assert "layer type 'relu' is registered by two plugins" in str(e.value)
    assert "'cnnspec.default_plugins.activations'" in str(e.value)


def test_a_plugin_that_raises_while_registering_is_named():
    with pytest.raises(PluginError) as e:
        build_registry(get_plugin_manager(entrypoints=False, extra=[Raises()]))
    assert "raised in register_optimizers: KeyError" in str(e.value)


def test_a_hook_name_typo_is_caught():
    with pytest.raises(PluginError) as e:
        get_plugin_manager(entrypoints=False, extra=[Typo()])
    assert "register_layer" in str(e.value)


def test_every_hook_is_documented():
    readme = (ROOT / "README.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "cnnspec_spec")]
    assert len(hooks) == 8
    for name in hooks:
        assert getattr(hookspecs, name).__doc__, name
        assert name in readme, name


def test_entry_point_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    from cnnspec import plugins

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = plugins.installed_entrypoints()
    assert ("example", "cnnspec_example", "cnnspec-example 0.1.0") in first
    cache = tmp_path / "cnnspec" / "entry-points.json"
    doc = json.loads(cache.read_text())
    # a matching key is trusted (this is what saves the scan) ...
    cache.write_text(json.dumps({**doc, "entry_points": [["fake", "fake_module", "fake 1"]]}))
    assert plugins.installed_entrypoints() == [("fake", "fake_module", "fake 1")]
    # ... a different key (packages changed) or a broken file means a fresh scan
    cache.write_text(json.dumps({"key": "stale", "entry_points": [["fake", "fake_module", "fake 1"]]}))
    assert plugins.installed_entrypoints() == first
    cache.write_text("{not json")
    assert plugins.installed_entrypoints() == first
