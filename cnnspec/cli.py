"""The command line: ``cnnspec validate|run|plugins ...``; main(argv) returns the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from . import __version__

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default exits; keep main() in charge
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cnnspec", description="Describe a CNN in YAML, check it, train it.")
    p.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("validate", help="check specs: schema and shapes, without torch")
    v.add_argument("specs", nargs="+", metavar="SPEC", help="spec files")
    v.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    _plugin_option(v)
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", help="train and evaluate as the spec says")
    r.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (or --resume RUN_DIR)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value, e.g. train.epochs=1 (repeatable)")
    r.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N, mps")
    r.add_argument("--output", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    r.add_argument("--quiet", action="store_true", help="no progress display")
    _plugin_option(r)
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plugins", help="list plugins and what each registers")
    pl.set_defaults(func=cmd_plugins)

    sc = sub.add_parser("schema", help="print the JSON Schema of spec files (for editors)")
    sc.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    _plugin_option(sc)
    sc.set_defaults(func=cmd_schema)
    return p


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="load a plugin module or .py file for this command (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 invalid spec, 2 usage or I/O)."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)
    from .plugins import PluginError

    try:
        return int(args.func(args))
    except PluginError as e:
        print(f"cnnspec: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def cmd_validate(args: argparse.Namespace) -> int:
    from . import check_file
    from .errors import UnreadableSpec
    from .report import print_problems, print_table, result_json

    status = EXIT_OK
    docs = []
    for path in args.specs:
        try:
            result = check_file(path, plugins=args.plugins)
        except UnreadableSpec as e:
            status = EXIT_USAGE
            if args.format == "json":
                docs.append({"path": path, "valid": False, "errors": [
                    {"line": 0, "column": 0, "message": str(e)}], "input_shape": None,
                    "output_shape": None, "total_params": None, "layers": []})
            else:
                print(f"cnnspec: error: {e}", file=sys.stderr)
            continue
        if not result.valid and status == EXIT_OK:
            status = EXIT_INVALID
        if args.format == "json":
            docs.append(result_json(result))
        elif result.valid:
            assert result.trace is not None
            print_table(path, result.trace, sys.stdout)
        else:
            print_problems(result.problems, sys.stdout)
            n = len(result.problems)
            print(f"{path}: {n} error{'s' if n != 1 else ''}")
    if args.format == "json":
        json.dump({"specs": docs}, sys.stdout, indent=None)
        sys.stdout.write("\n")
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_command

    return run_command(args)


def cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .plugins import build_registry, get_plugin_manager
    from .registry import KINDS

    pm = get_plugin_manager()
    reg = build_registry(pm)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("plugin", "from", "registers"):
        table.add_column(col)
    for name in pm.sources:
        owned = [f"{k}: {', '.join(n for n in reg.names(k) if reg.owners[(k, n)] == name)}"
                 for k in KINDS if any(reg.owners[(k, n)] == name for n in reg.names(k))]
        table.add_row(name, pm.sources[name], "\n".join(owned) or "(hooks only)")
    Console(highlight=False, soft_wrap=True).print(table)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .plugins import default_registry, load_local_plugin, registry_with
    from .schema import json_schema

    reg = registry_with([load_local_plugin(p) for p in args.plugins]) if args.plugins else default_registry()
    text = json.dumps(json_schema(reg), indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as e:
            print(f"cnnspec: error: {args.output}: {e.strerror or e}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(text)
    return EXIT_OK
