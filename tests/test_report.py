"""`cnnspec report`: what user-controlled text reaches the page is escaped; the page is whole,
self-contained and small; `run` writes it, `eval` refreshes it, `--no-report` leaves it out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT
from hostile import make_run, make_sweep

pytest.importorskip("PIL", reason="the report's thumbnails need Pillow (a torchvision dependency)")

@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose class folders, folder name, block argument and summary carry markup."""
    return make_run(tmp_path_factory.mktemp("evil"))


def _no_markup_from_user(html: str) -> None:
    """None of the hostile strings appears unescaped, and the page has no script at all."""
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")  # only as escaped text
    assert "<b>run" not in html and "<b>sweep" not in html and "<i>sweep" not in html


def test_run_writes_the_report_and_every_user_string_is_escaped(evil_run, cli):
    page = evil_run / "report.html"
    assert page.is_file()  # written by run
    res = cli("report", str(evil_run), "--trust")
    assert res.code == 0, res.text
    html = page.read_text()
    _no_markup_from_user(html)
    assert "<td class=\"l\">&lt;script&gt;alert(1)</td>" in html  # the class folder's name, as text
    assert "quote&quot;s &amp; &#x27;apostrophes&#x27;" in html
    assert "&lt;b&gt;run &quot;one&quot; &amp; &#x27;two&#x27;" in html  # the run folder's name
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;amp;" in html  # summary, block argument
    assert html.count("&amp;amp;") >= 3  # spec text, graph label and summary each escaped once, not twice
    assert "data:image/png;base64," in html  # the thumbnails are in the page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)  # nothing to fetch
    assert "Content-Security-Policy" in html


def test_report_sections_and_size(evil_run):
    html = (evil_run / "report.html").read_text()
    for section in ("Training curves", "Timings", "Test split", "Model", "Versions and fast paths",
                    "precision", "recall", "F1", "support", "confusion matrix"):
        assert section in html, section
    assert len(html.encode()) < 5_000_000
    assert html.count("<svg") >= 5  # loss, accuracy, lr, timings, heat map, graph


def test_eval_refreshes_the_report_and_no_report_leaves_it_out(evil_run, cli, tmp_path):
    page = evil_run / "report.html"
    page.write_text("stale")
    res = cli("eval", str(evil_run), "--trust")
    assert res.code == 0, res.text
    assert "Test split" in page.read_text()
    res = cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--set", "train.epochs=1", "--no-report",
              "--quiet", "--output", str(tmp_path / "q"))
    assert res.code == 0, res.text
    assert not (tmp_path / "q" / "report.html").exists() and (tmp_path / "q" / "curves.png").exists()


def test_several_runs_are_compared(evil_run, cli, tmp_path):
    other = tmp_path / "q"
    assert cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--set", "train.epochs=1", "--quiet",
               "--output", str(other)).code == 0
    out = tmp_path / "both.html"
    res = cli("report", str(evil_run), str(other), "-o", str(out), "--trust")
    assert res.code == 0, res.text
    html = out.read_text()
    _no_markup_from_user(html)
    assert "2 runs compared" in html
    assert html.count("<tr>") == 3  # the head and one row per run
    assert "sgd" in html and "adam" in html  # their optimizers side by side


def test_a_sweep_folder_is_escaped_too(cli, tmp_path):
    """A sweep's name, folder, study and parameter values (hostile.make_sweep's hand-made results.json)."""
    folder = make_sweep(tmp_path)
    res = cli("report", str(folder))
    assert res.code == 0, res.text
    html = (folder / "report.html").read_text()
    _no_markup_from_user(html)
    assert "Parallel coordinates" in html and "<polyline" in html and "(log)" in html  # lr spans decades
    assert 'class="best"' in html and "importances not computed" in html


def test_report_of_a_missing_folder_is_a_usage_error(cli, tmp_path):
    res = cli("report", str(tmp_path / "nope"))
    assert res.code == 2 and "no such file or directory" in res.err
