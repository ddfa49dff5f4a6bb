"""The run folder: resolved spec, metrics, checkpoints and summary, every file written atomically."""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cnnspec.errors import DiskFull, RunFolderError
from cnnspec.util.files import read_regular

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.yaml", "metrics.jsonl", "summary.json"
LAST, BEST = "last.pt", "best.pt"  # checkpoints: what they hold is train.checkpoint's
LOCK_FILE = ".lock"
LATEST = "latest"  # runs/latest: the newest run folder made under runs/
RUN_PLUGINS_FILE = "plugins.json"  # the plugins a run was made with (train.runplugins)
JOB_FILE = "job.json"  # the torchrun job whose run this is (train.job)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the old file (or none), never a half-written one. A full disk
    raises DiskFull naming the file; a folder that cannot be written, RunFolderError.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(e)
        if cause is not None:
            raise _write_error(path, cause) from None
        raise


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e`` (torch.save wraps a full disk in a RuntimeError), if any."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(e, RuntimeError) and ("No space left" in str(e) or "ENOSPC" in str(e)):
        return OSError(errno.ENOSPC, "No space left on device")
    return None


def _write_error(path: Path, e: OSError) -> RunFolderError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on {path.parent} (writing {path.name})")
    return RunFolderError(f"cannot write {path}: {e.strerror or e}")


def new_run_dir(name: str, output: str | None, base: str = "runs") -> Path:
    """``output`` if given (must be empty or new), else ``runs/NAME-YYYYmmdd-HHMMSS``.

    Made atomically: ``mkdir`` without exist_ok, the next suffix when another process won the
    name; an existing empty ``output`` is claimed through the lock file (see RunDir.lock).
    """
    if output:
        path = Path(output)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{output}: the output folder exists and is not empty")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    Path(base).mkdir(parents=True, exist_ok=True)
    path, n = Path(base) / f"{name}-{stamp}", 2
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            path = Path(base) / f"{name}-{stamp}-{n}"
            n += 1
    _point_latest(Path(base), path.name)
    return path


def _point_latest(base: Path, name: str) -> None:
    """``runs/latest`` -> the newest run folder (a relative symlink, replaced atomically), so that
    ``cnnspec eval runs/latest`` works; left alone where symlinks cannot be made, or where
    ``latest`` is something else than a symlink."""
    link = base / LATEST
    if link.exists() and not link.is_symlink():
        return
    tmp = base / f".{LATEST}-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def spec_text(spec: dict[str, Any]) -> str:
    """A resolved spec as the YAML a run folder holds (and ``validate --resolved`` prints)."""
    return "# resolved spec of this run: every default filled in\n" + yaml.safe_dump(
        spec, sort_keys=False, default_flow_style=None)


class RunDir:
    """Reads and writes the files of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write_spec(self, spec: dict[str, Any]) -> None:
        text = spec_text(spec)
        atomic_write(self.path / SPEC_FILE, lambda f: f.write(text))

    def write_plugins(self, record: list[dict[str, Any]]) -> None:
        text = json.dumps({"plugins": record}, indent=2) + "\n"
        atomic_write(self.path / RUN_PLUGINS_FILE, lambda f: f.write(text))

    def lock(self, job: str | None = None) -> None:
        """Claim the folder for this process: a lock file holding our PID, host and torchrun job,
        made with O_EXCL.

        A lock whose process is gone is stale and taken over, and so is one held by ``job``'s
        previous attempt (torchrun ends every worker of a job before it starts them again, maybe
        on another node); a live one is refused."""
        lock = self.path / LOCK_FILE
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid, host, held_by = _lock_record(lock)
                same_job = job is not None and held_by == job
                if pid is not None and pid != os.getpid() and not same_job and _alive(pid, host):
                    on = f" on {host}" if host and host != socket.gethostname() else ""
                    raise RunFolderError(f"{self.path}: another cnnspec process (PID {pid}{on}) is writing "
                                         f"this run folder; refused (if it is gone, delete {lock})") from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as e:
                raise _write_error(lock, e) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n{socket.gethostname()}\n{job or ''}\n")
            return
        raise RunFolderError(f"{self.path}: could not take the lock {lock}; refused")

    def unlock(self) -> None:
        lock = self.path / LOCK_FILE
        pid, host, _ = _lock_record(lock)
        if pid == os.getpid() and host in (None, socket.gethostname()):
            lock.unlink(missing_ok=True)

    def write_job(self, job: str) -> None:
        """Record that torchrun job ``job`` owns this folder (its restarts resume it)."""
        text = json.dumps({"torchrun_job": job}) + "\n"
        atomic_write(self.path / JOB_FILE, lambda f: f.write(text))

    def read_job(self) -> str | None:
        """The torchrun job recorded in the folder, or None (none recorded, or unreadable)."""
        try:
            data = json.loads(read_regular(self.path / JOB_FILE, 4096)[:4096])
        except (OSError, ValueError):
            return None
        job = data.get("torchrun_job") if isinstance(data, dict) else None
        return job if isinstance(job, str) else None

    def clean_stale_temporaries(self) -> list[Path]:
        """Remove what a killed process left half-written (``.NAME.*.tmp``); call with the lock held."""
        removed = []
        for tmp in self.path.glob(".*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
        return removed

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path / METRICS_FILE, lambda f: f.write(text))

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / METRICS_FILE
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.path / SUMMARY_FILE, lambda f: f.write(text))


def _lock_record(lock: Path) -> tuple[int | None, str | None, str | None]:
    """The PID, host and torchrun job a lock file names (a lock of an older cnnspec holds only the PID)."""
    try:
        lines = read_regular(lock, 4096)[:4096].decode("utf-8", "replace").splitlines()
        pid = int(lines[0].strip())
    except (OSError, ValueError, IndexError):
        return None, None, None
    host, job = (ln.strip() or None for ln in (lines[1:3] + ["", ""])[:2])
    return pid, host, job


def _alive(pid: int, host: str | None = None) -> bool:
    """Whether process ``pid`` lives; one on another host cannot be asked, so it counts as alive."""
    if host is not None and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
