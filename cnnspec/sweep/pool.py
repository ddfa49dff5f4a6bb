"""The worker processes of a sweep: one ``cnnspec run`` child per trial, in ``trials/`` of the folder.

A child gets a slot (0 to ``-j`` - 1): its share of the cores, or its own GPU. The pool starts
children, reads each one's new epochs from its ``metrics.jsonl``, signals them (SIGINT: save and
stop; SIGKILL a minute later if it has not), and reads what a finished child left behind. It knows
nothing of Optuna: the ``trial`` a job carries is only held for the coordinator.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.sweep.folder import read_json
from cnnspec.sweep.options import SweepOptions
from cnnspec.sweep.warm import WarmProcess, available
from cnnspec.train.rundir import METRICS_FILE, SPEC_FILE, SUMMARY_FILE

TRIALS_DIR = "trials"
KILL_AFTER_S = 60  # a child that has not stopped this long after its first signal is killed
COLD_ENV = "CNNSPEC_SWEEP_COLD"  # set to 1: each trial a fresh `python -m cnnspec run` (no warm server)


@dataclass
class Job:
    """One trial being trained by a child process."""

    trial: Any  # optuna.Trial
    values: dict[str, Any]
    slot: int
    run_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | WarmProcess
    started: float
    epochs: int = 0  # rows of metrics.jsonl read so far
    mtime: float = 0.0  # metrics.jsonl's mtime when they were read
    pruned: bool = False
    signalled: float | None = None

    @property
    def number(self) -> int:
        return int(self.trial.number)


@dataclass(frozen=True)
class Place:
    """Where a trial will run before its child starts: its files, its slot, its environment."""

    number: int
    spec_file: Path
    run_dir: Path
    log: Path
    slot: int
    env: dict[str, str]
    gpu: str | None  # the GPU it gets, when the pool hands them out


@dataclass(frozen=True)
class Outcome:
    """What a finished child left in its run folder."""

    rows: list[dict[str, Any]]  # metrics.jsonl, one row per epoch
    summary: dict[str, Any]  # summary.json ({} if none)
    spec: Any  # spec.yaml: the resolved spec it trained (None if unreadable)


class Pool:
    """Up to ``-j`` children at once, each training one trial as ``cnnspec run`` would: forked from a
    warm server (sweep.warm) where that is possible, else a fresh ``python -m cnnspec run``."""

    def __init__(self, options: SweepOptions, folder: Path) -> None:
        self.size, self.device, self.plugins = options.jobs, options.device, options.plugins
        self.trust = options.trust
        self.base = Path(options.spec).resolve().parent  # where the spec's relative plugin files are
        self.folder = folder / TRIALS_DIR
        self.jobs: dict[int, Job] = {}  # by trial number
        self.gpus = _gpus() if self.size > 1 and (self.device or "auto").startswith(("auto", "cuda")) else []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.main = options.main
        self.warm = self.main is not None and available() and os.environ.get(COLD_ENV, "") in ("", "0")

    def full(self) -> bool:
        return len(self.jobs) >= self.size

    def place(self, number: int, data: dict[str, Any], head: str) -> Place:
        """Write trial ``number``'s spec (``head``, then ``data`` as YAML) and choose its slot."""
        import yaml

        from cnnspec.registry.trust import is_plugin_file

        self.folder.mkdir(exist_ok=True)
        name = f"{number:04d}"
        spec_file, run_dir, log = self.folder / f"{name}.yaml", self.folder / name, self.folder / f"{name}.log"
        if run_dir.exists():  # a leftover of an attempt that never reported back
            shutil.rmtree(run_dir)
        data["plugins"] = [str((self.base / r).resolve()) if isinstance(r, str) and is_plugin_file(r) else r
                           for r in data.get("plugins") or []]
        spec_file.write_text(head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
        taken = {j.slot for j in self.jobs.values()}
        slot = next(s for s in itertools.count() if s not in taken)  # the lowest free one, < -j: not full
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.size > 1:  # each child its share of the cores, or its own GPU
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, str(max(1, self.cores // self.size)))
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        return Place(number, spec_file, run_dir, log, slot, env, gpu)

    def launch(self, place: Place, trial: Any, values: dict[str, Any]) -> Job:
        """Start the child of a placed trial; its output goes to the trial's log."""
        from cnnspec.registry.trust import is_plugin_file

        argv = ["run", str(place.spec_file), "--output", str(place.run_dir), "--quiet",
                "--no-report"]  # the sweep's own report covers its trials
        if self.device:
            argv += ["--device", self.device]
        for ref in self.plugins:
            argv += ["-p", str(Path(ref).resolve()) if is_plugin_file(ref) else ref]
        if self.trust:  # the sweep was trusted with the spec's plugin files: so is each trial
            argv.append("--trust")
        proc: subprocess.Popen[bytes] | WarmProcess
        if self.warm and self.main is not None:  # forked from a server that imported torch and cnnspec once
            proc = WarmProcess(self.main, argv, place.log, place.env)
        else:
            with open(place.log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "cnnspec", *argv], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, env=place.env,
                                        start_new_session=True,  # Ctrl-C reaches the sweep, which stops them
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        job = self.jobs[place.number] = Job(trial, values, place.slot, place.run_dir, place.log, proc,
                                            time.monotonic())
        return job

    def signal(self, job: Job, sig: int) -> None:
        try:
            job.proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass
        if job.signalled is None:
            job.signalled = time.monotonic()

    def signal_all(self, sig: int) -> None:
        for job in list(self.jobs.values()):
            self.signal(job, sig)

    def kill_if_stuck(self, job: Job) -> None:
        """SIGKILL a running child that has not stopped within KILL_AFTER_S of its first signal."""
        if job.signalled is not None and time.monotonic() - job.signalled > KILL_AFTER_S:
            self.signal(job, signal.SIGKILL)

    def new_rows(self, job: Job) -> list[dict[str, Any]]:
        """The epochs the child wrote since the last call (none if metrics.jsonl has not changed)."""
        p = job.run_dir / METRICS_FILE
        try:
            mtime = p.stat().st_mtime_ns
        except OSError:
            return []
        if mtime == job.mtime:
            return []
        job.mtime = mtime
        try:
            rows = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        except (OSError, ValueError):
            job.mtime = 0.0
            return []
        return rows[job.epochs:]

    def release(self, job: Job) -> Outcome:
        """Forget a child that has exited; what it left in its run folder."""
        del self.jobs[job.number]
        rows = _read_rows(job.run_dir)
        summary = read_json(job.run_dir / SUMMARY_FILE) or {}
        return Outcome(rows, summary, _read_yaml(job.run_dir / SPEC_FILE))

    @staticmethod
    def discard(job: Job) -> None:
        """Delete an interrupted trial's files: it will run again, from its first epoch."""
        for p in (job.run_dir, job.log, job.run_dir.with_suffix(".yaml")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    @staticmethod
    def errors(job: Job) -> list[str]:
        """The child's error lines (located ones first), for the results and the progress lines."""
        try:
            lines = [ln.rstrip() for ln in job.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ["(no log)"]
        errors = [ln for ln in lines if ": error: " in ln or ln.startswith("cnnspec: error")]
        return errors or lines[-3:] or ["(the trial printed nothing)"]


def _gpus() -> list[str]:
    """GPU ids to hand out to children: CUDA_VISIBLE_DEVICES, else nvidia-smi's list (no torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip().isdigit()] if out.returncode == 0 else []


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the sweep process dies, so no trial trains on unwatched."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(ln) for ln in (run_dir / METRICS_FILE).read_text().splitlines() if ln.strip()]
    except (OSError, ValueError):
        return []
