"""The command line: ``cnnspec validate|run|plugins ...``; main(argv) returns the exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from cnnspec.errors import CnnspecError, ExitCode, PluginError, UsageError, out_of_memory
from cnnspec.sweep.options import MAX_JOBS, jobs_problem  # no optuna, no torch
from cnnspec.version import __version__

CHECKPOINT_HELP = ("best: the epoch with the best validation accuracy (runs with data.val_split > 0), "
                   "else the last epoch; last: the last epoch")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's default exits; keep main() in charge
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: error: {message}")


if TYPE_CHECKING:  # pragma: no cover
    _Commands = argparse._SubParsersAction[_Parser]  # what add_subparsers gives: one add_parser per command


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cnnspec", description="Describe a CNN in YAML, check it, train it.")
    p.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _spec_commands(sub)  # validate, run, data, graph, sweep, plugins: read a spec (or the registry)
    _run_commands(sub)  # eval, predict, export, plot, report: read finished run folders
    _other_commands(sub)  # schema, trust, import
    return p


def _set_option(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=text)


def _spec_commands(sub: _Commands) -> None:
    """``validate``, ``run``, ``data``, ``graph``, ``sweep`` and ``plugins``."""
    v = sub.add_parser("validate", help="check specs: schema and shapes, without torch")
    v.add_argument("specs", nargs="+", metavar="SPEC", help="spec files")
    v.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    _set_option(v, "override a value as `run` would, e.g. train.epochs=1 (repeatable)")
    v.add_argument("--resolved", action="store_true",
                   help="print the spec that would run (defaults filled in, overrides applied) as YAML")
    _plugin_option(v)
    v.add_argument("--batch-size", type=_positive, metavar="N",
                   help="estimate training memory at this batch size (default: the spec's data.batch_size)")
    v.set_defaults(func=cmd_validate, prints_only=True)

    r = sub.add_parser("run", help="train and evaluate as the spec says")
    r.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (or --resume RUN_DIR)")
    _set_option(r, "override a value, e.g. train.epochs=1 (repeatable)")
    r.add_argument("--device", type=_device, help="override train.device: auto, cpu, cuda, cuda:N, mps")
    r.add_argument("--output", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.add_argument("--force", action="store_true",
                   help="run even when the training memory estimate exceeds what the device has")
    r.add_argument("--fast-dev-run", action="store_true",
                   help="check the spec end to end in seconds: one epoch on two batches of each split; "
                        "the run folder is kept only with --output")
    r.add_argument("--limit-batches", type=_positive, metavar="N",
                   help="a quick trial that keeps its run folder: at most N batches per epoch of training "
                        "(each epoch's first N shuffled batches), validation and test (their first N); "
                        "the same as --set train.limit_batches=N")
    r.add_argument("--no-report", action="store_true", help="do not write report.html into the run folder")
    _plugin_option(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("data", help="describe the spec's dataset: counts per class and split, the image cache")
    d.add_argument("spec", metavar="SPEC", help="spec file")
    _set_option(d, "override a value, e.g. data.root=PATH (repeatable)")
    d.add_argument("--sheet", metavar="FILE", help="write a PNG of a few training pictures per class, augmented")
    d.add_argument("--format", choices=["text", "json"], default="text")
    _plugin_option(d)
    d.set_defaults(func=cmd_data)

    g = sub.add_parser("graph", help="draw the model: SVG, or Mermaid / DOT text (no torch)")
    g.add_argument("spec", metavar="SPEC", help="spec file")
    g.add_argument("--output", "-o", metavar="FILE", help="write it to FILE (default: stdout)")
    g.add_argument("--format", choices=("svg", "mermaid", "dot"),
                   help="default: from the output's suffix (.svg, .mmd, .dot), else svg")
    _plugin_option(g)
    g.set_defaults(func=cmd_graph)
    _sweep_command(sub)

    pl = sub.add_parser("plugins", help="list plugins and what each registers")
    _plugin_option(pl, trust=False)
    pl.set_defaults(func=cmd_plugins, prints_only=True)


def _sweep_command(sub: _Commands) -> None:
    """``cnnspec sweep``'s options; ``cmd_sweep`` turns them into a ``SweepOptions``."""
    sw = sub.add_parser("sweep", help="search the spec's sweep: space with Optuna, one run per trial")
    sw.add_argument("spec", metavar="SPEC", help="spec file with a sweep: section")
    _set_option(sw, "override a value of the spec or its sweep section (repeatable)")
    sw.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N",
                    help=f"trials at once on this machine (1; at most {MAX_JOBS})")
    sw.add_argument("--storage", metavar="URL",
                    help="Optuna storage shared by every worker, e.g. postgresql://USER@HOST/DB (default: "
                         "a SQLite file in the sweep folder)")
    sw.add_argument("--study", metavar="NAME", help="study name in the storage (default NAME-HASH of spec and space)")
    sw.add_argument("--device", type=_device, help="override train.device for every trial")
    sw.add_argument("--output", metavar="DIR", help="sweep folder (default runs/NAME-sweep-TIMESTAMP); "
                    "an existing one of the same sweep is continued")
    sw.add_argument("--quiet", action="store_true", help="print only the sweep folder")
    _plugin_option(sw)
    sw.set_defaults(func=cmd_sweep)


def _checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help=CHECKPOINT_HELP)


def _run_commands(sub: _Commands) -> None:
    """``eval``, ``predict``, ``export``, ``plot`` and ``report``: they read finished run folders."""
    ev = sub.add_parser("eval", help="test-split metrics and confusion matrix of a finished run")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    _checkpoint_option(ev)
    ev.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N, mps")
    ev.add_argument("--format", choices=("text", "json"), default="text")
    _trust_option(ev)
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="top classes with probabilities for image files")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--top", type=int, default=3, help="how many classes to show (3)")
    pr.add_argument("--invert", action="store_true",
                    help="invert the images first (dark ink on white paper, for MNIST-like models)")
    _checkpoint_option(pr)
    pr.add_argument("--format", choices=("text", "json"), default="text")
    _trust_option(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write the trained model as TorchScript or ONNX")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    ex.add_argument("--output", "-o", metavar="FILE", help="default RUN_DIR/model.torchscript.pt or RUN_DIR/model.onnx")
    _checkpoint_option(ex)
    _trust_option(ex)
    ex.set_defaults(func=cmd_export)

    pt = sub.add_parser("plot", help="compare the training curves of runs in one PNG")
    pt.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pt.add_argument("--output", "-o", metavar="FILE", default="curves.png",
                    help="the PNG to write (default: curves.png in the current folder)")
    pt.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page of a run, of several runs, or of a sweep folder")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or one sweep folder")
    rp.add_argument("--output", "-o", metavar="FILE",
                    help="default: RUN_DIR/report.html (one run or a sweep), else report.html")
    rp.add_argument("--device", type=_device, help="where the test split is evaluated (default: the spec's)")
    _trust_option(rp)
    rp.set_defaults(func=cmd_report)


def _other_commands(sub: _Commands) -> None:
    """``schema``, ``trust`` and ``import``."""
    sc = sub.add_parser("schema", help="print the JSON Schema of spec files (for editors)")
    sc.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    _plugin_option(sc, trust=False)
    sc.set_defaults(func=cmd_schema, prints_only=True)

    tr = sub.add_parser("trust", help="trust the plugin files a spec or run folder names (by SHA-256)")
    tr.add_argument("targets", nargs="+", metavar="SPEC", help="spec files, run folders or .py files")
    tr.set_defaults(func=cmd_trust)

    im = sub.add_parser("import", help="a Keras model (.keras, .h5, JSON) as a spec and its weights, same outputs")
    im.add_argument("model", metavar="MODEL", help="a Keras 3 .keras file, a legacy .h5 model, or model.to_json()")
    im.add_argument("-o", "--output", required=True, metavar="SPEC", help="the spec to write (.yaml); the weights "
                    "go next to it as .safetensors")
    im.add_argument("--weights", metavar="FILE", help="the weights of a JSON config (.weights.h5)")
    im.add_argument("--force", action="store_true", help="replace SPEC and its weights file if they exist")
    im.set_defaults(func=cmd_import)


def _device(value: str) -> str:
    from cnnspec.train.device import DEVICES, is_device_name  # no torch: only resolving imports it

    if not is_device_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {DEVICES}")
    return value


MAX_CLI_NUMBER = 10**15  # --batch-size: far past any dataset, small enough for every estimate


def _positive(value: str) -> int:
    """A whole number from 1 to MAX_CLI_NUMBER (``1e3`` too); past float range is too large, not a traceback."""
    try:
        x: float | int = float(value) if "e" in value.lower() else int(value)
    except ValueError:  # also a number of more than 4,300 digits
        x = MAX_CLI_NUMBER + 1 if value.strip().isdigit() else 0
    if isinstance(x, float):  # 1e3; inf and 1e400 are too large, nan and 2.5 not whole
        x = MAX_CLI_NUMBER + 1 if x > MAX_CLI_NUMBER else int(x) if x.is_integer() else 0
    n = int(x)
    if n > MAX_CLI_NUMBER:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is more than {MAX_CLI_NUMBER:.0e}")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a positive whole number")
    return n


def _jobs(value: str) -> int:
    """``sweep -j``: a whole number from 1 to ``sweep.options.MAX_JOBS`` (a huge one is refused, not worked on)."""
    shown = repr(value[:40])
    try:
        n = int(value)
    except ValueError:  # also a number of more than 4,300 digits
        if not value.strip().lstrip("+-").isdecimal():
            raise argparse.ArgumentTypeError(f"{shown} is not a whole number") from None
        n = -1 if value.strip().startswith("-") else MAX_JOBS + 1
    problem = jobs_problem(n, shown)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return n


def _plugin_option(p: argparse.ArgumentParser, trust: bool = True) -> None:
    p.add_argument("-p", "--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="load a plugin module or .py file for this command (repeatable)")
    if trust:
        _trust_option(p)


def _trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="store_true",
                   help="trust the plugin files the spec (or run folder) names, for this call only (a run "
                        "folder's plugin file changed since the run included)")


def entry() -> NoReturn:
    """The ``cnnspec`` program (console script and ``python -m cnnspec``): ``main``, then exit."""
    # pydantic scans every installed distribution for pydantic plugins (observability hooks)
    # when it builds its first validator: 15-20 ms of validate's start-up, for models that are
    # cnnspec's own. This holds for every command and the processes it starts (sweep trials,
    # torchrun workers); set PYDANTIC_DISABLE_PLUGINS yourself (even empty) to decide otherwise.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from cnnspec.train.host import fit_address_space  # no torch: validate stays lean

    fit_address_space()  # under `ulimit -v`: before numpy and torch are imported
    sys.exit(main(exiting=True))


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run the command line; return the exit status (see ``errors.ExitCode``).

    The one place where a failure becomes an exit status: every user-facing error is a
    ``CnnspecError`` that knows its status and its lines; anything else is a bug and shows
    its traceback. ``exiting``: the process ends when this returns (see ``_freeze_for_exit``).
    """
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:  # --help, --version
            return int(e.code or 0)
        status = int(args.func(args) or ExitCode.OK)
        if exiting and getattr(args, "prints_only", False):
            _freeze_for_exit()
        return status
    except SystemExit as e:  # a plugin may not decide how cnnspec ends
        return _report(PluginError(f"code run by this command (a plugin?) tried to end the process "
                                   f"with SystemExit({e.code!r}); refused"))
    except CnnspecError as e:
        return _report(e)
    except KeyboardInterrupt:  # outside training (which saves first), e.g. while loading data
        print("cnnspec: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `cnnspec ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except (ImportError, MemoryError, RuntimeError, OSError) as e:
        return _out_of_resources(e)


def _out_of_resources(e: ImportError | MemoryError | RuntimeError | OSError) -> int:
    """One line for what the address-space cap (`ulimit -v`) kept from loading or allocating, or for
    an allocation that failed where no command said more; an OSError's own line; else re-raised."""
    from cnnspec.errors import ResourceError
    from cnnspec.train.host import capped_failure

    capped = capped_failure(e)
    if capped is not None:
        return _report(ResourceError(capped))
    oom = out_of_memory(e)
    if oom is not None and not os.environ.get("CNNSPEC_DEBUG"):
        return _report(oom)
    if isinstance(e, OSError):  # an output path in a missing folder, a full disk, ...
        print(f"cnnspec: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return int(ExitCode.USAGE)
    raise e


def _freeze_for_exit() -> None:
    """Spare the process Python's garbage collections at interpreter shutdown.

    They walk every object still alive (pydantic's validators, the registry, the parsed spec):
    about 100 ms of `validate`'s 0.5 s on a 2-core AMD EPYC, against about 15 ms once the objects
    are frozen out of the collector's reach. Buffers are still flushed and atexit handlers still
    run; objects in reference cycles are left to the OS, so this is done only after commands that
    read and print (validate, schema, plugins), which close what they open.
    """
    import gc

    gc.freeze()


def _report(e: CnnspecError) -> int:
    for line in e.lines():
        print(line, file=sys.stderr)
    return int(e.exit_code)


def cmd_validate(args: argparse.Namespace) -> ExitCode:
    from cnnspec.errors import UnreadableSpec
    from cnnspec.spec.cost import spec_estimate
    from cnnspec.spec.load import check_file
    from cnnspec.tools.show import print_problems, print_table, result_json

    status = ExitCode.OK
    docs = []
    for path in args.specs:
        try:
            result = check_file(path, plugins=args.plugins, overrides=args.overrides, trust=args.trust)
        except UnreadableSpec as e:  # one unreadable file among several: report it, check the rest
            status = ExitCode.USAGE
            if args.format == "json":
                docs.append({"path": path, "valid": False, "errors": [
                    {"line": 0, "column": 0, "message": str(e)}], "input_shape": None,
                    "output_shape": None, "total_params": None, "total_macs": None, "macs_complete": None,
                    "param_bytes": None, "activation_bytes": None, "memory": None, "layers": []})
            else:
                print(f"cnnspec: error: {e}", file=sys.stderr)
            continue
        if not result.valid and status == ExitCode.OK:
            status = ExitCode.INVALID
        if args.format == "json":
            docs.append(result_json(result, args.batch_size))
        elif result.valid and args.resolved:
            assert result.spec is not None
            if len(args.specs) > 1:
                print(f"--- # {path}")
            from cnnspec.train.rundir import spec_text  # only for --resolved: validate's start-up stays lean

            sys.stdout.write(spec_text(result.spec.resolved(args.plugins)))
        elif result.valid:
            assert result.trace is not None and result.spec is not None
            print_table(path, result.trace, sys.stdout, spec_estimate(result.spec, args.batch_size),
                        result.spec.finetune)
            if result.spec.weights is not None:
                print(result.spec.weights.summary())
            print_problems(result.warnings, sys.stdout)
        else:
            if result.trace is not None and result.trace.error is not None and result.trace.rows:
                print_table(path, result.trace, sys.stdout)  # the shapes up to where they stop
            print_problems(result.problems, sys.stdout)
            n = len(result.problems)
            print(f"{path}: {n} error{'s' if n != 1 else ''}")
    if args.format == "json":
        json.dump({"specs": docs}, sys.stdout, indent=None)
        sys.stdout.write("\n")
    return status


def cmd_graph(args: argparse.Namespace) -> None:
    from cnnspec.tools.graph import write_graph

    write_graph(args.spec, args.output, args.format, args.plugins)


def cmd_data(args: argparse.Namespace) -> None:
    from cnnspec.tools.datainfo import describe_data

    info = describe_data(args.spec, tuple(args.overrides), tuple(args.plugins), args.trust, args.sheet)
    if args.format == "json":
        print(json.dumps(info))
        return
    print(f"{info['spec']}: dataset {info['dataset']}, samples {' x '.join(map(str, info['sample_shape']))}, "
          f"{len(info['classes'])} classes (largest / smallest in train: {info['imbalance']})")
    width = max(len(c) for c in info["classes"])
    splits = list(info["counts"])
    print(f"  {'class':<{width}}  " + "  ".join(f"{s:>7}" for s in splits))
    for k, name in enumerate(info["classes"]):
        print(f"  {name:<{width}}  " + "  ".join(f"{info['counts'][s][k]:>7,}" for s in splits))
    print(f"  {'total':<{width}}  " + "  ".join(f"{sum(info['counts'][s]):>7,}" for s in splits))
    if "cache" in info:
        state = f"built now in {info['seconds']} s" if info["built"] else "reused"
        print(f"image cache: {info['cache']} ({state})")
        print("picture sizes (w x h): " + ", ".join(f"{k}: {v:,}" for k, v in info["sizes"].items()))
        print("modes: " + ", ".join(f"{k}: {v:,}" for k, v in info["modes"].items()))
        for path, why in info["unreadable"]:
            print(f"unreadable, left out: {path} ({why})")
    if info.get("sheet"):
        print(f"contact sheet: {info['sheet']}")


def cmd_run(args: argparse.Namespace) -> None:
    from cnnspec.train.runner import RunOptions, run_command

    after = None
    if not args.no_report and not args.fast_dev_run:
        from cnnspec.tools.report import after_run

        after = after_run(args.trust, args.device)
    run_command(RunOptions(spec=args.spec, resume=args.resume, overrides=tuple(args.overrides), device=args.device,
                           output=args.output, plugins=tuple(args.plugins), trust=args.trust, quiet=args.quiet,
                           force=args.force, fast_dev_run=args.fast_dev_run, limit_batches=args.limit_batches,
                           after=after))


def cmd_sweep(args: argparse.Namespace) -> None:
    from cnnspec.sweep.options import SweepOptions
    from cnnspec.sweep.sweeper import sweep_command

    sweep_command(SweepOptions(
        spec=args.spec, overrides=tuple(args.overrides), jobs=args.jobs, storage=args.storage, study=args.study,
        device=args.device, output=args.output, quiet=args.quiet, plugins=tuple(args.plugins),
        trust=args.trust, main=main))


def cmd_plugins(args: argparse.Namespace) -> None:
    from rich.table import Table

    from cnnspec.registry.hookspecs import KINDS
    from cnnspec.registry.manager import build_registry, get_plugin_manager, load_local_plugin
    from cnnspec.util.console import Console

    pm = get_plugin_manager(extra=[load_local_plugin(p) for p in args.plugins])
    reg = build_registry(pm)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("plugin", "from", "registers"):
        table.add_column(col)
    for name in pm.sources:
        owned = [f"{k}: {', '.join(n for n in reg.names(k) if reg.owner(k, n) == name)}"
                 for k in KINDS if any(reg.owner(k, n) == name for n in reg.names(k))]
        shown = name.removeprefix("cnnspec.plugins.")
        table.add_row(shown, pm.sources[name], "\n".join(owned) or "(hooks only)")
    Console(highlight=False, soft_wrap=True).print(table)


def cmd_schema(args: argparse.Namespace) -> None:
    from cnnspec.registry.manager import default_registry, load_local_plugin, registry_with
    from cnnspec.tools.schema import json_schema

    reg = registry_with([load_local_plugin(p) for p in args.plugins]) if args.plugins else default_registry()
    text = json.dumps(json_schema(reg), indent=2) + "\n"
    if args.output:
        with open(args.output, "w") as f:  # an OSError is reported by main
            f.write(text)
    else:
        sys.stdout.write(text)


def cmd_eval(args: argparse.Namespace) -> None:
    from rich.table import Table

    from cnnspec.tools.report import refresh_run_report
    from cnnspec.tools.runs import evaluate_outcomes, load_run
    from cnnspec.train.device import resolve_device
    from cnnspec.util.console import Console

    trained = load_run(args.run_dir, args.checkpoint, args.trust)
    result, outcomes = evaluate_outcomes(trained, resolve_device(args.device))
    if args.checkpoint == "best":  # the report shows the best weights; --checkpoint last leaves it alone
        try:
            refresh_run_report(args.run_dir, result, outcomes, args.trust)
        except (OSError, CnnspecError) as e:  # a read-only run folder: the evaluation is still printed
            print(f"cnnspec: warning: could not refresh report.html: {e}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(result))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"{result['checkpoint']}: {result['samples']:,} test samples, "
                  f"loss {result['loss']:.4f}, accuracy [bold]{result['accuracy']:.4f}[/bold]")
    table = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    table.add_column("class")
    for name in result["classes"]:
        table.add_column(name[:8], justify="right")
    table.add_column("acc", justify="right")
    for name, row, acc in zip(result["classes"], result["confusion"], result["per_class_accuracy"]):
        table.add_row(name, *map(str, row), f"{acc:.3f}")
    console.print(table)


def cmd_predict(args: argparse.Namespace) -> None:
    from cnnspec.tools.runs import load_run, predict

    results = predict(load_run(args.run_dir, args.checkpoint, args.trust), args.images, max(1, args.top), args.invert)
    for r in results:
        for note in r["warnings"]:
            print(f"cnnspec: warning: {note}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(results))
        return
    for r in results:
        best = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
        print(f"{r['image']}: {best}")


def cmd_export(args: argparse.Namespace) -> None:
    from cnnspec.tools.runs import export, load_run

    path = export(load_run(args.run_dir, args.checkpoint, args.trust), args.format, args.output)
    print(f"wrote {path} ({args.format}; input: images scaled to [0, 1], any batch size)")


def cmd_plot(args: argparse.Namespace) -> None:
    from cnnspec.tools.runs import plot

    print(f"wrote {plot(args.run_dirs, args.output)}")


def cmd_report(args: argparse.Namespace) -> None:
    from cnnspec.tools.report import write_report

    print(f"wrote {write_report(args.run_dirs, args.output, args.trust, args.device)}")


def cmd_trust(args: argparse.Namespace) -> None:
    from cnnspec.tools.trust import trust_targets

    for line in trust_targets(args.targets):
        print(line)


def cmd_import(args: argparse.Namespace) -> None:
    from cnnspec.tools.keras_import import import_keras

    done = import_keras(args.model, args.output, args.weights, args.force)
    weights = f" and {done.weights} ({done.tensors} tensors)" if done.weights else " (no weights: architecture only)"
    print(f"wrote {done.spec}{weights}: {done.layers} Keras layers, {done.params:,} parameters; "
          f"check it with: cnnspec validate {done.spec}")
