"""The report in a real browser: headless Chromium opens the page of a finished run of
specs/keras_mnist_cnn.yaml (digits-sized here) and of a sweep folder, over the DevTools protocol
(--remote-debugging-pipe: NUL-separated JSON on file descriptors 3 and 4, no websocket library),
and finds no console error, no exception, and no request but the page itself; it keeps a
screenshot at 1280 x 2000 in .ci/artifacts/ (CI keeps it; nothing compares pixels). The pages of
tests/hostile.py's run and sweep, whose user-controlled strings carry markup, hold in the DOM no
script, event handler, link or embedded thing the report does not make, and show those strings verbatim.

Skipped when Chromium is not installed; .ci/run installs it (Debian's `chromium`).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from hostile import RUN_TEXTS, SWEEP_NAME, SWEEP_TEXTS, make_run, make_sweep

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (CI installs Debian's chromium)")
ARTIFACTS = ROOT / ".ci" / "artifacts"


class Browser:
    """Headless Chromium driven over its DevTools pipe: one page, its events kept."""

    def __init__(self, width: int = 1280, height: int = 2000) -> None:
        to_browser, self._write = os.pipe()  # the browser reads commands on its fd 3 ...
        self._read, from_browser = os.pipe()  # ... and writes replies and events on its fd 4

        def fds() -> None:  # in the child: the pipes onto fds 3 and 4 (through spare numbers, as they may be 3 or 4)
            os.dup2(to_browser, 1000)
            os.dup2(from_browser, 1001)
            os.dup2(1000, 3)
            os.dup2(1001, 4)

        assert BROWSER is not None
        self.proc = subprocess.Popen(
            [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", f"--window-size={width},{height}",
             "--hide-scrollbars", "about:blank"],
            close_fds=False, preexec_fn=fds,  # Python's own fds are close-on-exec; 3 and 4 are inherited
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(deadline))

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        self.call("Runtime.evaluate", session=True, expression="1")  # let queued console events arrive

    def problems(self, page: Path) -> list[str]:
        """Console errors, exceptions and any request other than the page itself."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')}")
            elif m == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if url != page.resolve().as_uri() and not url.startswith("data:"):
                    out.append(f"request: {url}")
        return out

    def screenshot(self, out: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
        return png

    def dom(self) -> str:
        return str(self.call("Runtime.evaluate", session=True, returnByValue=True,
                             expression="document.documentElement.outerHTML")["result"]["value"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._read)
        os.close(self._write)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


# specs/keras_mnist_cnn.yaml's model (the Keras plugin's layers) on the offline 8x8 digits
KERAS_ON_DIGITS = {"input": "[1,8,8]", "data.dataset": "digits", "data.val_split": "0.1", "train.epochs": "2",
                   "train.device": "cpu"}

TINY_SWEEP = """\
name: tiny
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - flatten
  - {type: linear, out_features: 10}
data: {dataset: digits, batch_size: 64, val_split: 0.2, limit: 300}
train: {epochs: 1, seed: 1, device: cpu, optimizer: {type: sgd, lr: 0.05}}
sweep:
  trials: 3
  sampler: random
  seed: 3
  space:
    train.optimizer.lr: {log_uniform: [0.001, 0.5]}
    layers.0.out_channels: [2, 4, 8]
"""


def test_run_report_renders_without_errors_or_requests(browser, cli, tmp_path):
    pytest.importorskip("cnnspec_keras", reason="the Keras-style plugin (plugins/cnnspec-keras) is not installed")
    run = tmp_path / "keras"
    sets = [a for k, v in KERAS_ON_DIGITS.items() for a in ("--set", f"{k}={v}")]
    res = cli("run", str(ROOT / "specs" / "keras_mnist_cnn.yaml"), *sets, "--quiet", "--output", str(run))
    assert res.code == 0, res.text
    page = run / "report.html"
    assert page.stat().st_size < 5_000_000
    browser.open(page)
    assert browser.problems(page) == []
    dom = browser.dom()
    assert "keras-mnist-cnn" in dom and "Most confused pairs" in dom and "<svg" in dom
    png = browser.screenshot(ARTIFACTS / "report-run.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_sweep_report_renders_without_errors_or_requests(browser, cli, write, tmp_path):
    pytest.importorskip("optuna", reason="cnnspec sweep needs the 'sweep' extra (optuna)")
    out = tmp_path / "sweep"
    res = cli("sweep", write(TINY_SWEEP), "--quiet", "--output", str(out))
    assert res.code == 0, res.text
    res = cli("report", str(out))
    assert res.code == 0, res.text
    page = out / "report.html"
    assert page.stat().st_size < 5_000_000
    browser.open(page)
    assert browser.problems(page) == []
    dom = browser.dom()
    assert "Parallel coordinates" in dom and "Parameter importances" in dom and "Best trial" in dom
    browser.screenshot(ARTIFACTS / "report-sweep.png")


def test_the_check_sees_a_blocked_request(browser, tmp_path):
    """The check itself can fail: a page that asks for a remote image is refused by the CSP and reported."""
    from cnnspec.tools.htmlpage import page

    bad = tmp_path / "bad.html"
    bad.write_text(page("bad", ['<img src="https://example.invalid/x.png" alt="">']))
    browser.open(bad)
    assert browser.problems(bad), browser.events


# Run in the page: what markup in the DOM the report does not make. The report has no script at all
# (its CSP, default-src 'none', would refuse one), no link, and one kind of picture: a thumbnail,
# <img alt="test image N" src="data:image/png;base64,..."> alone in a <div class="thumb">.
DOM_CHECK = r"""(() => {
  const foreign = new Set(['iframe', 'frame', 'frameset', 'object', 'embed', 'applet', 'base', 'link', 'form',
    'input', 'button', 'textarea', 'select', 'audio', 'video', 'source', 'track', 'portal', 'image',
    'foreignobject', 'animate', 'set', 'use', 'a']);
  const thumb = img => img.parentElement !== null && img.parentElement.className === 'thumb'
    && img.getAttributeNames().sort().join() === 'alt,src' && /^test image \d+$/.test(img.getAttribute('alt'))
    && img.getAttribute('src').startsWith('data:image/png;base64,');
  const out = [];
  for (const e of document.querySelectorAll('*')) {
    const name = e.localName.toLowerCase(), tag = e.outerHTML.slice(0, 120);
    if (name === 'script') out.push('script: ' + tag);
    else if (foreign.has(name)) out.push('element: ' + tag);
    else if (name === 'img' && !thumb(e)) out.push('image: ' + tag);
    else if (name === 'meta' && e.parentElement !== document.head) out.push('element: ' + tag);
    for (const a of e.getAttributeNames()) {
      const v = e.getAttribute(a).trim();
      if (a.toLowerCase().startsWith('on')) out.push('handler: ' + a + ' on ' + tag);
      else if (/^(href|xlink:href|src|srcset|action|formaction|data|poster|background)$/i.test(a)
               && !(v.startsWith('#') || (name === 'img' && v.startsWith('data:image/png;base64,'))))
        out.push('url: ' + a + '=' + v.slice(0, 60) + ' on ' + tag);
    }
  }
  return {problems: out, text: document.body.innerText};
})()"""


def markup_from_user(browser: Browser, page: Path, verbatim: tuple[str, ...]) -> list[str]:
    """Open ``page`` and list what its DOM holds that the report does not make (scripts, event
    handlers, links, embedded or foreign elements and pictures), and each of ``verbatim`` the
    user does not see exactly as written (markup the browser parsed, or an entity decoded twice)."""
    browser.open(page)
    found = browser.call("Runtime.evaluate", session=True, returnByValue=True, expression=DOM_CHECK)
    assert "exceptionDetails" not in found, found
    seen = found["result"]["value"]
    return list(seen["problems"]) + [f"not verbatim: {s!r}" for s in verbatim if s not in seen["text"]]


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("PIL", reason="the report's thumbnails need Pillow (a torchvision dependency)")
    return make_run(tmp_path_factory.mktemp("evil"))


def test_a_hostile_run_is_text_in_the_dom(browser, cli, evil_run):
    res = cli("report", str(evil_run), "--trust")  # again: summary.json was changed after the run
    assert res.code == 0, res.text
    page = evil_run / "report.html"
    assert markup_from_user(browser, page, RUN_TEXTS) == []
    assert browser.problems(page) == []
    assert 'class="thumb"><img alt="test image' in browser.dom()  # the report's own pictures are there and pass


def test_a_hostile_sweep_is_text_in_the_dom(browser, cli, tmp_path):
    folder = make_sweep(tmp_path)
    res = cli("report", str(folder))
    assert res.code == 0, res.text
    page = folder / "report.html"
    assert markup_from_user(browser, page, SWEEP_TEXTS) == []
    assert browser.problems(page) == []
    title = browser.call("Runtime.evaluate", session=True, returnByValue=True, expression="document.title")
    assert title["result"]["value"] == f"sweep {SWEEP_NAME}: cnnspec report"  # the head's text too


def test_the_dom_check_sees_unescaped_markup(browser, tmp_path):
    """The check itself can fail: a page that lets markup through is caught on every count, and the
    report's own kind of thumbnail is not."""
    from cnnspec.tools.htmlpage import page

    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQ"
           "AAAABJRU5ErkJggg==")  # one black pixel, as the report's thumbnails are made
    bad = tmp_path / "bad.html"
    bad.write_text(page("bad", [
        f'<div class="thumb"><img alt="test image 3" src="{png}">#3</div>',
        '<p>run <b>run "one"</b> device &amp;</p>',  # markup the browser parses, an entity it decodes
        "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<iframe src="https://example.invalid/"></iframe>',
        '<svg><a href="javascript:alert(1)"><text y="20">x</text></a><foreignObject></foreignObject></svg>',
        '<meta http-equiv="refresh" content="3600">']))
    problems = markup_from_user(browser, bad, ('<b>run "one"', "device &amp;"))
    kinds = sorted({p.split(":")[0] for p in problems})
    assert kinds == ["element", "handler", "image", "not verbatim", "script", "url"], problems
    assert sum(p.startswith("not verbatim") for p in problems) == 2, problems
    assert any("foreignObject" in p for p in problems) and any("javascript:" in p for p in problems), problems
    assert any("iframe" in p for p in problems) and any("refresh" in p for p in problems), problems
    assert not any("test image 3" in p for p in problems), problems


def test_the_dom_check_fails_a_report_that_does_not_escape(browser, cli, evil_run, monkeypatch, tmp_path):
    """And on the real pipeline: with ``html.escape`` taken out of the modules that write the run's
    page, the hostile run's page fails the check (scripts, handlers, pictures, text not shown)."""
    from cnnspec.tools import charts, graph, htmlpage, runpage

    for module in (charts, graph, htmlpage, runpage):
        monkeypatch.setattr(module, "escape", lambda s, quote=True: s)
    out = tmp_path / "unescaped.html"
    res = cli("report", str(evil_run), "-o", str(out), "--trust")
    assert res.code == 0, res.text
    problems = markup_from_user(browser, out, RUN_TEXTS)
    assert {"script", "handler", "image", "url", "not verbatim"} <= {p.split(":")[0] for p in problems}, problems
