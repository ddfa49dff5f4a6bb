"""The report of a sweep folder: its trials, the best one, parameter importances, parallel coordinates.

Read from the folder's ``results.json`` (what ``cnnspec sweep`` leaves); importances come from
Optuna (``get_param_importances`` on the folder's own ``sweep.db``) when it is installed.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from cnnspec.errors import ToolError
from cnnspec.tools.charts import Axis, bars, parallel_coordinates
from cnnspec.tools.htmlpage import cell, curve_charts, page, read_json, table


def sweep_page(folder: Path) -> str:
    """The page of a sweep folder."""
    from cnnspec.sweep.folder import SWEEP_FILE
    from cnnspec.sweep.report import RESULTS_JSON

    meta = read_json(folder / SWEEP_FILE) or {}
    doc = read_json(folder / RESULTS_JSON)
    if not isinstance(doc, dict) or not isinstance(doc.get("trials"), list):
        raise ToolError(f"{folder / RESULTS_JSON}: missing or not a sweep's results (has the sweep run a trial?)")
    trials = [t for t in doc["trials"] if isinstance(t, dict)]
    metric, direction = str(doc.get("metric", "value")), str(doc.get("direction", "maximize"))
    keys = sorted({k for t in trials for k in (t.get("params") or {})})
    best = doc.get("best") if isinstance(doc.get("best"), dict) else None
    name = str(meta.get("name") or folder.name)
    body = [f"<h1>sweep {escape(name)}</h1>",
            f'<p class="muted">folder {escape(str(folder))} &middot; study {escape(cell(doc.get("study")))} '
            f'&middot; {escape(cell(doc.get("trials_done")))} of {escape(cell(doc.get("trials_planned")))} trials '
            f'&middot; {escape(metric)} ({escape(direction)}) &middot; sampler {escape(cell(doc.get("sampler")))}</p>']
    if best:
        body += ["<h2>Best trial</h2>", table(("trial", metric, *keys, "run folder"),
                                              [(best.get("trial"), best.get("value"),
                                                *[_param(best, k) for k in keys], best.get("run_dir"))])]
    rows = [(t.get("trial"), t.get("status"), _value(t), *[_param(t, k) for k in keys], t.get("epochs"),
             t.get("seconds"), " / ".join(map(str, t.get("errors") or []))) for t in trials]
    marked = next((i for i, t in enumerate(trials) if best and t.get("trial") == best.get("trial")), None)
    body += ["<h2>Trials</h2>", table(("trial", "status", metric, *keys, "epochs", "seconds", "errors"),
                                      rows, left=0, marked=marked)]
    body += ["<h2>Parameter importances</h2>", _importances(folder, meta, doc)]
    body += ["<h2>Parallel coordinates</h2>", '<p class="muted">one line per completed or pruned trial, '
             f'coloured by {escape(metric)} (red low, blue high)</p>', _parallel(trials, keys, metric)]
    curves = _trial_curves(trials)
    if curves:
        body += ["<h2>Training curves of the trials</h2>", curve_charts(curves)]
    return page(f"sweep {name}: cnnspec report", body)


def _value(t: dict[str, Any]) -> Any:
    return t.get("value") if t.get("value") is not None else t.get("last_value")


def _param(t: dict[str, Any], key: str) -> Any:
    return (t.get("params") or {}).get(key)


def _importances(folder: Path, meta: dict[str, Any], doc: dict[str, Any]) -> str:
    """Optuna's importances of the folder's study; a line saying why not when they cannot be had."""
    from cnnspec.sweep.folder import DB_FILE

    if meta.get("storage") or not (folder / DB_FILE).is_file():
        return '<p class="muted">the study is not in this folder (a shared --storage): importances not computed</p>'
    try:
        import optuna
        from optuna.importance import get_param_importances

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name=str(doc.get("study")), storage=f"sqlite:///{folder / DB_FILE}")
        found = get_param_importances(study)
    except ImportError:
        return '<p class="muted">importances need Optuna (pip install \'cnnspec[sweep]\')</p>'
    except Exception as e:  # too few completed trials, a single value, ...
        return f'<p class="muted">no importances: {escape(type(e).__name__)}: {escape(str(e))}</p>'
    if not found:
        return '<p class="muted">no importances: no parameter varied</p>'
    return bars([(k, float(v)) for k, v in found.items()], "importance (fANOVA, sums to 1)")


def _axis(key: str, values: list[Any]) -> tuple[Axis, list[Any]]:
    """A numeric axis (log when positive over two decades) or one of categories, and the values on it."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if values and len(nums) == len(values):
        log = min(nums) > 0 and max(nums) / min(nums) >= 100
        return Axis(key, log=log), values
    labels = [cell(v) for v in values]
    return Axis(key, choices=tuple(dict.fromkeys(labels))), labels


def _parallel(trials: list[dict[str, Any]], keys: list[str], metric: str) -> str:
    shown = [t for t in trials if t.get("status") in ("complete", "pruned")
             and isinstance(_value(t), (int, float)) and math.isfinite(_value(t))]
    if not shown or not keys:
        return '<p class="muted">no completed trial to draw</p>'
    axes, columns = [], []
    for k in keys:
        a, col = _axis(k, [_param(t, k) for t in shown])
        axes.append(a)
        columns.append(col)
    axes.append(Axis(metric))
    columns.append([_value(t) for t in shown])
    return parallel_coordinates(axes, list(zip(*columns)), f"{metric} per trial")


def _trial_curves(trials: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each trial's epochs, from its run folder (when it is still there)."""
    from cnnspec.tools.runs import read_metrics_rows

    out = []
    for t in trials[:20]:  # more lines than that is a smudge
        d = t.get("run_dir")
        if isinstance(d, str) and Path(d).is_dir():
            try:
                rows = read_metrics_rows(Path(d))
            except ToolError:
                continue
            if rows:
                out.append((f"trial {t.get('trial')}", rows))
    return out
