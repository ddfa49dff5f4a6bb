"""Hostile inputs (issue 9): nothing runs unless trusted, and no input gives a traceback.

The corpus test runs every hostile input through the command line and checks, for each: the
exit status, one located or one-line message, no traceback, no file of a finished run changed,
and that the marker a hostile plugin or pickle would write does not exist. The cases whose command never
imports torch run again as real processes, held to issue 21's bounds: 2 s, 200 MB, nothing created, torch
not imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnspec.cli import main

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

SPEC = ("name: tiny\ninput: [1, 8, 8]\nlayers:\n  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n"
        "  - relu\n  - flatten\n  - {type: linear, out_features: 3}\n"
        "data:\n  dataset: {type: synthetic, classes: 3, train_size: 96, test_size: 24}\n  batch_size: 16\n"
        "train: {epochs: 2, seed: 3, device: cpu}\n")
OTHER = SPEC.replace("out_channels: 4", "out_channels: 6")


def marker_plugin(marker: Path) -> str:
    """A plugin that leaves a marker file when its code runs, and registers a layer 'double'."""
    return (f"open({str(marker)!r}, 'w').write('plugin code ran')\n"
            "from cnnspec.registry.hookspecs import hookimpl\nfrom cnnspec.registry.types import LayerType, NoParams\n"
            "class Double(LayerType[NoParams]):\n    name = 'double'\n"
            "    def output_shape(self, p, shape):\n        return shape\n"
            "    def build(self, p, shape):\n        import torch\n        class M(torch.nn.Module):\n"
            "            def forward(self, x):\n                return 2 * x\n        return M()\n"
            "@hookimpl\ndef register_layers(register):\n    register(Double())\n")


class Payload:
    """A pickle that would create the marker file when unpickled (builtins.open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: str, timeout: int = 120) -> tuple[int, str]:
    """``cnnspec ARGS`` in-process, with a deadline (a hang fails the test instead of blocking it)."""
    import contextlib
    import io

    def hang(signum, frame):
        raise TimeoutError(f"cnnspec {' '.join(a[:40] for a in args)} hung")

    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs of different models (checkpoints of one do not fit the other)."""
    base = tmp_path_factory.mktemp("finished")
    runs = {}
    for name, text in (("run", SPEC), ("other", OTHER)):
        (base / f"{name}.yaml").write_text(text)
        code, out = cli("run", str(base / f"{name}.yaml"), "--quiet", "--output", str(base / name))
        assert code == 0, out
        runs[name] = base / name
    runs["spec"] = base / "run.yaml"
    return runs


@dataclass
class Case:
    tmp: Path
    runs: dict[str, Path]
    marker: Path
    watched: list[Path] = field(default_factory=list)

    def write(self, text: str | bytes, name: str = "spec.yaml") -> str:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
        return str(p)

    def evil(self, name: str = "evil.py") -> Path:
        p = self.tmp / name
        p.write_text(marker_plugin(self.marker))
        return p

    def copy(self, which: str = "run", name: str = "copy") -> Path:
        """A copy of a finished run, watched like the original: no failed command may change it."""
        dst = self.tmp / name
        shutil.copytree(self.runs[which], dst)
        self.watched.append(dst)
        return dst

    def edit_checkpoint(self, run: Path, name: str, change: Callable[[dict], object]) -> None:
        state = torch.load(run / name, weights_only=True)
        change(state)
        torch.save(state, run / name)


def alias_bomb(levels: int = 9) -> str:
    parts = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def idx(folder: Path, n_train: int, n_test: int, dims: tuple[int, ...] | None = None) -> None:
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        head = dims if dims and prefix == "train" else (n, 28, 28)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, *head], dtype=">i4").tobytes() + bytes(n * 784))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], dtype=">i4").tobytes() + bytes(n))


MNIST = ("input: [1, 28, 28]\nlayers: [flatten, {type: linear, out_features: 10}]\n"
         "data: {dataset: mnist, root: %s, download: false}\ntrain: {epochs: 1, device: cpu}\n")
CIFAR = ("input: [3, 32, 32]\nlayers: [flatten, {type: linear, out_features: 10}]\n"
         "data: {dataset: cifar10, root: %s, download: false}\ntrain: {epochs: 1, device: cpu}\n")


def _cifar(c: Case) -> list[str]:
    d = c.tmp / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    good = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(good))
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(c.marker), b"labels": [0]}))
    return ["run", c.write(CIFAR % (c.tmp / "cifar")), "--quiet", "--output", str(c.tmp / "out")]


def _bomb_png(c: Case) -> list[str]:
    from PIL import Image

    Image.new("1", (12_000, 12_000)).save(c.tmp / "bomb.png")  # 144 megapixels in a few KB
    return ["predict", str(c.runs["run"]), str(c.tmp / "bomb.png")]


def _float_tiff(c: Case) -> list[str]:
    from PIL import Image

    Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32), mode="F").save(c.tmp / "f.tiff")
    return ["predict", str(c.runs["run"]), str(c.tmp / "f.tiff")]


def _pickled_checkpoint(c: Case, command: str) -> list[str]:
    run = c.copy()
    c.edit_checkpoint(run, "last.pt", lambda s: s.update(evil=Payload(c.marker)))
    c.watched[-1:] = []  # the tampering itself changed it; watch it from here on
    c.watched.append(run)
    if command == "resume":
        return ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]
    return [command, str(run), "--checkpoint", "last"]


def _edited_run_spec(c: Case, command: str) -> list[str]:
    run = c.copy()
    evil = c.evil()
    text = (run / "spec.yaml").read_text().replace("plugins: []", f"plugins: [{evil}]")
    assert str(evil) in text
    (run / "spec.yaml").write_text(text)
    c.watched[-1:] = [run]
    if command == "resume":
        return ["run", "--resume", str(run), "--set", "train.epochs=3", "--trust", "--quiet"]
    return [command, str(run), "--trust"] + (["x.png"] if command == "predict" else [])


def _crafted_run_folder(c: Case, command: str) -> list[str]:
    """A run folder made by somebody else, its spec and plugin record agreeing on their code."""
    run = c.copy()
    evil = c.evil()
    text = (run / "spec.yaml").read_text().replace("plugins: []", f"plugins: [{evil}]")
    (run / "spec.yaml").write_text(text)
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    (run / "plugins.json").write_text(json.dumps({"plugins": [{"ref": str(evil), "sha256": digest}]}))
    c.watched[-1:] = [run]
    if command == "resume":
        return ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]
    return [command, str(run)] + (["x.png"] if command == "predict" else [])


def _foreign_checkpoint(c: Case, command: str) -> list[str]:
    run = c.copy()
    own = torch.load(run / "last.pt", weights_only=True)["spec"]
    shutil.copy(c.runs["other"] / "last.pt", run / "last.pt")
    if command == "resume":  # the same spec written in it, other weights: only the weights tell
        c.edit_checkpoint(run, "last.pt", lambda s: s.update(spec=own))
    c.watched[-1:] = [run]
    if command == "resume":
        return ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]
    return [command, str(run), "--checkpoint", "last"] + (["x.png"] if command == "predict" else [])


def _broken_resumable(c: Case, change: Callable[[dict], object]) -> list[str]:
    run = c.copy()
    c.edit_checkpoint(run, "last.pt", change)
    c.watched[-1:] = [run]
    return ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]


def _locked(c: Case) -> list[str]:
    run = c.copy()
    (run / ".lock").write_text(f"{os.getppid()}\n")  # a live process that is not this one
    c.watched[-1:] = [run]
    return ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]


def _fifo(c: Case) -> list[str]:
    os.mkfifo(c.tmp / "fifo.yaml")  # nobody writes: opening it for reading blocks, unless refused
    return ["validate", str(c.tmp / "fifo.yaml")]


def _exit0_plugin(c: Case, where: str) -> list[str]:
    code = "raise SystemExit(0)\n" if where == "import" else (
        "from cnnspec.registry.hookspecs import hookimpl\n@hookimpl\n"
        "def register_layers(register):\n    raise SystemExit(0)\n")
    (c.tmp / "quit.py").write_text(code)
    return ["validate", "--trust", c.write("plugins: [quit.py]\ninput: [1, 8, 8]\nlayers: [relu]\n")]


def block_chain(depth: int, uses: int = 1) -> str:
    """Blocks b0..b{depth-1}, each using the one before ``uses`` times; layers use the last."""
    body = ", ".join(["{block: b%d}"] * uses)
    return ("input: [1, 8, 8]\nblocks:\n  b0: {layers: [relu]}\n"
            + "".join(f"  b{k}: {{layers: [{body % ((k - 1,) * uses)}]}}\n" for k in range(1, depth))
            + f"layers: [{{block: b{depth - 1}}}]\n")


def grid_sweep(space: str) -> str:
    return ("input: [1, 8, 8]\nlayers: [flatten, {type: linear, out_features: 3}]\n"
            "data:\n  dataset: {type: synthetic, classes: 3, train_size: 96, test_size: 24}\n"
            "train: {epochs: 1, device: cpu}\n"
            f"sweep:\n  sampler: grid\n  metric: test_accuracy\n  space:\n    {space}\n")


def _store(c: Case, kind: str, command: str) -> list[str]:
    """A trust store that is a FIFO, /dev/zero or broken JSON, and a spec naming a plugin file."""
    store = c.tmp / "config" / "trusted.json"
    store.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(store)
    elif kind == "dev-zero":
        store.symlink_to("/dev/zero")
    else:
        store.write_text('{"version": 1, "files": {"/a/b.py": "00",}}\n')
    os.environ["CNNSPEC_TRUST_FILE"] = str(store)  # the autouse fixture puts the old value back
    c.evil()
    return [command, c.write("plugins: [evil.py]\n" + SPEC)]


def limited(limits: str) -> str:
    return SPEC.replace("layers:\n", f"limits: {limits}\nlayers:\n", 1)


# 4.5 PiB of weights: past any machine's memory and any 47-bit address space, so the allocation fails at once
IMPOSSIBLE = SPEC.replace("  - {type: linear, out_features: 3}\n",
                          "  - {type: linear, out_features: 5000000000000}\n  - {type: linear, out_features: 3}\n")


def augmented(item: str) -> str:
    return SPEC.replace("  batch_size: 16\n", f"  batch_size: 16\n  augment: [{item}]\n")


CASES: dict[str, tuple[Callable[[Case], list[str]], int, str]] = {
    # augmentations: bounded, finite (issue 21)
    "random-crop-huge-padding": (lambda c: ["validate", c.write(augmented("{type: random_crop, padding: 1000000000}"))],
                                 1, "padding 1,000,000,000 is more than the image's size 8 x 8"),
    "random-crop-fill-nan": (lambda c: ["validate", c.write(augmented("{type: random_crop, fill: .nan}"))], 1,
                             "fill: input should be a finite number, got nan"),
    "block-default-not-an-int": (lambda c: ["validate", c.write("input: [1, 8, 8]\nblocks:\n  b:\n    params: {n: {"
                                                                "type: int, default: x}}\n    layers: [relu]\n"
                                                                "layers: [{block: b}]\n")], 1,
                                 "default 'x' is not an int"),
    # numbers past float range, huge ints, and values that are not amounts (issue 21)
    "limits-past-float-range": (lambda c: ["validate", c.write(limited("{memory: 1e999GiB}"))], 1,
                                "limits.memory: '1e999GiB' is more than 1e+19"),
    "limits-float-inf": (lambda c: ["validate", c.write(limited("{macs: 1.0e+400}"))], 1,
                         "limits.macs: must be at most 1e+19"),
    "limits-huge-int": (lambda c: ["validate", c.write(limited("{params: " + "9" * 90 + "}"))], 1,
                        "limits.params: must be at most 1e+19"),
    "limits-memory-true": (lambda c: ["validate", c.write(limited("{memory: true}"))], 1,
                           "limits.memory: expected a number or a size such as 2GiB, got True"),
    "limits-memory-nan": (lambda c: ["validate", c.write(limited("{memory: .nan}"))], 1,
                          "limits.memory: expected a number, got nan"),
    "batch-size-past-float-range": (lambda c: ["validate", str(c.runs["spec"]), "--batch-size", "1e400"], 2,
                                    "--batch-size: '1e400' is more than 1e+15"),
    "batch-size-5000-digits": (lambda c: ["validate", str(c.runs["spec"]), "--batch-size", "9" * 5000], 2,
                               "is more than 1e+15"),
    # the trust store is read like a spec, and never rewritten when it cannot be parsed (issue 21)
    "trust-store-fifo-validate": (lambda c: _store(c, "fifo", "validate"), 1,
                                  "trusted.json is not a regular file"),
    "trust-store-fifo-trust": (lambda c: _store(c, "fifo", "trust"), 2, "trusted.json is not a regular file"),
    "trust-store-dev-zero": (lambda c: _store(c, "dev-zero", "validate"), 1, "trusted.json is not a regular file"),
    "trust-store-bad-json-validate": (lambda c: _store(c, "json", "validate"), 1,
                                      "trusted.json:1:42: the trust store is not valid JSON"),
    "trust-store-bad-json-trust": (lambda c: _store(c, "json", "trust"), 2,
                                   "trusted.json:1:42: the trust store is not valid JSON"),
    # sweep grids sized by arithmetic before anything is built (issue 21)
    "sweep-grid-int-1e12-validate": (lambda c: ["validate", c.write(grid_sweep(
        "data.batch_size: {int: [1, 1000000000000]}"))], 1, "the grid has 1,000,000,000,000 points"),
    "sweep-grid-int-1e12-sweep": (lambda c: ["sweep", c.write(grid_sweep("data.batch_size: {int: [1, 1000000000000]}")),
                                             "--output", str(c.tmp / "out")], 1, "(at most 100,000)"),
    # sweep -j: bounded on the command line, never a range as long as it (issue 21)
    **{f"sweep-jobs-{name}": ((lambda c, jobs=jobs: ["sweep", c.write(grid_sweep("data.batch_size: [8, 16]")), "-j",
                                                     jobs, "--output", str(c.tmp / "out")]), 2, message)
       for name, jobs, message in (
           ("0", "0", "argument -j/--jobs: '0' is less than 1: at least one trial runs at a time"),
           ("negative", "-1", "argument -j/--jobs: '-1' is less than 1"),
           ("1e12", "1000000000000", "argument -j/--jobs: '1000000000000' is more than 256 trials at once: each "
                                     "trial is a process of its own that loads torch"),
           ("not-a-number", "2.5", "argument -j/--jobs: '2.5' is not a whole number"))},
    "sweep-grid-tiny-float-step": (lambda c: ["validate", c.write(grid_sweep(
        "train.optimizer.lr: {uniform: [0.001, 1.0], step: 1.0e-15}"))], 1, "the grid has 999,000,000,000,000 points"),
    "sweep-grid-past-float-range": (lambda c: ["validate", c.write(grid_sweep(
        "train.optimizer.lr: {uniform: [1.0e-300, 1.0e+308], step: 1.0e-300}"))], 1,
        "the grid has about 10^607 points"),
    # blocks: bounded as they expand (issue 21)
    "blocks-doubling": (lambda c: ["validate", c.write(block_chain(40, uses=2))], 1,
                        "layers: the model expands to more than the limit of 10,000 layers"),
    "block-chain-2000-validate": (lambda c: ["validate", c.write(block_chain(2000))], 1,
                                  "blocks nest more than 48 levels deep"),
    "block-chain-2000-graph": (lambda c: ["graph", c.write(block_chain(2000))], 1,
                               "blocks nest more than 48 levels deep"),
    # --set values are read as safely as files
    "set-alias-bomb": (lambda c: ["run", str(c.runs["spec"]), "--set", "train.optimizer=" + alias_bomb()],
                       2, "more than 100000 nodes"),
    "set-deep-nesting": (lambda c: ["run", str(c.runs["spec"]), "--set", "train.seed=" + "[" * 5000 + "]" * 5000],
                         2, "nested more than"),
    "set-huge-int": (lambda c: ["run", str(c.runs["spec"]), "--set", "train.seed=" + "9" * 100_000], 2, "digits"),
    "file-huge-int": (lambda c: ["validate", c.write(SPEC.replace("seed: 3", "seed: " + "7" * 5000))], 1,
                      "the integer has 5000 digits"),
    "file-deep-nesting": (lambda c: ["validate", c.write("input: " + "[" * 5000 + "]" * 5000 + "\nlayers: [relu]\n")],
                          1, "nested more than"),
    # spec paths that are not regular files
    "dev-zero": (lambda c: ["validate", "/dev/zero"], 2, "not a regular file"),
    "dev-urandom": (lambda c: ["run", "/dev/urandom"], 2, "not a regular file"),
    "fifo": (_fifo, 2, "not a regular file"),
    # shapes and plugins lists
    "layers-empty-with-data": (lambda c: ["validate", c.write(SPEC.split("layers:")[0] + "layers: []\ndata:"
                                                              + SPEC.split("data:")[1])],
                               1, "layers: needs at least 1"),
    "set-layers-empty": (lambda c: ["run", str(c.runs["spec"]), "--set", "layers=[]", "--quiet"], 1,
                         "layers: needs at least 1"),
    "plugin-not-py": (lambda c: ["validate", "--trust", c.write("plugins: [sub/notes.txt]\ninput: [1, 8, 8]\n"
                                                                "layers: [relu]\n")] if c.write(
        marker_plugin(c.marker), "sub/notes.txt") else [], 1, "is not a .py file"),
    # untrusted code named by a spec
    "untrusted-validate": (lambda c: ["validate", c.write(f"plugins: [{c.evil().name}]\n" + SPEC)], 1,
                           "is not trusted"),
    "untrusted-run": (lambda c: ["run", c.write(f"plugins: [{c.evil().name}]\n" + SPEC), "--quiet"], 1,
                      "is not trusted"),
    "untrusted-dotdot": (lambda c: ["validate", c.write(f"plugins: [../{c.evil().name}]\n" + SPEC, "sub/s.yaml")],
                         1, "is not trusted"),
    "untrusted-absolute": (lambda c: ["validate", c.write(f"plugins: [{c.evil()}]\n" + SPEC)], 1,
                           "is not trusted"),
    "plugin-exit-0-at-import": (lambda c: _exit0_plugin(c, "import"), 1, "tried to end the process"),
    "plugin-exit-0-registering": (lambda c: _exit0_plugin(c, "hook"), 1, "SystemExit"),
    # a run folder whose spec was edited to name code
    **{f"edited-run-spec-{cmd}": ((lambda c, cmd=cmd: _edited_run_spec(c, cmd)), 2,
                                  "not the ones the run was made with")
       for cmd in ("eval", "predict", "export", "resume")},
    **{f"crafted-run-folder-{cmd}": ((lambda c, cmd=cmd: _crafted_run_folder(c, cmd)), 1, "is not trusted")
       for cmd in ("eval", "predict", "export", "resume")},
    # checkpoints
    **{f"foreign-checkpoint-{cmd}": ((lambda c, cmd=cmd: _foreign_checkpoint(c, cmd)), 2, "does not fit")
       for cmd in ("eval", "predict", "export", "resume")},
    # --force past the memory check: torch's allocation failure is one line, never its C++ stack (issue 21)
    "run-force-impossible-model": (lambda c: ["run", c.write(IMPOSSIBLE), "--force", "--quiet", "--output",
                                              str(c.tmp / "out")], 2,
                                   "but torch could not allocate 4.5 PiB (5,120,000,000,000,000 bytes) on cpu for "
                                   "layer type 'linear'"),
    "checkpoint-without-spec": (lambda c: _broken_resumable(c, lambda s: s.pop("spec")), 2,
                                "not a resumable checkpoint: 'spec' is missing"),
    "checkpoint-bad-position": (lambda c: _broken_resumable(c, lambda s: s.update(position={"epoch": "x"})), 2,
                                "not a resumable checkpoint"),
    "checkpoint-optimizer-mismatch": (lambda c: _broken_resumable(c, lambda s: s["optimizer"].update(param_groups=[])),
                                      2, "last.pt does not fit this run: ValueError"),
    "checkpoint-position-wrong-keys": (lambda c: _broken_resumable(
        c, lambda s: s["position"].update(extra=1)), 2, "not a resumable checkpoint"),
    **{f"pickle-payload-{cmd}": ((lambda c, cmd=cmd: _pickled_checkpoint(c, cmd)), 2,
                                 "holds Python code or objects (io.open), so it was not loaded")
       for cmd in ("eval", "export", "resume")},
    "cifar-pickle-payload": (_cifar, 2, "it names io.open, which is code, not data"),
    # predict images
    "predict-decompression-bomb": (_bomb_png, 2, "refused"),
    "predict-float-tiff-out-of-range": (_float_tiff, 2, "float image with values from 300 to 300"),
    # plot
    "plot-only-garbage": (lambda c: ["plot", str(c.write("{not json\n[1, 2]\n", "g/metrics.jsonl") and c.tmp / "g"),
                                     "-o", str(c.tmp / "p.png")], 2, "no metrics.jsonl with epochs"),
    # data
    "idx-zero-train-samples": (lambda c: (idx(c.tmp / "m", 0, 5), ["run", c.write(MNIST % (c.tmp / "m")), "--output",
                                                                 str(c.tmp / "out"), "--quiet"])[1],
                               2, "train-images-idx3-ubyte holds no samples"),
    "idx-zero-test-samples": (lambda c: (idx(c.tmp / "m", 5, 0), ["run", c.write(MNIST % (c.tmp / "m")), "--output",
                                                                str(c.tmp / "out"), "--quiet"])[1],
                              2, "t10k-images-idx3-ubyte holds no samples"),
    "idx-header-overflow": (lambda c: (idx(c.tmp / "m", 5, 5, dims=(2**31 - 1, 2**31 - 1, 2**31 - 1)),
                                       ["run", c.write(MNIST % (c.tmp / "m")), "--output", str(c.tmp / "out"),
                                        "--quiet"])[1], 2, "truncated or corrupt"),
    # another process is writing the run
    "resume-while-locked": (_locked, 2, "another cnnspec process"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_corpus(name, finished, tmp_path):
    build, code, needle = CASES[name]
    case = Case(tmp_path, finished, tmp_path / "MARKER")
    argv = build(case)
    originals = {p: snapshot(p) for p in (finished["run"], finished["other"])}
    watched = {p: snapshot(p) for p in case.watched}
    status, text = cli(*argv)
    assert status == code, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(errors) == 1, text
    assert needle in errors[0], text
    assert len(errors[0]) < 1000, errors[0][:2000]
    assert not case.marker.exists(), "hostile code ran"
    for folder, before in {**originals, **watched}.items():
        assert snapshot(folder) == before, f"{folder} changed"
    if code == 2 and argv[0] == "run" and "--output" in argv:
        assert not (tmp_path / "out").exists(), "a run folder was made for a run that could not start"
    if argv[0] in LEAN_COMMANDS:
        assert name in LEAN_CASES, f"{name}: a {argv[0]} case; add it to LEAN_CASES, which measure it as a process"


# -- the corpus as real processes: time, memory, one located line, nothing made, nothing imported ------------

LEAN_COMMANDS = {"validate", "graph", "trust", "schema", "sweep"}  # commands that never import torch themselves
LEAN_CASES = [
    "random-crop-huge-padding", "random-crop-fill-nan", "block-default-not-an-int", "limits-past-float-range",
    "limits-float-inf", "limits-huge-int", "limits-memory-true", "limits-memory-nan", "batch-size-past-float-range",
    "batch-size-5000-digits", "trust-store-fifo-validate", "trust-store-fifo-trust", "trust-store-dev-zero",
    "trust-store-bad-json-validate", "trust-store-bad-json-trust", "sweep-grid-int-1e12-validate",
    "sweep-grid-int-1e12-sweep", "sweep-jobs-0", "sweep-jobs-negative", "sweep-jobs-1e12", "sweep-jobs-not-a-number",
    "sweep-grid-tiny-float-step", "sweep-grid-past-float-range", "blocks-doubling", "block-chain-2000-validate",
    "block-chain-2000-graph", "file-huge-int", "file-deep-nesting", "dev-zero", "fifo", "layers-empty-with-data",
    "plugin-not-py", "untrusted-validate", "untrusted-dotdot", "untrusted-absolute", "plugin-exit-0-at-import",
    "plugin-exit-0-registering",
]

# `python -m cnnspec ARGS`, and at its very end (the first atexit handler runs last) one more stderr line: the
# process's peak resident memory (VmHWM; ru_maxrss would count the forking pytest's pages) and whether torch was
# imported. runpy runs cnnspec/__main__.py as -m does, so the current folder leaves sys.path the same way.
PROBE = ("import atexit, re, runpy, sys\n"
         "def probe():\n"
         "    kib = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
         "    print('PROBE', kib, 'torch' in sys.modules, file=sys.stderr, flush=True)\n"
         "atexit.register(probe)\n"
         "runpy.run_module('cnnspec', run_name='__main__', alter_sys=True)\n")
# Issue 21's bounds on every hostile input. Timing is otherwise left to bench/; this is a resource bound the
# issue asks to hold: these cases take about 0.3-0.6 s each (interpreter start-up included) against 2 s, so
# only a hang or work that grows with the input (a range as long as -j, a grid built to be counted) fails it.
MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 200_000_000
LOCATED = re.compile(r"(?P<file>[^:\s][^:]*):\d+(:\d+)?: error: ")  # FILE:LINE:COL: error: (or FILE:LINE:)
UNLOCATED = re.compile(r"cnnspec( [a-z]+)?: error: ")  # an error of the command line, not of a place in a file


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (symlinks and FIFOs not followed or opened): its kind, a file's SHA-256."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            mode = p.lstat().st_mode
            found[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode)
                                                 else os.readlink(p) if stat.S_ISLNK(mode) else stat.filemode(mode))
    return found


@pytest.mark.parametrize("name", LEAN_CASES)
def test_corpus_as_a_process_is_bounded_located_and_leaves_nothing(name, tmp_path, tmp_path_factory):
    """Issue 21's criterion for each case: exit 1 or 2 within 2 s, under 200 MB, one line that names the place,
    no traceback, nothing created (in the current folder or beside the inputs), nothing imported (no hostile
    code, no torch)."""
    build, code, needle = CASES[name]
    spec = tmp_path_factory.mktemp("lean-spec") / "run.yaml"  # what the --batch-size cases validate
    spec.write_text(SPEC)
    case = Case(tmp_path, {"spec": spec}, tmp_path / "MARKER")
    argv = build(case)
    assert argv[0] in LEAN_COMMANDS, f"{name} runs {argv[0]}, which may import torch: not a LEAN_CASES case"
    (tmp_path / "cwd").mkdir()
    store = Path(os.environ["CNNSPEC_TRUST_FILE"])  # set by the fixture, or by the case itself
    before, store_before = tree(tmp_path), tree(store.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                         cwd=tmp_path / "cwd", timeout=60)
    seconds = time.perf_counter() - start
    *err, probe = res.stderr.splitlines() or [""]
    assert probe.startswith("PROBE "), res.stderr[-2000:]
    _, kib, torch_loaded = probe.split()
    peak = int(kib) * 1024
    print(f"{name}: exit {res.returncode}, {seconds:.2f} s, peak {peak / 1e6:.0f} MB")
    text = "\n".join([*res.stdout.splitlines(), *err])
    assert res.returncode == code, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(errors) == 1, text
    (line,) = errors
    assert needle in line and len(line) < 1000, line[:2000]
    located = LOCATED.match(line)
    if located:  # the file it names is one this command read
        assert Path(located["file"]).exists(), line
    else:  # an error that is not at a place in a file's text: it names the option or the file it is about
        assert UNLOCATED.match(line), line
        named = [a for a in argv if a.startswith("-") or os.sep in a] + [str(store)]
        assert any(a in line for a in named), line
    assert seconds < MAX_SECONDS, f"{name}: {seconds:.2f} s"
    assert peak < MAX_PEAK_BYTES, f"{name}: peak {peak / 1e6:.0f} MB"
    assert torch_loaded == "False", f"{name} imported torch"
    assert not case.marker.exists(), "hostile code ran"
    assert tree(tmp_path) == before and tree(store.parent) == store_before, "the command created or changed files"


def test_a_sweep_pool_finds_its_free_slot_without_counting_to_j(tmp_path):
    """The lowest free slot is found among the children running, not in a set as long as -j (issue 21). A pool of
    10**12 slots places its first trial in a process capped at 1 GiB of address space: a set of every slot
    would be a MemoryError there within a second, not a machine swapping."""
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from pathlib import Path\nfrom types import SimpleNamespace\n"
            "from cnnspec.sweep.options import SweepOptions\nfrom cnnspec.sweep.pool import Pool\n"
            "pool = Pool(SweepOptions(spec='s.yaml', jobs=10**12), Path('sw'))\n"
            "Path('sw').mkdir()\n"
            "first = pool.place(0, {'name': 't'}, '').slot\n"
            "pool.jobs[0] = SimpleNamespace(slot=first)  # a child running in it\n"
            "print('SLOTS', first, pool.place(1, {'name': 't'}, '').slot)\n")
    env = dict(ENV, CUDA_VISIBLE_DEVICES="")  # no GPUs to hand out: nvidia-smi is not asked
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)
    assert res.returncode == 0 and "SLOTS 0 1" in res.stdout, res.stderr[-2000:]


# -- the trust model ---------------------------------------------------------------------------


def test_validate_imports_nothing_untrusted_then_trust_then_change(tmp_path):
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "evil.py"
    plugin.write_text(marker_plugin(marker))
    spec = tmp_path / "spec.yaml"
    spec.write_text("plugins: [evil.py]\ninput: [1, 8, 8]\n"
                    "layers: [double, flatten, {type: linear, out_features: 2}]\n")
    env = {k: v for k, v in ENV.items() if k != "CNNSPEC_TRUST_FILE"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # the default store: $XDG_CONFIG_HOME/cnnspec

    def cnnspec(*args):
        return subprocess.run([sys.executable, "-m", "cnnspec", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    res = cnnspec("validate", str(spec))
    assert res.returncode == 1 and not marker.exists()
    assert (f"{spec}:1:11: error: plugins[0]: plugin file 'evil.py' is not trusted (sha256 "
            in res.stdout), res.stdout
    assert f"nothing was imported. Read it, then trust it with `cnnspec trust {spec}`" in res.stdout
    # the layer it would provide is unknown, and the hint says why (not "list the plugin")
    assert (f"{spec}:3:10: error: layers[0]: unknown layer type 'double'; a plugin listed under "
            "'plugins:' was not loaded (see its error)") in res.stdout, res.stdout
    assert "Traceback" not in res.stdout + res.stderr

    res = cnnspec("trust", str(spec))
    assert res.returncode == 0 and not marker.exists()
    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert f"trusted {plugin} (sha256 {digest})" in res.stdout
    store = json.loads((tmp_path / "config" / "cnnspec" / "trusted.json").read_text())
    assert store["files"] == {str(plugin): digest}

    res = cnnspec("validate", str(spec))
    assert res.returncode == 0 and marker.exists() and "double" in res.stdout
    marker.unlink()

    plugin.write_text(plugin.read_text() + "# one more line\n")
    res = cnnspec("validate", str(spec))
    assert res.returncode == 1 and not marker.exists()
    assert "plugin file 'evil.py' changed since it was trusted" in res.stdout

    res = cnnspec("validate", "--trust", str(spec))  # this call only
    assert res.returncode == 0 and marker.exists()
    marker.unlink()
    assert cnnspec("validate", str(spec)).returncode == 1 and not marker.exists()


def test_a_module_name_is_not_imported_from_the_current_folder(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evilmod.py").write_text(marker_plugin(marker))
    (tmp_path / "spec.yaml").write_text("plugins: [evilmod]\ninput: [1, 8, 8]\nlayers: [relu]\n")
    # trusted by name (--trust): even then, the name is looked up in the environment, not in this folder
    res = subprocess.run([sys.executable, "-m", "cnnspec", "validate", "--trust", "spec.yaml"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert res.returncode == 1 and not marker.exists()
    assert "plugin 'evilmod' failed to import: ModuleNotFoundError" in res.stdout
    # an installed module name loads as before
    (tmp_path / "ok.yaml").write_text("plugins: [cnnspec_example]\ninput: [1, 8, 8]\nlayers: [relu]\n")
    res = subprocess.run([sys.executable, "-m", "cnnspec", "validate", "ok.yaml"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dash_p_trusts_the_file_for_one_call(tmp_path):
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "evil.py"
    plugin.write_text(marker_plugin(marker))
    spec = tmp_path / "spec.yaml"
    spec.write_text("plugins: [evil.py]\ninput: [1, 8, 8]\nlayers: [double]\n")
    code, text = cli("validate", "-p", str(plugin), str(spec))
    assert code == 0 and marker.exists(), text


def test_run_folder_records_plugin_hashes_and_refuses_a_changed_file(tmp_path):
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "plug.py"
    plugin.write_text(marker_plugin(marker))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"plugins: [plug.py]\n{SPEC}".replace("  - relu\n", "  - relu\n  - double\n"))
    run = tmp_path / "r"
    assert cli("trust", str(spec))[0] == 0
    code, text = cli("run", str(spec), "--quiet", "--output", str(run))
    assert code == 0, text
    record = json.loads((run / "plugins.json").read_text())
    assert record == {"plugins": [{"ref": str(plugin), "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest()}]}
    assert cli("eval", str(run))[0] == 0  # trusted and unchanged

    plugin.write_text(plugin.read_text() + "# changed\n")
    assert cli("trust", str(spec))[0] == 0  # even trusted again, it is not the code the run was made with
    before = snapshot(run)
    marker.unlink()
    for argv in (["eval", str(run)], ["export", str(run)], ["predict", str(run), "x.png"],
                 ["run", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]):
        code, text = cli(*argv)
        assert code == 1 and "changed since the run was made" in text and "Traceback" not in text, text
        assert not marker.exists()
    assert snapshot(run) == before
    # the user says the changed file is what they mean: --trust accepts it for this call (issue 22)
    code, text = cli("eval", "--trust", str(run))
    assert code == 0 and marker.exists(), text
    marker.unlink()
    assert cli("eval", str(run))[0] == 1 and not marker.exists()  # for that call only


def test_the_store_keeps_every_trusted_version_and_reads_a_one_hash_store(tmp_path, monkeypatch):
    from cnnspec.registry.trust import Policy, UntrustedPlugin, add_to_store, read_store, sha256
    store = tmp_path / "trusted.json"
    monkeypatch.setenv("CNNSPEC_TRUST_FILE", str(store))
    plugin = tmp_path / "plug.py"
    # a store as cnnspec wrote it before several hashes were kept: one hash per path
    store.write_text(json.dumps({"version": 1, "files": {str(plugin): sha256(b"v1\n")}}))
    assert read_store() == {str(plugin): [sha256(b"v1\n")]}
    add_to_store({str(plugin): sha256(b"v2\n")})  # trusting an edit keeps the first version trusted
    add_to_store({str(plugin): sha256(b"v2\n")})  # trusting it twice records it once
    assert json.loads(store.read_text())["files"] == {str(plugin): [sha256(b"v1\n"), sha256(b"v2\n")]}
    policy = Policy()
    for version in (b"v1\n", b"v2\n"):  # reverting the edit is still trusted
        policy.check(plugin, sha256(version), "plug.py")
    with pytest.raises(UntrustedPlugin, match="changed since it was trusted"):
        policy.check(plugin, sha256(b"v3\n"), "plug.py")
    # one hash is still written as a plain string, the form an older cnnspec reads
    other = tmp_path / "other.py"
    add_to_store({str(other): sha256(b"x")})
    assert json.loads(store.read_text())["files"][str(other)] == sha256(b"x")


def test_reverting_a_trusted_edit_stays_trusted_from_the_command_line(tmp_path):
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "plug.py"
    original = marker_plugin(marker)
    plugin.write_text(original)
    spec = tmp_path / "spec.yaml"
    spec.write_text("plugins: [plug.py]\ninput: [1, 8, 8]\nlayers: [double]\n")
    assert cli("trust", str(spec))[0] == 0
    plugin.write_text(original + "# a comment\n")
    assert cli("trust", str(spec))[0] == 0
    plugin.write_text(original)
    code, text = cli("validate", str(spec))
    assert code == 0 and marker.exists(), text


def test_an_untrusted_plugin_is_reported_before_the_unknown_type_it_causes(tmp_path):
    plugin = tmp_path / "plug.py"
    plugin.write_text(marker_plugin(tmp_path / "MARKER"))
    spec = tmp_path / "spec.yaml"  # plugins: after layers, so reading order alone puts the symptom first
    spec.write_text("input: [1, 8, 8]\nlayers: [double]\nplugins: [plug.py]\n")
    code, text = cli("validate", str(spec))
    assert code == 1, text
    cause, symptom = text.find("plugin file 'plug.py' is not trusted"), text.find("unknown layer type 'double'")
    assert 0 <= cause < symptom, text


def test_a_resume_from_another_folder_needs_trust_of_the_run_plugins(tmp_path):
    plugin = tmp_path / "plug.py"
    plugin.write_text(marker_plugin(tmp_path / "MARKER"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"plugins: [plug.py]\n{SPEC}".replace("  - relu\n", "  - relu\n  - double\n"))
    run = tmp_path / "r"
    assert cli("run", str(spec), "--trust", "--quiet", "--output", str(run))[0] == 0
    code, text = cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet")
    assert code == 1 and "is not trusted" in text and f"cnnspec trust {run}" in text
    assert cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet", "--trust")[0] == 0


def test_sweep_trust_trusts_the_plugin_files_for_the_check_and_every_trial(tmp_path):
    pytest.importorskip("optuna")
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "plug.py"
    plugin.write_text(marker_plugin(marker))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"plugins: [plug.py]\n{SPEC}".replace("  - relu\n", "  - relu\n  - double\n")
                    .replace("epochs: 2", "epochs: 1")
                    + "sweep:\n  trials: 2\n  metric: test_accuracy\n  sampler: grid\n"
                    "  space:\n    layers.0.out_channels: [2, 4]\n")
    out = tmp_path / "s"
    code, text = cli("sweep", str(spec), "--output", str(out), "--quiet")
    assert code == 1 and "plugin file 'plug.py' is not trusted" in text and "Traceback" not in text, text
    assert not marker.exists() and not out.exists()
    code, text = cli("sweep", str(spec), "--output", str(out), "--quiet", "--trust")
    assert code == 0, text
    doc = json.loads((out / "results.json").read_text())
    # each trial's `cnnspec run` was trusted too: both trained the layer the plugin provides
    assert [r["status"] for r in doc["trials"]] == ["complete", "complete"], doc
    assert marker.exists()
    store = os.environ["CNNSPEC_TRUST_FILE"]
    assert not Path(store).exists() or str(plugin) not in Path(store).read_text()  # for this sweep only


@pytest.mark.parametrize("log_dir,ok", [("..", False), ("a/../../x", False), ("../sibling", False),
                                         ("tb", True), ("a/../b", True), ("/tmp/elsewhere", True)])
def test_a_tensorboard_log_dir_stays_in_the_run_folder_unless_absolute(tmp_path, log_dir, ok):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("train: {epochs: 2, seed: 3, device: cpu}\n",
                                 f"train:\n  epochs: 2\n  callbacks: [{{type: tensorboard, log_dir: '{log_dir}'}}]\n"))
    code, text = cli("validate", str(spec))
    assert "Traceback" not in text
    if ok:
        assert code == 0, text
        return
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert code == 1 and len(errors) == 1, text
    line = 1 + spec.read_text().splitlines().index(f"  callbacks: [{{type: tensorboard, log_dir: '{log_dir}'}}]")
    assert errors[0].startswith(f"{spec}:{line}:44: ") and "log_dir" in errors[0]
    assert "leaves the run folder" in errors[0]


def test_a_plugin_cannot_end_a_run_with_exit_status_0(tmp_path):
    plugin = tmp_path / "quit.py"
    plugin.write_text("from cnnspec.registry.hookspecs import hookimpl\n@hookimpl\n"
                      "def after_epoch(context, metrics):\n    raise SystemExit(0)\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code, text = cli("run", str(spec), "-p", str(plugin), "--quiet", "--output", str(tmp_path / "r"))
    assert code == 3 and "tried to end the process with SystemExit(0)" in text
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"


# -- run folders: read-only, full disk, stale files, parallel launches, locks ------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only_copy(finished, tmp_path):
    """A finished run seen through a read-only bind mount (real EROFS, even for root)."""
    src = tmp_path / "src"
    shutil.copytree(finished["run"], src)
    ro = tmp_path / "ro"
    ro.mkdir()
    if not (_mount("--bind", str(src), str(ro)) and _mount("-o", "remount,bind,ro", str(ro))):
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here (needs root and mount); "
                    "the read-only run folder checks did not run")
    yield ro
    subprocess.run(["umount", str(ro)], capture_output=True)


def test_read_only_run_folder_on_resume_and_export(read_only_copy, tmp_path):
    before = snapshot(read_only_copy)
    code, text = cli("run", "--resume", str(read_only_copy), "--set", "train.epochs=3", "--quiet")
    assert code == 2 and "Read-only file system" in text and len(text.splitlines()) == 1, text
    code, text = cli("export", str(read_only_copy))
    assert code == 2 and f"cannot write {read_only_copy}/model.torchscript.pt: Read-only file system" in text, text
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    out = tmp_path / "exported"
    out.mkdir()
    code, text = cli("export", str(read_only_copy), "-o", str(out))  # -o DIR: the file goes inside
    assert code == 0, text
    assert (out / "model.torchscript.pt").stat().st_size > 1000
    assert snapshot(read_only_copy) == before


BIG = SPEC.replace("out_channels: 4", "out_channels: 128")  # last.pt with Adam's state: about 300 KB


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)):
        pytest.skip("cannot mount a small tmpfs here (needs root); the simulated test below still runs")
    try:
        spec = tmp_path / "big.yaml"
        spec.write_text(BIG)
        code, text = cli("run", str(spec), "--quiet", "--output", str(disk / "r"))
        assert code == 2, text
        assert f"no space left on {disk / 'r'}" in text and "no checkpoint was saved yet" in text, text
        assert len([ln for ln in text.splitlines() if "error:" in ln]) == 1 and "Traceback" not in text
        assert not list((disk / "r").glob(".*.tmp")) and not (disk / "r" / "last.pt").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_disk_full_simulated_at_the_os_call(tmp_path, monkeypatch):
    import errno

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 3"))
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # spec, plugins record, then epoch 1's checkpoint and metrics go through
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, text = cli("run", str(spec), "--quiet", "--output", str(tmp_path / "r"))
    assert code == 2, text
    assert f"no space left on {tmp_path / 'r'}" in text
    assert f"the last checkpoint is {tmp_path / 'r' / 'last.pt'}" in text and (tmp_path / "r" / "last.pt").is_file()
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_stale_temporaries_are_removed_on_resume(finished, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished["run"], run)
    stale = run / ".last.pt.k3j4h5.tmp"
    stale.write_bytes(b"\0" * 100_000)  # what kill -9 during a save leaves
    code, text = cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet")
    assert code == 0, text
    assert not stale.exists() and not (run / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(finished, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished["run"], run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(f"{dead.pid}\n")
    code, text = cli("run", "--resume", str(run), "--set", "train.epochs=3", "--quiet")
    assert code == 0, text
    assert not (run / ".lock").exists()


def _make_folder(args):
    from cnnspec.train.rundir import new_run_dir

    barrier, base = args
    barrier.wait()
    return str(new_run_dir("same", None, base))


def test_parallel_launches_get_their_own_run_folders(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    n = 30
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            made = pool.map(_make_folder, [(barrier, str(tmp_path / "runs"))] * n)
    assert len(set(made)) == n
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    assert folders == sorted(Path(p).name for p in made)
    assert (tmp_path / "runs" / "latest").resolve().name in folders  # one of them, whichever replaced it last


# -- what was already right: verified ------------------------------------------------------------


def test_a_resume_that_does_nothing_writes_nothing(finished, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished["run"], run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    before_hash = snapshot(run)
    code, text = cli("run", "--resume", str(run), "--set", "train.epochs=1")
    assert code == 0 and "already finished" in text, text
    assert snapshot(run) == before_hash
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_summary_records_the_batch_that_ran(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("batch_size: 16", "batch_size: 100000").replace("epochs: 2", "epochs: 1"))
    code, text = cli("run", str(spec), "--output", str(tmp_path / "r"))
    assert code == 0, text
    assert "batch 96 (data.batch_size 100000 is more than the 96 samples there are)" in text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["batch_size"] == 96 and summary["effective_batch_size"] == 96


def test_interrupt_before_the_first_checkpoint_names_no_checkpoint(tmp_path):
    plugin = tmp_path / "stop.py"
    plugin.write_text("from cnnspec.registry.hookspecs import hookimpl\n@hookimpl\n"
                      "def before_training(context):\n    raise KeyboardInterrupt\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, text = cli("run", str(spec), "-p", str(plugin), "--quiet", "--output", str(tmp_path / "r"))
    assert code == 130, text
    assert "no checkpoint was saved yet" in text and "last.pt" not in text


# -- predict reads images by their real range and mode -----------------------------------------


def test_predict_image_modes(tmp_path):
    from PIL import Image

    from cnnspec.tools.runs import load_image

    f = tmp_path / "f.tiff"
    Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32), mode="F").save(f)
    assert torch.allclose(load_image(str(f), (1, 4, 4)), torch.full((1, 1, 4, 4), 0.25))  # was black

    a = np.zeros((4, 4, 4), dtype=np.uint8)  # transparent everywhere, black opaque ink in one corner
    a[:2, :2] = (0, 0, 0, 255)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    x = load_image(str(tmp_path / "rgba.png"), (1, 4, 4))[0, 0]
    assert float(x[0, 0]) == 0.0 and float(x[3, 3]) == 1.0  # the ink shows: laid on white

    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "deep.png")
    x = load_image(str(tmp_path / "deep.png"), (1, 4, 4))
    assert torch.allclose(x, torch.full_like(x, 32768 / 65535), atol=1e-4)  # was clipped to 1.0

    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32), mode="F").save(tmp_path / "nan.tiff")
    from cnnspec.errors import ToolError

    with pytest.raises(ToolError, match="NaN"):
        load_image(str(tmp_path / "nan.tiff"), (1, 4, 4))


def test_predict_accepts_a_16_bit_png(finished, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(tmp_path / "deep.png")
    code, text = cli("predict", str(finished["run"]), str(tmp_path / "deep.png"))
    assert code == 0 and "deep.png:" in text, text


def test_plot_skips_bad_metrics_lines_with_a_warning(finished, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished["run"], run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{not json\n[1, 2]\n{\"epoch\": 3}\n")
    code, text = cli("plot", str(run), "-o", str(tmp_path / "p.png"))
    assert code == 0, text
    assert f"cnnspec: warning: {run / 'metrics.jsonl'}:3: not a metrics row (not JSON); skipped" in text
    assert f"{run / 'metrics.jsonl'}:4: not a metrics row" in text and f"{run / 'metrics.jsonl'}:5:" in text
    assert (tmp_path / "p.png").stat().st_size > 1000


# -- validate's memory and time on big hostile inputs -----------------------------------------

# VmHWM (the peak resident size of this program; ru_maxrss would carry the forking parent's over exec)
MEASURE = ("import re, sys, time\nfrom cnnspec.cli import main\nt = time.perf_counter()\n"
           "code = main(['validate', sys.argv[1]])\n"
           "hwm = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024\n"
           "print('RESULT', code, hwm, time.perf_counter() - t, file=sys.stderr)\n")

BIG_INPUTS: dict[str, Callable[[Path], None]] = {
    "block-list-10MB": lambda p: p.write_text("input: [1, 8, 8]\nlayers:\n" + "  - relu\n" * 1_100_000),
    "flow-list-10MB": lambda p: p.write_text("input: [1, 8, 8]\nlayers: [" + "relu, " * 1_650_000 + "relu]\n"),
    "deep-nesting-10MB": lambda p: p.write_text("input: " + "[" * 4_900_000 + "]" * 4_900_000 + "\n"),
    "many-keys-10MB": lambda p: p.write_text("".join(f"k{i}: {i}\n" for i in range(600_000))),
    "long-scalar-10MB": lambda p: p.write_text("name: " + "a" * 9_900_000 + "\ninput: [1, 8, 8]\nlayers: [relu]\n"),
    "alias-bomb": lambda p: p.write_text("input: [1, 8, 8]\nlayers: [relu]\nx: " + alias_bomb(12) + "\n"),
    "file-99MB": lambda p: p.write_bytes(b"# " + b"x" * 99_000_000 + b"\n"),
    "blocks-doubling-40-levels": lambda p: p.write_text(block_chain(40, uses=2)),
    "block-chain-2000": lambda p: p.write_text(block_chain(2000)),
}


@pytest.mark.parametrize("name", list(BIG_INPUTS))
def test_validate_memory_stays_under_1_GB_and_never_hangs(name, tmp_path):
    path = tmp_path / "big.yaml"
    BIG_INPUTS[name](path)
    res = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    _, code, peak, seconds = res.stderr.strip().splitlines()[-1].split()
    print(f"{name}: exit {code}, peak {int(peak) / 2**20:.0f} MiB, {float(seconds):.2f} s")
    assert int(code) in (0, 1, 2)
    assert int(peak) < 2**30, f"{name}: peak {int(peak) / 2**20:.0f} MiB"


def test_python_dash_m_does_not_import_from_the_current_folder(tmp_path):
    # pluggy is first imported after `python -m` hands over to cnnspec: a pluggy.py here shadowed it
    (tmp_path / "pluggy.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w')\n")
    (tmp_path / "spec.yaml").write_text(SPEC)
    res = subprocess.run([sys.executable, "-m", "cnnspec", "validate", "spec.yaml"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("module", ["venv.__main__", "unittest.__main__", "numpy.f2py.__main__", "this", "json.tool"])
def test_validate_of_an_untrusted_spec_imports_no_module_it_names(tmp_path, module):
    (tmp_path / "spec.yaml").write_text(f"plugins: [{module}]\ninput: [1, 8, 8]\nlayers: [relu]\n")
    code = ("import sys; from cnnspec.cli import main; rc = main(['validate', 'spec.yaml']); "
            f"print('IMPORTED', {module!r} in sys.modules); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                         timeout=60)
    assert res.returncode == 1 and "IMPORTED False" in res.stdout, res.stdout + res.stderr
    assert "nothing was imported" in res.stdout and len(res.stdout.splitlines()) == 3  # error, summary, probe
    assert not (tmp_path / "validate").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_a_module_trusted_by_name_is_imported(cli, write):
    path = write("plugins: [cnnspec_example_module]\ninput: [1, 8, 8]\nlayers: [relu]\n")
    assert "not trusted" in cli("validate", path).out
    res = cli("trust", path)
    assert res.code == 0 and "trusted the module cnnspec_example_module by name" in res.out
    assert "No module named 'cnnspec_example_module'" in cli("validate", path).out  # now it is looked up
    never = write("plugins: [venv.__main__]\ninput: [1, 8, 8]\nlayers: [relu]\n", "never.yaml")
    assert "never a plugin" in cli("validate", "--trust", never).out



def test_blocks_are_bounded_as_they_expand(tmp_path):
    """Blocks that double at each level stop at the layer limit without building the tree (2**40 layers)."""
    import time

    from cnnspec.spec.expand import size

    path = tmp_path / "double.yaml"
    path.write_text(block_chain(40, uses=2))
    t = time.perf_counter()
    code, text = cli("validate", str(path), timeout=30)
    assert code == 1 and time.perf_counter() - t < 10, text
    assert f"{path}:43:1: error: layers: the model expands to more than the limit of 10,000 layers" in text, text
    # a chain just inside the nesting limit checks, and its graph draws (no RecursionError)
    path.write_text(block_chain(47).replace("relu]}", "{type: conv2d, out_channels: 2, kernel_size: 3}]}", 1))
    code, text = cli("validate", str(path))
    assert code == 0 and "Traceback" not in text, text
    code, text = cli("graph", str(path), "-o", str(tmp_path / "g.svg"))
    assert code == 0 and (tmp_path / "g.svg").stat().st_size > 1000, text
    from cnnspec.spec.load import check_file

    result = check_file(str(path))
    assert result.spec is not None and size(result.spec.layers[0]) == 1


def test_an_auto_shortcut_on_a_very_wide_input_finds_its_stride_by_arithmetic():
    import time

    from cnnspec.plugins.composites import projection_stride

    def search(size, out):
        return next((s for s in range(1, size + 1) if (size - 1) // s + 1 == out), None)

    assert all(projection_stride(n, o) == search(n, o) for n in range(60) for o in range(-1, 64))
    t = time.perf_counter()
    assert projection_stride(10**12, 142857142858) == 7 and projection_stride(10**12, 10**12 + 1) is None
    assert time.perf_counter() - t < 0.1


def test_validate_of_an_auto_shortcut_on_a_very_wide_input_does_not_hang(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text("input: [1, 1, 1000000000000]\nlayers:\n  - {type: residual, shortcut: auto, "
                    "layers: [{type: conv2d, out_channels: 2, kernel_size: 1, stride: 7}]}\n")
    code, text = cli("validate", str(path), timeout=20)
    assert code == 0 and "output shape: 2 x 1 x 142857142858" in text, text


def test_grid_points_are_counted_as_the_grid_lists_them():
    from cnnspec.spec.sweepspace import Param

    for p in (Param("k", ("k",), "int", (), 1, 10), Param("k", ("k",), "int", (), -3, 20, 4),
              Param("k", ("k",), "uniform", (), 0.0, 0.3, 0.1), Param("k", ("k",), "uniform", (), 0.001, 0.1, 0.003),
              Param("k", ("k",), "choice", (1, 2, 3))):
        assert p.grid_points() == len(p.grid() or ()), p
    assert Param("k", ("k",), "log_uniform", (), 0.1, 1.0).grid_points() is None


def test_spec_limits_never_lift_the_device_memory_refusal(tmp_path, monkeypatch):
    """limits.memory only tightens (issue 21: it used to switch the device check off, like --force)."""
    import cnnspec.train.host

    path = tmp_path / "s.yaml"
    path.write_text(SPEC.replace("layers:\n", "limits: {memory: 1TiB}\nlayers:\n", 1))
    monkeypatch.setattr(cnnspec.train.host, "available_memory", lambda device: 1000)
    code, text = cli("run", str(path), "--quiet", "--output", str(tmp_path / "a"))
    assert code == 2 and "but only 1000 B is available RAM" in text and "--force" in text, text
    assert not (tmp_path / "a").exists()
    code, text = cli("run", str(path), "--quiet", "--force", "--output", str(tmp_path / "b"))
    assert code == 0, text


def test_an_allocation_that_fails_mid_training_is_one_line_without_cpp_frames(tmp_path):
    """--force past the check; the first step asks for ~0.9 PiB (more than any 47-bit address space holds) and
    fails at once. TORCH_SHOW_CPP_STACKTRACES=1 makes torch append its C++ stack to the message (issue 21);
    the address space is capped at 8 GiB, so no machine can swap here whatever its overcommit setting."""
    import resource

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n  - relu\n",
                                 "  - {type: conv2d, out_channels: 1, kernel_size: 1, padding: 2000000}\n"
                                 "  - {type: adaptiveavgpool2d, output_size: 2}\n"))
    env = dict(ENV, TORCH_SHOW_CPP_STACKTRACES="1", TORCH_DISABLE_ADDR2LINE="1")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    res = subprocess.run([sys.executable, "-m", "cnnspec", "run", str(spec), "--force", "--quiet", "--output",
                          str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=300, preexec_fn=cap)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"cnnspec: error: {spec}: training needs ~") and "but torch could not allocate " in line
    assert " bytes) on cpu while training; " in line and "--force skips only the check that refuses this" in line
    assert line.endswith(f"no checkpoint was saved yet (the run folder is {tmp_path / 'r'})")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and "\n" not in summary["error"] and "c10::" not in summary["error"]


def _capped(kib: int | None, *argv: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` in a shell that set ``ulimit -v KIB`` first (None: no cap), as a batch scheduler would."""
    command = (f"ulimit -v {kib}; " if kib else "") + f"exec {sys.executable} " + " ".join(argv)
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)


def test_the_quick_start_runs_under_a_4_gib_address_space_cap(tmp_path):
    """Issue 21: `ulimit -v 4194304` once ended the quick start with "OpenBLAS error: Memory allocation
    still failed after 10 retries" (exit 1). It runs, or says in one line what to set."""
    quick = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"
    res = _capped(4194304, "-m", "cnnspec", "run", str(quick), "--set", "train.epochs=2", "--output",
                  str(tmp_path / "r"), "--quiet")  # two epochs: the whole run, curves and report included
    assert "OpenBLAS" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    if res.returncode == 2:  # a torch build that leaves less than a run needs: one line saying what to set
        (line,) = res.stderr.splitlines()
        assert "the address-space limit (ulimit -v 4194304) leaves" in line
        assert "raise it to at least ulimit -v " in line
    else:
        assert res.returncode == 0 and res.stderr == "", res.stderr  # not even a warning (curves, report)
        assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"
        assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "curves.png").is_file()


def test_under_an_address_space_cap_cnnspec_reserves_less_of_it(tmp_path):
    """Under a cap the entry point sets OPENBLAS_NUM_THREADS=1 and MALLOC_ARENA_MAX=1 before numpy loads
    (numpy's OpenBLAS starts one thread per core otherwise), and leaves what the user set alone."""
    code = ("-c 'import os; from cnnspec.train.host import fit_address_space; fit_address_space(); import numpy; "
            "print(len(os.listdir(\"/proc/self/task\")), os.environ.get(\"OPENBLAS_NUM_THREADS\"), "
            "os.environ.get(\"MALLOC_ARENA_MAX\"))'")
    unset = {k: v for k, v in ENV.items() if k not in ("OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX")}
    assert _capped(4194304, code, env=unset).stdout.split() == ["1", "1", "1"]
    assert _capped(4194304, code, env=dict(unset, OPENBLAS_NUM_THREADS="2")).stdout.split()[1:] == ["2", "1"]
    assert _capped(None, code, env=unset).stdout.split()[1:] == ["None", "None"]  # no cap: nothing is set


def test_a_cap_too_small_for_torch_is_one_line_saying_what_to_raise(tmp_path):
    quick = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"
    res = _capped(100000, "-m", "cnnspec", "run", str(quick), "--fast-dev-run")
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("cnnspec: error: the address-space limit (ulimit -v 100000) is too small to load what "
                           "this command needs (") and "failed to map segment" in line and "raise it" in line


def test_allocation_failures_are_told_from_other_errors_and_lose_their_cpp_stack():
    from cnnspec.errors import out_of_memory, without_cpp_stack

    cuda = out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB "
                                                "total capacity)\nException raised from malloc at x.cpp:1"))
    assert cuda is not None and cuda.amount == "20.00 GiB" and cuda.requested is None
    cpu = out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                                     "allocate memory: you tried to allocate 4096 bytes.\nC++ CapturedTraceback:\n#4"))
    assert cpu is not None and cpu.requested == 4096
    assert str(cpu) == "out of memory: the CPU allocator could not allocate 4,096 bytes"
    python = "out of memory: Python could not allocate what it asked for (MemoryError)"
    assert str(out_of_memory(MemoryError())) == python
    assert str(cuda) == "out of memory: torch could not allocate 20.00 GiB"
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert without_cpp_stack("bad shape\nException raised from check at a.cpp:3 (most recent call first):\nframe #0: f"
                             ) == "bad shape"


def test_a_broken_trust_store_is_never_rewritten_and_a_symlinked_one_is_written_through(tmp_path, monkeypatch):
    plugin = tmp_path / "p.py"
    plugin.write_text("x = 1\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("plugins: [p.py]\ninput: [1, 8, 8]\nlayers: [relu]\n")
    store = tmp_path / "config" / "trusted.json"
    store.parent.mkdir()
    monkeypatch.setenv("CNNSPEC_TRUST_FILE", str(store))
    broken = '{"version": 1, "files": {\n  "/a/b.py": "00",\n}}\n'  # a hand edit left a trailing comma
    store.write_text(broken)
    code, text = cli("trust", str(spec))
    assert code == 2 and f"{store}:3:1: the trust store is not valid JSON" in text and "Traceback" not in text, text
    assert store.read_text() == broken and sorted(p.name for p in store.parent.iterdir()) == ["trusted.json"]

    real = tmp_path / "dotfiles" / "cnnspec.json"  # the store kept elsewhere, linked into place
    real.parent.mkdir()
    real.write_text('{"version": 1, "files": {"/a/b.py": "00"}}\n')
    real.chmod(0o640)
    store.unlink()
    store.symlink_to(real)
    code, text = cli("trust", str(spec))
    assert code == 0, text
    assert store.is_symlink() and store.resolve() == real and oct(real.stat().st_mode & 0o777) == "0o640"
    assert set(json.loads(real.read_text())["files"]) == {"/a/b.py", str(plugin)}
    assert sorted(p.name for p in real.parent.iterdir()) == ["cnnspec.json"]  # no temporary left
    assert cli("validate", str(spec))[0] == 0


def test_amounts_past_float_range_are_shown_not_raised(tmp_path):
    from cnnspec.spec.cost import human, human_bytes

    assert human(10**400) == "1.0e400" and human_bytes(3 * 10**396) == "3.0e396 B" and human(1536) == "1.5K"
    n = "9" * 99
    path = tmp_path / "huge.yaml"  # MACs about 10^396, far past float range
    path.write_text(f"input: [1, {n}, {n}]\nlimits: {{macs: 5M}}\nlayers:\n"
                    + f"  - {{type: conv2d, out_channels: {n}, kernel_size: 1}}\n" * 4)
    code, text = cli("validate", str(path))
    assert code == 1 and "Traceback" not in text, text
    assert f"{path}:2:16: error: limits.macs: the model needs 3.0e396 MACs per sample, over the limit of 5.0M" in text
    code, text = cli("validate", str(path), "--format", "json")
    assert code == 1 and "Traceback" not in text


@pytest.mark.parametrize("limits, message", [
    ("{memory: -1}", "limits.memory: must be positive, got -1"),
    ("{params: 0}", "limits.params: must be at least 1, got 0"),
    ("{memory: lots}", "limits.memory: 'lots' is not a size such as 2GiB, 500MB or 1.5G"),
])
def test_limit_messages_give_the_value_once(tmp_path, limits, message):
    path = tmp_path / "s.yaml"
    path.write_text(limited(limits))
    code, text = cli("validate", str(path))
    (line,) = [ln for ln in text.splitlines() if "error:" in ln]
    assert code == 1 and line.endswith(message), text


def test_sweep_results_csv_escapes_cells_a_spreadsheet_would_run(tmp_path):
    import csv

    pytest.importorskip("optuna")
    from cnnspec.sweep.report import csv_cell

    assert [csv_cell(v) for v in ("=1+1", "+1", "-2", "@A1", "\t=x", "plain", -0.5, 3)] == [
        "'=1+1", "'+1", "'-2", "'@A1", "'\t=x", "plain", -0.5, 3]
    spec = tmp_path / "s.yaml"  # every trial is invalid (kernel 11 on 8x8): nothing trains
    spec.write_text(SPEC + "sweep:\n  sampler: grid\n  metric: test_accuracy\n  space:\n"
                    "    layers.0.kernel_size: [11]\n"
                    "    data.root: ['=HYPERLINK(\"http://x\")', '-2+3', plain]\n")
    code, text = cli("sweep", str(spec), "--output", str(tmp_path / "out"), "--quiet")
    assert code == 0, text
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert sorted(r["data.root"] for r in rows) == ["'-2+3", "'=HYPERLINK(\"http://x\")", "plain"]
    assert all(r["status"] == "invalid" for r in rows)


def test_graph_output_never_overwrites_an_input_and_matches_its_suffix(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    plugin = tmp_path / "plug.py"
    plugin.write_text(marker_plugin(tmp_path / "MARKER"))
    (tmp_path / "link.svg").symlink_to(spec)
    before = snapshot(tmp_path)
    for out, message in [(spec, f"-o {spec} is the input {spec}; graph does not overwrite it"),
                         (tmp_path / "link.svg", "is the input"),
                         (plugin, f"-o {plugin} is the input {plugin}"),
                         (tmp_path / "g.png", "graph writes SVG, Mermaid or DOT text, not .png"),
                         (tmp_path / "g", "not a file without a suffix; name the file .svg, .mmd or .dot")]:
        code, text = cli("graph", str(spec), "-o", str(out), "-p", str(plugin))
        (line,) = text.splitlines()
        assert code == 2 and line.startswith("cnnspec: error: ") and message in line, text
    code, text = cli("graph", str(spec), "-o", str(tmp_path / "g.dot"), "--format", "svg")
    assert code == 2 and "--format svg, but the name ends in .dot (dot); name the file g.svg" in text, text
    assert snapshot(tmp_path) == before and not (tmp_path / "MARKER").exists()
    assert cli("graph", str(spec), "-o", str(tmp_path / "g.txt"), "--format", "mermaid")[0] == 0
    assert (tmp_path / "g.txt").read_text().startswith("flowchart")
    assert cli("graph", str(spec), "-o", str(tmp_path / "G.SVG"))[0] == 0
