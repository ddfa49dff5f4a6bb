"""``cnnspec run``: check the spec, load and fit-check the data, train, and report; exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, EXIT_USAGE, SpecError, UnreadableSpec
from .spec import Spec



def _err(msg: str) -> None:
    print(f"cnnspec: error: {msg}", file=sys.stderr)


def load_for_run(path: str, overrides: list[str], device: str | None, plugins: Sequence[str] = ()) -> Spec:
    """Load, override and check a spec for running; raises SpecError, UnreadableSpec, OverrideError."""
    from .check import check
    from .overrides import apply
    from .yamlpos import load_file

    located = load_file(path)
    if device:
        overrides = [*overrides, f"train.device={device}"]
    apply(located, overrides)
    result = check(located, plugins=plugins)
    if result.spec is None:
        raise SpecError(result.problems, path)
    if result.spec.data is None:
        raise SpecError([located.problem((), "'run' needs a 'data' section naming the dataset")], path)
    return result.spec


def prepare_data(spec: Spec, device: Any) -> Any:
    """Load the dataset, check it fits the spec (located errors), split, scale, move to device."""
    from . import data as d
    from .check import fit_problems
    from .plugins import call_plugin
    from .train import Batches

    assert spec.data is not None and spec.dataset is not None
    ds = spec.dataset
    splits = call_plugin(spec.registry, "dataset", ds.name, ds.type.load, ds.params, spec.data.root,
                         spec.data.download, passthrough=(d.DataError,))
    problems = fit_problems(_located(spec), ds.name, splits.sample_shape, len(splits.classes),
                            spec.input_shape, spec.trace)
    if problems:
        raise SpecError(problems, spec.file)
    seed = spec.train.seed or 0
    splits, val = splits.split_validation(spec.data.val_split, seed)
    mean = std = None
    tensors = [splits.train_x, splits.test_x] + ([val[0]] if val else [])
    if spec.data.normalize:  # the same statistics, from the training split, for every split
        m, s = d.channel_stats(splits.train_x)
        tensors = [(t - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1) for t in tensors]
        mean, std = m.tolist(), s.tolist()
    moved = [t.to(device) for t in tensors]
    return Batches(
        train=(moved[0], splits.train_y.to(device)),
        test=(moved[1], splits.test_y.to(device)),
        val=(moved[2], val[1].to(device)) if val else None,
        classes=splits.classes, mean=mean, std=std,
    )


def _located(spec: Spec) -> Any:
    """The spec's file again, for positions (a placeholder if it changed or vanished since)."""
    from .yamlpos import Located, load_file

    try:
        return load_file(spec.file)
    except Exception:
        return Located(None, spec.file)


def run_command(args: argparse.Namespace) -> int:
    """The body of ``cnnspec run``."""
    from .overrides import OverrideError
    from .progress import Progress, RichProgress

    if bool(args.spec) == bool(args.resume):
        _err("give either a SPEC file or --resume RUN_DIR")
        return EXIT_USAGE
    progress: Progress = Progress() if args.quiet else RichProgress()
    try:
        if args.resume:
            from .rundir import SPEC_FILE

            spec = load_for_run(str(Path(args.resume) / SPEC_FILE), args.overrides, args.device, args.plugins)
        else:
            spec = load_for_run(args.spec, args.overrides, args.device, args.plugins)
    except SpecError as e:
        return _print_problems(e)
    except (UnreadableSpec, OverrideError) as e:
        _err(str(e))
        return EXIT_USAGE
    return _train(spec, args, progress)


def _train(spec: Spec, args: argparse.Namespace, progress: Any) -> int:
    from . import distributed
    from .progress import Progress

    from .train import DeviceError, resolve_device

    try:
        world = distributed.init(resolve_device(spec.train.device))
    except DeviceError as e:
        _err(str(e))
        return EXIT_USAGE
    if not world.main:
        progress = Progress()  # only rank 0 prints and writes the run folder
    code = EXIT_FAILED
    try:
        code = _train_on(spec, args, progress, world)
        return code
    finally:
        distributed.close(world, wait=code in (EXIT_OK, EXIT_INTERRUPTED))


def _print_problems(e: SpecError) -> int:
    for p in e.problems:
        print(p.format(), file=sys.stderr)
    return EXIT_INVALID


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


def _train_on(spec: Spec, args: argparse.Namespace, progress: Any, world: Any) -> int:
    from . import distributed
    from .data import DataError
    from .plugins import default_plugin_manager
    from .rundir import LAST, CheckpointError, RunDir, new_run_dir
    from .train import DeviceError, NonFiniteLoss, SetupError, Trainer, resolve_device

    state = None
    if args.resume:
        try:
            state = RunDir(args.resume).load_checkpoint(LAST)
        except CheckpointError as e:
            _err(str(e))
            return EXIT_USAGE
        if state.get("position") is None:
            _err(f"{args.resume}: {LAST} is not a resumable checkpoint")
            return EXIT_USAGE
        changed = _resume_changes(state["spec"], spec.to_dict())
        if changed:
            _err(f"--resume can change only train.epochs and the device; this would change {', '.join(changed)}")
            return EXIT_USAGE
    try:
        device = distributed.device_for(world, resolve_device(spec.train.device))
        batches = prepare_data(spec, device)
        # everything that can fail is built before the run folder exists
        pm = spec.registry.pm or default_plugin_manager()
        trainer = Trainer(spec, batches, device, None, pm, progress, spec.train.channels_last, world)
    except (DeviceError, DataError) as e:
        _err(str(e))
        return EXIT_USAGE
    except SpecError as e:
        return _print_problems(e)
    except SetupError as e:
        return _print_problems(SpecError([_located(spec).problem(e.path, e.message)], spec.file))

    if args.resume:
        run = RunDir(args.resume)
        if world.main:
            run.write_spec(_resolved(spec, args.plugins))  # a changed epoch count is recorded
        trainer.restore(state)
        if state["position"]["epoch"] >= spec.train.epochs:
            progress.message(f"{args.resume}: already finished ({spec.train.epochs} epochs)")
            return EXIT_OK
    else:
        made: Any = None
        if world.main:
            try:
                made = RunDir(new_run_dir(spec.name, args.output))
                made.write_spec(_resolved(spec, args.plugins))
            except OSError as e:  # FileExistsError included
                made = e
        made = distributed.broadcast(str(made.path) if isinstance(made, RunDir) else made, world)
        if isinstance(made, Exception):
            if world.main:
                _err(str(made))
            return EXIT_USAGE
        run = RunDir(made)
    trainer.attach(run if world.main else None)

    per = f"batch {trainer.batch_size}"
    if world.distributed:
        per = (f"batch {trainer.batch_size} per process x {world.size} processes = "
               f"{trainer.batch_size * world.size} per step (lr {spec.optimizer.params.model_dump().get('lr', '?')}, not scaled)")
    progress.message(
        f"training {spec.name}: {spec.trace.total_params:,} params on {device}, "
        f"{len(batches.train[0]):,} training samples, {per} -> {run.path}"
    )
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the previous epoch's end
        if world.main:
            _err(f"interrupted; the last checkpoint is {run.path / LAST} (continue with --resume {run.path})")
        return EXIT_INTERRUPTED
    except NonFiniteLoss as e:
        progress.finish(trainer.metrics)
        if world.main:
            _curves(run, trainer.metrics, spec.name)
            run.write_summary({**trainer._summary("diverged", 0.0), "error": str(e)})
            _err(f"{e}; stopped. The last good checkpoint is {run.path / LAST} "
                 f"(end of epoch {len(trainer.metrics)}).")
        return EXIT_FAILED
    except Exception as e:  # a plugin's module or hook failing mid-run, say: keep what was saved
        if os.environ.get("CNNSPEC_DEBUG"):
            raise
        progress.finish(trainer.metrics)
        if world.main:
            _curves(run, trainer.metrics, spec.name)
            run.write_summary({**trainer._summary("failed", 0.0), "error": f"{type(e).__name__}: {e}"})
        who = f"rank {world.rank}: " if world.distributed else ""  # every rank says why it stopped
        _err(f"{who}training failed: {type(e).__name__}: {e} (set CNNSPEC_DEBUG=1 for the traceback); "
             f"the last checkpoint is {run.path / LAST}")
        return EXIT_FAILED
    progress.finish(trainer.metrics)
    if world.main:
        _curves(run, trainer.metrics, spec.name)
    if summary["status"] == "interrupted":
        if world.main:
            _err(f"interrupted; a resumable checkpoint is saved. Continue with: cnnspec run --resume {run.path}")
        return EXIT_INTERRUPTED
    final = summary["final"] or {}
    progress.message(
        f"{summary['status']}: test accuracy {final.get('test_accuracy', float('nan')):.4f} after "
        f"{summary['epochs_completed']} epochs; run folder {run.path}"
    )
    if args.quiet and world.main:
        print(run.path)  # scripts get where the run went, and nothing else
    return EXIT_OK


def _curves(run: Any, rows: list[dict[str, Any]], name: str) -> None:
    """The run's curves.png; a plotting failure must not fail a finished run."""
    from .plot import CURVES_FILE, plot_runs

    if not rows:
        return
    try:
        plot_runs([(name, rows)], run.path / CURVES_FILE)
    except Exception as e:  # e.g. matplotlib missing: the metrics are in metrics.jsonl anyway
        print(f"cnnspec: warning: could not draw {CURVES_FILE}: {type(e).__name__}: {e}", file=sys.stderr)


def _resolved(spec: Spec, cli_plugins: Sequence[str] = ()) -> dict[str, Any]:
    """The spec for the run folder: defaults filled in, paths absolute, ``-p`` plugins recorded,
    so that ``--resume`` works from anywhere."""
    from .plugins import is_plugin_file

    out = spec.to_dict()
    if out.get("data") and out["data"].get("root"):
        out["data"]["root"] = str(Path(out["data"]["root"]).expanduser().resolve())

    def absolute(ref: str, base: Path) -> str:
        return str((base / ref).resolve()) if is_plugin_file(ref) else ref

    base = Path(spec.file).parent
    plugins = [absolute(p, base) for p in out.get("plugins", [])]
    plugins += [absolute(p, Path.cwd()) for p in cli_plugins if absolute(p, Path.cwd()) not in plugins]
    out["plugins"] = plugins
    return out
