"""Data-parallel runs under torchrun: 2 CPU processes with Gloo on a small synthetic dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnspec
from cnnspec.train.distributed import World, shard

PROBE = '''
import hashlib, json, os
from cnnspec.registry.hookspecs import hookimpl

OUT = os.environ["CNNSPEC_PROBE_DIR"]

@hookimpl
def before_training(context):
    if os.environ.get("CNNSPEC_PROBE_FAIL") == str(context.rank):
        raise RuntimeError(f"rank {context.rank} fails on purpose")
    idx, steps = context.epoch_indices()  # what this rank trains on in epoch 1
    with open(f"{OUT}/shard{context.rank}.json", "w") as f:
        json.dump({"world": context.world_size, "indices": idx.tolist(), "steps": steps}, f)

@hookimpl
def after_training(context, summary):
    blob = b"".join(v.detach().cpu().numpy().tobytes() for v in context.model.state_dict().values())
    with open(f"{OUT}/final{context.rank}.json", "w") as f:
        json.dump({"hash": hashlib.sha256(blob).hexdigest(), "final": summary["final"]}, f)
'''

SPEC = """\
name: ddp
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: dropout, p: 0.1}
  - {type: linear, out_features: 3}
data:
  dataset: {type: synthetic, classes: 3, train_size: 240, test_size: 90}
  batch_size: 20
train: {epochs: 2, seed: 3, device: cpu, optimizer: {type: adam, lr: 0.01}}
"""


def torchrun(tmp_path: Path, *args: str, fail_rank: str | None = None, timeout: int = 180):
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNSPEC_PROBE_DIR=str(tmp_path))
    if fail_rank is not None:
        env["CNNSPEC_PROBE_FAIL"] = fail_rank
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cnnspec", "run", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


def test_two_gloo_processes(setup, cli, monkeypatch):
    tmp = setup
    res = torchrun(tmp, "spec.yaml", "--quiet", "-p", str(tmp / "probe.py"))
    assert res.returncode == 0, res.stderr[-3000:]

    shards = [json.loads((tmp / f"shard{r}.json").read_text()) for r in (0, 1)]
    a, b = (set(s["indices"]) for s in shards)
    assert shards[0]["world"] == 2 and shards[0]["steps"] == shards[1]["steps"] == 6
    assert not a & b and a | b == set(range(240))  # disjoint, and together the whole epoch

    finals = [json.loads((tmp / f"final{r}.json").read_text()) for r in (0, 1)]
    assert finals[0]["hash"] == finals[1]["hash"]  # identical weights on both ranks
    timing = {"seconds", "eval_seconds", "samples_per_second", "train_gflops_per_second"}
    same = [{k: v for k, v in f["final"].items() if k not in timing} for f in finals]
    assert same[0] == same[1]  # and identical (reduced) metrics

    (run,) = (p for p in (tmp / "runs").iterdir() if p.name != "latest")  # one run folder, written once
    assert (tmp / "runs" / "latest").resolve() == run.resolve()
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["effective_batch_size"] == 40

    # The reduced test accuracy is that of the final model evaluated in one process.
    spec = cnnspec.load_spec(str(tmp / "spec.yaml"))
    model = cnnspec.build_model(spec).eval()
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    data = spec.dataset.type.load(spec.dataset.params, None, False)
    with torch.no_grad():
        acc = (model(data.test_x).argmax(1) == data.test_y).sum().item() / len(data.test_y)
    assert rows[-1]["test_accuracy"] == acc

    # The distributed checkpoint resumes in a single process (the probe plugin comes along:
    # -p trusted it for one call, so the resume trusts it again with --trust).
    monkeypatch.setenv("CNNSPEC_PROBE_DIR", str(tmp))
    res = cli("run", "--resume", str(run), "--quiet", "--set", "train.epochs=3", "--trust")
    assert res.code == 0, res.err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_failing_rank_ends_the_run(setup):
    res = torchrun(setup, "spec.yaml", "--quiet", "-p", str(setup / "probe.py"), fail_rank="1", timeout=240)
    assert res.returncode != 0
    assert "rank 1 fails on purpose" in res.stderr


@pytest.mark.parametrize("n, world, bs", [(240, 2, 20), (250, 2, 20), (7, 3, 2), (10, 4, 8), (100, 1, 30)])
def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder(n, world, bs):
    perm = torch.randperm(n)
    parts = [shard(perm, World(r, world, r), bs) for r in range(world)]
    steps = {s for _, s in parts}
    assert len(steps) == 1  # every rank runs the same number of steps
    seen = [set(p.tolist()) for p, _ in parts]
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # disjoint
    assert n - len(set().union(*seen)) < max(world * bs, world)  # only the remainder is left out


def test_a_restarted_attempt_agrees_on_a_fresh_store_prefix_despite_stale_keys():
    """torchrun keeps one store for every attempt of a job: what the dead attempt left there
    (its name, its ranks' answers) must not be taken for this attempt's."""
    import threading
    import time

    import torch.distributed as dist

    from cnnspec.train.distributed import agree_on_attempt

    store = dist.HashStore()
    store.set("cnnspec/attempt", "old")  # the earlier attempt's rank 0 ...
    for rank in (1, 2):
        store.set(f"cnnspec/join/{rank}", "old:n")  # ... and what its other ranks said and were told
        store.set(f"cnnspec/go/{rank}", "old:n")
    names: dict[int, str] = {}

    def rank(r: int) -> None:
        names[r] = agree_on_attempt(store, World(r, 3, r), time.monotonic() + 30)

    later = [threading.Thread(target=rank, args=(r,)) for r in (1, 2)]
    for t in later:  # the other ranks come first and read the old name
        t.start()
    time.sleep(0.1)
    rank(0)
    for t in later:
        t.join(30)
    assert names[0] != "old" and names[1] == names[2] == names[0]
