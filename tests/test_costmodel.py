"""Cost model: validate's MACs equal FlopCounterMode's forward FLOPs / 2; memory columns and totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SPECS

import cnnspec
from cnnspec.registry.manager import default_registry

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def forward_macs(module, x) -> int:
    """FlopCounterMode's forward FLOPs of ``module`` on ``x`` (one sample), halved."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def assert_macs_match(spec, batch: int = 1) -> None:
    model = cnnspec.build_model(spec).eval()
    t = spec.trace
    assert t.total_macs is not None
    assert t.total_macs == sum(r.macs for r in t.rows)
    x = torch.randn(batch, *t.input_shape)
    assert forward_macs(model, x) == batch * t.total_macs
    with torch.no_grad():  # layer by layer, every top-level row exactly
        for module, row in zip(model, t.rows):
            assert forward_macs(module, x) == batch * row.macs, (module, row)
            x = module(x)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_macs_equal_flop_counter(path: Path) -> None:
    assert_macs_match(cnnspec.load_spec(str(path)))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_kept_memory_equals_what_autograd_keeps(path: Path) -> None:
    from autograd_memory import assert_kept_exact

    spec = cnnspec.load_spec(str(path))
    assert_kept_exact(cnnspec.build_model(spec), spec)


def test_unknown_rule_shows_question_mark_and_incomplete_total(cli, write) -> None:
    from cnnspec.registry.types import LayerType, Registry

    class NoRule(LayerType):
        name = "norule"

        def output_shape(self, p, shape):
            return shape

    reg: Registry = default_registry()
    spec = cnnspec.loads_spec("input: [4]\nlayers:\n  - norule\n  - {type: linear, out_features: 3}\n",
                              "x.yaml", _with(reg, NoRule()))
    t = spec.trace
    assert t.rows[0].macs is None and t.rows[1].macs == 12
    assert t.total_macs is None and t.known_macs == 12


def _with(reg, layer):
    import copy

    reg = copy.copy(reg)
    reg.entries = {k: dict(v) for k, v in reg.entries.items()}
    reg.owners = dict(reg.owners)
    reg.add("layer", layer, "test")
    return reg


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


# -- training memory estimate ---------------------------------------------------------------------

MEM_SPEC = ("input: [1, 8, 8]\nlayers:\n  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n"
            "  - relu\n  - flatten\n  - {type: linear, out_features: 3}\n"
            "data:\n  dataset: {type: synthetic, classes: 3, train_size: 64, test_size: 16}\n  batch_size: 16\n"
            "train:\n  epochs: 1\n  device: cpu\n")


@pytest.mark.parametrize("optimizer, states", [
    ("adam", 2), ("adamw", 2), ("{type: adam, amsgrad: true}", 3), ("sgd", 0),
    ("{type: sgd, momentum: 0.9}", 1), ("rmsprop", 1), ("{type: rmsprop, momentum: 0.9, centered: true}", 3),
    ("adagrad", 1),
])
def test_memory_estimate_counts_weights_grads_state_and_activations(optimizer, states) -> None:
    from cnnspec.spec.cost import spec_estimate

    spec = cnnspec.loads_spec(MEM_SPEC + f"  optimizer: {optimizer}\n", "m.yaml")
    params = 4 * 9 + 4 + 256 * 3 + 3
    m = spec_estimate(spec)
    # relu keeps its output (which linear keeps too, flattened); the peak is at relu's backward:
    # that output plus the gradients of relu's output and input
    acts = 3 * 256 * 4
    assert (m.params, m.grads, m.optimizer_state) == (4 * params, 4 * params, 4 * params * states)
    assert m.activations == 16 * acts and m.input == 16 * 64 * 4 and m.batch_size == 16
    assert m.step_total == 4 * params * (2 + states) + 16 * acts + 16 * 256
    # the synthetic set is held in memory whole: 64 + 16 samples of 1 x 8 x 8 float32 and an int64 label
    assert m.data is not None and m.data.kind == "resident" and m.data.bytes == 80 * (256 + 8)
    assert m.total == m.step_total + 80 * (256 + 8)
    assert spec_estimate(spec, 1000).activations == 1000 * acts


def _augmented(augment: str) -> str:
    return MEM_SPEC.replace("  batch_size: 16\n", f"  batch_size: 16\n  augment: {augment}\n")


@pytest.mark.parametrize("augment, per_sample", [
    # the padded copy 1 x 16 x 16, the rows kept 1 x 8 x 16, the crop 1 x 8 x 8 (fp32)
    ("[{type: random_crop, padding: 4}]", 4 * (16 * 16 + 8 * 16 + 8 * 8)),
    ("[{type: random_crop, padding: 0}]", 0),  # the op hands the batch back as it is
    ("[mixup]", 4 * (3 * 64 + 5 * 3)),  # three images and five label rows of 3 classes
    ("[cutmix]", 4 * (2 * 64 + 5 * 3)),
    ("[random_resized_crop]", 4 * (2 * 64 + 64)),  # the sampling grid (x, y per output pixel) and the output
    ("[horizontal_flip]", 0),  # an augmentation that declares nothing costs nothing
    ("[mixup, {type: random_crop, padding: 4}]", 4 * (16 * 16 + 8 * 16 + 8 * 8)),  # one at a time: the largest
])
def test_memory_estimate_counts_augmentation_buffers(augment, per_sample) -> None:
    from cnnspec.spec.cost import spec_estimate

    plain = spec_estimate(cnnspec.loads_spec(MEM_SPEC, "m.yaml"))
    m = spec_estimate(cnnspec.loads_spec(_augmented(augment), "m.yaml"))
    assert m.augment == 16 * per_sample and plain.augment == 0
    assert m.total == plain.total + 16 * per_sample
    assert m.to_json()["augment_bytes"] == m.augment
    assert spec_estimate(cnnspec.loads_spec(_augmented(augment), "m.yaml"), 1000).augment == 1000 * per_sample


def test_random_crop_padding_alone_can_make_a_run_too_big(cli, write, tmp_path, monkeypatch) -> None:
    import cnnspec.train.host
    from cnnspec.spec.cost import spec_estimate

    # padding 8 on an 8 x 8 input: the padded batch is 9 times the input, more than the model's activations
    path = write(_augmented("[{type: random_crop, padding: 8}]"))
    plain = spec_estimate(cnnspec.loads_spec(MEM_SPEC, "m.yaml")).total
    monkeypatch.setattr(cnnspec.train.host, "available_memory", lambda device: plain + 1000)
    r = cli("run", path, "--output", str(tmp_path / "a"))
    assert r.code == 2 and "training needs ~" in r.err and "most: data.augment[0] random_crop" in r.err, r.err
    assert not (tmp_path / "a").exists()
    r = cli("validate", path)
    assert r.code == 0 and "augmentation " in r.out and "data.augment[0] random_crop" in r.out, r.text


def test_validate_shows_memory_and_batch_size_overrides(cli, write) -> None:
    path = write(MEM_SPEC)
    r = cli("validate", path)
    assert r.code == 0 and "training memory at batch 16:" in r.out and "most: " in r.out and ", #1 relu" in r.out
    doc = json.loads(cli("validate", "--format", "json", "--batch-size", "1000", path).out)["specs"][0]
    assert doc["memory"]["batch_size"] == 1000
    assert doc["memory"]["activation_bytes"] == 1000 * 256 * 3 * 4
    assert doc["memory"]["total_bytes"] == sum(doc["memory"][k] for k in (
        "param_bytes", "grad_bytes", "optimizer_state_bytes", "activation_bytes", "input_bytes", "data_bytes"))
    assert cli("validate", "--batch-size", "0", path).code == 2


def test_run_start_up_line_gives_macs_and_memory(cli, write, tmp_path) -> None:
    path = write(MEM_SPEC)
    r = cli("run", path, "--output", str(tmp_path / "run"))
    assert r.code == 0, r.text
    text = r.text  # run's lines never wrap
    assert "params, 3.1K MACs/sample, ~" in text and "estimated training memory, on cpu" in text
    assert "64 training samples (20.0 KiB in memory)" in text  # with the 16 test samples, 1 x 8 x 8 float32


# -- the dataset's share: the whole set when held in memory, a few batches when streamed -----------

IMAGES = """input: [3, 32, 32]
layers: [flatten, {type: linear, out_features: 2}]
data: {dataset: {type: image_folder, size: [32, 32]IN_MEMORY}, batch_size: 50}
"""


@pytest.mark.parametrize("dataset, held, data_bytes", [
    # MNIST is read whole and moved to the training device: 70,000 images of 1 x 28 x 28 float32 + labels
    ("mnist", "resident", 70_000 * (28 * 28 * 4 + 8)),
    ("cifar10", "resident", 60_000 * (3 * 32 * 32 * 4 + 8)),
    ("digits", "resident", 1_797 * (8 * 8 * 4 + 8)),
])
def test_a_dataset_held_in_memory_counts_whole(cli, write, dataset, held, data_bytes) -> None:
    from cnnspec.spec.cost import spec_estimate

    shape = {"mnist": "[1, 28, 28]", "cifar10": "[3, 32, 32]", "digits": "[1, 8, 8]"}[dataset]
    text = f"input: {shape}\nlayers: [flatten, {{type: linear, out_features: 10}}]\ndata: {{dataset: {dataset}}}\n"
    m = spec_estimate(cnnspec.loads_spec(text, "m.yaml"))
    assert m.data is not None and (m.data.kind, m.data.bytes) == (held, data_bytes)
    assert m.total == m.step_total + data_bytes
    limited = spec_estimate(cnnspec.loads_spec(text.replace("}\n", ", limit: 100}\n"), "m.yaml"))
    assert limited.data is not None and limited.data.bytes == 200 * data_bytes // (70_000 if dataset == "mnist"
                                                                                  else 60_000 if dataset == "cifar10"
                                                                                  else 1_797)
    r = cli("validate", write(text))
    assert r.code == 0 and ", data in memory " in r.out, r.out
    doc = json.loads(cli("validate", "--format", "json", write(text)).out)["specs"][0]["memory"]
    assert doc["data_held"] == "resident" and doc["data_bytes"] == data_bytes


def test_a_streamed_image_folder_counts_a_few_batches(cli, write) -> None:
    from cnnspec.spec.cost import STREAM_AHEAD, spec_estimate

    streamed = spec_estimate(cnnspec.loads_spec(IMAGES.replace("IN_MEMORY", ""), "m.yaml"))
    assert streamed.data is not None and streamed.data.kind == "streamed"
    assert streamed.data.bytes == STREAM_AHEAD * 50 * 3 * 32 * 32 * 4  # the batches read ahead, whatever the set
    off = spec_estimate(cnnspec.loads_spec(IMAGES.replace("IN_MEMORY", ", in_memory: false"), "m.yaml"))
    assert off.data == streamed.data
    r = cli("validate", write(IMAGES.replace("IN_MEMORY", "")))
    assert r.code == 0 and ", streamed data 1.2 MiB)" in r.out, r.out
    held = spec_estimate(cnnspec.loads_spec(IMAGES.replace("IN_MEMORY", ", in_memory: true"), "m.yaml"))
    assert held.data is not None and held.data.kind == "resident" and held.data.bytes is None  # known once read
    r = cli("validate", write(IMAGES.replace("IN_MEMORY", ", in_memory: true")))
    assert r.code == 0 and ", data in memory (size known once read))" in r.out, r.out


def test_the_refusal_counts_a_resident_set_and_not_a_streamed_one(cli, write, tmp_path, monkeypatch) -> None:
    """MNIST's 219 MB held in memory makes a run refused that the same model streaming would start."""
    import cnnspec.train.host
    from cnnspec.spec.cost import spec_estimate

    text = "input: [1, 28, 28]\nlayers: [flatten, {type: linear, out_features: 10}]\ndata: {dataset: mnist}\n"
    m = spec_estimate(cnnspec.loads_spec(text, "m.yaml"))
    monkeypatch.setattr(cnnspec.train.host, "available_memory", lambda device: m.step_total + 10**6)
    r = cli("run", write(text), "--output", str(tmp_path / "a"))
    assert r.code == 2 and "training needs ~210.2 MiB" in r.err and "most: data in memory 209.9 MiB" in r.err
    assert "held in memory whole: train on a subset (data.limit)" in r.err and not (tmp_path / "a").exists()
    import torch

    from cnnspec.train.runner import check_fits

    streamed = cnnspec.loads_spec(IMAGES.replace("[3, 32, 32]", "[1, 28, 28]").replace("size: [32, 32]",
                                  "size: [28, 28], channels: 1").replace("IN_MEMORY", ""), "s.yaml")
    assert spec_estimate(streamed).data_bytes == 2 * 50 * 28 * 28 * 4  # however many pictures the folder has
    check_fits(streamed, torch.device("cpu"))  # the same model, the set streamed: it starts


def test_an_image_set_asked_to_be_held_that_cannot_fit_is_refused(tmp_path, monkeypatch) -> None:
    import torch
    from PIL import Image

    from cnnspec.data.splits import prepare_data
    from cnnspec.errors import ResourceError
    from cnnspec.spec.cost import spec_estimate

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    spec = cnnspec.loads_spec(IMAGES.replace("IN_MEMORY", ", in_memory: true").replace(
        "batch_size: 50", f"batch_size: 2, root: {tmp_path}"), "s.yaml")
    cpu = torch.device("cpu")
    with pytest.raises(ResourceError, match=r"s.yaml: training needs ~144.0 KiB more for the images held in memory "
                       r"\(data.dataset.in_memory: true; float32\) but only 1000 B is free beside the training "
                       r"estimate \(unset in_memory"):
        prepare_data(spec, cpu, budget=1000, refuse=True)
    held = prepare_data(spec, cpu, budget=10**9, refuse=True)
    assert not held.streamed and held.held(2).kind == "resident"
    assert held.held(2).bytes == 12 * (3 * 32 * 32 * 4 + 8)
    stream_spec = cnnspec.loads_spec(IMAGES.replace("IN_MEMORY", "").replace(
        "batch_size: 50", f"batch_size: 2, root: {tmp_path}"), "s.yaml")
    streamed = prepare_data(stream_spec, cpu, budget=0, refuse=True)
    # at run time as validate said: the batches read ahead
    assert streamed.streamed and streamed.held(2) == spec_estimate(stream_spec).data


# -- limits ---------------------------------------------------------------------------------------

LIMITED = """input: [3, 64, 64]
limits:
  params: 100K
  macs: 5M
  memory: 1MiB
layers:
  - {type: conv2d, out_channels: 16, kernel_size: 3}
  - relu
  - {type: residual, layers: [{type: conv2d, out_channels: 16, kernel_size: 3, padding: 1}]}
  - flatten
  - {type: linear, out_features: 10}
"""


def test_limits_are_located_at_the_limit_and_the_crossing_layer(cli, write) -> None:
    r = cli("validate", write(LIMITED))
    assert r.code == 1
    lines = r.out.splitlines()
    assert any(":3:11: error: limits.params: the model needs 617,818 parameters" in ln and "layers[4] linear" in ln
               for ln in lines), r.out
    assert any(":11:5: error: layers[4] linear: reaches 617,818 parameters here, over limits.params" in ln
               for ln in lines), r.out
    assert any(":4:9: error: limits.macs:" in ln for ln in lines)
    assert any(":9:31: error: layers[2].layers[0] conv2d: reaches" in ln and "limits.macs" in ln for ln in lines)
    assert any(":5:11: error: limits.memory:" in ln for ln in lines)
    assert any(":7:5: error: layers[0] conv2d:" in ln and "limits.memory" in ln for ln in lines)


def test_limits_within_budget_and_units(cli, write) -> None:
    from cnnspec.spec.cost import parse_amount

    assert parse_amount("2GiB", True) == 2 * 2**30 and parse_amount("500MB", True) == 500 * 10**6
    assert parse_amount("1.5G", False) == 1_500_000_000 and parse_amount(3e9, False) == 3 * 10**9
    with pytest.raises(ValueError):
        parse_amount("2GiB", False)
    ok = LIMITED.replace("100K", "1M").replace("5M", "12M").replace("1MiB", "100MiB")
    assert cli("validate", write(ok)).code == 0
    bad = cli("validate", write(LIMITED.replace("100K", "lots")))
    assert bad.code == 1 and ":3:11: error: limits.params" in bad.out


def test_a_limit_crossed_by_less_than_the_rounding_shows_exact_numbers(cli, write) -> None:
    import cnnspec

    need = cnnspec.loads_spec(LIMITED.replace("100K", "1M").replace("5M", "12M").replace("1MiB", "100MiB"),
                              "x.yaml").trace.total_params  # 617,818: "617.8K" either way
    r = cli("validate", write(LIMITED.replace("100K", str(need - 10))))
    assert r.code == 1
    assert f"limits.params: the model needs 617,818 parameters, over the limit of {need - 10:,} (" in r.out
    assert "over limits.params (617,808)" in r.out, r.out


# -- resource bombs: refused before anything is allocated -----------------------------------------

def _bomb(input_: str, layers: str, shape: str, batch: int = 16) -> str:
    return (f"input: {input_}\nlayers:\n{layers}"
            f"data:\n  dataset: {{type: synthetic, shape: {shape}, classes: 3, train_size: 64, test_size: 16}}\n"
            f"  batch_size: {batch}\ntrain:\n  epochs: 1\n  device: cpu\n")


BOMBS = {
    "linear_2e9_outputs": _bomb("[1, 2, 2]", "  - flatten\n  - {type: linear, out_features: 2000000000}\n"
                                "  - {type: linear, out_features: 3}\n", "[1, 2, 2]"),
    "conv_1e6_channels": _bomb("[3, 32, 32]", "  - {type: conv2d, out_channels: 1000000, kernel_size: 3}\n"
                               "  - flatten\n  - {type: linear, out_features: 3}\n", "[3, 32, 32]"),
    "input_1x100000x100000": _bomb("[1, 100000, 100000]", "  - {type: adaptiveavgpool2d, output_size: 1}\n"
                                   "  - flatten\n  - {type: linear, out_features: 3}\n", "[1, 100000, 100000]"),
    "batch_size_1e9": _bomb("[1, 8, 8]", "  - flatten\n  - {type: linear, out_features: 3}\n", "[1, 8, 8]",
                            batch=1_000_000_000),
}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a run gets as far as building the model or loading data."""
    import cnnspec.train.distributed
    import cnnspec.train.runner

    def refuse(*a, **k):
        raise AssertionError("the run went on to allocate")

    monkeypatch.setattr(cnnspec.train.runner, "_train", refuse)
    monkeypatch.setattr(cnnspec.train.distributed, "init", refuse)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_resource_bomb_is_refused_over_the_device(cli, write, tmp_path, no_training, name) -> None:
    path = write(BOMBS[name])
    assert cli("validate", path).code == 0  # valid, just too big for this machine
    r = cli("run", path, "--output", str(tmp_path / "run"))
    assert r.code == 2, r.text
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnspec: error: ") and "training needs ~" in lines[0], r.err
    assert "available RAM" in lines[0] and "most: " in lines[0] and ", #" in lines[0] and "--force" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_resource_bomb_over_a_limit_is_a_located_error(cli, write, tmp_path, no_training, name) -> None:
    path = write(BOMBS[name].replace("layers:\n", "limits: {memory: 1GiB}\nlayers:\n", 1))
    for args in (("validate", path), ("run", path, "--output", str(tmp_path / "run"))):
        r = cli(*args)
        assert r.code == 1, r.text
        assert "limits.memory: the model needs" in r.text and "over limits.memory" in r.text


def test_device_check_uses_free_memory_and_force_overrides(cli, write, tmp_path, monkeypatch) -> None:
    import cnnspec.train.host

    path = write(MEM_SPEC)
    monkeypatch.setattr(cnnspec.train.host, "available_memory", lambda device: 1000)
    r = cli("run", path, "--output", str(tmp_path / "a"))
    assert r.code == 2 and "but only 1000 B is available RAM" in r.err
    r = cli("run", path, "--force", "--output", str(tmp_path / "b"))
    assert r.code == 0, r.text


def test_run_records_the_training_flop_rate(cli, write, tmp_path) -> None:
    r = cli("run", write(MEM_SPEC), "--output", str(tmp_path / "run"))
    assert r.code == 0, r.text
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    spec = cnnspec.loads_spec(MEM_SPEC, "m.yaml")
    expect = 6 * spec.trace.total_macs * row["samples_per_second"] / 1e9
    assert row["train_gflops_per_second"] == pytest.approx(expect)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["macs_per_sample"] == spec.trace.total_macs
    assert summary["train_flops_per_sample"] == 6 * spec.trace.total_macs
    assert summary["train_gflops_per_second"] > 0
