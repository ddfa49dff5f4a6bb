"""`validate --set ... --resolved` prints the spec that would run, the very file a run folder gets;
summary.json records what ran (versions, device, fast paths)."""

from __future__ import annotations

import json

import yaml
from test_run import small_spec


def test_resolved_is_the_run_folders_spec(cli, write, tmp_path):
    spec = small_spec(write)
    sets = ["--set", "train.epochs=1", "--set", "data.augment=[horizontal_flip]"]
    res = cli("validate", spec, *sets, "--resolved")
    assert res.code == 0, res.text
    printed = yaml.safe_load(res.out)
    assert printed["train"]["epochs"] == 1 and printed["data"]["augment"] == [{"type": "horizontal_flip", "p": 0.5}]
    assert printed["train"]["optimizer"]["dampening"] == 0.0  # defaults filled in
    assert cli("run", spec, *sets, "--quiet", "--output", str(tmp_path / "r")).code == 0
    assert (tmp_path / "r" / "spec.yaml").read_text() == res.out


def test_validate_takes_set_like_run(cli, write):
    spec = small_spec(write)
    res = cli("validate", spec, "--set", "layers.0.kernel_size=30")
    assert res.code == 1 and "(from --set layers.0.kernel_size=30)" in res.out
    res = cli("validate", spec, "--set", "trian.epochs=1")  # a key the file does not have: the --set made it
    assert res.code == 1 and "unknown key 'trian'" in res.out and "(from --set trian.epochs=1)" in res.out, res.out
    res = cli("validate", spec, "--set", "nonsense")
    assert res.code == 2 and "expected KEY.PATH=VALUE" in res.err
    res = cli("validate", spec, "--set", "train.epochs=0", "--format", "json")
    assert res.code == 1 and json.loads(res.out)["specs"][0]["errors"][0]["message"].startswith("train.epochs")


def test_summary_records_versions_device_and_fast_paths(cli, write, tmp_path):
    res = cli("run", small_spec(write), "--quiet", "--output", str(tmp_path / "r"), "--set", "train.epochs=1")
    assert res.code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    import torch
    import torchvision

    import cnnspec

    assert summary["versions"]["torch"] == torch.__version__
    assert summary["versions"]["torchvision"] == torchvision.__version__
    assert summary["versions"]["cnnspec"] == cnnspec.__version__
    assert summary["device"] == "cpu" and "cores" in summary["device_name"]
    assert summary["fast_paths"] == {"channels_last": True, "precision": "fp32", "fused_optimizer": True,
                                     "cuda_graph": False, "compiled": False}
    assert summary["batch_size"] == 16
