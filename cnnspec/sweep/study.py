"""The Optuna study of a sweep: its storage, its samplers, each trial's values, and each trial's end.

Optuna is imported inside the methods, so that ``sweep_command`` can say how to install it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from cnnspec.spec.sweepspace import Param, Sweep
from cnnspec.sweep.folder import SweepId
from cnnspec.sweep.options import SweepError
from cnnspec.sweep.report import COUNTED, STATUS

HEARTBEAT_S, GRACE_S = 10, 60  # a worker that stops beating for GRACE_S has died: its trial is run again


def redact(url: str) -> str:
    """A storage URL without its password, fit for files and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


class SweepStudy:
    """The study every worker of one sweep shares: ask for a trial, report its epochs, tell its end."""

    def __init__(self, ident: SweepId, sweep: Sweep, url: str, note: Callable[[str], None]) -> None:
        """Open (or create) the study in the storage at ``url``; SweepError if it cannot be used."""
        self.ident, self.sweep, self.url, self.note = ident, sweep, url, note
        try:
            self.study = self._open(_storage(url))
            self.seed = int(self.study.user_attrs["cnnspec_seed"])
        except SweepError:
            raise
        except ImportError as e:  # e.g. psycopg2 for postgresql://
            raise SweepError(f"the storage {redact(url)} needs a driver that is not installed: {e} "
                             "(for postgresql:// URLs: pip install 'psycopg[binary]', or psycopg2-binary with "
                             "postgresql+psycopg2://)") from None
        except Exception as e:
            raise SweepError(f"cannot use the storage {redact(url)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None

    def _open(self, storage: Any) -> Any:
        """The study, made by the first worker (which records the sweep's seed); refused if another sweep's."""
        import optuna

        s = self.sweep.section
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                              n_warmup_steps=s.pruner_warmup_epochs)
                  if s.pruner == "median" else optuna.pruners.NopPruner())
        direction: Any = self.sweep.direction
        study = optuna.create_study(storage=storage, study_name=self.ident.study, load_if_exists=True,
                                    direction=direction, pruner=pruner)
        attrs = study.user_attrs
        fingerprint = self.ident.fingerprint
        if attrs.get("cnnspec_fingerprint", fingerprint) != fingerprint:
            raise SweepError(f"study {self.ident.study} in {redact(self.url)} belongs to another sweep (a "
                             "different spec, space, metric, sampler or seed); give another --study")
        if "cnnspec_fingerprint" not in attrs:
            seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
            # the fingerprint last: it marks the study complete, so a start-up stopped before it
            # (Ctrl-C) is simply done again by the next start
            for k, v in {"spec": str(self.ident.spec), "metric": self.sweep.metric, "seed": seed,
                         "params": [p.key for p in self.sweep.params], "fingerprint": fingerprint}.items():
                study.set_user_attr(f"cnnspec_{k}", v)
        return study

    # -- reading ------------------------------------------------------------------------------

    def trials(self) -> list[Any]:
        return list(self.study.get_trials(deepcopy=False))

    def done(self) -> int:
        """Trials that used up one of the sweep's trials and are over."""
        return sum(1 for t in self.trials() if counted(t) and t.state.is_finished())

    def running(self) -> int:
        """Trials running now, in this worker or any other."""
        from optuna.trial import TrialState

        return sum(1 for t in self.trials() if t.state == TrialState.RUNNING)

    def beat(self, trials: Iterable[Any]) -> None:
        """Tell the storage that these trials' worker is alive; fail the trials of dead workers."""
        import optuna

        for trial in trials:
            self.study._storage.record_heartbeat(trial._trial_id)
        optuna.storages.fail_stale_trials(self.study)

    # -- asking -------------------------------------------------------------------------------

    def ask(self) -> tuple[Any, dict[str, Any]] | None:
        """A new trial and its values (as Optuna sampled them); None when none is due."""
        import optuna

        n = sum(1 for t in self.trials() if counted(t))
        if n >= self.sweep.trials:
            return None
        self.study.sampler = self._sampler(n)  # the grid picks its point in ask()
        trial = self.study.ask()
        self.study._storage.record_heartbeat(trial._trial_id)
        # another worker may have asked at the same moment: the lower trial numbers keep the slots
        before = sum(1 for t in self.trials() if counted(t) and t.number < trial.number)
        if before >= self.sweep.trials:
            self._tell(trial, optuna.trial.TrialState.FAIL, None, {STATUS: "surplus"})
            return None
        # values are drawn in suggest_*, after ask: seed them by the trial's place among the
        # sweep's trials, which no two workers share and which an interrupted trial gives back
        self.study.sampler = self._sampler(before)
        return trial, {p.key: self._suggest(trial, p) for p in self.sweep.params}

    def _sampler(self, slot: int) -> Any:
        """A sampler seeded for this slot, so that a sweep drawn again (or continued after an
        interruption) draws the same values; the grid keeps one order for the whole sweep."""
        import optuna

        s = self.sweep.section.sampler
        if s == "grid":
            return optuna.samplers.GridSampler({p.key: p.grid() or [] for p in self.sweep.params}, seed=self.seed)
        seed = (self.seed * 1_000_003 + slot) % 2**32  # one seed per slot, from the sweep's
        if s == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _suggest(self, trial: Any, p: Param) -> Any:
        grid = self.sweep.section.sampler == "grid"
        if grid or p.kind == "choice":
            return trial.suggest_categorical(p.key, p.grid() if grid else p.labels)
        if p.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.kind == "log_uniform")
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.kind == "log_int")

    # -- telling ------------------------------------------------------------------------------

    @staticmethod
    def set_attrs(trial: Any, attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)

    @staticmethod
    def report(trial: Any, value: float, step: int) -> bool:
        """Report one epoch's metric; whether the pruner says to stop the trial."""
        trial.report(value, step=step)
        return bool(trial.should_prune())

    def complete(self, trial: Any, value: float, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        self._tell(trial, TrialState.COMPLETE, value, attrs)

    def prune(self, trial: Any, attrs: dict[str, Any]) -> None:
        """End a trial as pruned: stopped by the pruner, or invalid (it could never train)."""
        from optuna.trial import TrialState

        self._tell(trial, TrialState.PRUNED, None, attrs)

    def fail(self, trial: Any, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        self._tell(trial, TrialState.FAIL, None, attrs)

    def _tell(self, trial: Any, state: Any, value: float | None, attrs: dict[str, Any]) -> None:
        """Record a trial's end; a trial another worker already failed as stale stays failed."""
        import optuna

        try:
            self.set_attrs(trial, attrs)
            self.study.sampler = optuna.samplers.RandomSampler()  # the grid's after_trial would call stop()
            self.study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
            self.note(f"trial {trial.number}: could not record its end ({e})")

    def requeue(self, number: int, values: dict[str, Any]) -> None:
        """Queue trial ``number``'s values again, so that the next trial (here or elsewhere) tries them."""
        try:
            self.study.enqueue_trial(dict(values), user_attrs={"cnnspec_retry_of": number})
        except Exception as e:
            self.note(f"trial {number}: could not queue it again ({e})")


def _storage(url: str) -> Any:
    """Optuna's RDB storage at ``url``, with heartbeats: a dead worker's trial is failed and run again."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", module="optuna")
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # several workers may share one file
    for attempt in range(5):  # workers starting together race to create the tables
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except ImportError:
            raise
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 + int.from_bytes(os.urandom(1), "little") / 128)  # 0.5 to 2.5 s, apart from the others
    raise AssertionError("unreachable")


def counted(t: Any) -> bool:
    """Whether a trial uses up one of the sweep's trials: finished with a result, or running."""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return t.state == TrialState.FAIL and t.user_attrs.get(STATUS) in COUNTED
