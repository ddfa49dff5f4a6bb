"""Fine-tuning: the example spec from a weights file on a small image folder; freeze, lr groups, unfreeze."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT

import cnnspec
from cnnspec.build.finetune import freeze, param_groups, unfreeze
from cnnspec.spec.load import check_file

SPEC = ROOT / "specs" / "finetune_resnet18.yaml"
FROZEN = ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")


def make_pictures(root, classes: int = 3, train: int = 8, test: int = 3) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=g) * 80 + 60 * c).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


SMALL = ["--set", "input=[3, 32, 32]", "--set", "data.dataset={type: image_folder, size: [32, 32]}",
         "--set", "data.batch_size=8", "--set", "data.val_split=0", "--set", "train.callbacks=[]",
         "--set", "layers.13.out_features=3", "--set", "train.epochs=3", "--quiet"]


@pytest.fixture
def pictures(tmp_path):
    make_pictures(tmp_path / "pictures")
    return ["--set", f"data.root={tmp_path / 'pictures'}"]


def _state(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_fine_tuning_keeps_the_frozen_stem_and_trains_the_rest(cli, tmp_path, pictures):
    res = cli("run", str(SPEC), *SMALL, *pictures, "--output", str(tmp_path / "run"))
    assert res.code == 0, res.err
    start = torch.load(ROOT / "specs" / "resnet18-f37072fd.pth", weights_only=True)
    after = _state(tmp_path / "run")
    names = dict(zip(FROZEN, ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                              "bn1.num_batches_tracked")))
    for key, theirs in names.items():  # the stem, its batchnorm statistics included: bit for bit
        assert torch.equal(after[key], start[theirs]), key
    assert not torch.equal(after["4.0.0.main.0.weight"], start["layer1.0.conv1.weight"])  # the backbone trains
    torch.manual_seed(0)  # the head, initialised fresh as the run did (seed 0), has moved
    fresh = cnnspec.build_model(check_file(str(SPEC), overrides=[*SMALL[1:6:2], "layers.13.out_features=3"]
                                           ).spec)
    assert after["13.weight"].shape == fresh[13].weight.shape == (3, 512)
    assert not torch.equal(after["13.weight"], fresh[13].weight)
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["status"] == "completed"
    spec_yaml = (tmp_path / "run" / "spec.yaml").read_text()
    digest = __import__("hashlib").sha256((ROOT / "specs" / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    assert f"sha256: {digest}" in spec_yaml and str(ROOT / "specs" / "resnet18-f37072fd.pth") in spec_yaml


def test_resume_equals_an_uninterrupted_fine_tuning(cli, tmp_path, pictures, monkeypatch, ctrl_c_on_third_update):
    assert cli("run", str(SPEC), *SMALL, *pictures, "--output", str(tmp_path / "full")).code == 0
    ctrl_c_on_third_update()
    assert cli("run", str(SPEC), *SMALL, *pictures, "--output", str(tmp_path / "cut")).code == 130
    monkeypatch.undo()
    res = cli("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert res.code == 0, res.err
    full, cut = _state(tmp_path / "full"), _state(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_the_table_marks_frozen_layers_and_counts_trainable_parameters(cli):
    res = cli("validate", str(SPEC))
    assert res.code == 0, res.out
    assert "0          conv2d (frozen)" in res.out and "1          batchnorm2d (frozen)" in res.out
    assert "total params: 11,179,077 (trainable 11,169,541, frozen 9,536)" in res.out
    doc = json.loads(cli("validate", "--format", "json", str(SPEC)).out)["specs"][0]
    frozen_bytes = 9_536 * 4
    assert doc["memory"]["grad_bytes"] == doc["memory"]["param_bytes"] - frozen_bytes
    assert doc["memory"]["optimizer_state_bytes"] == doc["memory"]["param_bytes"] - frozen_bytes  # SGD momentum


def test_a_selector_naming_no_layer_is_located(cli, write):
    path = write("input: [1, 4, 4]\nlayers: [flatten, {type: linear, out_features: 2}]\n"
                 "train: {freeze: [5, '1.*', 'x'], lr_multipliers: {'9': 2}}\n")
    out = cli("validate", path).out
    assert f"{path}:3:18: error: train.freeze[0]: layer 5 does not exist: the model has 2 layers (0 to 1)" in out
    assert "train.freeze[2]: 'x' names no layer" in out and "train.lr_multipliers['9']: layer 9" in out
    assert "train.freeze[1]" not in out  # '1.*' is layer 1 and what is inside it


def test_frozen_batchnorm_stays_in_eval_and_unfreeze_restores_it(write):
    spec = cnnspec.load_spec(write("input: [2, 4, 4]\nlayers: [{type: conv2d, out_channels: 2, kernel_size: 1},"
                                   " batchnorm2d, flatten, {type: linear, out_features: 2}]\n"
                                   "train: {freeze: ['0:2'], lr_multipliers: {'-1': 10}}\n"))
    model = cnnspec.build_model(spec)
    freeze(model, spec.finetune)
    model.train()
    assert not model[1].training and model[3].training
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    before = model[1].running_mean.clone()
    model(torch.randn(4, 2, 4, 4) + 3)
    assert torch.equal(model[1].running_mean, before)  # eval mode: statistics not updated
    groups = {g["lr_mult"]: len(g["params"]) for g in param_groups(model, spec.finetune)}
    assert groups == {1.0: 4, 10.0: 2}
    assert unfreeze(model, spec.finetune) == 2
    model.train()
    assert model[1].training and type(model[1]) is torch.nn.BatchNorm2d and model[0].weight.requires_grad


def test_lr_multipliers_scale_each_group(cli, tmp_path, pictures):
    res = cli("run", str(SPEC), *SMALL, *pictures, "--output", str(tmp_path / "run"), "--set", "train.epochs=1",
              "--set", "train.scheduler=null")
    assert res.code == 0, res.err
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    lrs = sorted({g["lr"] for g in ckpt["optimizer"]["param_groups"]})
    assert lrs == pytest.approx([0.001, 0.01])


def test_unfreeze_callback_thaws_after_its_epoch(cli, tmp_path, pictures):
    res = cli("run", str(SPEC), *SMALL, *pictures, "--output", str(tmp_path / "run"), "--set", "train.epochs=2",
              "--set", "train.callbacks=[{type: unfreeze, epoch: 1}]")
    assert res.code == 0, res.err
    start = torch.load(ROOT / "specs" / "resnet18-f37072fd.pth", weights_only=True)
    assert not torch.equal(_state(tmp_path / "run")["0.weight"], start["conv1.weight"])  # trained in epoch 2


def test_unfreeze_with_fused_sgd_and_momentum_trains_on_and_resumes(cli, write, tmp_path):
    # torch's fused SGD fails on a group where some parameters have momentum buffers and the
    # thawed ones not yet: such groups run unfused from the thaw on (build.optim.after_thaw)
    path = write("input: [1, 8, 8]\nlayers: [{type: conv2d, out_channels: 4, kernel_size: 3}, relu, flatten,"
                 " {type: linear, out_features: 10}]\ndata: {dataset: digits, batch_size: 64, limit: 512}\n"
                 "train: {epochs: 3, device: cpu, freeze: [0], optimizer: {type: sgd, lr: 0.05, momentum: 0.9},"
                 " callbacks: [{type: unfreeze, epoch: 1}]}\n")
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cli("run", path, "--quiet", "--no-report", "--output", str(whole)).code == 0
    assert cli("run", path, "--quiet", "--no-report", "--output", str(part), "--set", "train.epochs=2").code == 0
    assert cli("run", "--resume", str(part), "--set", "train.epochs=3", "--quiet", "--no-report").code == 0
    assert (whole / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0] == \
        (part / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0]


def test_the_estimate_counts_the_thawed_layers_when_unfreeze_will_train_them(cli):
    frozen = json.loads(cli("validate", "--format", "json", str(SPEC)).out)["specs"][0]["memory"]
    later = json.loads(cli("validate", "--format", "json", str(SPEC), "--set",
                           "train.callbacks=[{type: unfreeze, epoch: 2}]").out)["specs"][0]["memory"]
    assert frozen["grad_bytes"] == frozen["param_bytes"] - 9_536 * 4
    assert later["grad_bytes"] == later["param_bytes"]  # the most the run will hold


def test_trainable_false_on_a_layer_or_a_block_use_freezes_it(cli, write):
    text = ("input: [1, 8, 8]\nblocks:\n  cb:\n    layers: [{type: conv2d, out_channels: 2, kernel_size: 3}, relu]\n"
            "layers:\n  - {type: conv2d, out_channels: 2, kernel_size: 1, trainable: false}\n"
            "  - {block: cb, trainable: false}\n  - flatten\n  - {type: linear, out_features: 3}\n")
    path = write(text)
    spec = cnnspec.load_spec(path)
    assert spec.finetune.frozen == frozenset({"0", "1", "1.0", "1.1"})
    assert spec.finetune.frozen_params == (2 * 1 + 2) + (2 * 2 * 9 + 2)  # 42
    assert "total params: 261 (trainable 219, frozen 42)" in cli("validate", path).out
    model = cnnspec.build_model(spec)
    freeze(model, spec.finetune)
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, False, True, True]
    assert unfreeze(model, spec.finetune) == 0  # written trainable: false, frozen for good
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, False, True, True]
    resolved = spec.to_dict()["layers"]
    assert resolved[0]["trainable"] is False and resolved[1]["trainable"] is False  # run folders keep it
    bad = write(text.replace("trainable: false}\n  - {block", "trainable: 0}\n  - {block"), "bad.yaml")
    assert f"{bad}:6:64: error: layers[0]: trainable must be true or false, got 0" in cli("validate", bad).out
