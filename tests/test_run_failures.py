"""How runs end when something goes wrong, and which checkpoint is "best": each case here was a
defect once (a traceback, a lost --set note, a hook never called, best chosen on test data)."""

from __future__ import annotations

import json

import pytest
import torch
from test_run import plugin, small_spec  # noqa: F401  (plugin is a fixture)

from cnnspec.errors import CnnspecError, ExitCode, SpecError
from cnnspec.registry.hookspecs import hookimpl

PLUGIN_HEAD = """\
import torch
from cnnspec.registry.hookspecs import hookimpl
from cnnspec.registry.types import LayerType, Params, WeightInitParams

"""


def spec_with_layer_plugin(write, tmp_path, source: str, layer: str) -> tuple[str, str]:
    """A spec whose first layer comes from a .py plugin file holding ``source``; (spec, plugin path)."""
    path = tmp_path / "layer_plugin.py"
    path.write_text(PLUGIN_HEAD + source + "\n@hookimpl\ndef register_layers(register):\n    register(LAYER)\n")
    spec = write(
        f"plugins: [layer_plugin.py]\ninput: [1, 4, 4]\nlayers: [{layer}, flatten, {{type: linear, out_features: 2}}]\n"
        "data:\n  dataset: {type: synthetic, shape: [1, 4, 4], classes: 2, train_size: 16, test_size: 4}\n"
        "  batch_size: 8\ntrain: {epochs: 1, device: cpu}\n"
    )
    trust_file(path)
    return spec, str(path)


def trust_file(path) -> None:
    """Trust a plugin file the way `cnnspec trust` does (the test's own store, see conftest)."""
    from cnnspec.registry.trust import add_to_store, file_hash

    add_to_store({str(path.resolve()): file_hash(path)})


def test_every_user_error_is_a_cnnspec_error_with_its_exit_code():
    assert SpecError([]).exit_code == ExitCode.INVALID == 1
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    import cnnspec.errors as errors

    user_errors = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, CnnspecError) for c in user_errors), user_errors


def test_a_layer_plugin_building_no_module_is_one_plugin_line(cli, write, tmp_path):
    spec, path = spec_with_layer_plugin(write, tmp_path, """
class NotAModule(LayerType):
    name = "not_a_module"
    def output_shape(self, p, shape):
        return shape
    def build(self, p, shape):
        return 42
LAYER = NotAModule()
""", "not_a_module")
    assert cli("validate", spec).code == 0
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 2
    assert res.err.strip() == (f"cnnspec: error: layer type 'not_a_module' (from plugin '{path}') built int, "
                               "not a torch.nn.Module")
    assert not (tmp_path / "r").exists()


def test_a_plugin_layer_with_its_own_init_option_builds(cli, write, tmp_path):
    spec, _ = spec_with_layer_plugin(write, tmp_path, """
class OwnInitParams(Params):
    init: str = "plain"  # the plugin's own option, not a torch.nn.init name
class OwnInit(LayerType):
    name = "own_init"
    Params = OwnInitParams
    def output_shape(self, p, shape):
        return shape
    def num_params(self, p, shape):
        return shape[0] * shape[0] + shape[0]
    def build(self, p, shape):
        return torch.nn.Conv2d(shape[0], shape[0], 1)  # has a weight, which cnnspec must leave alone
LAYER = OwnInit()
""", "{type: own_init, init: fancy}")
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err


def test_a_failing_weight_init_is_one_plugin_line(cli, write, tmp_path):
    spec, path = spec_with_layer_plugin(write, tmp_path, """
class VectorWeightParams(WeightInitParams):
    pass
class VectorWeight(LayerType):  # declares init, but its weight is 1-D: xavier cannot fill it
    name = "vector_weight"
    Params = VectorWeightParams
    def output_shape(self, p, shape):
        return shape
    def num_params(self, p, shape):
        return 2 * shape[0]
    def build(self, p, shape):
        return torch.nn.BatchNorm2d(shape[0])
LAYER = VectorWeight()
""", "{type: vector_weight, init: xavier_uniform}")
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 2
    assert res.err.startswith(f"cnnspec: error: layer type 'vector_weight' (from plugin '{path}') failed: ValueError")
    assert len(res.err.strip().splitlines()) == 1


def test_set_notes_survive_into_errors_found_while_setting_up(cli, write, tmp_path):
    spec = write("input: [1, 4, 4]\nlayers: [batchnorm2d, flatten, {type: linear, out_features: 2}]\n"
                 "data:\n  dataset: {type: synthetic, shape: [1, 4, 4], classes: 2, train_size: 8, test_size: 4}\n"
                 "  batch_size: 4\n")
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"), "--set", "data.batch_size=1")
    assert res.code == 1
    assert ":5:15: error: data.batch_size: batch normalisation needs at least 2 samples" in res.err
    assert "(from --set data.batch_size=1)" in res.err  # the spec kept its notes: the file is not re-read


def test_resume_refusal_names_everything_that_may_change(cli, write, tmp_path):
    run = tmp_path / "r"
    assert cli("run", small_spec(write), "--quiet", "--output", str(run), "--set", "train.epochs=1").code == 0
    res = cli("run", "--resume", str(run), "--set", "train.seed=9", "--quiet")
    assert res.code == 2
    assert ("--resume can change only train.epochs, train.device, train.capture, data.root and data.download; "
            "this would change train.seed") in res.err


@pytest.mark.parametrize("failure", ["diverges", "hook raises"])
def test_after_training_runs_however_training_ends(cli, write, tmp_path, plugin, failure):  # noqa: F811
    ended = []

    class Probe:
        @hookimpl
        def after_epoch(self, context, metrics):
            if failure == "hook raises":
                raise RuntimeError("boom")
            for group in context.optimizer.param_groups:
                group["lr"] = 1e30

        @hookimpl
        def after_training(self, context, summary):
            ended.append(summary["status"])

    plugin(Probe())
    res = cli("run", small_spec(write), "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 3
    assert ended == ["diverged" if failure == "diverges" else "failed"]


def test_best_is_chosen_on_validation_only(cli, write, tmp_path):
    with_val = tmp_path / "v"
    assert cli("run", small_spec(write), "--quiet", "--output", str(with_val)).code == 0
    summary = json.loads((with_val / "summary.json").read_text())
    rows = [json.loads(ln) for ln in (with_val / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_accuracy"])  # the first of equal maxima wins
    assert summary["best"] == {"epoch": best["epoch"], "metric": "val_accuracy", "value": best["val_accuracy"]}
    assert torch.load(with_val / "best.pt", weights_only=True)["best"]["epoch"] == best["epoch"]

    no_val = tmp_path / "n"
    res = cli("run", small_spec(write), "--quiet", "--output", str(no_val), "--set", "data.val_split=0")
    assert res.code == 0, res.err
    assert json.loads((no_val / "summary.json").read_text())["best"] is None
    assert not (no_val / "best.pt").exists()  # no choice made on test data
    res = cli("eval", str(no_val), "--format", "json")  # "best" falls back to the last epoch
    assert res.code == 0, res.err
    assert json.loads(res.out)["checkpoint"].endswith("last.pt")
