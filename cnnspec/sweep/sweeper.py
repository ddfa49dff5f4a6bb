"""``cnnspec sweep``: search a spec's ``sweep:`` space with Optuna, one ``cnnspec run`` per trial.

This process never imports torch. It asks Optuna for a trial, checks the trial's spec
statically (``sweepspace.check_trial``: an impossible trial is told to Optuna as pruned, with
its located error, and never trains), writes it to ``trials/NNNN.yaml`` and starts
``python -m cnnspec run`` on it as a child process, up to ``-j`` at once. It follows each
child's ``metrics.jsonl`` to report every epoch's metric to Optuna and prunes (SIGINT to the
child) when the median pruner says so. Every worker of a sweep, on this machine or others,
shares one Optuna storage: a SQLite file in the sweep folder by default, or ``--storage URL``.

The coordinator here holds the loop; ``study`` is the Optuna side, ``pool`` the child
processes, ``folder`` the sweep folder's identity, ``report`` what the user sees and keeps.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from cnnspec.errors import MEMORY_REFUSAL, Interrupted, SpecError, UsageError
from cnnspec.spec.sweepspace import Sweep, check_sweep, check_trial, label
from cnnspec.sweep.folder import DB_FILE, SweepId, sweep_folder, write_meta
from cnnspec.sweep.options import SweepError, SweepOptions, jobs_problem
from cnnspec.sweep.pool import Job, Pool
from cnnspec.sweep.report import STATUS, Reporter, best_value
from cnnspec.sweep.study import HEARTBEAT_S, SweepStudy, redact

POLL_S = 0.2
IDLE_S = 2.0  # nothing to start now (the sweep's trials all taken): look again after this


def sweep_command(options: SweepOptions) -> None:
    """The body of ``cnnspec sweep``; returns when every trial of the sweep is done."""
    problem = jobs_problem(options.jobs, str(options.jobs))
    if problem:  # the command line refuses it already; a caller of this function may not have
        raise UsageError(f"cnnspec sweep: error: argument -j/--jobs: {problem}")
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SweepError("cnnspec sweep needs Optuna: pip install 'cnnspec[sweep]' (or pip install optuna)") from None
    located, spec, sweep = _load(options)
    Sweeper(options, located, spec, sweep).run()


def _load(options: SweepOptions) -> tuple[Any, Any, Sweep]:
    """The located data (after --set), the checked base Spec and the checked Sweep."""
    from cnnspec.spec.check import check
    from cnnspec.spec.overrides import apply
    from cnnspec.spec.yamlpos import load_file

    path = options.spec
    located = load_file(path)  # SpecError, UnreadableSpec
    apply(located, list(options.overrides))  # OverrideError
    result = check(located, plugins=options.plugins, trust=options.trust)
    if isinstance(located.data, dict) and located.data.get("sweep") is None:
        raise SpecError([*result.problems, located.problem(
            (), "the spec has no 'sweep' section: add one with a 'space' to search (see README, Sweeps)")], path)
    if result.spec is None:
        _, more = check_sweep(located, None, base_valid=False)
        raise SpecError([*result.problems, *more], path)
    sweep, problems = check_sweep(located, result.spec.registry)
    if sweep is None:
        raise SpecError(problems, path)
    return located, result.spec, sweep


class Sweeper:
    """Runs one worker of a sweep: this process's share of the trials, until all are done."""

    def __init__(self, options: SweepOptions, located: Any, spec: Any, sweep: Sweep) -> None:
        self.options, self.located, self.spec, self.sweep = options, located, spec, sweep
        self.stop = 0  # Ctrl-C presses
        self.fatal: str | None = None
        self.host = socket.gethostname()
        fingerprint = sweep.fingerprint(located.data)
        self.ident = SweepId(spec=Path(options.spec).resolve(), name=spec.name,
                             study=options.study or f"{spec.name}-{fingerprint[:8]}",
                             storage=redact(options.storage) if options.storage else None, fingerprint=fingerprint)
        self.folder, self.resumed = sweep_folder(self.ident, options.output)
        if not self.resumed:  # first, so a start-up stopped from here on (Ctrl-C) leaves a folder
            write_meta(self.folder, self.ident, sweep, "starting")  # that the same command continues
        self.report = Reporter(options.quiet, sweep, self.folder)
        url = options.storage or f"sqlite:///{(self.folder / DB_FILE).resolve()}"
        try:
            self.study = SweepStudy(self.ident, sweep, url, self.report.note)
        except SweepError:
            if not self.resumed:  # leave no empty sweep folder behind
                shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.pool = Pool(options, self.folder)
        self.next_beat = 0.0
        self.idle_until = 0.0
        self.waiting_said = False

    def run(self) -> None:
        """Run trials until the sweep has all of them (or Ctrl-C, or a trial that cannot start)."""
        write_meta(self.folder, self.ident, self.sweep, "running")
        self.report.start(self.ident.study, self.ident.storage_shown, self.options.jobs, self.resumed,
                          self.study.done())
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._on_signal)
        try:
            self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.pool.signal_all(signal.SIGKILL)  # only after a bug: leave no child behind
        done = self.study.done()
        finished = not self.stop and not self.fatal
        self.report.write(self.study.study, self.ident.storage_shown, final=True)
        write_meta(self.folder, self.ident, self.sweep, "finished" if finished else "interrupted")
        if self.fatal:
            raise SweepError(self.fatal)
        if self.stop:
            raise Interrupted(f"interrupted after {done} of {self.sweep.trials} trials; run the same command "
                              f"again to continue (sweep folder {self.folder})")
        self.report.finish()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ctrl-C (or SIGTERM): the first asks the children to save and stop, the next kills them."""
        self.stop += 1
        if self.stop == 1:
            self.report.note("stopping: the running trials save and stop (Ctrl-C again to kill them)")
            self.pool.signal_all(signal.SIGINT)
        else:
            self.pool.signal_all(signal.SIGKILL)

    def _loop(self) -> None:
        pool = self.pool
        while True:
            now = time.monotonic()
            if now >= self.next_beat:  # tell the storage we are alive; fail trials of dead workers
                self.study.beat(job.trial for job in pool.jobs.values())
                self.next_beat = now + HEARTBEAT_S
            for job in list(pool.jobs.values()):
                self._poll(job)
            if self.stop or self.fatal:
                if not pool.jobs:
                    return
                time.sleep(POLL_S)
                continue
            nothing_due = False
            while not pool.full() and now >= self.idle_until and not (self.stop or self.fatal):
                if not self._start_one():
                    self.idle_until = now + IDLE_S
                    nothing_due = True
                    break
            if nothing_due and not pool.jobs:
                running = self.study.running()
                if not running:
                    return
                if not self.waiting_said:
                    self.report.note(f"waiting for {running} trial(s) running in other workers")
                    self.waiting_said = True
            time.sleep(POLL_S)

    def _start_one(self) -> bool:
        """Ask Optuna for a trial and start it (or tell it, if invalid); False when none is due."""
        asked = self.study.ask()
        if asked is None:
            return False
        trial, values = asked
        data, problems = check_trial(self.located, self.spec.registry, self.sweep, values)
        attrs = {"cnnspec_host": self.host}
        if problems:
            errors = [p.format() for p in problems]
            self.study.prune(trial, {**attrs, STATUS: "invalid", "cnnspec_errors": errors})
            self.report.trial_invalid(trial.number, values, errors)
            self.report.write(self.study.study, self.ident.storage_shown)
            return True
        self._spawn(trial, values, data, attrs)
        return True

    def _spawn(self, trial: Any, values: dict[str, Any], data: dict[str, Any], attrs: dict[str, Any]) -> None:
        head = f"# trial {trial.number} of sweep {self.ident.study}: " + ", ".join(
            f"{k}={label(p.value(values[k]))}" for p in self.sweep.params for k in [p.key]) + "\n"
        place = self.pool.place(trial.number, data, head)
        if place.gpu is not None:
            attrs = {**attrs, "cnnspec_gpu": place.gpu}
        self.study.set_attrs(trial, {**attrs, STATUS: "running", "cnnspec_run_dir": str(place.run_dir.resolve())})
        job = self.pool.launch(place, trial, values)
        if self.stop:  # Ctrl-C came while it was starting
            self.pool.signal(job, signal.SIGINT)
        self.report.trial_started(trial.number, values, place.gpu)

    def _poll(self, job: Job) -> None:
        """Report the child's new epochs to Optuna (pruning if told to) and finish it when it exits."""
        rc = job.proc.poll()  # before reading: once it has exited, every epoch is on disk
        for row in self.pool.new_rows(job):
            job.epochs += 1
            value = row.get(self.sweep.metric)
            if job.pruned or not isinstance(value, (int, float)):
                continue
            try:  # every epoch is reported, even after the child ended: later trials' median needs it
                if self.study.report(job.trial, float(value), int(row.get("epoch", job.epochs))) and not self.stop:
                    job.pruned = True
                    if rc is None:
                        self.pool.signal(job, signal.SIGINT)  # it saves a checkpoint and stops
            except Exception as e:  # e.g. the trial was failed as stale by another worker
                self.report.note(f"trial {job.number}: {e}")
        if rc is None:
            self.pool.kill_if_stuck(job)
            return
        self._finish(job, rc)
        self.report.write(self.study.study, self.ident.storage_shown)

    def _finish(self, job: Job, rc: int) -> None:
        """Tell Optuna how a child's trial ended, from its exit status and what it wrote."""
        out = self.pool.release(job)
        attrs: dict[str, Any] = {"cnnspec_epochs": len(out.rows),
                                 "cnnspec_seconds": round(time.monotonic() - job.started, 1)}
        value = best_value(out.rows, self.sweep.metric, self.sweep.direction)
        if job.pruned:
            self.study.prune(job.trial, {**attrs, STATUS: "pruned"})
            last = out.rows[-1].get(self.sweep.metric) if out.rows else None
            self.report.trial_pruned(job.number, job.values, len(out.rows), last)
        elif rc == 0 and value is not None:
            spec = out.spec
            if isinstance(spec, dict) and isinstance(spec.get("train"), dict) and spec["train"].get("seed") is None:
                spec["train"]["seed"] = out.summary.get("seed")  # the seed drawn, so best.yaml repeats it
            self.study.complete(job.trial, value, {**attrs, STATUS: "complete", "cnnspec_spec": spec})
            self.report.trial_complete(job.number, job.values, value, len(out.rows), attrs["cnnspec_seconds"],
                                       self.study.study)
        elif (self.stop and rc != 0) or (rc == 130 and not job.pruned):
            # stopped by Ctrl-C: not a result. Queue the same values so the next run tries them first.
            self.study.fail(job.trial, {STATUS: "interrupted"})
            self.study.requeue(job.number, job.values)
            self.pool.discard(job)
            self.report.trial_interrupted(job.number)
        elif rc == 1 or (rc == 2 and _refused_for_memory(self.pool.errors(job))):
            # the spec did not fit what only a run sees (the data's real shape, ...), or this trial's
            # values need more memory than the device has: other values may fit, so not the sweep's end
            errors = self.pool.errors(job)
            self.study.prune(job.trial, {**attrs, STATUS: "invalid", "cnnspec_errors": errors})
            self.report.trial_invalid(job.number, job.values, errors)
        elif rc == 2:  # data, device or plugin missing: every trial would fail the same way
            errors = self.pool.errors(job)
            self.study.fail(job.trial, {STATUS: "error", "cnnspec_errors": errors})
            self.study.requeue(job.number, job.values)
            self.fatal = f"trial {job.number} could not start: " + " / ".join(errors)
            self.pool.signal_all(signal.SIGINT)
        else:  # 3: training failed (NaN loss, a plugin raised); anything else: it crashed
            errors = self.pool.errors(job) if rc != 0 else [f"metrics.jsonl has no {self.sweep.metric}"]
            if rc not in (0, 3):
                errors.append(f"exit status {rc}")
            self.study.fail(job.trial, {**attrs, STATUS: "failed", "cnnspec_errors": errors})
            self.report.trial_failed(job.number, job.values, errors)


def _refused_for_memory(errors: list[str]) -> bool:
    """Whether a trial that exited 2 was refused by ``cnnspec run``'s device-memory check."""
    return any(MEMORY_REFUSAL in e for e in errors)
