"""The sweep folder: which sweep it holds (``sweep.json``), and which folder a sweep continues."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.spec.sweepspace import Sweep
from cnnspec.sweep.options import SweepError

SWEEP_FILE, DB_FILE = "sweep.json", "sweep.db"
FORMAT = "cnnspec-sweep-1"


@dataclass(frozen=True)
class SweepId:
    """Which sweep this is: what ``sweep.json`` records, and what a folder must match to be continued."""

    spec: Path  # the spec file, resolved
    name: str  # the spec's name
    study: str  # the Optuna study's name
    storage: str | None  # the --storage URL without its password; None: the folder's own sweep.db
    fingerprint: str  # Sweep.fingerprint: the spec without its sweep, the space, metric, sampler, seed

    @property
    def storage_shown(self) -> str:
        return self.storage or f"sqlite ({DB_FILE})"

    def matches(self, meta: dict[str, Any]) -> bool:
        return (meta.get("format") == FORMAT and meta.get("fingerprint") == self.fingerprint
                and meta.get("study") == self.study and meta.get("storage") == self.storage)

    def meta(self, sweep: Sweep, status: str) -> dict[str, Any]:
        return {"format": FORMAT, "spec": str(self.spec), "name": self.name,
                "study": self.study, "storage": self.storage, "fingerprint": self.fingerprint,
                "metric": sweep.metric, "direction": sweep.direction, "trials": sweep.trials,
                "sampler": sweep.section.sampler, "status": status,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}


def sweep_folder(ident: SweepId, output: str | None) -> tuple[Path, bool]:
    """The sweep folder, and whether it continues an earlier run of the same sweep."""
    from cnnspec.train.rundir import new_run_dir

    if output:
        path = Path(output)
        meta = read_json(path / SWEEP_FILE)
        if meta is not None:
            if not ident.matches(meta):
                raise SweepError(f"{output}: holds another sweep (study {meta.get('study')}, storage "
                                 f"{meta.get('storage') or 'its own sweep.db'}); give another --output, "
                                 "or the same spec, space and --storage to continue it")
            return path, True
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SweepError(f"{output}: exists and is not a sweep folder")
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    # the same command again continues the latest unfinished sweep of this spec and space
    found = []
    for p in Path("runs").glob(f"{ident.name}-sweep-*/{SWEEP_FILE}"):
        meta = read_json(p)
        if meta is not None and ident.matches(meta) and meta.get("status") != "finished":
            found.append(p.parent)
    if found:
        return max(found, key=lambda p: p.stat().st_mtime), True
    try:
        return new_run_dir(f"{ident.name}-sweep", None), False
    except OSError as e:
        raise SweepError(f"cannot make the sweep folder: {e}") from None


def write_meta(folder: Path, ident: SweepId, sweep: Sweep, status: str) -> None:
    """``sweep.json``: the sweep's identity and whether it is running, interrupted or finished."""
    from cnnspec.train.rundir import atomic_write

    text = json.dumps(ident.meta(sweep, status), indent=2) + "\n"
    atomic_write(folder / SWEEP_FILE, lambda f: f.write(text))


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None if it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
