"""``cnnspec run``: check the spec, load and fit-check the data, make the run folder, train, report.

Failures are raised as ``cnnspec.errors`` classes; ``cli.main`` turns them into exit statuses.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnspec.errors import (
    CheckpointError,
    CnnspecError,
    Interrupted,
    NonFiniteLoss,
    ResourceError,
    RunFolderError,
    SpecError,
    TrainingFailed,
)
from cnnspec.spec.cost import human, human_bytes, spec_estimate
from cnnspec.spec.sections import Spec
from cnnspec.train.progress import Progress, QuietProgress, RichProgress
from cnnspec.train.rundir import LAST, SPEC_FILE, RunDir


def load_for_run(path: str, overrides: list[str], device: str | None, plugins: Sequence[str] = (),
                 trust: bool = False, run_dir: str | None = None) -> Spec:
    """Load, override and check a spec for running; raises SpecError, UnreadableSpec, OverrideError.

    With ``run_dir`` (--resume), the plugins must be those the run recorded, unchanged."""
    from cnnspec.spec.check import check
    from cnnspec.spec.overrides import apply
    from cnnspec.spec.yamlpos import load_file
    from cnnspec.train.runplugins import run_policy

    located = load_file(path)
    if device:
        overrides = [*overrides, f"train.device={device}"]
    apply(located, overrides)
    listed = located.data.get("plugins") if isinstance(located.data, dict) else None
    policy = run_policy(Path(run_dir), listed, trust, list(plugins)) if run_dir else None
    result = check(located, plugins=plugins, policy=policy, trust=trust)
    if result.spec is None:
        raise SpecError(result.problems, path)
    if result.spec.data is None:
        raise SpecError([located.problem((), "'run' needs a 'data' section naming the dataset")], path)
    return result.spec


def run_command(args: argparse.Namespace) -> None:
    """The body of ``cnnspec run``; returns when the run completed (or had nothing left to do)."""
    from cnnspec.train import distributed
    from cnnspec.train.host import keep_freed_memory
    from cnnspec.train.loop import resolve_device

    if bool(args.spec) == bool(args.resume):
        raise CnnspecError("give either a SPEC file or --resume RUN_DIR")
    keep_freed_memory()  # before anything is allocated; a no-op off glibc
    path = str(Path(args.resume) / SPEC_FILE) if args.resume else args.spec
    spec = load_for_run(path, args.overrides, args.device, args.plugins, args.trust, args.resume)
    device = resolve_device(spec.train.device)
    if not getattr(args, "force", False):
        check_fits(spec, device)  # before anything is allocated
    world = distributed.init(device)
    progress: Progress = RichProgress() if world.main and not args.quiet else QuietProgress()
    clean = False  # ranks wait for each other before leaving unless one failed
    try:
        _train(spec, args, progress, world)
        clean = True
    except Interrupted:
        clean = True
        raise
    finally:
        distributed.close(world, wait=clean)


def check_fits(spec: Spec, device: Any) -> None:
    """Raise ResourceError when the training memory estimate exceeds what ``device`` has free.

    A spec with ``limits.memory`` set its own budget (checked by validate) and is not refused here.
    """
    from cnnspec.train.host import available_memory

    if spec.source.limits is not None and spec.source.limits.memory is not None:
        return
    memory = spec_estimate(spec)
    free = available_memory(device)
    if free is None or memory.total <= free:
        return
    where = "free on " + str(device) if device.type == "cuda" else "available RAM"
    raise ResourceError(
        f"{spec.file}: training needs ~{human_bytes(memory.total)} at batch {memory.batch_size:,} "
        f"but only {human_bytes(free)} is {where}; most: {memory.dominant_text()} "
        "(lower data.batch_size or the layer sizes, or pass --force)")


# what --resume may change: how long to train, where, and where files are (not what is trained)
_RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("data", "root"), ("data", "download")}


def _resume_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Dotted keys where the re-resolved spec differs from the checkpoint's, beyond the allowed."""
    out = []
    for key in sorted((set(saved) | set(now)) - {"plugins"}):  # plugin paths are made absolute
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in _resume_changes(a, b) if (key, k.split(".")[0]) not in _RESUMABLE_CHANGES]
        elif a != b:
            out.append(key)
    return out


def _resume_state(run_dir: str, spec: Spec) -> dict[str, Any]:
    """The last checkpoint of ``run_dir``, if it is resumable with ``spec``."""
    from cnnspec.train.rundir import resumable_problem

    state = RunDir(run_dir).load_checkpoint(LAST)
    why = resumable_problem(state)
    if why:
        raise CheckpointError(f"{run_dir}: {LAST} is not a resumable checkpoint: {why}")
    changed = _resume_changes(state["spec"], spec.to_dict())
    if changed:
        raise CnnspecError("--resume can change only train.epochs, train.device, data.root and "
                           f"data.download; this would change {', '.join(changed)}")
    return state


def _train(spec: Spec, args: argparse.Namespace, progress: Progress, world: Any) -> None:
    from cnnspec.data.splits import prepare_data
    from cnnspec.registry.manager import default_plugin_manager
    from cnnspec.train import distributed
    from cnnspec.train.loop import Trainer, resolve_device

    state = _resume_state(args.resume, spec) if args.resume else None
    # everything that can fail is built before the run folder exists
    device = distributed.device_for(world, resolve_device(spec.train.device))
    batches = prepare_data(spec, device)
    trainer = Trainer(spec, batches, device, spec.registry.pm or default_plugin_manager(), progress, world)

    if state is not None:
        run = RunDir(args.resume)
        if state["position"]["epoch"] >= spec.train.epochs:  # nothing to do, so nothing is written
            progress.message(f"{args.resume}: already finished ({spec.train.epochs} epochs)")
            return
        from cnnspec.train.rundir import weights_mismatch

        why = weights_mismatch(trainer.ctx.model, state["model"])
        if why:  # checked before anything is written: a failed resume leaves the folder as it was
            raise CheckpointError(f"{run.path / LAST} does not fit the run's spec: {why}")
        if world.main:
            _claim(run)
            run.clean_stale_temporaries()  # a process killed mid-save left them
        trainer.restore(state)
    else:
        run = _new_run_dir(spec, args, world)
    try:
        _fit(spec, args, progress, world, trainer, run, batches, device, resumed=state is not None)
    finally:
        if world.main:
            run.unlock()


def _claim(run: RunDir) -> None:
    """Take the run folder's lock (RunFolderError if another live process holds it)."""
    if not run.path.is_dir():
        raise RunFolderError(f"{run.path}: not a run folder")
    run.lock()


def _fit(spec: Spec, args: argparse.Namespace, progress: Progress, world: Any, trainer: Any, run: RunDir,
         batches: Any, device: Any, resumed: bool) -> None:
    """Train in ``run`` (locked by this process), report, and turn failures into errors."""
    if resumed and world.main:  # a changed epoch count is recorded, once the checkpoint is restored
        trainer.on_setup = lambda: run.write_spec(spec.resolved(args.plugins))
    trainer.attach(run if world.main else None)

    per = f"batch {trainer.batch_size}"
    if trainer.batch_size < trainer.train_batch:
        per += f" (data.batch_size {trainer.train_batch} is more than the {trainer.batch_size} samples there are)"
    if world.distributed:
        lr = spec.optimizer.params.model_dump().get("lr", "?")
        per = (f"batch {trainer.batch_size} per process x {world.size} processes = "
               f"{trainer.batch_size * world.size} per step (lr {lr}, not scaled)")
    paths = trainer.fast_paths()
    fast = ", ".join(["channels-last"] * paths["channels_last"] + [paths["precision"]]
                     + [f"fused {spec.optimizer.name}"] * paths["fused_optimizer"])
    macs = spec.trace.total_macs
    cost = f"{human(macs)} MACs/sample" if macs is not None else "MACs unknown"
    memory = spec_estimate(spec, trainer.batch_size)
    progress.message(
        f"training {spec.name}: {spec.trace.total_params:,} params, {cost}, ~{human_bytes(memory.total)} "
        f"estimated training memory, on {device} ({fast}), "
        f"{len(batches.train[0]):,} training samples, {per} -> {run.path}"
    )
    main = world.main
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the previous epoch's end
        note = _checkpoint_note(run, f" (continue with --resume {run.path})")
        raise Interrupted(f"interrupted; {note}" if main else None) from None
    except RunFolderError as e:  # a full disk, a folder that became read-only: not the training's fault
        _finish(progress, run, trainer.metrics, spec.name, main)
        raise type(e)(f"{e}; {_checkpoint_note(run)}" if main else None) from None
    except CheckpointError:  # a resumed state that does not fit: nothing was trained or written
        raise
    except NonFiniteLoss as e:
        _finish(progress, run, trainer.metrics, spec.name, main)
        note = (f"The last good checkpoint is {run.path / LAST} (end of epoch {len(trainer.metrics)})."
                if (run.path / LAST).is_file() else "No checkpoint was saved before it.")
        raise NonFiniteLoss(f"{e}; stopped. {note}" if main else None) from None
    except Exception as e:  # a plugin's module or hook failing mid-run, say: keep what was saved
        if os.environ.get("CNNSPEC_DEBUG"):
            raise
        _finish(progress, run, trainer.metrics, spec.name, main)
        who = f"rank {world.rank}: " if world.distributed else ""  # every rank says why it stopped
        raise TrainingFailed(f"{who}training failed: {type(e).__name__}: {e} (set CNNSPEC_DEBUG=1 for the "
                             f"traceback); {_checkpoint_note(run)}") from e
    _finish(progress, run, trainer.metrics, spec.name, main)
    if summary["status"] == "interrupted":
        raise Interrupted(f"interrupted; a resumable checkpoint is saved. Continue with: cnnspec run "
                          f"--resume {run.path}" if main else None)
    final = summary["final"] or {}
    progress.message(
        f"{summary['status']}: test accuracy {final.get('test_accuracy', float('nan')):.4f} after "
        f"{summary['epochs_completed']} epochs; run folder {run.path}"
    )
    if args.quiet and main:
        print(run.path)  # scripts get where the run went, and nothing else


def _new_run_dir(spec: Spec, args: argparse.Namespace, world: Any) -> RunDir:
    """Rank 0 makes the run folder and writes the resolved spec; every rank learns where it is."""
    from cnnspec.train import distributed
    from cnnspec.train.rundir import new_run_dir
    from cnnspec.train.runplugins import run_record

    made: tuple[bool, str] = (False, "")
    if world.main:
        try:
            run = RunDir(new_run_dir(spec.name, args.output))
            run.lock()
            resolved = spec.resolved(args.plugins)
            run.write_spec(resolved)
            run.write_plugins(run_record(resolved["plugins"]))
            made = (True, str(run.path))
        except OSError as e:  # FileExistsError included
            made = (False, str(e))
        except CnnspecError as e:
            made = (False, str(e))
    ok, text = distributed.broadcast(made, world)
    if not ok:
        raise RunFolderError(text if world.main else None)
    return RunDir(text)


def _checkpoint_note(run: RunDir, then: str = "") -> str:
    """Where training can continue from, naming only a checkpoint that exists."""
    if (run.path / LAST).is_file():
        return f"the last checkpoint is {run.path / LAST}{then}"
    return f"no checkpoint was saved yet (the run folder is {run.path})"


def _finish(progress: Progress, run: RunDir, rows: list[dict[str, Any]], name: str, main: bool) -> None:
    """The epoch table, and the run's curves.png; a plotting failure must not fail a run."""
    from cnnspec.train.curves import CURVES_FILE, plot_runs

    progress.finish(rows)
    if not main or not rows:
        return
    try:
        plot_runs([(name, rows)], run.path / CURVES_FILE)
    except Exception as e:  # e.g. matplotlib missing: the metrics are in metrics.jsonl anyway
        print(f"cnnspec: warning: could not draw {CURVES_FILE}: {type(e).__name__}: {e}", file=sys.stderr)
