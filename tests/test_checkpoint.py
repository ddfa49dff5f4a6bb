"""The checkpoint's one owner (cnnspec.train.checkpoint): the dict on disk, read back as it was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_run import small_spec

from cnnspec.errors import CheckpointError
from cnnspec.train.checkpoint import CHECKPOINT_FORMAT, Checkpoint, resumable_problem

# the keys every run folder so far holds, in the order they were written: old folders must keep working
WEIGHTS_KEYS = ["format", "model", "spec", "classes", "normalization", "metrics", "best", "seed"]
RESUME_KEYS = ["callbacks", "optimizer", "scaler", "scheduler", "rng", "position"]
ADDED_KEYS = ["pixels"]  # written since issue 22; a checkpoint without them still loads (Checkpoint.load)


def same(a: Any, b: Any) -> bool:
    """Equal as checkpoint contents: tensors by value, containers item by item."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnspec.cli import main

    tmp = tmp_path_factory.mktemp("ckpt")

    def write(text: str) -> str:
        (tmp / "spec.yaml").write_text(text)
        return str(tmp / "spec.yaml")

    path = small_spec(write)
    assert main(["run", path, "--quiet", "--output", str(tmp / "r"), "--set", "train.epochs=2"]) == 0
    return tmp / "r"


def test_the_files_keep_the_format_every_run_folder_has(run: Path) -> None:
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    assert list(last) == WEIGHTS_KEYS + ADDED_KEYS + RESUME_KEYS
    assert list(best) == WEIGHTS_KEYS + ADDED_KEYS
    assert set(best["pixels"]) == {"mean", "border"}
    assert last["format"] == best["format"] == CHECKPOINT_FORMAT == "cnnspec-checkpoint-1"
    assert set(last["position"]) == {"epoch", "step", "gen", "sums"} and last["position"]["epoch"] == 2
    assert set(last["normalization"]) == {"mean", "std"} and last["scaler"] is None  # fp32: no scaler state


def test_what_is_read_is_what_was_written(run: Path) -> None:
    on_disk = torch.load(run / "last.pt", weights_only=True)
    saved = Checkpoint.load_resumable(run)
    assert saved.resume is not None and saved.resume.position.epoch == 2
    assert same(saved.to_dict(), on_disk)
    weights = Checkpoint.load(run / "best.pt")
    assert weights.resume is None and same(weights.to_dict(), torch.load(run / "best.pt", weights_only=True))


def test_a_checkpoint_saved_again_is_the_same_file_contents(run: Path, tmp_path: Path) -> None:
    Checkpoint.load_resumable(run).save(tmp_path / "again.pt")
    assert same(torch.load(tmp_path / "again.pt", weights_only=True), torch.load(run / "last.pt", weights_only=True))


def test_weights_that_do_not_fit_are_named(run: Path) -> None:
    from torch import nn

    saved = Checkpoint.load(run / "last.pt")
    assert saved.weights_mismatch(nn.Linear(2, 3)) is not None
    assert "it lacks" in (saved.weights_mismatch(nn.Sequential(*[nn.Linear(2, 2)] * 9)) or "")
    saved.model = {"0.weight": "not a tensor"}  # type: ignore[dict-item]
    assert saved.weights_mismatch(nn.Linear(2, 3)) == "its 'model' entry is not a set of named tensors"


def test_what_a_resume_needs_is_checked_before_anything_is_used(run: Path, tmp_path: Path) -> None:
    state = torch.load(run / "last.pt", weights_only=True)
    assert resumable_problem(state) is None
    assert resumable_problem({**state, "optimizer": None}) == "'optimizer' is missing or not a dict"
    assert "position" in (resumable_problem({**state, "position": {"epoch": -1}}) or "")
    assert resumable_problem({**state, "rng": {}}) == "its random-number state is missing"
    (tmp_path / "last.pt").write_bytes((run / "last.pt").read_bytes())
    torch.save({**state, "seed": "five"}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt is not a resumable checkpoint: 'seed' is missing or not an int"):
        Checkpoint.load_resumable(tmp_path)
    torch.save({**state, "format": "something else"}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="not a cnnspec checkpoint"):
        Checkpoint.load(tmp_path / "last.pt")
