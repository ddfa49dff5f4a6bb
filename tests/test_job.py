"""How a torchrun job finds its run folder (train.job), in one process with torchrun's environment
set by hand: its own folder is resumed, another job's is refused with what to do. The real
restarts (torchrun agents, a worker killed mid-epoch) are in test_torchrun_faults.py."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from cnnspec.errors import RunFolderError
from cnnspec.train import job as jobs
from cnnspec.train.checkpoint import resumable_problem
from cnnspec.train.distributed import World
from cnnspec.train.job import Job, current_job, owned_folder
from cnnspec.train.rundir import JOB_FILE, LOCK_FILE, RunDir

SPEC = """\
name: job
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - flatten
  - {type: dropout, p: 0.2}
  - {type: linear, out_features: 3}
data:
  dataset: {type: synthetic, classes: 3, train_size: 120, test_size: 60, noise: 1.0}
  batch_size: 20
train: {epochs: 3, seed: 5, device: cpu, optimizer: {type: adam, lr: 0.01}}
"""

TIMING = {"seconds", "eval_seconds", "samples_per_second", "train_gflops_per_second"}


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in TIMING}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def spec(write):
    return write(SPEC)


@pytest.fixture
def torchrun_job(monkeypatch):
    """Make this process a worker of torchrun job ``job_id`` (restarted ``restart`` times)."""

    def set_job(job_id: str, restart: int = 0) -> None:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", job_id)
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))

    return set_job


def test_the_environment_names_the_job(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert current_job() is None  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: every such job's
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert current_job() == Job(None, 2)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "slurm-1234")
    assert current_job() == Job("slurm-1234", 2)


def test_a_job_resumes_its_own_folder_to_the_numbers_of_an_uninterrupted_run(spec, cli, tmp_path, torchrun_job):
    whole = tmp_path / "whole"
    assert cli("run", spec, "--output", str(whole), "--quiet", "--no-report").code == 0

    torchrun_job("job-1")  # the job stops after epoch 1 (as if its workers were killed in epoch 2) ...
    part = tmp_path / "part"
    assert cli("run", spec, "--output", str(part), "--set", "train.epochs=1", "--quiet", "--no-report").code == 0
    assert json.loads((part / JOB_FILE).read_text()) == {"torchrun_job": "job-1"}

    torchrun_job("job-1", restart=1)  # ... and torchrun starts them again with the same command
    res = cli("run", spec, "--output", str(part), "--no-report")
    assert res.code == 0, res.err
    assert "torchrun job 'job-1': resuming" in res.text
    assert rows(part) == rows(whole)  # dropout included: the random streams came back

    before = (part / "metrics.jsonl").stat().st_mtime_ns
    res = cli("run", spec, "--output", str(part), "--no-report")  # once more: nothing left to do
    assert res.code == 0 and "already finished" in res.text
    assert (part / "metrics.jsonl").stat().st_mtime_ns == before


def test_another_jobs_folder_is_refused_with_what_to_do(spec, cli, tmp_path, torchrun_job):
    out = tmp_path / "run"
    torchrun_job("job-1")
    assert cli("run", spec, "--output", str(out), "--quiet", "--no-report").code == 0
    files = sorted(p.name for p in out.iterdir())

    torchrun_job("job-2")
    res = cli("run", spec, "--output", str(out), "--no-report")
    assert res.code == 2
    (line,) = res.err.strip().splitlines()
    assert "holds the run of torchrun job 'job-1', not of this job ('job-2')" in line
    assert "--rdzv-id=job-1" in line and "another --output" in line

    torchrun_job("none")  # torchrun's default id: no job's own, so never resumed
    res = cli("run", spec, "--output", str(out), "--no-report")
    assert res.code == 2 and "--rdzv-id=job-1 to continue" in res.err and len(res.err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == files  # nothing written


def test_a_plain_run_folder_is_no_jobs(spec, cli, tmp_path, torchrun_job):
    out = tmp_path / "run"
    assert cli("run", spec, "--output", str(out), "--quiet", "--no-report", "--set", "train.epochs=1").code == 0
    torchrun_job("job-3")
    res = cli("run", spec, "--output", str(out), "--no-report")
    assert res.code == 2
    assert "not torchrun job 'job-3''s" in res.err and f"--resume {out}" in res.err
    torchrun_job("none")
    res = cli("run", spec, "--output", str(out), "--no-report")
    assert res.code == 2 and "exists and is not empty" in res.err
    assert "give the job an id of its own: torchrun --rdzv-id=ID" in res.err


def test_without_output_the_job_finds_its_folder_under_runs(spec, cli, tmp_path, torchrun_job, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torchrun_job("job-4")
    assert cli("run", spec, "--quiet", "--no-report", "--set", "train.epochs=1").code == 0
    res = cli("run", spec, "--no-report")
    assert res.code == 0, res.err
    (run,) = (p for p in (tmp_path / "runs").iterdir() if p.name != "latest")  # the same folder, resumed
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]

    torchrun_job("none", restart=1)  # no id of its own: starts again, and says how to resume instead
    res = cli("run", spec, "--quiet", "--no-report")
    assert res.code == 0
    assert "torchrun restarted the workers (restart 1)" in res.err and "--rdzv-id=ID" in res.err
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]) == 2


def test_a_job_killed_before_its_first_checkpoint_starts_again_in_its_folder(spec, cli, tmp_path, torchrun_job):
    out = tmp_path / "run"
    out.mkdir()
    RunDir(out).write_job("job-5")  # what the first attempt left: its folder, no last.pt
    (out / LOCK_FILE).write_text(f"{os.getppid()}\n{socket.gethostname()}\njob-5\n")  # held by the dead attempt
    torchrun_job("job-5", restart=1)
    res = cli("run", spec, "--output", str(out), "--quiet", "--no-report")
    assert res.code == 0, res.err
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]
    assert not (out / LOCK_FILE).exists()


def test_the_lock_of_the_same_job_is_taken_over_and_any_other_live_one_refused(tmp_path):
    run = RunDir(tmp_path)
    lock = tmp_path / LOCK_FILE
    alive = os.getppid()  # a live process that is not this one
    lock.write_text(f"{alive}\n{socket.gethostname()}\njob-6\n")
    run.lock("job-6")  # torchrun ends every worker of a job before it starts them again
    assert lock.read_text().split("\n")[0] == str(os.getpid())
    run.unlock()

    lock.write_text(f"{alive}\n{socket.gethostname()}\njob-6\n")
    with pytest.raises(RunFolderError, match="another cnnspec process"):
        run.lock("job-7")
    lock.write_text(f"{alive}\n")  # a lock of an older cnnspec: the PID only
    with pytest.raises(RunFolderError, match=f"PID {alive}\\)"):
        run.lock()
    lock.write_text("1\nsome-other-host\n\n")  # a process on another node cannot be asked
    with pytest.raises(RunFolderError, match="on some-other-host"):
        run.lock()


def test_a_rank_that_cannot_see_the_checkpoint_says_the_folder_must_be_shared(tmp_path, monkeypatch):
    unseen = tmp_path / "on-node-0-only"
    monkeypatch.setattr(jobs, "broadcast", lambda found, world: (True, str(unseen), True))
    with pytest.raises(RunFolderError, match="rank 1: .*last.pt is not visible on .*shared filesystem"):
        jobs.locate(Job("job-8"), "job", str(unseen), World(1, 2, 0))


def test_owned_folder_picks_the_newest_of_the_jobs_folders(tmp_path):
    for name, job in (("job-20260101-000000", "a"), ("job-20260102-000000", "a"), ("job-20260103-000000", "b"),
                      ("other-20260104-000000", "a")):
        (tmp_path / name).mkdir()
        RunDir(tmp_path / name).write_job(job)
    assert owned_folder(Job("a"), "job", None, str(tmp_path)) == tmp_path / "job-20260102-000000"
    assert owned_folder(Job("c"), "job", None, str(tmp_path)) is None
    assert owned_folder(Job(None), "job", None, str(tmp_path)) is None  # no id: nothing is a job's own
    (tmp_path / "empty").mkdir()
    assert owned_folder(Job("a"), "job", str(tmp_path / "empty")) is None  # made as usual


def test_a_checkpoint_with_malformed_per_process_random_states_is_not_resumable(tmp_path):
    import torch

    state = {"model": {}, "optimizer": {}, "spec": {}, "metrics": [], "seed": 1,
             "position": {"epoch": 1, "step": 0, "gen": torch.Generator().get_state(), "sums": None},
             "rng": {"torch": torch.get_rng_state(), "ranks": [{"torch": "not a tensor"}]}}
    assert "random-number states of the processes" in resumable_problem(state)
    state["rng"]["ranks"] = [{"torch": torch.get_rng_state(), "cuda": None}] * 2
    assert resumable_problem(state) is None
