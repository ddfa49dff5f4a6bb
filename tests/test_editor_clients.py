"""`cnnspec schema` in the clients editors use: ajv (draft 2020-12, strict) compiles it, accepts
every example spec and rejects each wrong one at the right instance path; yaml-language-server
(the engine of VS Code's YAML extension), spoken to over LSP with the schema modeline, reports
nothing for the examples and the expected line for each wrong one.

Skipped when node or the npm packages are missing; .ci/run installs them into .ci/node
(`npm install --prefix .ci/node yaml-language-server ajv ajv-formats`).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

NODE_MODULES = ROOT / ".ci" / "node" / "node_modules"
NODE = shutil.which("node")
SERVER = NODE_MODULES / ".bin" / "yaml-language-server"
needs_ajv = pytest.mark.skipif(NODE is None or not (NODE_MODULES / "ajv").is_dir(),
                               reason="node and ajv not installed (CI: npm install --prefix .ci/node ajv ajv-formats)")
needs_server = pytest.mark.skipif(NODE is None or not SERVER.exists(),
                                  reason="yaml-language-server not installed (CI: npm install --prefix .ci/node "
                                         "yaml-language-server)")

EXAMPLES = sorted([*(ROOT / "specs").glob("*.yaml"), *(ROOT / "specs" / "zoo").glob("*.yaml")])

BASE = """\
name: wrong
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - flatten
  - {type: linear, out_features: 10}
data:
  dataset: digits
  batch_size: 32
train:
  epochs: 2
"""

# (name, spec text, the instance path ajv rejects, the text on the line the editor marks)
WRONG = [
    ("top-level key", BASE + "batch_sise: 3\n", "", "batch_sise: 3"),
    ("data key", BASE.replace("  batch_size: 32", "  batch_sise: 32"), "/data", "batch_sise: 32"),
    ("epochs range", BASE.replace("epochs: 2", "epochs: 0"), "/train/epochs", "epochs: 0"),
    ("layer key", BASE.replace("padding: 1}", "paddin: 1}"), "/layers/0", "paddin: 1}"),
    ("layer type", BASE.replace("- relu", "- rleu"), "/layers/1", "- rleu"),
    ("block body key", BASE + "blocks:\n  b:\n    params: {c: int}\n    layers:\n"
     "      - {type: conv2d, out_channels: $c, kernel_sise: 3}\n", "/blocks/b/layers/0", "kernel_sise: 3"),
    ("augmentation key", BASE.replace("  batch_size: 32", "  batch_size: 32\n  augment: [{type: random_crop, "
                                      "paddin: 1}]"), "/data", "augment: [{type: random_crop"),
    ("callback key", BASE + "  callbacks: [{type: early_stopping, patiense: 2}]\n", "/train/callbacks/0",
     "patiense: 2"),
    ("limits key", BASE + "limits: {parms: 5M}\n", "/limits", "limits: {parms: 5M}"),
    ("weights key", BASE + "weights: {fil: w.pth}\n", "/weights", "weights: {fil: w.pth}"),
    ("sweep range", BASE + "sweep:\n  space:\n    train.optimizer.lr: {uniformm: [0.1, 1]}\n",
     "/sweep/space/train.optimizer.lr", "uniformm"),
    ("sweep key", BASE + "sweep:\n  trails: 3\n  space: {train.epochs: [1, 2]}\n", "/sweep", "trails: 3"),
]


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnspec.cli import main

    path = tmp_path_factory.mktemp("schema") / "cnnspec.schema.json"
    assert main(["schema", "-o", str(path)]) == 0
    return path


def _ajv(schema: Path, instances: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    data = tmp_path / "instances.json"
    data.write_text(json.dumps(instances))
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    out = subprocess.run([str(NODE), str(ROOT / "tests" / "clients" / "ajv_check.js"), str(schema), str(data)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_ajv
def test_ajv_strict_compiles_the_schema_and_accepts_every_example(schema_file, tmp_path):
    docs = [{"name": str(p.relative_to(ROOT)), "data": yaml.safe_load(p.read_text())} for p in EXAMPLES]
    assert len(docs) > 20
    result = _ajv(schema_file, docs, tmp_path)
    assert result["compiled"], result.get("error")
    assert [(r["name"], r["errors"][:3]) for r in result["results"] if not r["valid"]] == []


@needs_ajv
def test_ajv_rejects_each_wrong_spec_at_its_path(schema_file, tmp_path):
    result = _ajv(schema_file, [{"name": n, "data": yaml.safe_load(t)} for n, t, _, _ in WRONG], tmp_path)
    assert result["compiled"], result.get("error")
    for (name, _, path, _), r in zip(WRONG, result["results"]):
        assert not r["valid"], name
        paths = {e["instancePath"] for e in r["errors"]}
        # at the path, and nowhere else but inside it or above it (a nullable section's anyOf)
        assert path in paths and all(p.startswith(path) or path.startswith(p) for p in paths), (name, r["errors"])


@needs_ajv
def test_ajv_check_sees_a_dangling_reference(tmp_path):
    """The check can fail: the schema main had before (a $ref to a missing $defs entry) does not compile."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                               "properties": {"limits": {"$ref": "#/$defs/LimitsSection"}}}))
    assert not _ajv(bad, [], tmp_path)["compiled"]


class LanguageServer:
    """yaml-language-server --stdio: LSP messages framed by Content-Length headers."""

    def __init__(self, workspace: Path) -> None:
        self.proc = subprocess.Popen([str(NODE), str(NODE_MODULES / "yaml-language-server" / "bin" /
                                                     "yaml-language-server"), "--stdio"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._buf = b""
        self._id = 0
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.request("initialize", {"processId": os.getpid(), "rootUri": workspace.as_uri(),
                                    "capabilities": {"textDocument": {"publishDiagnostics": {}}},
                                    "workspaceFolders": [{"uri": workspace.as_uri(), "name": "specs"}]})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": self.settings})

    settings = {"yaml": {"validate": True, "schemaStore": {"enable": False}, "schemas": {}, "hover": False,
                         "completion": False, "format": {"enable": False}}}

    def _send(self, msg: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            head, sep, rest = self._buf.partition(b"\r\n\r\n")
            if sep:
                n = int(next(h for h in head.decode().split("\r\n") if h.lower().startswith("content-length"))
                        .split(":")[1])
                if len(rest) >= n:
                    self._buf = rest[n:]
                    return json.loads(rest[:n])
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("yaml-language-server did not answer")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError("yaml-language-server exited")
            self._buf += chunk

    def _handle(self, m: dict[str, Any]) -> None:
        if m.get("method") == "textDocument/publishDiagnostics":
            self.diagnostics[m["params"]["uri"]] = m["params"]["diagnostics"]
        elif "id" in m and "method" in m:  # a request from the server: configuration, registrations
            items = m.get("params", {}).get("items", [])
            result: Any = [self.settings.get(i.get("section", ""), None) for i in items] \
                if m["method"] == "workspace/configuration" else None
            self._send({"id": m["id"], "result": result})

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        self._id += 1
        self._send({"id": self._id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id and "method" not in m:
                return m.get("result")
            self._handle(m)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def check(self, path: Path, timeout: float = 60) -> list[dict[str, Any]]:
        """Open ``path``; its diagnostics once the server has published them after validating it."""
        uri = path.as_uri()
        self.diagnostics.pop(uri, None)
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1,
                                                              "text": path.read_text()}})
        deadline = time.monotonic() + timeout
        while uri not in self.diagnostics:
            self._handle(self._read(deadline))
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        return self.diagnostics[uri]

    def close(self) -> None:
        try:
            self.request("shutdown", {}, timeout=10)
            self.notify("exit", {})
            self.proc.wait(timeout=10)
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _with_modeline(text: str, schema: Path, out: Path) -> Path:
    out.write_text(f"# yaml-language-server: $schema={schema.as_uri()}\n" + text)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    ls = LanguageServer(tmp_path_factory.mktemp("workspace"))
    yield ls
    ls.close()


@needs_server
def test_the_editor_reports_nothing_for_the_examples(server, schema_file, tmp_path):
    for p in EXAMPLES:
        copy = _with_modeline(p.read_text(), schema_file, tmp_path / p.name)
        found = server.check(copy)
        assert found == [], (p.name, [(d["range"]["start"]["line"], d["message"]) for d in found])


@needs_server
def test_the_editor_marks_the_line_of_each_mistake(server, schema_file, tmp_path):
    for n, (name, text, _, marker) in enumerate(WRONG):
        copy = _with_modeline(text, schema_file, tmp_path / f"wrong{n}.yaml")
        lines = copy.read_text().splitlines()
        want = next(i for i, ln in enumerate(lines) if marker in ln)  # 0-based, as LSP counts
        found = server.check(copy)
        assert found, name
        assert want in {d["range"]["start"]["line"] for d in found}, \
            (name, want, [(d["range"]["start"]["line"], d["message"]) for d in found])
