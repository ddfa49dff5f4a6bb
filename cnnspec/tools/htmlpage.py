"""The report's HTML parts: the page around the sections, tables, curve charts, image thumbnails.

Everything that lands in the page from a user or a file goes through ``html.escape`` here or in
``tools.charts``; numbers are formatted by ``cell``.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from cnnspec.spec.metrics import MEASURES, SPLITS, metric
from cnnspec.tools.charts import COLORS, DASHES, Series, line_chart
from cnnspec.version import __version__

MAX_JSON_BYTES = 20_000_000
THUMB = 64  # a thumbnail's longest side, pixels

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h3{font-size:14px;margin:8px 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.muted{color:#777}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px}.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}tr.best td{background:#e7f5e7;font-weight:bold}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;font-size:12px;max-height:480px}
.chart{background:#fff;border:1px solid #ddd;font-size:11px}.tick{font-size:11px;fill:#444}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumb{background:#fff;border:1px solid #ddd;padding:4px;font-size:11px;text-align:center}
.thumb img{width:64px;height:64px;image-rendering:pixelated;display:block;margin:0 auto 2px}
.graph{overflow:auto;max-height:900px;background:#fff;border:1px solid #ddd}
"""
# no script, no request: images are data: URIs, styles inline; anything else the browser refuses
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def page(title: str, body: Sequence[str]) -> str:
    """The whole document around ``body``'s sections."""
    made = time.strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>\n"
            + "\n".join(body)
            + f"\n<p class=\"muted\">made by cnnspec {escape(__version__)} on {made}</p></main></body></html>\n")


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1,
          marked: int | None = None) -> str:
    """An HTML table; the first ``left`` columns left-aligned; row ``marked`` highlighted."""
    cls = [' class="l"' if i < left else "" for i in range(len(head))]
    out = ["<table><tr>" + "".join(f"<th{c}>{escape(h)}</th>" for c, h in zip(cls, head)) + "</tr>"]
    for n, r in enumerate(rows):
        mark = ' class="best"' if n == marked else ""
        out.append(f"<tr{mark}>" + "".join(f"<td{c}>{escape(cell(v))}</td>" for c, v in zip(cls, r)) + "</tr>")
    return "".join(out) + "</table>"


def cell(v: Any) -> str:
    """A value as a table shows it: floats to 4 significant digits, None empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (a regular file of bounded size); None if absent or unreadable."""
    from cnnspec.util.files import read_regular

    try:
        return json.loads(read_regular(path, MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):
        return None


def curve_charts(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> str:
    """Loss, accuracy and learning rate per epoch: train dashed, val dotted, test solid; a colour per run."""
    charts = []
    for measure in MEASURES:
        series = []
        for i, (label, rows) in enumerate(runs):
            for split in SPLITS:
                key = metric(split, measure)
                if rows and key in rows[0]:
                    name = f"{label} {split}" if len(runs) > 1 else split
                    series.append(Series(name, [(r["epoch"], r.get(key)) for r in rows],
                                         COLORS[i % len(COLORS)], DASHES[split]))
        charts.append(line_chart(series, measure))
    lr = [Series(label or "lr", [(r["epoch"], r.get("lr")) for r in rows], COLORS[i % len(COLORS)])
          for i, (label, rows) in enumerate(runs)]
    charts.append(line_chart(lr, "learning rate (at the epoch's start)"))
    return '<div class="row">' + "".join(charts) + "</div>"


def thumbnail(x: Any, mean: list[float] | None, std: list[float] | None) -> str | None:
    """One C x H x W test image (as fed to the model) as a small PNG data URI; None if it is not a picture."""
    import base64

    import numpy as np
    import torch
    from PIL import Image

    if x.dim() != 3 or x.shape[0] not in (1, 3):
        return None
    img = x.detach().float().cpu()
    if mean is not None and std is not None:  # undo the run's standardisation
        img = img * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    a = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    pic = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    if max(pic.size) > THUMB:
        pic.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
