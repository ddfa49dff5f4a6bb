"""The run folder: resolved spec, metrics, checkpoints and summary, every file written atomically."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .errors import CheckpointError

CHECKPOINT_FORMAT = "cnnspec-checkpoint-1"
SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.yaml", "metrics.jsonl", "summary.json"
LAST, BEST = "last.pt", "best.pt"


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the old file (or none), never a half-written one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_run_dir(name: str, output: str | None, base: str = "runs") -> Path:
    """``output`` if given (must be empty or new), else ``runs/NAME-YYYYmmdd-HHMMSS``."""
    if output:
        path = Path(output)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{output}: the output folder exists and is not empty")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(base) / f"{name}-{stamp}"
        n = 2
        while path.exists():
            path = Path(base) / f"{name}-{stamp}-{n}"
            n += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunDir:
    """Reads and writes the files of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write_spec(self, spec: dict[str, Any]) -> None:
        text = "# resolved spec of this run: every default filled in\n" + yaml.safe_dump(
            spec, sort_keys=False, default_flow_style=None
        )
        atomic_write(self.path / SPEC_FILE, lambda f: f.write(text))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path / METRICS_FILE, lambda f: f.write(text))

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / METRICS_FILE
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.path / SUMMARY_FILE, lambda f: f.write(text))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> None:
        import torch

        state = {"format": CHECKPOINT_FORMAT, **state}
        atomic_write(self.path / name, lambda f: torch.save(state, f), binary=True)

    def load_checkpoint(self, name: str = LAST, map_location: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.path / name, map_location)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a file that needs arbitrary unpickling is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"Unsupported global[^\n.]*", text)
        if found:
            what = found.group(0).strip()
            raise CheckpointError(
                f"{path}: refused: not a plain weights file, loading it could run code ({what})"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({text.strip()[:200]})") from None
    except Exception as e:  # truncated zip, wrong file type, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cnnspec checkpoint")
    return state
