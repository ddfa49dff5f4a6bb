"""``cnnspec report``: one self-contained HTML page for a run, several runs, or a sweep folder.

The page needs nothing but a browser: charts are inline SVG (``tools.charts``), the model is
``tools.graph``'s SVG, test images are small PNGs in data URIs, there is no script, and a
Content-Security-Policy forbids the page any request. Everything that comes from the user or
from a file (class names, spec and file names, block arguments, metric values) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.errors import CnnspecError, ToolError
from cnnspec.tools.runpage import compare_page, read_run, run_page

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.tools.runs import Outcomes

REPORT_FILE = "report.html"


def write_report(paths: Sequence[str], output: str | None, trust: bool = False,
                 device: str | None = None) -> Path:
    """``cnnspec report``: a run folder (the default output: RUN_DIR/report.html), several runs
    compared, or a sweep folder (SWEEP_DIR/report.html); returns where the page went."""
    from cnnspec.sweep.folder import SWEEP_FILE
    from cnnspec.tools.sweeppage import sweep_page

    folders = [Path(p) for p in paths]
    for f in folders:
        if not f.is_dir():
            raise ToolError(f"{f}: {'not a run folder' if f.exists() else 'no such file or directory'}")
    if len(folders) == 1 and (folders[0] / SWEEP_FILE).is_file():
        text = sweep_page(folders[0])
    elif len(folders) == 1:
        text = run_page(read_run(folders[0], trust), *_evaluated(folders[0], trust, device))
    else:
        text = compare_page([read_run(f, trust) for f in folders])
    out = Path(output) if output else folders[0] / REPORT_FILE
    if output is None and len(folders) > 1:
        out = Path(REPORT_FILE)
    save(out, text)
    return out


def save(out: Path, text: str) -> None:
    """Write the page atomically (a reader never sees half of it)."""
    from cnnspec.train.rundir import atomic_write

    if not out.resolve().parent.is_dir():
        raise ToolError(f"{out}: its folder does not exist")
    atomic_write(out, lambda f: f.write(text))


def _evaluated(path: Path, trust: bool, device: str | None) -> tuple[dict[str, Any] | None, Outcomes | None,
                                                                    str | None]:
    """The run's model evaluated on its test split, or why it could not be (no checkpoint, ...)."""
    from cnnspec.tools.runs import evaluate_outcomes
    from cnnspec.train.device import resolve_device
    from cnnspec.train.trained import load_run

    try:
        trained = load_run(path, "best", trust)
        # no loss: a plugin's loss is not built again after the run (the test loss is in metrics.jsonl)
        result, outcomes = evaluate_outcomes(trained, resolve_device(device or trained.spec.train.device), loss=False)
    except CnnspecError as e:
        return None, None, f"no evaluation: {e}"
    return result, outcomes, None


def refresh_run_report(run_dir: str | Path, result: dict[str, Any], outcomes: Outcomes, trust: bool = False) -> Path:
    """RUN_DIR/report.html from an evaluation already made (``eval``, the end of ``run``)."""
    path = Path(run_dir)
    out = path / REPORT_FILE
    save(out, run_page(read_run(path, trust), result, outcomes, None))
    return out


def after_run(trust: bool = False, device: str | None = None) -> Any:
    """What ``run`` calls with its folder when training ends: write the report, or warn why not
    (a report must never fail a run)."""
    import sys

    def write(run_dir: Path) -> None:
        try:
            save(run_dir / REPORT_FILE, run_page(read_run(run_dir, trust), *_evaluated(run_dir, trust, device)))
        except Exception as e:  # e.g. the test split unreadable now: the run itself is done
            print(f"cnnspec: warning: could not write {REPORT_FILE}: {type(e).__name__}: {e}", file=sys.stderr)
    return write


