"""`cnnspec import`: Keras models (made by bench/make_keras_fixtures.py) as specs with the same outputs.

No TensorFlow here: each fixture's `.npz` holds a channels-last input, Keras' predictions for it
and Keras' parameter counts.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from cnnspec import build_model, load_spec
from cnnspec.build.weights import load_weights
from cnnspec.spec.tensors import plan

pytest.importorskip("h5py")  # the keras-import extra
pytest.importorskip("safetensors")

KERAS = ROOT / "tests" / "fixtures" / "keras"

CASES = [  # (model file, --weights file, npz)
    ("seq_cnn.keras", None, "seq_cnn"),
    ("seq_cnn.h5", None, "seq_cnn"),
    ("functional_cnn.keras", None, "functional_cnn"),
    ("functional_cnn.json", "functional_cnn.weights.h5", "functional_cnn"),
    ("residual.keras", None, "residual"),
    ("inception.keras", None, "inception"),
    ("inception.h5", None, "inception"),
    ("mobilenet.keras", None, "mobilenet"),
    ("digits.keras", None, "digits"),
    ("normalized.keras", None, "normalized"),
]


def _import(cli, tmp_path: Path, model: str, weights: str | None = None, name: str = "imported.yaml") -> Path:
    spec = tmp_path / name
    extra = ["--weights", str(KERAS / weights)] if weights else []
    res = cli("import", str(KERAS / model), "-o", str(spec), *extra)
    assert res.code == 0, res.text
    assert res.out.startswith(f"wrote {spec} and {spec.with_suffix('.safetensors')}")
    return spec


def _predict(spec_path: Path, x_nhwc: np.ndarray) -> np.ndarray:
    spec = load_spec(str(spec_path))
    model = build_model(spec)
    assert spec.weights is not None
    load_weights(model, spec.weights)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()).numpy()


@pytest.mark.parametrize(("model", "weights", "npz"), CASES, ids=[c[0] for c in CASES])
def test_imported_model_equals_keras(cli, tmp_path, model, weights, npz):
    spec = _import(cli, tmp_path, model, weights)
    ref = np.load(KERAS / f"{npz}.npz")

    res = cli("validate", str(spec), "--format", "json")
    assert res.code == 0, res.text
    doc = json.loads(res.out)["specs"][0]
    assert doc["valid"] and doc["errors"] == []
    # validate counts what Keras calls trainable; Keras' total also counts BatchNormalization's
    # moving mean and variance and Normalization's mean and variance, which torch keeps as buffers,
    # and Normalization's count (one number, of no use to torch)
    assert doc["total_params"] == int(ref["trainable"])
    entries = plan(load_spec(str(spec)).trace)
    stats = sum(e.numel for e in entries if e.key.endswith(("running_mean", "running_var")))
    counts = spec.read_text().count("(Normalization)")
    assert doc["total_params"] + stats + counts == int(ref["params"])

    got = _predict(spec, ref["x"])
    assert got.shape == ref["y"].shape
    np.testing.assert_allclose(got, ref["y"], atol=1e-4, rtol=0)


def test_a_keras_file_stored_as_keras_writes_it_imports_the_same(cli, tmp_path):
    """The fixtures' zips are deflated (bench/make_keras_fixtures.py); Keras itself stores the members."""
    from safetensors.numpy import load_file

    stored = tmp_path / "stored" / "mobilenet.keras"
    stored.parent.mkdir()
    with zipfile.ZipFile(KERAS / "mobilenet.keras") as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as z:
        assert {i.compress_type for i in src.infolist()} == {zipfile.ZIP_DEFLATED}
        for info in src.infolist():
            z.writestr(info.filename, src.read(info))
    a = _import(cli, tmp_path, "mobilenet.keras", name="a.yaml")
    res = cli("import", str(stored), "-o", str(tmp_path / "b.yaml"))
    assert res.code == 0, res.text
    assert a.read_text().replace("a.safetensors", "b.safetensors") == (tmp_path / "b.yaml").read_text()
    want, got = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)


def test_spec_keeps_keras_names_and_vocabulary(cli, tmp_path):
    text = _import(cli, tmp_path, "mobilenet.keras").read_text()
    assert "input: [3, 16, 16]   # Keras: [16, 16, 3]" in text
    assert "- {type: DepthwiseConv2D, kernel_size: 3, strides: 2, padding: same, depth_multiplier: 2}   # dw2" in text
    assert "- type: gate   # se_gate (Multiply)" in text
    assert "# sep, depthwise part (SeparableConv2D)" in text and "# sep, pointwise part (SeparableConv2D)" in text
    assert "weights:\n  file: imported.safetensors" in text and "mapping: cnnspec" in text


def test_normalization_is_a_frozen_batchnorm_that_keeps_keras_statistics_in_training(cli, tmp_path):
    """Normalization computes with its adapted statistics in training too: a frozen BatchNormalization
    (eval mode, no scale or shift), so a fine-tuning run neither learns nor moves them."""
    from cnnspec.build.finetune import freeze

    path = _import(cli, tmp_path, "normalized.keras")
    assert "- {type: BatchNormalization, center: false, scale: false, epsilon: 1e-14, trainable: false}   " \
           "# norm (Normalization)" in path.read_text()
    spec = load_spec(str(path))
    assert spec.weights is not None
    model = build_model(spec)
    load_weights(model, spec.weights)
    freeze(model, spec.finetune)  # as cnnspec run does
    model.train()
    norms = [model[0], model[6]]  # norm on the channels, flat_norm on the flat features
    before = [m.running_var.clone() for m in norms]
    ref = np.load(KERAS / "normalized.npz")
    x = torch.from_numpy(ref["x"]).permute(0, 3, 1, 2).contiguous()
    assert torch.allclose(model[0](x), (x - model[0].running_mean[:, None, None])
                          / model[0].running_var[:, None, None].sqrt(), atol=1e-5)
    model(x)
    assert [m.training for m in norms] == [False, False] and list(model[0].parameters()) == []
    assert all(torch.equal(m.running_var, b) for m, b in zip(norms, before))
    assert model[5].training  # flat_bn, a BatchNormalization of Keras' own, trains as usual


def test_residual_and_inception_become_branch_blocks(cli, tmp_path):
    residual = load_spec(str(_import(cli, tmp_path, "residual.keras", name="r.yaml")))
    adds = [r for r in residual.trace.rows if r.type == "Add"]
    assert len(adds) == 2 and [len(r.children) for r in adds] == [2, 2]
    assert adds[0].children[1].children == ()  # a_add: [main path, the input itself]
    inception = load_spec(str(_import(cli, tmp_path, "inception.keras", name="i.yaml")))
    concat = next(r for r in inception.trace.rows if r.type == "Concatenate")
    assert [len(b.children) for b in concat.children] == [1, 2, 2, 2]
    assert concat.output_shape == (12, 10, 10)


def test_unsupported_layers_are_listed_and_nothing_is_written(cli, tmp_path):
    res = cli("import", str(KERAS / "unsupported.json"), "-o", str(tmp_path / "u.yaml"))
    assert res.code == 2
    assert res.err.splitlines() == [
        f"cnnspec: error: {KERAS / 'unsupported.json'}: 2 layers cannot be imported (nothing written):",
        "  upsample (UpSampling2D)",
        "  norm (LayerNormalization)",
    ]
    assert list(tmp_path.iterdir()) == []


def test_normalization_other_than_adapted_over_the_last_axis_is_refused(cli, tmp_path):
    config = json.loads(zipfile.ZipFile(KERAS / "normalized.keras").read("config.json"))
    layers = {item["name"]: item["config"] for item in config["config"]["layers"]}
    layers["norm"]["axis"] = [1, 2]  # a mean per pixel
    layers["flat_norm"]["invert"] = True
    model = tmp_path / "m.json"
    model.write_text(json.dumps(config))
    res = cli("import", str(model), "-o", str(tmp_path / "m.yaml"))
    assert res.code == 2
    assert res.err.splitlines()[1:] == ["  norm (Normalization): axis [1, 2] (only the last axis, -1)",
                                        "  flat_norm (Normalization): invert=True (only the normalisation itself)"]
    layers["norm"]["axis"], layers["flat_norm"]["invert"] = [-1], False
    layers["norm"].update(mean=[0.5, 0.5, 0.5], variance=[0.25, 0.25, 0.25])
    model.write_text(json.dumps(config))
    res = cli("import", str(model), "-o", str(tmp_path / "m.yaml"))
    assert res.code == 2 and res.err.splitlines()[1:] == [
        "  norm (Normalization): mean and variance given in the config (only an adapted layer, its statistics "
        "as weights)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_graph_nesting_cannot_express_names_the_layer(cli, tmp_path):
    res = cli("import", str(KERAS / "tangled.json"), "-o", str(tmp_path / "t.yaml"))
    assert res.code == 2
    assert "layer 'conv' (Conv2D): its output feeds branches of different merges" in res.err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(cli, tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text("mine\n")
    res = cli("import", str(KERAS / "seq_cnn.keras"), "-o", str(spec))
    assert res.code == 2 and "exists; choose another -o, or --force" in res.err
    assert spec.read_text() == "mine\n" and not spec.with_suffix(".safetensors").exists()
    assert cli("import", str(KERAS / "seq_cnn.keras"), "-o", str(spec), "--force").code == 0
    assert spec.read_text().startswith("# Imported by `cnnspec import` from seq_cnn.keras")


def test_json_without_weights_is_the_architecture_only(cli, tmp_path):
    spec = tmp_path / "arch.yaml"
    res = cli("import", str(KERAS / "functional_cnn.json"), "-o", str(spec))
    assert res.code == 0 and "no weights: architecture only" in res.out
    assert "weights:" not in spec.read_text() and sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml"]
    assert cli("validate", str(spec)).code == 0


def test_a_weights_file_alone_is_refused(cli, tmp_path):
    res = cli("import", str(KERAS / "functional_cnn.weights.h5"), "-o", str(tmp_path / "w.yaml"))
    assert res.code == 2 and "an HDF5 file without a model config: a weights file?" in res.err
    res = cli("import", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "w.yaml"))
    assert res.code == 2 and "no such file" in res.err
    assert list(tmp_path.iterdir()) == []


def test_round_trip_fine_tune_and_export_onnx(cli, tmp_path):
    """Import, fine-tune one epoch with `cnnspec run`, export ONNX: onnxruntime equals the trained model."""
    ort = pytest.importorskip("onnxruntime")
    from cnnspec.train.trained import load_run

    spec = _import(cli, tmp_path, "digits.keras")
    with spec.open("a") as f:
        f.write("data: {dataset: digits, batch_size: 32}\ntrain: {epochs: 1, seed: 0, device: cpu}\n")
    run = tmp_path / "run"
    res = cli("run", str(spec), "--quiet", "--output", str(run))
    assert res.code == 0, res.text
    res = cli("export", str(run), "--format", "onnx", "--output", str(tmp_path / "m.onnx"))
    assert res.code == 0, res.text
    trained = load_run(run)
    x = torch.rand(5, 1, 8, 8)
    want = trained.model(trained.preprocess(x)).detach().numpy()
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # it trained from Keras' weights: the first layer moved, but not far from them
    start = load_spec(str(spec))
    keras_model = build_model(start)
    assert start.weights is not None
    load_weights(keras_model, start.weights)
    before, after = keras_model.state_dict()["0.weight"], trained.model.state_dict()["0.weight"]
    assert not torch.equal(before, after) and (before - after).abs().max() < 0.5
