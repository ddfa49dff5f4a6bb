"""The report's sections for one run (results, mistakes, model, cost, versions) and for several compared."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.errors import CnnspecError, ToolError
from cnnspec.spec.metrics import metric
from cnnspec.tools.charts import Series, heat_map, line_chart
from cnnspec.tools.htmlpage import MAX_JSON_BYTES, cell, curve_charts, page, read_json, table, thumbnail
from cnnspec.train.rundir import SPEC_FILE, SUMMARY_FILE

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.spec.sections import Spec
    from cnnspec.tools.runs import Outcomes


PAIRS, PER_PAIR, GALLERY = 6, 4, 16  # confused pairs shown, examples of each, confidently wrong shown
TEST_ACCURACY = metric("test", "accuracy")  # the headline number of a run


@dataclass
class RunData:
    """What one run folder holds, read once: name, summary, epochs, spec text and checked spec."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    spec_text: str
    spec: Spec | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.name)


def read_run(path: Path, trust: bool = False) -> RunData:
    """A run folder's files; its spec checked (for the table and graph) when its plugins allow."""
    from cnnspec.tools.runs import read_metrics_rows
    from cnnspec.util.files import read_regular

    if not (path / SPEC_FILE).is_file():
        what = "not a run folder" if path.exists() else "no such file or directory"
        raise ToolError(f"{path}: {what} (give a folder `cnnspec run` or `cnnspec sweep` made)")
    summary = read_json(path / SUMMARY_FILE)
    data = RunData(path, summary if isinstance(summary, dict) else {}, read_metrics_rows(path),
                   read_regular(path / SPEC_FILE, MAX_JSON_BYTES).decode("utf-8", errors="replace"))
    try:
        data.spec = _checked_spec(path, trust)
    except CnnspecError as e:
        data.notes.append(f"the model is not shown: {e}")
    return data


def _checked_spec(path: Path, trust: bool) -> Spec:
    from cnnspec.errors import SpecError
    from cnnspec.spec.check import check
    from cnnspec.spec.yamlpos import load_file
    from cnnspec.train.runplugins import run_policy

    located = load_file(str(path / SPEC_FILE))
    listed = located.data.get("plugins") if isinstance(located.data, dict) else None
    result = check(located, policy=run_policy(path, listed, trust), weights=False)
    if result.spec is None:
        raise SpecError(result.problems, str(path / SPEC_FILE))
    return result.spec


def run_page(run: RunData, result: dict[str, Any] | None,
             outcomes: Outcomes | None, note: str | None) -> str:
    """The page of one run: what it reached, how it trained, what it gets wrong, what it is."""
    s = run.summary
    body = [f"<h1>{escape(run.name)}</h1>",
            f'<p class="muted">run folder {escape(str(run.path))} &middot; status {escape(cell(s.get("status")))}</p>',
            _cards(run, result)]
    for n in run.notes + ([note] if note else []):
        body.append(f'<p class="muted">{escape(n)}</p>')
    if run.rows:
        body += ["<h2>Training curves</h2>", curve_charts([("", run.rows)])]
    body += ["<h2>Timings</h2>", _timings(run)]
    if result is not None and outcomes is not None:
        body += _evaluation(result, outcomes)
    body += _model(run)
    body += ["<h2>Versions and fast paths</h2>", _versions(s)]
    return page(f"{run.name}: cnnspec report", body)


def _cards(run: RunData, result: dict[str, Any] | None) -> str:
    s, final = run.summary, run.summary.get("final") or {}
    best = s.get("best") or {}
    cards = [("test accuracy", (result or {}).get("accuracy", final.get(TEST_ACCURACY))),
             (f"best {best.get('metric', '')} (epoch {best.get('epoch')})", best.get("value")) if best else ("", None),
             ("epochs", f"{s.get('epochs_completed', len(run.rows))} of {s.get('epochs_planned', '?')}"),
             ("params", f"{s['params']:,}" if isinstance(s.get("params"), int) else None),
             ("MACs / sample", f"{s['macs_per_sample']:,}" if isinstance(s.get("macs_per_sample"), int) else None),
             ("device", s.get("device_name") or s.get("device"))]
    return '<div class="cards">' + "".join(
        f'<div class="card"><span class="muted">{escape(k)}</span><b>{escape(cell(v))}</b></div>'
        for k, v in cards if v is not None) + "</div>"


def _timings(run: RunData) -> str:
    rows, s = run.rows, run.summary
    if not rows:
        return '<p class="muted">no finished epoch</p>'
    secs = [r.get("seconds") or 0.0 for r in rows]
    facts = [("epochs", len(rows)), ("training seconds", sum(secs)),
             ("seconds per epoch (mean)", sum(secs) / len(secs)),
             ("evaluation seconds per epoch (mean)", sum(r.get("eval_seconds") or 0.0 for r in rows) / len(rows)),
             ("samples per second (last epoch)", rows[-1].get("samples_per_second")),
             ("training GFLOP/s", s.get("train_gflops_per_second")),
             ("batch size (per process)", s.get("batch_size")), ("processes", s.get("processes"))]
    chart = line_chart([Series("seconds", [(r["epoch"], r.get("seconds")) for r in rows]),
                        Series("GFLOP/s", [(r["epoch"], r.get("train_gflops_per_second")) for r in rows],
                               "#ff7f0e", "6 4")], "epoch time (s) and training GFLOP/s")
    return f'<div class="row">{table(("", "value"), facts)}{chart}</div>'


def per_class(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> list[tuple[Any, ...]]:
    """(class, precision, recall, F1, support) per class from the confusion matrix (rows: true class)."""
    out = []
    for i, name in enumerate(classes):
        hit = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        p = hit / predicted if predicted else 0.0
        r = hit / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out.append((name, p, r, f1, support))
    return out


def _evaluation(result: dict[str, Any], o: Outcomes) -> list[str]:
    classes = [str(c) for c in result["classes"]]
    conf = result["confusion"]
    body = ["<h2>Test split</h2>",
            f'<p>{escape(cell(result["samples"]))} test samples of the {escape(cell(result["checkpoint"]))} '
            f'weights: {_loss(result)}accuracy {escape(cell(result["accuracy"]))}</p>',
            '<div class="row">', heat_map(conf, classes, "confusion matrix (rows: true class, columns: predicted)"),
            table(("class", "precision", "recall", "F1", "support"), per_class(conf, classes)), "</div>"]
    pairs = sorted(((conf[i][j], i, j) for i in range(len(classes)) for j in range(len(classes))
                    if i != j and conf[i][j]), reverse=True)[:PAIRS]
    if pairs:
        body.append('<h2>Most confused pairs</h2><div class="row">')
    for n, i, j in pairs:
        picked = _most_confident(o, ((o.y == i) & (o.pred == j)), PER_PAIR)
        body.append(f"<div><h3>{escape(classes[i])} taken for {escape(classes[j])}: {n} times</h3>"
                    + _thumbs(o, picked, classes) + "</div>")
    if pairs:
        body.append("</div>")
    wrong = _most_confident(o, o.y != o.pred, GALLERY)
    if wrong:
        body += ["<h2>The most confidently wrong test images</h2>", _thumbs(o, wrong, classes)]
    return body


def _loss(result: dict[str, Any]) -> str:
    return "" if result.get("loss") is None else f'loss {escape(cell(result["loss"]))}, '


def _most_confident(o: Outcomes, mask: Any, n: int) -> list[int]:
    """The indices of the ``n`` samples in ``mask`` predicted with the highest probability."""
    idx = mask.nonzero().flatten()
    return [int(i) for i in idx[o.confidence[idx].argsort(descending=True)][:n]]


def _thumbs(o: Outcomes, indices: Sequence[int], classes: Sequence[str]) -> str:
    out = []
    for k in indices:
        uri = thumbnail(o.x[k:k + 1][0], o.mean, o.std)  # a slice: the test split may be streamed
        img = f'<img alt="test image {k}" src="{uri}">' if uri else ""
        true, pred = classes[int(o.y[k])], classes[int(o.pred[k])]
        out.append(f'<div class="thumb">{img}#{k}<br>true {escape(true)}<br>said {escape(pred)} '
                   f'{float(o.confidence[k]):.2f}</div>')
    return '<div class="thumbs">' + "".join(out) + "</div>"


def _model(run: RunData) -> list[str]:
    body = ["<h2>Model</h2>"]
    if run.spec is not None:
        from cnnspec.spec.cost import spec_estimate
        from cnnspec.tools.graph import render
        from cnnspec.tools.show import print_table

        buf = io.StringIO()
        print_table(run.path.name, run.spec.trace, buf, spec_estimate(run.spec, None), run.spec.finetune)
        body += [f"<pre>{escape(buf.getvalue())}</pre>",
                 f'<div class="graph">{render(run.spec.trace, "svg", run.spec.name)}</div>']
    body += [f"<h2>Spec ({escape(run.path.name)}/spec.yaml, as it ran)</h2>", f"<pre>{escape(run.spec_text)}</pre>"]
    return body


def _versions(s: dict[str, Any]) -> str:
    rows = [(f"fast path: {k}", v) for k, v in (s.get("fast_paths") or {}).items()]
    versions = s.get("versions") or {}
    if isinstance(versions, dict):
        rows += [(k, v) for k, v in versions.items()]
    rows += [(k, s.get(k)) for k in ("device", "device_name", "seed", "effective_batch_size") if k in s]
    return table(("", "value"), rows) if rows else '<p class="muted">no summary.json</p>'


SETTINGS = (("optimizer", ("train", "optimizer")), ("scheduler", ("train", "scheduler")),
            ("batch size", ("data", "batch_size")), ("epochs", ("train", "epochs")), ("seed", ("train", "seed")))


def _setting(spec_text: str, keys: tuple[str, ...]) -> Any:
    import yaml

    try:
        v: Any = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return None
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v


def compare_page(runs: Sequence[RunData]) -> str:
    """Several runs: their settings and results side by side, and their curves overlaid."""
    head = ("run", "status", "params", *[n for n, _ in SETTINGS], "epochs done", "test accuracy",
            "best (monitored metric)", "seconds")
    rows = []
    for r in runs:
        s, final = r.summary, r.summary.get("final") or {}
        rows.append((r.path.name, s.get("status"), s.get("params"),
                     *[_setting(r.spec_text, k) for _, k in SETTINGS], len(r.rows), final.get(TEST_ACCURACY),
                     (s.get("best") or {}).get("value"), sum(x.get("seconds") or 0.0 for x in r.rows)))
    body = [f"<h1>{len(runs)} runs compared</h1>", "<h2>Settings and results</h2>", table(head, rows, left=2)]
    drawn = [(r.path.name, r.rows) for r in runs if r.rows]
    if drawn:
        body += ["<h2>Training curves</h2>", curve_charts(drawn)]
    for r in runs:
        body += [f'<p class="muted">{escape(r.path.name)}: {escape(n)}</p>' for n in r.notes]
    return page(f"{len(runs)} runs: cnnspec report", body)
