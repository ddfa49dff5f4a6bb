"""``cnnspec sweep``: search a spec's ``sweep:`` space with Optuna, one ``cnnspec run`` per trial.

This process never imports torch. It asks Optuna for a trial, checks the trial's spec
statically (``sweepspace.check_trial``: an impossible trial is told to Optuna as pruned, with
its located error, and never trains), writes it to ``trials/NNNN.yaml`` and starts
``python -m cnnspec run`` on it as a child process, up to ``-j`` at once. It follows each
child's ``metrics.jsonl`` to report every epoch's metric to Optuna and prunes (SIGINT to the
child) when the median pruner says so. Every worker of a sweep, on this machine or others,
shares one Optuna storage: a SQLite file in the sweep folder by default, or ``--storage URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.errors import CnnspecError, Interrupted, SpecError, UsageError
from cnnspec.spec.sweepspace import Sweep, check_sweep, check_trial, label
from cnnspec.sweep.report import COUNTED, STATUS

SWEEP_FILE, DB_FILE, TRIALS_DIR = "sweep.json", "sweep.db", "trials"
FORMAT = "cnnspec-sweep-1"
HEARTBEAT_S, GRACE_S = 10, 60  # a worker that stops beating for GRACE_S has died: its trial is run again
POLL_S = 0.2


class SweepError(CnnspecError):
    """The sweep cannot start or go on: a folder, storage or data problem (exit status 2)."""


def sweep_command(args: argparse.Namespace) -> None:
    """The body of ``cnnspec sweep``; returns when every trial of the sweep is done."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SweepError("cnnspec sweep needs Optuna: pip install 'cnnspec[sweep]' (or pip install optuna)") from None
    if args.jobs < 1:
        raise UsageError("cnnspec sweep: error: -j must be at least 1")
    located, spec, sweep = _load(args)
    Sweeper(args, located, spec, sweep).run()


def _load(args: argparse.Namespace) -> tuple[Any, Any, Sweep]:
    """The located data (after --set), the checked base Spec and the checked Sweep."""
    from cnnspec.spec.check import check
    from cnnspec.spec.overrides import apply
    from cnnspec.spec.yamlpos import load_file

    located = load_file(args.spec)  # SpecError, UnreadableSpec
    apply(located, args.overrides)  # OverrideError
    result = check(located, plugins=args.plugins)
    if isinstance(located.data, dict) and located.data.get("sweep") is None:
        raise SpecError([*result.problems, located.problem(
            (), "the spec has no 'sweep' section: add one with a 'space' to search (see README, Sweeps)")], args.spec)
    if result.spec is None:
        _, more = check_sweep(located, None, base_valid=False)
        raise SpecError([*result.problems, *more], args.spec)
    sweep, problems = check_sweep(located, result.spec.registry)
    if sweep is None:
        raise SpecError(problems, args.spec)
    return located, result.spec, sweep


def redact(url: str) -> str:
    """A storage URL without its password, fit for files and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


@dataclass
class Job:
    """One trial being trained by a child process."""

    trial: Any  # optuna.Trial
    values: dict[str, Any]
    slot: int
    run_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    started: float
    epochs: int = 0
    mtime: float = 0.0
    pruned: bool = False
    signalled: float | None = None

    @property
    def number(self) -> int:
        return int(self.trial.number)


class Sweeper:
    """Runs one worker of a sweep: this process's share of the trials, until all are done."""

    def __init__(self, args: argparse.Namespace, located: Any, spec: Any, sweep: Sweep) -> None:
        from cnnspec.sweep.report import Reporter

        self.args, self.located, self.spec, self.sweep = args, located, spec, sweep
        self.jobs: dict[int, Job] = {}
        self.stop = 0  # Ctrl-C presses
        self.fatal: str | None = None
        self.host = socket.gethostname()
        self.fingerprint = sweep.fingerprint(located.data)
        self.study_name = args.study or f"{spec.name}-{self.fingerprint[:8]}"
        self.storage_label = redact(args.storage) if args.storage else None
        self.folder, self.resumed = self._folder()
        self.url = args.storage or f"sqlite:///{(self.folder / DB_FILE).resolve()}"
        try:
            self.study = self._study()
        except SweepError:
            if not self.resumed:  # leave no empty sweep folder behind
                shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.report = Reporter(args.quiet, sweep, self.folder)
        self.gpus = _gpus() if args.jobs > 1 and (args.device or "auto").startswith(("auto", "cuda")) else []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.next_beat = 0.0
        self.idle_until = 0.0
        self.waiting_said = False

    # -- setting up ---------------------------------------------------------------------------

    def _meta(self, status: str) -> dict[str, Any]:
        return {"format": FORMAT, "spec": str(Path(self.args.spec).resolve()), "name": self.spec.name,
                "study": self.study_name, "storage": self.storage_label, "fingerprint": self.fingerprint,
                "metric": self.sweep.metric, "direction": self.sweep.direction, "trials": self.sweep.trials,
                "sampler": self.sweep.section.sampler, "status": status,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _matches(self, meta: dict[str, Any]) -> bool:
        return (meta.get("format") == FORMAT and meta.get("fingerprint") == self.fingerprint
                and meta.get("study") == self.study_name and meta.get("storage") == self.storage_label)

    def _folder(self) -> tuple[Path, bool]:
        """The sweep folder, and whether it continues an earlier run of the same sweep."""
        from cnnspec.train.rundir import new_run_dir

        out = self.args.output
        if out:
            path = Path(out)
            meta = _read_json(path / SWEEP_FILE)
            if meta is not None:
                if not self._matches(meta):
                    raise SweepError(f"{out}: holds another sweep (study {meta.get('study')}, storage "
                                     f"{meta.get('storage') or 'its own sweep.db'}); give another --output, "
                                     "or the same spec, space and --storage to continue it")
                return path, True
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise SweepError(f"{out}: exists and is not a sweep folder")
            path.mkdir(parents=True, exist_ok=True)
            return path, False
        # the same command again continues the latest unfinished sweep of this spec and space
        found = []
        for p in Path("runs").glob(f"{self.spec.name}-sweep-*/{SWEEP_FILE}"):
            meta = _read_json(p)
            if meta is not None and self._matches(meta) and meta.get("status") != "finished":
                found.append(p.parent)
        if found:
            return max(found, key=lambda p: p.stat().st_mtime), True
        try:
            return new_run_dir(f"{self.spec.name}-sweep", None), False
        except OSError as e:
            raise SweepError(f"cannot make the sweep folder: {e}") from None

    def _study(self) -> Any:
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", module="optuna")
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}  # several workers may share one file
        try:
            for attempt in range(5):  # workers starting together race to create the tables
                try:
                    storage = optuna.storages.RDBStorage(
                        self.url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
                    break
                except ImportError:
                    raise
                except Exception:
                    if attempt == 4:
                        raise
                    time.sleep(0.5 + int.from_bytes(os.urandom(1), "little") / 128)
            s = self.sweep.section
            pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                                  n_warmup_steps=s.pruner_warmup_epochs)
                      if s.pruner == "median" else optuna.pruners.NopPruner())
            direction: Any = self.sweep.direction
            study = optuna.create_study(storage=storage, study_name=self.study_name, load_if_exists=True,
                                        direction=direction, pruner=pruner)
            attrs = study.user_attrs
            if attrs.get("cnnspec_fingerprint", self.fingerprint) != self.fingerprint:
                raise SweepError(f"study {self.study_name} in {redact(self.url)} belongs to another sweep (a "
                                 "different spec, space, metric, sampler or seed); give another --study")
            if "cnnspec_fingerprint" not in attrs:
                seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
                for k, v in {"fingerprint": self.fingerprint, "spec": str(Path(self.args.spec).resolve()),
                             "metric": self.sweep.metric, "seed": seed,
                             "params": [p.key for p in self.sweep.params]}.items():
                    study.set_user_attr(f"cnnspec_{k}", v)
            self.seed = int(study.user_attrs["cnnspec_seed"])
        except SweepError:
            raise
        except ImportError as e:  # e.g. psycopg2 for postgresql://
            raise SweepError(f"the storage {redact(self.url)} needs a driver that is not installed: {e} "
                             "(for postgresql:// URLs: pip install 'psycopg[binary]', or psycopg2-binary with "
                             "postgresql+psycopg2://)") from None
        except Exception as e:
            raise SweepError(f"cannot use the storage {redact(self.url)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        return study

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        from cnnspec.train.rundir import atomic_write

        def write_meta(status: str) -> None:
            text = json.dumps(self._meta(status), indent=2) + "\n"
            atomic_write(self.folder / SWEEP_FILE, lambda f: f.write(text))

        write_meta("running")
        done = sum(1 for t in self._trials() if _counted(t) and t.state.is_finished())
        self.report.start(self.study_name, self.storage_label, self.args.jobs, self.resumed, done)
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: Any) -> None:
            self.stop += 1
            if self.stop == 1:
                self.report.note("stopping: the running trials save and stop (Ctrl-C again to kill them)")
                for job in self.jobs.values():
                    self._signal(job, signal.SIGINT)
            else:
                for job in self.jobs.values():
                    self._signal(job, signal.SIGKILL)

        for s in old:
            signal.signal(s, on_signal)
        try:
            self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for job in list(self.jobs.values()):  # only after a bug: leave no child behind
                self._signal(job, signal.SIGKILL)
        trials = self._trials()
        finished = not self.stop and not self.fatal
        self.report.write(self.study, self._storage_shown(), final=True)
        write_meta("finished" if finished else "interrupted")
        done = sum(1 for t in trials if _counted(t) and t.state.is_finished())
        if self.fatal:
            raise SweepError(self.fatal)
        if self.stop:
            raise Interrupted(f"interrupted after {done} of {self.sweep.trials} trials; run the same command "
                              f"again to continue (sweep folder {self.folder})")
        self.report.finish()

    def _trials(self) -> list[Any]:
        return list(self.study.get_trials(deepcopy=False))

    def _loop(self) -> None:
        import optuna

        while True:
            now = time.monotonic()
            if now >= self.next_beat:  # tell the storage we are alive; fail trials of dead workers
                for job in self.jobs.values():
                    self.study._storage.record_heartbeat(job.trial._trial_id)
                optuna.storages.fail_stale_trials(self.study)
                self.next_beat = now + HEARTBEAT_S
            for job in list(self.jobs.values()):
                self._poll(job)
            if self.stop or self.fatal:
                if not self.jobs:
                    return
                time.sleep(POLL_S)
                continue
            nothing_due = False
            while len(self.jobs) < self.args.jobs and now >= self.idle_until and not (self.stop or self.fatal):
                if not self._start_one():
                    self.idle_until = now + 2.0  # nothing to start now: look again in a while
                    nothing_due = True
                    break
            if nothing_due and not self.jobs:
                running = [t for t in self._trials() if t.state == optuna.trial.TrialState.RUNNING]
                if not running:
                    return
                if not self.waiting_said:
                    self.report.note(f"waiting for {len(running)} trial(s) running in other workers")
                    self.waiting_said = True
            time.sleep(POLL_S)

    def _start_one(self) -> bool:
        """Ask Optuna for a trial and start it (or tell it, if invalid); False when none is due."""
        import optuna

        trials = self._trials()
        counted = sum(1 for t in trials if _counted(t))
        if counted >= self.sweep.trials:
            return False
        self.study.sampler = self._sampler(counted)  # the grid picks its point in ask()
        trial = self.study.ask()
        self.study._storage.record_heartbeat(trial._trial_id)
        # another worker may have asked at the same moment: the lower trial numbers keep the slots
        before = sum(1 for t in self._trials() if _counted(t) and t.number < trial.number)
        if before >= self.sweep.trials:
            self._tell(trial, optuna.trial.TrialState.FAIL, None, {STATUS: "surplus"})
            return False
        # values are drawn in suggest_*, after ask: seed them by the trial's place among the
        # sweep's trials, which no two workers share and which an interrupted trial gives back
        self.study.sampler = self._sampler(before)
        values = {p.key: self._suggest(trial, p) for p in self.sweep.params}
        data, problems = check_trial(self.located, self.spec.registry, self.sweep, values)
        attrs = {"cnnspec_host": self.host}
        if problems:
            errors = [p.format() for p in problems]
            self._tell(trial, optuna.trial.TrialState.PRUNED, None,
                       {**attrs, STATUS: "invalid", "cnnspec_errors": errors})
            self.report.trial_invalid(trial.number, values, errors)
            self.report.write(self.study, self._storage_shown())
            return True
        self._spawn(trial, values, data, attrs)
        return True

    def _storage_shown(self) -> str:
        return self.storage_label or f"sqlite ({DB_FILE})"

    def _sampler(self, slot: int) -> Any:
        """A sampler seeded for this slot, so that a sweep drawn again (or continued after an
        interruption) draws the same values; the grid keeps one order for the whole sweep."""
        import optuna

        s = self.sweep.section.sampler
        if s == "grid":
            return optuna.samplers.GridSampler({p.key: p.grid() or [] for p in self.sweep.params}, seed=self.seed)
        seed = (self.seed * 1_000_003 + slot) % 2**32
        if s == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _suggest(self, trial: Any, p: Any) -> Any:
        if self.sweep.section.sampler == "grid" or p.kind == "choice":
            return trial.suggest_categorical(p.key, p.grid() if self.sweep.section.sampler == "grid" else p.labels)
        if p.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.kind == "log_uniform")
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.kind == "log_int")

    def _tell(self, trial: Any, state: Any, value: float | None, attrs: dict[str, Any]) -> None:
        """Record a trial's end; a trial another worker already failed as stale stays failed."""
        import optuna

        try:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            self.study.sampler = optuna.samplers.RandomSampler()  # the grid's after_trial would call stop()
            self.study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
            self.report.note(f"trial {trial.number}: could not record its end ({e})")

    def _spawn(self, trial: Any, values: dict[str, Any], data: dict[str, Any], attrs: dict[str, Any]) -> None:
        import yaml

        from cnnspec.registry.trust import is_plugin_file

        tdir = self.folder / TRIALS_DIR
        tdir.mkdir(exist_ok=True)
        name = f"{trial.number:04d}"
        spec_file, run_dir, log = tdir / f"{name}.yaml", tdir / name, tdir / f"{name}.log"
        if run_dir.exists():  # a leftover of an attempt that never reported back
            shutil.rmtree(run_dir)
        base = Path(self.args.spec).resolve().parent
        data["plugins"] = [str((base / r).resolve()) if isinstance(r, str) and is_plugin_file(r) else r
                           for r in data.get("plugins") or []]
        head = f"# trial {trial.number} of sweep {self.study_name}: " + ", ".join(
            f"{k}={label(p.value(values[k]))}" for p in self.sweep.params for k in [p.key]) + "\n"
        spec_file.write_text(head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
        cmd = [sys.executable, "-m", "cnnspec", "run", str(spec_file), "--output", str(run_dir), "--quiet"]
        if self.args.device:
            cmd += ["--device", self.args.device]
        for ref in self.args.plugins:
            cmd += ["-p", str(Path(ref).resolve()) if is_plugin_file(ref) else ref]
        slot = min(set(range(self.args.jobs)) - {j.slot for j in self.jobs.values()})
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.args.jobs > 1:  # each child its share of the cores, or its own GPU
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, str(max(1, self.cores // self.args.jobs)))
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        if self.gpus:
            attrs = {**attrs, "cnnspec_gpu": env["CUDA_VISIBLE_DEVICES"]}
        for k, v in {**attrs, STATUS: "running", "cnnspec_run_dir": str(run_dir.resolve())}.items():
            trial.set_user_attr(k, v)
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True,  # Ctrl-C reaches this process, which stops them
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.jobs[trial.number] = Job(trial, values, slot, run_dir, log, proc, time.monotonic())
        if self.stop:  # Ctrl-C came while it was starting
            self._signal(self.jobs[trial.number], signal.SIGINT)
        self.report.trial_started(trial.number, values, self.gpus[slot % len(self.gpus)] if self.gpus else None)

    def _signal(self, job: Job, sig: int) -> None:
        try:
            job.proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass
        if job.signalled is None:
            job.signalled = time.monotonic()

    def _poll(self, job: Job) -> None:
        """Report the child's new epochs to Optuna (pruning if told to) and finish it when it exits."""
        rc = job.proc.poll()  # before reading: once it has exited, every epoch is on disk
        metric = self.sweep.metric
        for row in self._new_rows(job):
            job.epochs += 1
            value = row.get(metric)
            if job.pruned or not isinstance(value, (int, float)):
                continue
            try:  # every epoch is reported, even after the child ended: later trials' median needs it
                job.trial.report(float(value), step=int(row.get("epoch", job.epochs)))
                if job.trial.should_prune() and not self.stop:
                    job.pruned = True
                    if rc is None:
                        self._signal(job, signal.SIGINT)  # it saves a checkpoint and stops
            except Exception as e:  # e.g. the trial was failed as stale by another worker
                self.report.note(f"trial {job.number}: {e}")
        if rc is None:
            if job.signalled is not None and time.monotonic() - job.signalled > 60:
                self._signal(job, signal.SIGKILL)  # it did not stop in a minute
            return
        del self.jobs[job.number]
        self._finish(job, rc)
        self.report.write(self.study, self._storage_shown())

    def _new_rows(self, job: Job) -> list[dict[str, Any]]:
        p = job.run_dir / "metrics.jsonl"
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

    def _finish(self, job: Job, rc: int) -> None:
        import optuna

        from cnnspec.sweep.report import best_value

        State = optuna.trial.TrialState
        rows = _read_rows(job.run_dir)
        summary = _read_json(job.run_dir / "summary.json") or {}
        attrs: dict[str, Any] = {"cnnspec_epochs": len(rows),
                                 "cnnspec_seconds": round(time.monotonic() - job.started, 1)}
        value = best_value(rows, self.sweep.metric, self.sweep.direction)
        if job.pruned:
            self._tell(job.trial, State.PRUNED, None, {**attrs, STATUS: "pruned"})
            last = rows[-1].get(self.sweep.metric) if rows else None
            self.report.trial_pruned(job.number, job.values, len(rows), last)
        elif rc == 0 and value is not None:
            spec = _read_yaml(job.run_dir / "spec.yaml")
            if isinstance(spec, dict) and isinstance(spec.get("train"), dict) and spec["train"].get("seed") is None:
                spec["train"]["seed"] = summary.get("seed")  # the seed drawn, so best.yaml repeats it
            self._tell(job.trial, State.COMPLETE, value, {**attrs, STATUS: "complete", "cnnspec_spec": spec})
            self.report.trial_complete(job.number, job.values, value, len(rows), attrs["cnnspec_seconds"], self.study)
        elif (self.stop and rc != 0) or (rc == 130 and not job.pruned):
            # stopped by Ctrl-C: not a result. Queue the same values so the next run tries them first.
            self._tell(job.trial, State.FAIL, None, {STATUS: "interrupted"})
            self._requeue(job)
            for p in (job.run_dir, job.log, job.run_dir.with_suffix(".yaml")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            self.report.trial_interrupted(job.number)
        elif rc == 1:  # the spec did not fit what only a run sees (the data's real shape, ...)
            errors = _log_errors(job.log)
            self._tell(job.trial, State.PRUNED, None, {**attrs, STATUS: "invalid", "cnnspec_errors": errors})
            self.report.trial_invalid(job.number, job.values, errors)
        elif rc == 2:  # data, device or plugin missing: every trial would fail the same way
            errors = _log_errors(job.log)
            self._tell(job.trial, State.FAIL, None, {STATUS: "error", "cnnspec_errors": errors})
            self._requeue(job)
            self.fatal = f"trial {job.number} could not start: " + " / ".join(errors)
            for other in self.jobs.values():
                self._signal(other, signal.SIGINT)
        else:  # 3: training failed (NaN loss, a plugin raised); anything else: it crashed
            errors = _log_errors(job.log) if rc != 0 else [f"metrics.jsonl has no {self.sweep.metric}"]
            if rc not in (0, 3):
                errors.append(f"exit status {rc}")
            self._tell(job.trial, State.FAIL, None, {**attrs, STATUS: "failed", "cnnspec_errors": errors})
            self.report.trial_failed(job.number, job.values, errors)

    def _requeue(self, job: Job) -> None:
        try:
            self.study.enqueue_trial(dict(job.values), user_attrs={"cnnspec_retry_of": job.number})
        except Exception as e:
            self.report.note(f"trial {job.number}: could not queue it again ({e})")


def _counted(t: Any) -> bool:
    """Whether a trial uses up one of the sweep's trials: finished with a result, or running."""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return t.state == TrialState.FAIL and t.user_attrs.get(STATUS) in COUNTED


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    except (OSError, ValueError):
        return []


def _log_errors(log: Path) -> list[str]:
    """The child's error lines (located ones first), for the results and the progress lines."""
    try:
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ["(no log)"]
    errors = [ln for ln in lines if ": error: " in ln or ln.startswith("cnnspec: error")]
    return errors or lines[-3:] or ["(the trial printed nothing)"]
