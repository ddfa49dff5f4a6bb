"""What a sweep shows and leaves: progress lines, results.csv/json, the plot, best.yaml.

Everything is read back from the Optuna study, so every worker of a shared sweep writes the
results of all trials, wherever they ran.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from cnnspec.spec.sweepspace import Param, Sweep, label

RESULTS_JSON, RESULTS_CSV, PLOT_FILE, BEST_FILE = "results.json", "results.csv", "sweep.png", "best.yaml"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def csv_cell(value: Any) -> Any:
    """A results.csv cell: text that a spreadsheet would run as a formula (a swept value written
    ``=HYPERLINK(...)``, say) gets a leading ' so it shows as text; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
STATUS = "cnnspec_status"  # user attr: running, complete, pruned, invalid, failed, interrupted, surplus, error
COUNTED = ("complete", "pruned", "invalid", "failed")  # these use up one of the sweep's trials


def best_value(rows: list[dict[str, Any]], metric: str, direction: str) -> float | None:
    """A trial's result: the best epoch's value of the metric (the highest accuracy, the lowest loss)."""
    values = [float(r[metric]) for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def shown(p: Param, sampled: Any) -> str:
    """A sampled value as the user reads it: 0.00123, 32, {type: dropout, p: 0.25}."""
    v = p.value(sampled)
    if isinstance(v, float):
        return f"{v:.4g}"
    return label(v)


def _status(t: Any) -> str:
    from optuna.trial import TrialState

    s = t.user_attrs.get(STATUS)
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    return str(s or t.state.name.lower())


def results(study: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial that used up one of the sweep's trials, by trial number."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        status = _status(t)
        if status not in COUNTED:
            continue
        inter = t.intermediate_values
        out.append({
            "trial": t.number,
            "status": status,
            "value": t.value if status == "complete" else None,
            "last_value": inter[max(inter)] if inter else None,
            "params": {p.key: p.value(t.params[p.key]) for p in sweep.params if p.key in t.params},
            "epochs": t.user_attrs.get("cnnspec_epochs", 0),
            "seconds": t.user_attrs.get("cnnspec_seconds"),
            "run_dir": t.user_attrs.get("cnnspec_run_dir") if status != "invalid" else None,
            "host": t.user_attrs.get("cnnspec_host"),
            "gpu": t.user_attrs.get("cnnspec_gpu"),
            "started": t.datetime_start.isoformat(timespec="milliseconds") if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat(timespec="milliseconds") if t.datetime_complete else None,
            "errors": t.user_attrs.get("cnnspec_errors", []),
            "_shown": {p.key: shown(p, t.params[p.key]) for p in sweep.params if p.key in t.params},
            "_spec": t.user_attrs.get("cnnspec_spec"),
        })
    return out


def best(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [r for r in rows if r["status"] == "complete" and r["value"] is not None]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda r: (r["value"], -r["trial"]) if direction == "maximize" else (r["value"], r["trial"]))


class Reporter:
    """Progress lines (rich) and the sweep folder's result files."""

    def __init__(self, quiet: bool, sweep: Sweep, folder: Path) -> None:
        from cnnspec.util.console import Console

        self.quiet, self.sweep, self.folder = quiet, sweep, folder
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal:  # a log file: room for the whole table
            self.console = Console(highlight=False, soft_wrap=True, width=200)
        self.rows: list[dict[str, Any]] = []

    def _say(self, text: str, style: str | None = None) -> None:
        if not self.quiet:
            self.console.print(text, style=style, markup=False)

    def _values(self, values: dict[str, Any]) -> str:
        return "  ".join(f"{p.key}={shown(p, values[p.key])}" for p in self.sweep.params if p.key in values)

    def start(self, study: str, storage: str, jobs: int, resumed: bool, done: int) -> None:
        s = self.sweep
        what = f"continuing sweep ({done} of {s.trials} trials done)" if resumed else "sweep"
        self._say(f"{what} {study}: {s.trials} trials ({s.section.sampler}), {s.metric} "
                  f"({'max' if s.direction == 'maximize' else 'min'}), {jobs} at a time, storage "
                  f"{storage} -> {self.folder}")

    def note(self, text: str) -> None:
        self._say(text, "yellow")

    def trial_started(self, n: int, values: dict[str, Any], gpu: str | None) -> None:
        self._say(f"trial {n:>3}  started   {self._values(values)}" + (f"  (GPU {gpu})" if gpu else ""), "dim")

    def trial_invalid(self, n: int, values: dict[str, Any], errors: list[str]) -> None:
        self._say(f"trial {n:>3}  invalid   {self._values(values)}", "red")
        for e in errors:
            self._say(f"            {e}", "red")

    def trial_failed(self, n: int, values: dict[str, Any], errors: list[str]) -> None:
        self._say(f"trial {n:>3}  failed    {self._values(values)}: {' / '.join(errors)}", "red")

    def trial_pruned(self, n: int, values: dict[str, Any], epochs: int, last: Any) -> None:
        last_s = f" {self.sweep.metric} {last:.4f}" if isinstance(last, (int, float)) else ""
        self._say(f"trial {n:>3}  pruned    after epoch {epochs}{last_s}  {self._values(values)}")

    def trial_interrupted(self, n: int) -> None:
        self._say(f"trial {n:>3}  stopped   (queued to run again when the sweep continues)", "yellow")

    def trial_complete(self, n: int, values: dict[str, Any], value: float, epochs: int, seconds: Any,
                       study: Any) -> None:
        b = best(results(study, self.sweep), self.sweep.direction)
        tail = f"  best so far: trial {b['trial']}, {b['value']:.4f}" if b else ""
        self._say(f"trial {n:>3}  complete  {self.sweep.metric} {value:.4f} ({epochs} epochs, {seconds} s)  "
                  f"{self._values(values)}{tail}", "green" if b and b["trial"] == n else None)

    # -- files ----------------------------------------------------------------------------------

    def write(self, study: Any, storage: str, final: bool = False) -> None:
        from cnnspec.train.rundir import atomic_write

        rows = self.rows = results(study, self.sweep)
        s = self.sweep
        b = best(rows, s.direction)
        public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        doc = {"study": study.study_name, "storage": storage, "metric": s.metric, "direction": s.direction,
               "sampler": s.section.sampler, "trials_planned": s.trials, "trials_done": len(rows),
               "counts": {k: sum(1 for r in rows if r["status"] == k) for k in COUNTED},
               "best": ({k: v for k, v in b.items() if not k.startswith("_")} if b else None), "trials": public}
        text = json.dumps(doc, indent=2, default=str) + "\n"
        atomic_write(self.folder / RESULTS_JSON, lambda f: f.write(text))
        buf = io.StringIO()
        w = csv.writer(buf)
        keys = [p.key for p in s.params]
        w.writerow(["trial", "status", s.metric, *keys, "epochs", "seconds", "run_dir", "error"])
        for r in rows:
            value = r["value"] if r["value"] is not None else r["last_value"] if r["status"] == "pruned" else None
            w.writerow([csv_cell(c) for c in (r["trial"], r["status"], "" if value is None else value,
                                               *[r["_shown"].get(k, "") for k in keys], r["epochs"],
                                               r["seconds"] or "", r["run_dir"] or "", " / ".join(r["errors"]))])
        atomic_write(self.folder / RESULTS_CSV, lambda f: f.write(buf.getvalue()))
        if b and isinstance(b.get("_spec"), dict):
            import yaml

            head = (f"# best trial {b['trial']} of sweep {study.study_name}: {s.metric} {b['value']:.6g}\n"
                    f"# {', '.join(f'{k}={v}' for k, v in b['_shown'].items())}\n"
                    f"# the trial's resolved spec; train it again with: cnnspec run {BEST_FILE}\n")
            body = head + yaml.safe_dump(b["_spec"], sort_keys=False, default_flow_style=None)
            atomic_write(self.folder / BEST_FILE, lambda f: f.write(body))
        if final and any(r["status"] in ("complete", "pruned") for r in rows):
            try:
                plot(rows, s, self.folder / PLOT_FILE)
            except Exception as e:  # e.g. matplotlib missing: the numbers are in results.csv
                self.note(f"could not draw {PLOT_FILE}: {type(e).__name__}: {e}")

    def finish(self) -> None:
        """The table of every trial and the best one; with --quiet, only the folder."""
        if self.quiet:
            print(self.folder)
            return
        from rich.table import Table

        s = self.sweep
        table = Table(show_edge=False, pad_edge=False)
        for col in ("trial", "status", s.metric, "epochs", *[p.key for p in s.params]):
            table.add_column(col, justify="right" if col in ("trial", "epochs", s.metric) else "left")
        b = best(self.rows, s.direction)
        for r in self.rows:
            v = r["value"] if r["value"] is not None else r["last_value"]
            table.add_row(str(r["trial"]), r["status"], "" if v is None else f"{v:.4f}", str(r["epochs"]),
                          *[r["_shown"].get(p.key, "") for p in s.params],
                          style="bold green" if b and r["trial"] == b["trial"] else None)
        self.console.print(table)
        counts = ", ".join(f"{sum(1 for r in self.rows if r['status'] == k)} {k}" for k in COUNTED)
        if b:
            self._say(f"best: trial {b['trial']}, {s.metric} {b['value']:.4f} ({counts}); "
                      f"{self.folder / BEST_FILE} runs it again with cnnspec run")
        else:
            self._say(f"no trial completed ({counts}); see {self.folder / RESULTS_CSV}")


def plot(rows: list[dict[str, Any]], sweep: Sweep, out: Path) -> Path | None:
    """The metric against each parameter: completed trials, and pruned ones at their last value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnspec.train.rundir import atomic_write

    params = list(sweep.params)
    if not params:
        return None
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    invalid = sum(1 for r in rows if r["status"] in ("invalid", "failed"))
    for ax, p in zip(axes.flat, params):
        categorical = p.kind == "choice"
        ticks = [label(c) for c in p.choices] if categorical else []
        for status, color, marker in (("complete", "tab:blue", "o"), ("pruned", "tab:gray", "x")):
            pts = [(r["params"][p.key], r["value"] if status == "complete" else r["last_value"])
                   for r in rows if r["status"] == status and p.key in r["params"]]
            pts = [(x, y) for x, y in pts if isinstance(y, (int, float))]
            if not pts:
                continue
            xs = [ticks.index(label(x)) if categorical else x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], c=color, marker=marker, label=status, alpha=0.8)
        if categorical:
            ax.set_xticks(range(len(ticks)), [t if len(t) <= 24 else t[:21] + "..." for t in ticks],
                          rotation=20 if any(len(t) > 6 for t in ticks) else 0, fontsize="small")
            ax.set_xlim(-0.5, len(ticks) - 0.5)
        elif p.kind.startswith("log"):
            ax.set_xscale("log")
        ax.set_xlabel(p.key)
        ax.set_ylabel(sweep.metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"{sweep.metric} per trial ({len(rows)} trials" + (f", {invalid} invalid or failed, not shown)"
                                                                      if invalid else ")"))
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    plt.close(fig)
    return out
