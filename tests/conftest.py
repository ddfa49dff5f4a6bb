"""Shared fixtures: write spec files, run the CLI in-process and capture what it prints."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


# the reference CNN, as the validate, check and show tests write it
GOOD = """\
name: t
input: [1, 28, 28]
layers:
  - {type: conv2d, out_channels: 32, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - {type: conv2d, out_channels: 64, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: linear, out_features: 10, init: xavier_uniform}
data: {dataset: mnist, batch_size: 100}
train: {epochs: 15, seed: 777, optimizer: {type: adam, lr: 0.001}}
"""


def lines(res: Result, path: str) -> list[str]:
    """The error lines printed about the file ``path``."""
    return [ln for ln in res.out.splitlines() if ln.startswith(f"{path}:") and ": error: " in ln]


# The tests that need a real service or client (PostgreSQL, Chromium, node's ajv and
# yaml-language-server, network namespaces) skip on a developer's machine without it. CI installs
# them all and sets CNNSPEC_REQUIRE_CLIENTS=1, so that a skip there is a failure, not a silent pass.
CLIENT_MODULES = {"test_report_browser.py", "test_editor_clients.py", "test_torchrun_faults.py", "test_sweep.py"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if (report.skipped and os.environ.get("CNNSPEC_REQUIRE_CLIENTS") == "1"
            and item.path.name in CLIENT_MODULES):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI must run it (CNNSPEC_REQUIRE_CLIENTS=1): {reason}"
    return report


@pytest.fixture(scope="session", autouse=True)
def _no_user_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fixtures of wider scope (a module's trained run) start before the per-test stores below:
    they too get a trust store and an image cache of the session's, never the user's."""
    saved = {k: os.environ.get(k) for k in ("CNNSPEC_TRUST_FILE", "CNNSPEC_CACHE_DIR")}
    os.environ["CNNSPEC_TRUST_FILE"] = str(tmp_path_factory.mktemp("session-trust") / "trusted.json")
    os.environ["CNNSPEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-image-cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _own_trust_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test trusts plugin files in a store of its own, never the user's."""
    monkeypatch.setenv("CNNSPEC_TRUST_FILE", str(tmp_path_factory.mktemp("trust") / "trusted.json"))


@pytest.fixture(autouse=True)
def _own_image_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decodes image folders into a cache of its own, never the user's."""
    monkeypatch.setenv("CNNSPEC_CACHE_DIR", str(tmp_path_factory.mktemp("image-cache")))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``cnnspec ARGS`` through main(argv); check it never shows a traceback."""

    def run(*args: str) -> Result:
        code = main(list(args))
        cap = capsys.readouterr()
        res = Result(code, cap.out, cap.err)
        assert "Traceback" not in res.text, res.text
        return res

    return run


# The weights files example specs name (users download them; tests cannot): torchvision's model with
# random weights, saved where the spec looks, for the session. A real file already there is used as is.
EXAMPLE_WEIGHTS = {"resnet18-f37072fd.pth": "resnet18"}


@pytest.fixture(scope="session", autouse=True)
def _example_weights() -> Iterator[None]:
    made = []
    for name, builder in EXAMPLE_WEIGHTS.items():
        path = ROOT / "specs" / name
        if not path.exists():
            import torch
            import torchvision

            torch.save(getattr(torchvision.models, builder)().state_dict(), path)
            made.append(path)
    yield
    for path in made:
        path.unlink(missing_ok=True)


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., str]:
    """Write a spec file into tmp_path and return its path."""

    def _write(text: str | bytes, name: str = "spec.yaml") -> str:
        p = tmp_path / name
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        return str(p)

    return _write


@pytest.fixture
def ctrl_c_on_third_update(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make the third progress update raise a real SIGINT: in the small specs the
    tests run, that is epoch 2 after its first step."""

    def arm() -> None:
        from cnnspec.train.progress import QuietProgress

        calls = {"n": 0}

        def update(self: QuietProgress, step: int, loss: float, sps: float) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                signal.raise_signal(signal.SIGINT)

        monkeypatch.setattr(QuietProgress, "update", update)

    return arm
