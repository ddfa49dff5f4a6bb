"""``cnnspec run``: check the spec, load and fit-check the data, make the run folder, train, report.

Failures are raised as ``cnnspec.errors`` classes; ``cli.main`` turns them into exit statuses.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.errors import (
    MEMORY_REFUSAL,
    CheckpointError,
    CnnspecError,
    Interrupted,
    NonFiniteLoss,
    OutOfMemory,
    ResourceError,
    RunFolderError,
    SpecError,
    TrainingFailed,
    out_of_memory,
    without_cpp_stack,
)
from cnnspec.spec.cost import human, human_bytes, spec_estimate
from cnnspec.spec.metrics import metric
from cnnspec.spec.sections import Spec
from cnnspec.train.progress import Progress, QuietProgress, RichProgress
from cnnspec.train.rundir import LAST, SPEC_FILE, RunDir

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cnnspec.train.checkpoint import Checkpoint
    from cnnspec.train.distributed import World
    from cnnspec.train.job import Job
    from cnnspec.train.loop import Trainer
    from cnnspec.train.parts import Parts


def load_for_run(path: str, overrides: Sequence[str], device: str | None, plugins: Sequence[str] = (),
                 trust: bool = False, run_dir: str | None = None) -> Spec:
    """Load, override and check a spec for running; raises SpecError, UnreadableSpec, OverrideError.

    With ``run_dir`` (--resume), the plugins must be those the run recorded, unchanged."""
    from cnnspec.spec.check import check
    from cnnspec.spec.overrides import apply
    from cnnspec.spec.yamlpos import load_file
    from cnnspec.train.runplugins import run_policy

    located = load_file(path)
    apply(located, [*overrides, f"train.device={device}"] if device else list(overrides))
    listed = located.data.get("plugins") if isinstance(located.data, dict) else None
    policy = run_policy(Path(run_dir), listed, trust, list(plugins)) if run_dir else None
    result = check(located, plugins=plugins, policy=policy, trust=trust, weights=run_dir is None)
    if result.spec is None:
        raise SpecError(result.problems, path)
    if result.spec.data is None:
        raise SpecError([located.problem((), "'run' needs a 'data' section naming the dataset")], path)
    return result.spec


@dataclass(frozen=True)
class RunOptions:
    """What ``cnnspec run`` was asked: a SPEC file, or a run folder to resume, and how."""

    spec: str | None = None  # the spec file; exactly one of spec and resume
    resume: str | None = None  # --resume RUN_DIR: continue that run
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, in order
    device: str | None = None  # --device, overriding train.device
    output: str | None = None  # --output DIR (default runs/NAME-TIMESTAMP)
    plugins: tuple[str, ...] = ()  # -p MODULE
    trust: bool = False  # --trust: the plugin files the spec names, for this call
    quiet: bool = False  # no progress display; print only the run folder
    force: bool = False  # run even when the training memory estimate exceeds what the device has
    fast_dev_run: bool = False  # one epoch on two batches of each split; the run folder kept only with --output
    limit_batches: int | None = None  # --limit-batches N: train.limit_batches=N (N batches per epoch of each split)
    # called with the run folder when training ends (rank 0; cli: write report.html unless --no-report);
    # a callable rather than an import, since train sits below tools
    after: Callable[[Path], None] | None = None


def run_command(options: RunOptions) -> None:
    """The body of ``cnnspec run``; returns when the run completed (or had nothing left to do)."""
    if not options.fast_dev_run:
        return _run(options)
    if options.resume:
        raise CnnspecError("--fast-dev-run checks a spec end to end; it does not resume a run")
    import shutil
    import tempfile

    keep = options.output is not None
    folder = None if keep else tempfile.mkdtemp(prefix="cnnspec-fast-dev-run-")
    try:
        _run(dataclasses.replace(options, output=options.output or str(Path(folder or ".") / "run")))
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if not options.quiet:
        print("fast dev run: one epoch on two batches of each split went through"
              + ("" if keep else "; the run folder was not kept (--output DIR keeps it)"))


def _fast(options: RunOptions, path: str) -> tuple[str, ...]:
    """The overrides quick trials add: --limit-batches N (train.limit_batches), and a fast dev run's
    one epoch on two batches (data.limit) of each split."""
    limited = (f"train.limit_batches={options.limit_batches}",) if options.limit_batches is not None else ()
    if not options.fast_dev_run:
        return (*options.overrides, *limited)
    overrides = (*options.overrides, *limited, "train.epochs=1")
    spec = load_for_run(path, overrides, options.device, options.plugins, options.trust)
    assert spec.data is not None
    return (*overrides, f"data.limit={2 * spec.data.batch_size}")


def _run(options: RunOptions) -> None:
    from cnnspec.train import distributed
    from cnnspec.train.device import resolve_device
    from cnnspec.train.host import keep_freed_memory

    if bool(options.spec) == bool(options.resume):
        raise CnnspecError("give either a SPEC file or --resume RUN_DIR")
    keep_freed_memory()  # before anything is allocated; a no-op off glibc
    path = str(Path(options.resume) / SPEC_FILE) if options.resume else options.spec
    assert path is not None
    overrides = _fast(options, path)
    spec = load_for_run(path, overrides, options.device, options.plugins, options.trust, options.resume)
    world = distributed.current_world()
    # resolved once, then this rank's GPU under torchrun: the device every later step uses
    device = distributed.device_for(world, resolve_device(spec.train.device))
    if not options.force:
        check_fits(spec, device)  # before anything is allocated
        check_address_space(spec, device)
    distributed.init(world, device)
    progress: Progress = RichProgress() if world.main and not options.quiet else QuietProgress()
    clean = False  # ranks wait for each other before leaving unless one failed
    try:
        _train(spec, options, progress, world, device)
        clean = True
    except Interrupted:
        clean = True
        raise
    except (OutOfMemory, MemoryError, RuntimeError) as e:  # building the model or the data (training says its own)
        oom = out_of_memory(e)
        if oom is None or os.environ.get("CNNSPEC_DEBUG"):
            raise
        raise _out_of_memory(spec, device, oom, options.force) from None
    finally:
        distributed.close(world, wait=clean)


def check_fits(spec: Spec, device: torch.device) -> None:
    """Raise ResourceError when the training memory estimate exceeds what ``device`` has free.

    A spec's ``limits.memory`` can only tighten this (validate refuses a model over it); it never
    lifts the refusal, which an untrusted spec could otherwise do. Only ``--force`` on the command
    line skips this check.
    """
    from cnnspec.train.host import available_memory

    memory = spec_estimate(spec)
    free = available_memory(device)
    if free is None or memory.total <= free:
        return
    where = "free on " + str(device) if device.type == "cuda" else "available RAM"
    whole = memory.data is not None and memory.data.kind == "resident" and memory.data_bytes > memory.step_total
    hint = ("the dataset is held in memory whole: train on a subset (data.limit)" if whole
            else "lower data.batch_size or the layer sizes")
    raise ResourceError(
        f"{spec.file}{MEMORY_REFUSAL}{human_bytes(memory.total)} at batch {memory.batch_size:,} "
        f"but only {human_bytes(free)} is {where}; most: {memory.dominant_text()} ({hint}, or pass --force)")


def check_address_space(spec: Spec, device: torch.device) -> None:
    """Under an address-space cap (`ulimit -v`), raise ResourceError when what is left of it, with
    torch loaded, cannot hold the training estimate (on the CPU) and what a run maps besides."""
    from cnnspec.train.host import ADDRESS_RESERVE, address_space_limit, address_space_used, limit_text

    cap, used = address_space_limit(), address_space_used()
    if cap is None or used is None:
        return
    memory = spec_estimate(spec)
    model = memory.total if device.type in ("cpu", "mps") else 0
    if used + model + ADDRESS_RESERVE <= cap:
        return
    raise ResourceError(
        f"{spec.file}{MEMORY_REFUSAL}{human_bytes(model)} at batch {memory.batch_size:,} and a run about "
        f"{human_bytes(ADDRESS_RESERVE)} more, but the address-space limit ({limit_text(cap)}) leaves "
        f"{human_bytes(max(0, cap - used))} with torch loaded; raise it to at least "
        f"ulimit -v {-(-(used + model + ADDRESS_RESERVE) // 1024)} (or pass --force to try)")


def _out_of_memory(spec: Spec, device: torch.device, oom: OutOfMemory, force: bool, then: str = "") -> ResourceError:
    """One line for an allocation that failed, in the words of the memory check's refusal: what the
    estimate said, what torch asked for, and what to change."""
    from cnnspec.train.host import address_space_limit, limit_text

    memory = spec_estimate(spec)
    asked = (f"{human_bytes(oom.requested)} ({oom.requested:,} bytes)" if oom.requested is not None
             else oom.amount or "the memory it asked for")
    during = f" for {oom.during}" if oom.during else " while training" if then else ""
    cap = address_space_limit()
    change = "lower data.batch_size or the layer sizes"
    if cap is not None and (oom.requested is None or oom.requested < cap):  # the cap may be what ran out
        change = f"raise the address-space limit ({limit_text(cap)}), or {change}"
    change += "; --force skips only the check that refuses this" if force else "; the estimate fell short here"
    return ResourceError(
        f"{spec.file}{MEMORY_REFUSAL}{human_bytes(memory.total)} at batch {memory.batch_size:,} but torch "
        f"could not allocate {asked} on {device}{during}; most: {memory.dominant_text()} ({change}){then}")


def data_budget(spec: Spec, device: torch.device) -> int | None:
    """Bytes the dataset may hold on ``device`` beside the model's training estimate (None: unknown):
    a streamed image set stays streamed when its float32 copy would take much of it."""
    from cnnspec.train.host import available_memory

    free = available_memory(device)
    return None if free is None else max(0, free - spec_estimate(spec).total)


# what --resume may change: how long to train, where and how (capture), and where files are (not what is trained)
_RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "capture"), ("data", "root"),
                      ("data", "download")}


def _resume_changes(saved: dict[str, Any], now: dict[str, Any], written: Any = None) -> list[str]:
    """Dotted keys where the re-resolved spec differs from the checkpoint's, beyond the allowed.

    A key the checkpoint's spec lacks was added to cnnspec after the run was made: its default is
    what the run trained with, so it is a change only where the spec file or a ``--set`` wrote it
    (``written``: the spec as written, overrides applied)."""
    out = []
    for key in sorted((set(saved) | set(now)) - {"plugins"}):  # plugin paths are made absolute
        a, b = saved.get(key), now.get(key)
        said = written.get(key) if isinstance(written, dict) else None
        if key not in saved and said is None:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in _resume_changes(a, b, said)
                    if (key, k.split(".")[0]) not in _RESUMABLE_CHANGES]
        elif a != b:
            out.append(key)
    return out


def _resumable(run_dir: str, spec: Spec, job: Job | None = None) -> Checkpoint:
    """The last checkpoint of ``run_dir``, if it is resumable with ``spec`` (``job``: the torchrun
    job that owns the folder, when it resumes by itself rather than by --resume)."""
    from cnnspec.train.checkpoint import Checkpoint

    saved = Checkpoint.load_resumable(run_dir)
    changed = _resume_changes(saved.spec, spec.to_dict(), spec.located.data)
    if changed and job is not None:
        raise CnnspecError(f"{run_dir} holds the run of torchrun job '{job.id}', and this spec would change "
                           f"{', '.join(changed)} (a resumed job may change only train.epochs, train.device, "
                           "train.capture, data.root and data.download); "
                           "start a new job with another --rdzv-id or --output")
    if changed:
        raise CnnspecError("--resume can change only train.epochs, train.device, train.capture, data.root and "
                           f"data.download; this would change {', '.join(changed)}")
    _schedule_fits(spec, int(saved.spec.get("train", {}).get("epochs", spec.train.epochs)))
    return saved


def _schedule_fits(spec: Spec, was: int) -> None:
    """A run resumed with more epochs than its schedule was planned for would train past the
    schedule's end (cosine: lr 0) without a word: refuse with what to do instead."""
    sc = spec.scheduler
    if sc is None or spec.train.epochs <= was:
        return
    now, then = sc.type.planned_for(sc.params, spec.train.epochs), sc.type.planned_for(sc.params, was)
    if now is not None and now != then:
        raise CnnspecError(f"--resume with train.epochs={spec.train.epochs}: the {sc.name} schedule was "
                           f"planned over {then} epochs and cannot be stretched mid-run; start a new run with "
                           f"train.epochs={spec.train.epochs} (or weights: from this run's best.pt), or resume "
                           f"with a scheduler whose length is fixed (e.g. cosine T_max)")


def _train(spec: Spec, options: RunOptions, progress: Progress, world: World, device: torch.device) -> None:
    from cnnspec.data.splits import prepare_data
    from cnnspec.registry.manager import default_plugin_manager
    from cnnspec.train.capture import decide
    from cnnspec.train.job import current_job, locate
    from cnnspec.train.loop import Trainer
    from cnnspec.train.parts import build_parts

    # under torchrun, a job with an id of its own resumes the run folder it owns (train.job)
    job = None if options.resume or options.fast_dev_run else current_job()
    owned, resume = locate(job, spec.name, options.output, world) if job else (None, False)
    resume_dir = options.resume or (str(owned) if resume else None)
    saved = _resumable(resume_dir, spec, None if options.resume else job) if resume_dir else None
    # everything that can fail is built before the run folder exists
    batches = prepare_data(spec, device, data_budget(spec, device), refuse=not options.force, pixels=True)
    parts = build_parts(spec, batches, device, world)
    parts.capture = decide(parts, parts.optimizer, device, parts.scheduler)  # cuda_graph where it cannot be: an error
    on_setup: Callable[[], None] | None = None
    if saved is not None:
        assert resume_dir is not None
        run = RunDir(resume_dir)
        if not _continues(run, saved, parts, progress, job):
            return
        if world.main:
            _claim(run, job)
            run.clean_stale_temporaries()  # a process killed mid-save left them

            def on_setup() -> None:  # a changed epoch count is recorded, once the checkpoint is restored
                run.write_spec(spec.resolved(options.plugins))
    else:
        run = _new_run_dir(spec, options, world, job, owned)
    try:
        trainer = Trainer(parts, spec.registry.pm or default_plugin_manager(), progress,
                          run_dir=run if world.main else None, resume=saved, on_setup=on_setup)
        _fit(trainer, run, progress, options)
    finally:
        if world.main:
            run.unlock()


def _continues(run: RunDir, saved: Checkpoint, parts: Parts, progress: Progress, job: Job | None) -> bool:
    """Whether the resumed run has epochs left (else says so); CheckpointError if its weights do
    not fit the model, checked before anything is written: a failed resume leaves the folder as it was."""
    assert saved.resume is not None
    pos, epochs = saved.resume.position, parts.spec.train.epochs
    if pos.epoch >= epochs:  # nothing to do, so nothing is written
        progress.message(f"{run.path}: already finished ({epochs} epoch{'' if epochs == 1 else 's'}); to train "
                         f"longer: cnnspec run --resume {run.path} --set train.epochs=N")
        return False
    why = saved.weights_mismatch(parts.model)
    if why:
        raise CheckpointError(f"{run.path / LAST} does not fit the run's spec: {why}")
    if job is not None:
        progress.message(f"torchrun job '{job.id}': resuming {run.path / LAST} at epoch {pos.epoch + 1}, "
                         f"step {pos.step + 1}")
    return True


def _claim(run: RunDir, job: Job | None = None) -> None:
    """Take the run folder's lock (RunFolderError if another live process, not of ``job``, holds it)."""
    if not run.path.is_dir():
        raise RunFolderError(f"{run.path}: not a run folder")
    run.lock(job.id if job else None)


def _start_line(trainer: Trainer, run: RunDir) -> str:
    """What is trained, where and how fast, said once before the first step."""
    from cnnspec.train.summary import fast_paths

    parts, spec, world = trainer.parts, trainer.spec, trainer.world
    per = f"batch {parts.batch_size}"
    if parts.batch_size < parts.train_batch:
        per += f" (data.batch_size {parts.train_batch} is more than the {parts.batch_size} samples there are)"
    if world.distributed:
        lr = spec.optimizer.params.model_dump().get("lr", "?")
        per = (f"batch {parts.batch_size} per process x {world.size} processes = "
               f"{parts.batch_size * world.size} per step (lr {lr}, not scaled)")
    paths = fast_paths(parts.precision, parts.optimizer, parts.capture)
    graph = ["CUDA graph" if parts.capture else f"no CUDA graph: {_no_capture(parts)}"]
    fast = ", ".join(["channels-last"] * paths["channels_last"] + [paths["precision"]]
                     + [f"fused {spec.optimizer.name}"] * paths["fused_optimizer"]
                     + graph * (parts.device.type == "cuda"))
    macs = spec.trace.total_macs
    cost = f"{human(macs)} MACs/sample" if macs is not None else "MACs unknown"
    data = parts.data
    memory = spec_estimate(spec, parts.batch_size, data.held(parts.batch_size))
    cache = f" from the image cache {data.source}" if data.source else ""
    held = (f" (streamed{cache})" if data.streamed  # where the images are: read batch by batch, or held whole
            else f" ({human_bytes(data.resident_bytes)} in memory{',' if cache else ''}{cache})")
    return (f"training {spec.name}: {spec.trace.total_params:,} params, {cost}, ~{human_bytes(memory.total)} "
            f"estimated training memory, on {parts.device} ({fast}), "
            f"{len(data.train[0]):,} training samples{held}, {per} -> {run.path}")


def _no_capture(parts: Parts) -> str:
    """Why the step of a run on CUDA is not captured, for the start-up line."""
    from cnnspec.train.capture import blockers

    if parts.spec.train.capture == "off":
        return "train.capture is off"
    return (blockers(parts, parts.optimizer, parts.device, parts.scheduler) or ["?"])[0]


def _fit(trainer: Trainer, run: RunDir, progress: Progress, options: RunOptions) -> None:
    """Train in ``run`` (locked by this process), report, and turn failures into errors."""
    spec, world, main, quiet = trainer.spec, trainer.world, trainer.world.main, options.quiet

    def finish() -> None:
        _finish(progress, run, trainer.metrics, spec.name, main, options.after)

    progress.message(_start_line(trainer, run))
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the previous epoch's end
        note = _checkpoint_note(run, f" (continue with --resume {run.path})")
        raise Interrupted(f"interrupted; {note}" if main else None) from None
    except RunFolderError as e:  # a full disk, a folder that became read-only: not the training's fault
        finish()
        raise type(e)(f"{e}; {_checkpoint_note(run)}" if main else None) from None
    except CheckpointError:  # a resumed state that does not fit: nothing was trained or written
        raise
    except NonFiniteLoss as e:
        finish()
        note = (f"The last good checkpoint is {run.path / LAST} (end of epoch {len(trainer.metrics)})."
                if (run.path / LAST).is_file() else "No checkpoint was saved before it.")
        raise NonFiniteLoss(f"{e}; stopped. {note}" if main else None) from None
    except Exception as e:  # a plugin's module or hook failing mid-run, say: keep what was saved
        if os.environ.get("CNNSPEC_DEBUG"):
            raise
        finish()
        who = f"rank {world.rank}: " if world.distributed else ""  # every rank says why it stopped
        oom = out_of_memory(e)
        if oom is not None:
            raise _out_of_memory(spec, trainer.parts.device, oom, options.force, f"; {_checkpoint_note(run)}") from None
        raise TrainingFailed(f"{who}training failed: {type(e).__name__}: {without_cpp_stack(str(e))} (set "
                             f"CNNSPEC_DEBUG=1 for the traceback); {_checkpoint_note(run)}") from e
    finish()
    if summary["status"] == "interrupted":
        raise Interrupted(f"interrupted; a resumable checkpoint is saved. Continue with: cnnspec run "
                          f"--resume {run.path}" if main else None)
    final = summary["final"] or {}
    progress.message(
        f"{summary['status']}: test accuracy {final.get(metric('test', 'accuracy'), float('nan')):.4f} after "
        f"{summary['epochs_completed']} epoch{'' if summary['epochs_completed'] == 1 else 's'}; run folder {run.path}"
    )
    if quiet and main:
        print(run.path)  # scripts get where the run went, and nothing else


def _new_run_dir(spec: Spec, options: RunOptions, world: World, job: Job | None = None,
                 owned: Path | None = None) -> RunDir:
    """Rank 0 makes the run folder (or starts again in ``owned``, a folder of ``job`` without a
    checkpoint) and writes the resolved spec; every rank learns where it is."""
    from cnnspec.train import distributed
    from cnnspec.train.job import unseen_warning
    from cnnspec.train.rundir import new_run_dir
    from cnnspec.train.runplugins import run_record

    made: tuple[bool, str] = (False, "")
    job_id = job.id if job else None
    if world.main:
        try:
            run = RunDir(owned if owned is not None else new_run_dir(spec.name, options.output))
            run.lock(job_id)
            resolved = spec.resolved(options.plugins)
            run.write_spec(resolved)
            run.write_plugins(run_record(resolved["plugins"]))
            if job_id is not None:
                run.write_job(job_id)
            made = (True, str(run.path))
        except OSError as e:  # FileExistsError included
            made = (False, str(e))
        except CnnspecError as e:
            made = (False, str(e))
    ok, text = distributed.broadcast(made, world)
    if not ok:
        raise RunFolderError(text if world.main else None)
    warning = unseen_warning(job, Path(text), world) if job else None
    if warning:
        print(warning, file=sys.stderr)
    return RunDir(text)


def _checkpoint_note(run: RunDir, then: str = "") -> str:
    """Where training can continue from, naming only a checkpoint that exists."""
    if (run.path / LAST).is_file():
        return f"the last checkpoint is {run.path / LAST}{then}"
    return f"no checkpoint was saved yet (the run folder is {run.path})"


def _finish(progress: Progress, run: RunDir, rows: list[dict[str, Any]], name: str, main: bool,
            after: Callable[[Path], None] | None = None) -> None:
    """The epoch table, the run's curves.png, then ``after`` (the report); a plotting failure must
    not fail a run."""
    from cnnspec.train.curves import CURVES_FILE, plot_runs

    progress.finish(rows)
    if not main or not rows:
        return
    try:
        plot_runs([(name, rows)], run.path / CURVES_FILE)
    except Exception as e:  # e.g. matplotlib missing: the metrics are in metrics.jsonl anyway
        print(f"cnnspec: warning: could not draw {CURVES_FILE}: {type(e).__name__}: {e}", file=sys.stderr)
    if after is not None:
        after(run.path)
