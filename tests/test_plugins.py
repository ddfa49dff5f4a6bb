"""Plugins: entry points, local plugin files, conflicts and failures named, `cnnspec plugins`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from cnnspec.registry import hookspecs
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.manager import PluginError, build_registry, get_plugin_manager
from cnnspec.registry.types import LayerType, NoParams

EXAMPLE = str(ROOT / "specs" / "example_plugin.yaml")

LOCAL_PLUGIN = '''
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import LayerType, NoParams

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
        "index": 1, "type": "channel_scale", "output_shape": [8, 10, 10], "params": 8, "macs": 0,
        "param_bytes": 32, "activation_bytes": 8 * 10 * 10 * 4}
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
    spec = write("plugins: [myplugin.py]\ninput: [1, 4, 4]\n"
                 "layers: [double, flatten, {type: linear, out_features: 2}]\n")
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
    assert (f"{spec}:1:11: error: plugins[0]: plugin 'broken.py' failed to import: "
            "RuntimeError: boom at import") in res.out
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
    assert "'cnnspec.plugins.activations'" in str(e.value)


@pytest.mark.parametrize("module", sorted(__import__("cnnspec.registry.manager").registry.manager.DEFAULT_PLUGINS))
def test_each_built_in_plugin_lists_exactly_the_names_its_module_registers(module):
    import importlib

    from cnnspec.registry.manager import DEFAULT_PLUGINS

    mod = importlib.import_module(module)
    registered = {}
    for hook, kind in hookspecs.REGISTER_HOOKS.items():
        if hasattr(mod, hook):
            got = []
            getattr(mod, hook)(lambda item, got=got: got.append(item.name))
            registered[kind] = sorted(got)
    assert registered == {kind: sorted(names) for kind, names in DEFAULT_PLUGINS[module].items()}


def test_validate_imports_only_the_built_in_modules_the_spec_names():
    code = ("import sys; from cnnspec.spec.load import check_file; "
            "assert check_file(sys.argv[1]).valid; "
            "print(sorted(m for m in sys.modules if m.startswith(('cnnspec.plugins.', 'cnnspec_keras'))))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "mnist_cnn.yaml")],
                         capture_output=True, text=True, check=True).stdout
    # conv2d, relu, maxpool2d, flatten, linear; adam; cross_entropy; mnist: nothing else is imported,
    # and of the Keras plugin (an entry point) only its list of names
    assert out.strip() == str([f"cnnspec.plugins.{m}" for m in
                               ("activations", "layers", "losses", "mnist", "optimizers")] + ["cnnspec_keras"])


LAZY_TYPES = '''
from cnnspec.registry.types import LayerType, NoParams

class Same(LayerType[NoParams]):
    def __init__(self, name):
        self.name = name
    def output_shape(self, p, shape):
        return shape

def register_layers(register):
    for name in NAMES:
        register(Same(name))
'''


class LazyNames:
    """Lists layer names that the module lazy_types_for_test defines."""

    def __init__(self, *names):
        self.names = names

    @hookimpl
    def register_layers(self, register):
        from cnnspec.registry.types import Lazy

        for name in self.names:
            register(Lazy(name, "lazy_types_for_test"))


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """Writes the module LazyNames points at, defining the given names; forgets it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(*names, text=LAZY_TYPES):
        (tmp_path / "lazy_types_for_test.py").write_text(f"NAMES = {names!r}\n" + text)

    yield write
    sys.modules.pop("lazy_types_for_test", None)


def test_a_lazy_type_is_imported_when_first_used(lazy_module):
    lazy_module("twice", "thrice")
    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[LazyNames("twice", "thrice")]))
    assert "lazy_types_for_test" not in sys.modules and "twice" in reg.names("layer")
    assert reg.get("layer", "twice").name == "twice" and "lazy_types_for_test" in sys.modules
    assert reg.get("layer", "thrice").name == "thrice"


def test_a_lazy_plugin_whose_names_and_module_disagree_is_named(lazy_module):
    lazy_module("twice", "once", "once")
    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[LazyNames("twice", "thrice")]))
    with pytest.raises(PluginError) as e:
        reg.get("layer", "twice")
    assert "lazy_types_for_test.register_layers registers 'once' twice; does not register 'thrice'; " \
           "registers 'once', which the plugin does not list" in str(e.value)


def test_a_lazy_type_whose_module_fails_is_a_plugin_error_naming_the_plugin(lazy_module):
    lazy_module(text="raise ImportError('no torch here')\n")
    reg = build_registry(get_plugin_manager(entrypoints=False, extra=[LazyNames("twice")]))
    with pytest.raises(PluginError, match=r"plugin '.*' failed to load layer type 'twice' from "
                                          r"lazy_types_for_test.register_layers: ImportError: no torch here"):
        reg.get("layer", "twice")


def test_a_lazy_type_that_fails_to_load_is_a_located_error_and_other_specs_are_still_checked(
        lazy_module, tmp_path, cli):
    lazy_module(text="raise ImportError('no torch here')\n")
    (tmp_path / "lazy_plugin.py").write_text(
        "from cnnspec.registry.hookspecs import hookimpl\nfrom cnnspec.registry.types import Lazy\n\n"
        "@hookimpl\ndef register_layers(register):\n    register(Lazy('twice', 'lazy_types_for_test'))\n")
    (tmp_path / "bad.yaml").write_text("plugins: [lazy_plugin.py]\ninput: [4]\nlayers:\n  - {type: twice}\n")
    res = cli("validate", "--trust", str(tmp_path / "bad.yaml"), str(ROOT / "specs" / "mnist_cnn.yaml"))
    assert res.code == 1
    assert "bad.yaml:4:12: error: layers[0]: plugin" in res.out and "ImportError: no torch here" in res.out
    assert "total params: 50,186" in res.out  # the second spec was checked


def test_a_plugin_that_raises_while_registering_is_named():
    with pytest.raises(PluginError) as e:
        build_registry(get_plugin_manager(entrypoints=False, extra=[Raises()]))
    assert "raised in register_optimizers: KeyError" in str(e.value)


def test_a_hook_name_typo_is_caught():
    with pytest.raises(PluginError) as e:
        get_plugin_manager(entrypoints=False, extra=[Typo()])
    assert "register_layer" in str(e.value)


def test_entry_point_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    from cnnspec.registry import manager as plugins

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


COMPONENTS_PLUGIN = '''
import json, os
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import DatasetType, LossType, NoParams, SchedulerType

class Halves(DatasetType[NoParams]):  # left half bright = class 0, right half = class 1
    name = "halves"
    def sample_shape(self, p):
        return (1, 4, 4)
    def num_classes(self, p):
        return 2
    def load(self, p, root, download):
        import torch
        from cnnspec.data.splits import Splits
        def make(n):
            y = torch.arange(n) % 2
            x = torch.zeros(n, 1, 4, 4)
            x[y == 0, :, :, :2] = 1.0
            x[y == 1, :, :, 2:] = 1.0
            return x, y
        return Splits(*make(40), *make(10), ["left", "right"])

class CountingLoss(LossType[NoParams]):
    name = "counting_ce"
    def build(self, p):
        import torch
        class Loss(torch.nn.CrossEntropyLoss):
            calls = 0
            def forward(self, out, y):
                Loss.calls += 1
                with open(os.environ["CNNSPEC_LOSS_LOG"], "w") as f:
                    json.dump(Loss.calls, f)
                return super().forward(out, y)
        return Loss()

class Halving(SchedulerType[NoParams]):
    name = "halving"
    def build(self, p, optimizer, epochs, steps_per_epoch):
        import torch
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

@hookimpl
def register_datasets(register):
    register(Halves())

@hookimpl
def register_losses(register):
    register(CountingLoss())

@hookimpl
def register_schedulers(register):
    register(Halving())
'''


def test_plugins_add_datasets_losses_and_schedulers(cli, write, tmp_path, monkeypatch):
    (tmp_path / "components.py").write_text(COMPONENTS_PLUGIN)
    monkeypatch.setenv("CNNSPEC_LOSS_LOG", str(tmp_path / "loss_calls.json"))
    spec = write("plugins: [components.py]\ninput: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\n"
                 "data: {dataset: halves, batch_size: 10}\n"
                 "train: {epochs: 2, device: cpu, optimizer: {type: sgd, lr: 0.5}, loss: counting_ce, "
                 "scheduler: halving}\n")
    res = cli("run", spec, "--trust", "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [0.5, 0.25]  # the plugin's schedule drove the optimizer
    assert rows[-1]["test_accuracy"] == 1.0  # the plugin's data is learnable and was used
    # 4 training steps per epoch, 2 epochs, plus evaluation batches: the plugin's loss ran
    assert json.loads((tmp_path / "loss_calls.json").read_text()) >= 8


AUGMENT_AND_CALLBACK_PLUGIN = '''
import json, os
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import AugmentationType, Callback, CallbackType, NoParams, ShapeError

class Invert(AugmentationType[NoParams]):
    name = "invert"
    def check(self, p, shape):
        if len(shape) != 3:
            raise ShapeError("needs images")
    def build(self, p, shape, num_classes):
        def op(x, y):
            with open(os.environ["CNNSPEC_PLUGIN_LOG"], "a") as f:
                f.write(json.dumps({"augment": list(x.shape)}) + "\\n")
            return 1.0 - x, y
        return op

class Log(Callback):
    def __init__(self):
        self.epochs = 0
    def on_epoch_end(self, context, metrics):
        self.epochs += 1
        with open(os.environ["CNNSPEC_PLUGIN_LOG"], "a") as f:
            f.write(json.dumps({"epoch": metrics["epoch"]}) + "\\n")
        return self.epochs >= 2  # stop after two epochs
    def state_dict(self):
        return {"epochs": self.epochs}
    def load_state_dict(self, state):
        self.epochs = state["epochs"]

class LogType(CallbackType[NoParams]):
    name = "log_epochs"
    def build(self, p):
        return Log()

@hookimpl
def register_augmentations(register):
    register(Invert())

@hookimpl
def register_callbacks(register):
    register(LogType())
'''


def test_plugins_add_augmentations_and_callbacks(cli, write, tmp_path, monkeypatch):
    (tmp_path / "extras.py").write_text(AUGMENT_AND_CALLBACK_PLUGIN)
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("CNNSPEC_PLUGIN_LOG", str(log))
    spec = write("plugins: [extras.py]\ninput: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\n"
                 "data: {dataset: {type: synthetic, shape: [1, 4, 4], classes: 2, train_size: 20, test_size: 4}, "
                 "batch_size: 10, augment: [invert]}\n"
                 "train: {epochs: 5, device: cpu, callbacks: [log_epochs]}\n")
    res = cli("run", spec, "--trust", "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err
    events = [json.loads(ln) for ln in log.read_text().splitlines()]
    batch = {"augment": [10, 1, 4, 4]}
    assert events == [batch] * 2 + [{"epoch": 1}] + [batch] * 2 + [{"epoch": 2}]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "stopped early"
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["callbacks"] == [{"epochs": 2}]
    flat = write("plugins: [extras.py]\ninput: [16]\nlayers: [{type: linear, out_features: 2}]\n"
                 "data: {dataset: {type: synthetic, shape: [1, 4, 4], classes: 2}, augment: [invert]}\n", "flat.yaml")
    res = cli("validate", "--trust", flat)
    assert res.code == 1 and "data.augment[0] invert: needs images" in res.out
