"""Extending a finished run with --resume: schedules planned over the run's length refuse, others continue."""

from __future__ import annotations

import json

from conftest import ROOT

QUICK = str(ROOT / "specs" / "quickstart.yaml")


def test_a_cosine_run_is_not_stretched_silently(cli, tmp_path):
    run = tmp_path / "r"
    assert cli("run", QUICK, "--quiet", "--output", str(run), "--set", "train.epochs=2",
               "--set", "train.scheduler=cosine").code == 0
    res = cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet")
    assert res.code == 2
    assert "the cosine schedule was planned over 2 epochs and cannot be stretched mid-run" in res.err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # nothing trained, nothing written


def test_a_step_schedule_extends_and_a_finished_run_says_how(cli, tmp_path):
    run = tmp_path / "r"
    args = ["--set", "train.scheduler={type: step, step_size: 1, gamma: 0.5}"]
    assert cli("run", QUICK, "--quiet", "--output", str(run), "--set", "train.epochs=2", *args).code == 0
    res = cli("run", "--resume", str(run))
    assert res.code == 0 and "--set train.epochs=N" in res.text
    assert cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet").code == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["lr"] < rows[1]["lr"]


def test_a_run_made_before_a_key_existed_resumes_and_a_set_of_that_key_is_a_change(cli, tmp_path):
    import torch
    import yaml

    run = tmp_path / "r"
    args = ["--set", "train.scheduler={type: step, step_size: 1, gamma: 0.5}"]
    assert cli("run", QUICK, "--quiet", "--output", str(run), "--set", "train.epochs=2", *args).code == 0
    # as an older cnnspec wrote the folder: no train.freeze, train.lr_multipliers, data.eval_batch_size
    state = torch.load(run / "last.pt", weights_only=True)
    for spec in (state["spec"], saved := yaml.safe_load((run / "spec.yaml").read_text())):
        del spec["train"]["freeze"], spec["train"]["lr_multipliers"], spec["data"]["eval_batch_size"]
    torch.save(state, run / "last.pt")
    (run / "spec.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    res = cli("run", "--resume", str(run), "--set", "train.freeze=[0]", "--quiet")
    assert res.code == 2 and "this would change train.freeze" in res.err  # a --set of a new key is a change
    edited = {**saved, "train": {**saved["train"], "freeze": [0]}}  # ... and so is one written into spec.yaml
    (run / "spec.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    res = cli("run", "--resume", str(run), "--quiet")
    assert res.code == 2 and "this would change train.freeze" in res.err
    (run / "spec.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet").code == 0
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
