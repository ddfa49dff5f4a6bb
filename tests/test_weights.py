"""weights: a spec's weights file checked statically at the layer's line, and loaded exactly as checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from conftest import ROOT

import cnnspec
from cnnspec.build.weights import load_weights
from cnnspec.errors import CheckpointError

SPEC = """\
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false}
  - batchnorm2d
  - relu
  - flatten
  - {type: linear, out_features: 3}
weights: {file: w.pth, mapping: %s}
"""


def _model(write, mapping: str = "cnnspec") -> tuple[str, torch.nn.Module]:
    """The spec's path, and a model built from it without its weights section (to save files from)."""
    torch.manual_seed(0)
    return write(SPEC % mapping), cnnspec.build_model(cnnspec.loads_spec((SPEC % mapping).split("weights:")[0]))


def _save(tmp_path, state, name: str = "w.pth") -> None:
    torch.save(state, tmp_path / name)


def test_a_file_that_fits_is_loaded_tensor_for_tensor(cli, write, tmp_path):
    path, model = _model(write)
    _save(tmp_path, model.state_dict())
    res = cli("validate", path)
    assert res.code == 0, res.out
    assert "weights: 8 tensors from w.pth" in res.out
    spec = cnnspec.load_spec(path)
    built = cnnspec.build_model(spec)
    load_weights(built, spec.weights)
    for (k, a), (k2, b) in zip(built.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def _errors(cli, path: str) -> list[str]:
    res = cli("validate", path)
    assert res.code == 1, res.out
    return [ln for ln in res.out.splitlines() if ": error: " in ln]


def test_a_wrong_shape_is_an_error_at_the_layers_line_with_both_shapes(cli, write, tmp_path):
    path, model = _model(write)
    state = model.state_dict()
    state["4.weight"] = torch.zeros(7, 256)
    _save(tmp_path, state)
    assert _errors(cli, path) == [f"{path}:7:5: error: layers[4] linear: the file's '4.weight' is 7 x 256 but "
                                  "the layer's '4.weight' is 3 x 256; to initialise this layer fresh instead, "
                                  "name it in weights.skip"]


def test_skip_initialises_a_layer_fresh(cli, write, tmp_path):
    path, model = _model(write)
    state = model.state_dict()
    state["4.weight"], state["4.bias"] = torch.zeros(7, 256), torch.zeros(7)
    _save(tmp_path, state)
    path = write((SPEC % "cnnspec").replace("mapping: cnnspec", "mapping: cnnspec, skip: [-1]"))
    res = cli("validate", path)
    assert res.code == 0, res.out
    assert "weights: 6 tensors from w.pth" in res.out and "initialised fresh: 4" in res.out


def test_a_missing_tensor_is_an_error_at_its_layer(cli, write, tmp_path):
    path, model = _model(write)
    state = model.state_dict()
    del state["1.running_var"]
    _save(tmp_path, state)
    assert _errors(cli, path) == [f"{path}:4:5: error: layers[1] batchnorm2d: the weights file has no tensor "
                                  "'1.running_var' (4); skip the layer to initialise it fresh (weights.skip)"]


def test_extra_tensors_are_a_warning_and_the_spec_stays_valid(cli, write, tmp_path):
    path, model = _model(write)
    _save(tmp_path, {**model.state_dict(), "head.weight": torch.zeros(2), "head.bias": torch.zeros(2)})
    res = cli("validate", path)
    assert res.code == 0, res.out
    assert f"{path}:8:17: warning: weights.file: 2 tensors in w.pth are not used: head.weight, head.bias" in res.out
    doc = json.loads(cli("validate", "--format", "json", path).out)["specs"][0]
    assert doc["valid"] and doc["warnings"][0]["message"].startswith("weights.file: 2 tensors")
    assert doc["weights"]["loaded"] == 8 and doc["weights"]["unused"] == ["head.weight", "head.bias"]


def test_a_truncated_file_is_an_error_at_the_file(cli, write, tmp_path):
    path, model = _model(write)
    _save(tmp_path, model.state_dict())
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(data[: len(data) // 2])
    (err,) = _errors(cli, path)
    assert err.startswith(f"{path}:8:17: error: weights.file: w.pth: ") and "truncated" in err


def test_a_pickle_that_is_not_a_state_dict_runs_nothing(cli, write, tmp_path):
    path, _ = _model(write)
    marker = tmp_path / "ran"
    # a zip torch.load would accept with weights_only=False, whose pickle calls os.system
    payload = (b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little")
               + f"touch {marker}".encode() + b"q\x01\x85q\x02Rq\x03.")
    with zipfile.ZipFile(tmp_path / "w.pth", "w") as z:
        z.writestr("w/data.pkl", payload)
        z.writestr("w/version", "3\n")
    (err,) = _errors(cli, path)
    assert "os.system" in err and not marker.exists()
    _save(tmp_path, {"epoch": 3})
    (err,) = _errors(cli, path)
    assert "weights.file: w.pth:" in err and ("not a state dict" in err or "not a tensor" in err)


def test_order_mappings_align_by_position_and_tolerate_a_missing_counter(cli, write, tmp_path):
    path, model = _model(write, "torchvision")
    renamed = {f"features.{i}.{k.split('.')[-1]}": v for i, (k, v) in enumerate(model.state_dict().items())
               if not k.endswith("num_batches_tracked")}
    _save(tmp_path, renamed)
    res = cli("validate", path)
    assert res.code == 0, res.out
    path = write(SPEC % "position")
    (err,) = _errors(cli, path)
    assert "weights.mapping: position aligns them in order; the file has 7, the model needs 8" in err


def test_safetensors(cli, write, tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    path, model = _model(write)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    path = write((SPEC % "cnnspec").replace("w.pth", "w.safetensors"))
    assert cli("validate", path).code == 0
    spec = cnnspec.load_spec(path)
    built = cnnspec.build_model(spec)
    load_weights(built, spec.weights)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), model.state_dict().values()))


def test_a_file_changed_after_the_check_is_refused(write, tmp_path):
    path, model = _model(write)
    _save(tmp_path, model.state_dict())
    spec = cnnspec.load_spec(path)
    _save(tmp_path, {k: v + 1 for k, v in model.state_dict().items()})
    with pytest.raises(CheckpointError, match="changed after it was checked"):
        load_weights(cnnspec.build_model(spec), spec.weights)


@pytest.mark.parametrize("case", ["good", "shape", "missing", "extra", "truncated", "not-a-state-dict"])
def test_validate_checks_the_file_without_importing_torch(write, tmp_path, case):
    path, model = _model(write)
    state = model.state_dict()
    if case == "shape":
        state["0.weight"] = torch.zeros(4, 1, 3, 2)
    elif case == "missing":
        del state["1.running_var"]
    elif case == "extra":
        state["head.weight"] = torch.zeros(2)
    _save(tmp_path, {"x": 1} if case == "not-a-state-dict" else state)
    if case == "truncated":
        (tmp_path / "w.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:-100])
    code = ("import sys; from cnnspec.cli import main; "
            f"rc = main(['validate', {path!r}]); print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == (0 if case in ("good", "extra") else 1), res.stdout + res.stderr
    assert "TORCH False" in res.stdout
    # each problem is one located line: an error, or a warning for tensors nothing takes
    located = [ln for ln in res.stdout.splitlines() if ln.startswith(f"{path}:")]
    expected = {"good": [], "extra": [": warning: "]}.get(case, [": error: "])
    assert [kind for ln in located for kind in (": error: ", ": warning: ") if kind in ln] == expected, res.stdout


def test_a_missing_file_says_where_it_looked(cli, write, tmp_path):
    path = write(SPEC % "cnnspec")
    (err,) = _errors(cli, path)
    assert err == (f"{path}:8:17: error: weights.file: w.pth not found (looked at {tmp_path / 'w.pth'}; a relative "
                   "path is relative to the spec's folder)")
