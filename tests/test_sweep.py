"""`cnnspec sweep`: the sweep section checked like the spec, impossible trials reported without
training, parallel and distributed workers (SQLite, PostgreSQL), resume after Ctrl-C, seeds.

Trials are real `cnnspec run` child processes on tiny data; each costs a few seconds of
start-up (torch), so the sweeps here are a handful of trials of one or two epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT

optuna = pytest.importorskip("optuna", reason="cnnspec sweep needs the 'sweep' extra (optuna)")

TINY = """\
name: tiny
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: linear, out_features: 3}
data:
  dataset: {type: synthetic, classes: 3, train_size: 120, test_size: 30}
  batch_size: 20
  val_split: 0.25
train:
  epochs: 1
  seed: 1
  device: cpu
  optimizer: {type: sgd, lr: 0.05}
"""

TINY_SWEEP = TINY + """\
sweep:
  trials: %d
  sampler: random
  seed: 3
  space:
    train.optimizer.lr: {log_uniform: [0.001, 0.5]}
    layers.0.out_channels: [2, 4, 8]
"""

# every draw is impossible (a kernel of 11 or more on the 8x8 input padded to 10x10): no training
NEVER_FITS = TINY + """\
sweep:
  trials: 6
  seed: %d
  space:
    layers.0.kernel_size: {int: [11, 40]}
    train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}
"""


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def trial_dirs(folder: Path) -> set[str]:
    return {p.name for p in (folder / "trials").iterdir() if p.is_dir()} if (folder / "trials").exists() else set()


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnspec", "sweep", *args]


# -- the sweep section, checked by validate (no torch, no optuna) ---------------------------------


def test_sweep_section_errors_are_located_with_suggestions(cli, write):
    path = write(TINY + """\
sweep:
  trials: 4
  metrc: val_accuracy
  space:
    train.optimizer.lrr: {log_uniform: [1.0e-4, 1.0e-2]}
    layers.0.out_channels: {uniform: [2, 16]}
    layers.0.kernel_size: [3, big]
    layers.7.p: [0.1, 0.2]
    data.augment: [[], [{type: random_crop, padding: 2}], [{type: random_crop, padding: -1}]]
    layers.4: [{type: linear, out_features: 3}, {type: linaer, out_features: 3}]
    train.epochs: 3
    train.seed: {uniform: [1, 0]}
""")
    res = cli("validate", path)
    assert res.code == 1
    lines = res.out.splitlines()
    expect = [
        ":20:3: error: sweep: unknown key 'metrc' (did you mean 'metric'?)",
        ":22:5: error: sweep.space.train.optimizer.lrr: train.optimizer sgd: unknown key 'lrr' (did you mean 'lr'?)",
        ":23:38: error: sweep.space.layers.0.out_channels: layers[0] conv2d: out_channels: must be an integer",
        ":24:31: error: sweep.space.layers.0.kernel_size: layers[0] conv2d: kernel_size: must be an integer or a list",
        ":25:5: error: sweep.space.layers.7.p: layers has 5 items (0 to 4), no 7",
        ":26:59: error: sweep.space.data.augment: data.augment[0] random_crop: padding: must be >= 0, got -1",
        ":27:49: error: sweep.space.layers.4: layers[4]: unknown layer type 'linaer' (did you mean 'linear'?)",
        ":28:19: error: sweep.space.train.epochs: expected a list of choices or {uniform|log_uniform|int|log_int",
        ":29:27: error: sweep.space.train.seed: low must be below high, got [1, 0]",
    ]
    for want in expect:
        assert any(want in ln for ln in lines), (want, res.out)
    assert lines[-1].endswith(f": {len(expect)} errors"), res.out


def test_valid_sweep_validates_without_torch_or_optuna(write):
    path = write(TINY_SWEEP % 4)
    code = (f"import sys; from cnnspec.cli import main; rc = main(['validate', {path!r}]); "
            "assert rc == 0, rc; bad = [m for m in ('torch', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_impossible_values_are_not_a_sweep_error_and_grid_needs_steps(cli, write):
    ok = write(TINY + "sweep:\n  space:\n    layers.2.kernel_size: [2, 9]\n", "ok.yaml")
    assert cli("validate", ok).code == 0  # 9 cannot fit, but that is one trial's problem
    grid = write(TINY + "sweep:\n  sampler: grid\n  space:\n    train.optimizer.lr: {uniform: [0.01, 0.1]}\n",
                 "grid.yaml")
    res = cli("validate", grid)
    assert res.code == 1 and "the grid sampler needs a list of choices" in res.out
    noval = write(TINY.replace("  val_split: 0.25\n", "") + "sweep:\n  space:\n    train.seed: [1, 2]\n", "nv.yaml")
    res = cli("validate", noval)
    assert res.code == 1 and "sweep.metric: val_accuracy needs a validation split" in res.out


def test_sweep_needs_a_sweep_section(cli, write):
    res = cli("sweep", write(TINY))
    assert res.code == 1 and "no 'sweep' section" in res.err


# -- trials ---------------------------------------------------------------------------------------


def test_quickstart_sweep_reports_impossible_trials_and_best_spec_reproduces(cli, write, tmp_path):
    """The issue's first acceptance test, on the quick-start spec (scikit-learn digits, offline)."""
    text = (ROOT / "specs" / "quickstart.yaml").read_text() + """\
sweep:
  sampler: grid
  metric: val_accuracy
  pruner_startup_trials: 1            # the second trained trial is pruned if worse after an epoch
  space:
    layers.4.kernel_size: [2, 9]        # 9: the pool window is larger than the 8x8 feature map
    layers.6: [{type: dropout, p: 0.25}, identity]   # a whole layer as the value
"""
    spec = write(text, "quickstart_sweep.yaml")
    out = tmp_path / "sweep"
    res = cli("sweep", spec, "--set", "train.epochs=2", "--output", str(out))
    assert res.code == 0, res.text
    doc = results(out)
    rows = {r["trial"]: r for r in doc["trials"]}
    assert sorted(rows) == [0, 1, 2, 3] and doc["counts"]["invalid"] == 2
    trained = []
    for n, r in rows.items():
        if r["params"]["layers.4.kernel_size"] == 9:
            assert r["status"] == "invalid" and r["run_dir"] is None and r["epochs"] == 0
            (err,) = r["errors"]
            # located in the sweep section, where the 9 is written
            line = text.splitlines().index(next(ln for ln in text.splitlines() if "[2, 9]" in ln)) + 1
            assert err.startswith(f"{spec}:{line}:") and ": error: layers[4] maxpool2d: window 9 x 9" in err, err
            assert err in res.out
            assert f"{n:04d}" not in trial_dirs(out)  # nothing was trained
        else:
            lines = (out / "trials" / f"{n:04d}" / "metrics.jsonl").read_text().splitlines()
            metrics = [json.loads(ln) for ln in lines]
            trained.append((n, r, [m["val_accuracy"] for m in metrics]))
    (n1, first, acc1), (n2, second, acc2) = sorted(trained, key=lambda t: t[0])
    assert first["status"] == "complete" and first["epochs"] == 2 and first["value"] == max(acc1)
    if acc2[0] < acc1[0]:  # the median rule after one epoch: worse than the only finished trial
        assert second["status"] == "pruned" and second["last_value"] == acc2[0], (acc1, acc2, second)
        assert doc["counts"]["pruned"] == 1
    else:
        assert second["status"] == "complete" and second["value"] == max(acc2), (acc1, acc2, second)
    assert [first["params"]["layers.6"], second["params"]["layers.6"]] in (
        [{"type": "dropout", "p": 0.25}, "identity"], ["identity", {"type": "dropout", "p": 0.25}])
    assert (out / "results.csv").read_text().count("\n") == 5 and (out / "sweep.png").stat().st_size > 1000
    best = doc["best"]
    assert best["value"] == max(r["value"] for r in rows.values() if r["value"] is not None)
    again = tmp_path / "again"
    res = cli("run", str(out / "best.yaml"), "--quiet", "--output", str(again))
    assert res.code == 0, res.text
    metrics = [json.loads(ln) for ln in (again / "metrics.jsonl").read_text().splitlines()]
    assert max(m["val_accuracy"] for m in metrics) == best["value"]


def test_sqlite_sweep_with_two_jobs_runs_every_trial_once_in_parallel(cli, write, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # two "GPUs": each child gets one (CPU trials here)
    out = tmp_path / "sweep"
    # results.json's times have milliseconds: warm trials of the tiny spec take about half a second
    res = cli("sweep", write(TINY_SWEEP % 4), "-j", "2", "--output", str(out), "--quiet")
    assert res.code == 0, res.text
    assert res.out.strip() == str(out)
    doc = results(out)
    assert [r["trial"] for r in doc["trials"]] == [0, 1, 2, 3]
    assert all(r["status"] == "complete" and r["epochs"] == 1 for r in doc["trials"])
    assert trial_dirs(out) == {"0000", "0001", "0002", "0003"}
    assert len(list((out / "trials").glob("*.log"))) == 4  # four children started, no more
    spans = sorted((datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"])) for r in doc["trials"])
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # two trained at the same time
    assert {r["gpu"] for r in doc["trials"][:2]} == {"5", "7"}
    study = optuna.load_study(study_name=doc["study"], storage=f"sqlite:///{out / 'sweep.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4


def test_two_workers_share_one_postgresql_study(tmp_path, write):
    url = os.environ.get("CNNSPEC_TEST_POSTGRES")
    if not url:
        pytest.skip("set CNNSPEC_TEST_POSTGRES=postgresql://USER@HOST:PORT/DB (.ci/run starts a local server)")
    spec = write(TINY_SWEEP % 4)
    study = f"test-{uuid.uuid4().hex[:10]}"
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [subprocess.Popen(sweep_cmd(spec, "--storage", url, "--study", study, "--output", str(o), "--quiet"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, out + err
    mine = [trial_dirs(o) for o in outs]
    assert mine[0] and mine[1] and not mine[0] & mine[1], mine  # both worked, never on the same trial
    assert mine[0] | mine[1] == {"0000", "0001", "0002", "0003"}
    for o in outs:  # each worker's results cover the whole sweep
        doc = results(o)
        assert [r["trial"] for r in doc["trials"]] == [0, 1, 2, 3]
        assert all(r["status"] == "complete" for r in doc["trials"])
        assert sum(1 for _ in (o / "trials").glob("*.log")) == len(trial_dirs(o))
    trials = optuna.load_study(study_name=study, storage=url).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.number for t in done) == [0, 1, 2, 3]
    assert all(t.user_attrs.get("cnnspec_status") == "surplus" for t in trials if t not in done)


def test_ctrl_c_then_the_same_command_continues_without_repeating(tmp_path, write):
    spec = write(TINY_SWEEP % 2)
    out = tmp_path / "sweep"
    # long enough trials that Ctrl-C lands in trial 1's training, not after it
    cmd = sweep_cmd(spec, "--set", "train.epochs=25", "--output", str(out), "--quiet")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # trial 0 finished and trial 1 is training: interrupt now
        if (out / "trials" / "0001" / "metrics.jsonl").exists():
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    first = (out / "trials" / "0000" / "metrics.jsonl").read_bytes()
    first_mtime = (out / "trials" / "0000" / "metrics.jsonl").stat().st_mtime_ns
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to continue" in err
    doc = results(out)
    assert [(r["trial"], r["status"]) for r in doc["trials"]] == [(0, "complete")]
    assert trial_dirs(out) == {"0000"}  # the stopped trial left nothing behind

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = results(out)
    assert [(r["trial"], r["status"]) for r in doc["trials"]] == [(0, "complete"), (2, "complete")]
    assert (out / "trials" / "0000" / "metrics.jsonl").read_bytes() == first  # not trained again
    assert (out / "trials" / "0000" / "metrics.jsonl").stat().st_mtime_ns == first_mtime
    trials = optuna.load_study(study_name=doc["study"], storage=f"sqlite:///{out / 'sweep.db'}").trials
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["cnnspec_status"] == "interrupted"
    assert trials[2].params == trials[1].params  # the stopped trial's values were run again
    assert trials[0].params != trials[1].params


@pytest.mark.parametrize("output", [True, False])
def test_ctrl_c_during_start_up_leaves_a_folder_the_same_command_continues(cli, write, tmp_path, monkeypatch,
                                                                          output):
    # Ctrl-C lands while the first worker is still making the study (after its first attribute)
    real = optuna.study.Study.set_user_attr
    calls = []

    def interrupted(self, key, value):
        calls.append(key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self, key, value)

    monkeypatch.chdir(tmp_path)
    spec = write(NEVER_FITS % 4)
    args = ["--output", str(tmp_path / "s")] if output else []
    monkeypatch.setattr(optuna.study.Study, "set_user_attr", interrupted)
    res = cli("sweep", spec, *args, "--quiet")
    assert res.code == 130, res.text
    monkeypatch.setattr(optuna.study.Study, "set_user_attr", real)
    folders = [tmp_path / "s"] if output else list((tmp_path / "runs").glob("tiny-sweep-*"))
    assert len(folders) == 1 and folders[0].is_dir()

    res = cli("sweep", spec, *args)
    assert res.code == 0, res.text
    assert "continuing sweep" in res.out
    if not output:  # it continued that folder, and made no other
        assert list((tmp_path / "runs").glob("tiny-sweep-*")) == folders
    doc = results(folders[0])
    assert doc["counts"]["invalid"] == 6
    assert json.loads((folders[0] / "sweep.json").read_text())["status"] == "finished"


def test_a_fixed_seed_draws_the_same_trials(cli, write, tmp_path):
    def draw(seed: int, name: str) -> list[dict]:
        out = tmp_path / name
        res = cli("sweep", write(NEVER_FITS % seed, f"{name}.yaml"), "--output", str(out))
        assert res.code == 0, res.text
        doc = results(out)
        assert doc["counts"]["invalid"] == 6 and not trial_dirs(out)  # all impossible: nothing trained
        assert not (out / "best.yaml").exists() and "no trial completed" in res.out
        return [r["params"] for r in doc["trials"]]

    a, b, c = draw(5, "a"), draw(5, "b"), draw(6, "c")
    assert a == b
    assert a != c
    assert len({json.dumps(p, sort_keys=True) for p in a}) == 6


def test_output_folder_of_another_sweep_is_refused(cli, write, tmp_path):
    out = tmp_path / "s"
    assert cli("sweep", write(NEVER_FITS % 1, "one.yaml"), "--output", str(out), "--quiet").code == 0
    res = cli("sweep", write(NEVER_FITS % 2, "two.yaml"), "--output", str(out))
    assert res.code == 2 and "holds another sweep" in res.err
    res = cli("sweep", write(NEVER_FITS % 1, "one.yaml"), "--output", str(out))  # the same: already done
    assert res.code == 0 and "continuing sweep (6 of 6 trials done)" in res.out


def test_trials_over_the_spec_limits_are_invalid_and_never_train(cli, write, tmp_path):
    # 64 or 128 channels cost more parameters than the budget; 2 channels fit
    spec = write(TINY.replace("name: tiny\n", "name: tiny\nlimits: {params: 2000}\n") + """\
sweep:
  trials: 3
  sampler: grid
  space:
    layers.0.out_channels: [64, 128, 2]
""")
    out = tmp_path / "s"
    res = cli("sweep", spec, "--output", str(out), "--quiet")
    assert res.code == 0, res.text
    doc = results(out)
    by_width = {r["params"]["layers.0.out_channels"]: r for r in doc["trials"]}
    for width in (64, 128):
        assert by_width[width]["status"] == "invalid" and by_width[width]["run_dir"] is None
        assert "limits.params" in json.dumps(by_width[width])  # the located error names the budget
    assert by_width[2]["status"] != "invalid"
    assert len(trial_dirs(out)) == 1  # only the trial within the budget trained


def test_a_trial_refused_for_memory_is_invalid_and_the_sweep_goes_on(cli, write, tmp_path):
    # a batch of a billion 8x8 images needs terabytes: `cnnspec run` refuses it (exit 2) before
    # training; that is this trial's values, not the sweep's end, so the batch of 20 still trains
    spec = write(TINY + """\
sweep:
  trials: 2
  sampler: grid
  space:
    data.batch_size: [1000000000, 20]
""")
    out = tmp_path / "s"
    res = cli("sweep", spec, "--output", str(out), "--quiet")
    assert res.code == 0, res.text
    doc = results(out)
    by_batch = {r["params"]["data.batch_size"]: r for r in doc["trials"]}
    assert by_batch[1000000000]["status"] == "invalid"
    assert "training needs ~" in json.dumps(by_batch[1000000000]) and "but only" in json.dumps(by_batch[1000000000])
    assert by_batch[20]["status"] == "complete"
    csv = (out / "results.csv").read_text()
    assert "training needs ~" in csv and "invalid" in csv
    # the same command again: the sweep is done, not refused
    again = cli("sweep", spec, "--output", str(out), "--quiet")
    assert again.code == 0, again.text


# -- the parts: typed options, the process pool --------------------------------------------------


def test_cli_hands_the_sweep_frozen_typed_options(cli, monkeypatch):
    import dataclasses

    from cnnspec.sweep import sweeper
    from cnnspec.sweep.options import SweepOptions

    got = []
    monkeypatch.setattr(sweeper, "sweep_command", got.append)
    assert cli("sweep", "s.yaml").code == 0
    assert got.pop() == SweepOptions(spec="s.yaml")  # argparse's defaults are the dataclass's
    res = cli("sweep", "s.yaml", "--set", "a=1", "--set", "b=2", "-j", "3", "--storage", "sqlite:///x.db",
              "--study", "st", "--device", "cpu", "--output", "out", "--quiet", "-p", "m1", "-p", "m2.py")
    assert res.code == 0, res.text
    (options,) = got
    assert options == SweepOptions(spec="s.yaml", overrides=("a=1", "b=2"), jobs=3, storage="sqlite:///x.db",
                                   study="st", device="cpu", output="out", quiet=True, plugins=("m1", "m2.py"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.jobs = 1  # type: ignore[misc]


def test_pool_places_trials_in_free_slots_and_reads_only_new_epochs(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import yaml

    from cnnspec.sweep.options import SweepOptions
    from cnnspec.sweep.pool import Job, Pool

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pool = Pool(SweepOptions(spec=str(tmp_path / "s.yaml"), jobs=2), tmp_path / "sw")
    (tmp_path / "sw").mkdir()
    place = pool.place(3, {"name": "t", "plugins": ["mine.py", "some.module"]}, "# trial 3\n")
    assert (place.slot, place.gpu, place.env["CUDA_VISIBLE_DEVICES"]) == (0, "5", "5")
    assert place.env["OMP_NUM_THREADS"] == str(max(1, pool.cores // 2))
    assert place.spec_file.read_text().startswith("# trial 3\n")
    # a plugin file is made absolute (the trial's spec lives elsewhere); a module name is left alone
    assert yaml.safe_load(place.spec_file.read_text())["plugins"] == [str(tmp_path / "mine.py"), "some.module"]
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    job = pool.jobs[3] = Job(SimpleNamespace(number=3), {}, place.slot, place.run_dir, place.log, proc, 0.0)
    assert pool.place(4, {"name": "t"}, "").gpu == "7" and pool.full() is False  # slot 0 is taken
    place.run_dir.mkdir()
    metrics = place.run_dir / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "val_accuracy": 0.5}\n{"epoch": 2, "val_accuracy": 0.6}\n')
    assert [r["epoch"] for r in pool.new_rows(job)] == [1, 2]
    job.epochs = 2
    assert pool.new_rows(job) == []  # unchanged file: not read again
    with metrics.open("a") as f:
        f.write('{"epoch": 3, "val_accuracy": 0.7}\n')
    os.utime(metrics, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [r["epoch"] for r in pool.new_rows(job)] == [3]
    place.log.write_text("loading\nspec.yaml:3:5: error: bad\ncnnspec: error: worse\nbye\n")
    assert pool.errors(job) == ["spec.yaml:3:5: error: bad", "cnnspec: error: worse"]
    (place.run_dir / "summary.json").write_text('{"seed": 42}')
    out = pool.release(job)
    assert 3 not in pool.jobs and len(out.rows) == 3 and out.summary == {"seed": 42} and out.spec is None


def test_warm_trials_give_what_fresh_processes_give(cli, write, tmp_path, monkeypatch):
    """Trials forked from the warm server (the default) and fresh `python -m cnnspec run` children
    (CNNSPEC_SWEEP_COLD=1) train the same trials to the same metrics."""
    from cnnspec.sweep import warm

    if not warm.available():
        pytest.skip("no forkserver on this platform: every trial is a fresh process")
    spec = write(TINY_SWEEP % 3)
    found = {}
    for kind in ("warm", "cold"):
        monkeypatch.setenv("CNNSPEC_SWEEP_COLD", "1" if kind == "cold" else "0")
        res = cli("sweep", spec, "--output", str(tmp_path / kind), "--quiet")
        assert res.code == 0, res.text
        found[kind] = [(r["params"], r["value"]) for r in results(tmp_path / kind)["trials"]]
    assert found["warm"] == found["cold"] and len(found["warm"]) == 3 and all(v for _, v in found["warm"])


def test_a_warm_process_behaves_like_the_command(tmp_path, write):
    from cnnspec.cli import main
    from cnnspec.sweep.warm import WarmProcess, available

    if not available():
        pytest.skip("no forkserver on this platform")
    good, bad = write(TINY, "good.yaml"), write("input: [1, 8, 8]\nlayers: [nope]\n", "bad.yaml")
    for spec, code, text in ((good, 0, "total params"), (bad, 1, "unknown layer type 'nope'")):
        log = tmp_path / f"{code}.log"
        proc = WarmProcess(main, ["validate", spec], log, dict(os.environ))
        assert proc.wait(timeout=120) == code and text in log.read_text()
    sleeper = WarmProcess(main, ["run", good, "--output", str(tmp_path / "r"), "--quiet", "--set", "train.epochs=1000"],
                          tmp_path / "run.log", dict(os.environ))
    deadline = time.monotonic() + 120
    while not (tmp_path / "r" / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sleeper.send_signal(signal.SIGINT)  # as the sweep stops a trial: it saves and ends with 130
    assert sleeper.wait(timeout=120) == 130 and (tmp_path / "r" / "last.pt").exists()
