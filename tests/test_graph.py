"""`cnnspec graph`: SVG (parsed back), Mermaid and DOT drawn from the checked spec, without torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import ROOT

import cnnspec
from cnnspec.plugins.composites import Residual

SVG = "{http://www.w3.org/2000/svg}"
RESNET20 = str(ROOT / "specs" / "resnet20_cifar.yaml")


def leaves(rows):
    for r in rows:
        if r.children:
            yield from leaves(r.children)
        elif r.component is not None:
            yield r


def test_svg_has_every_layer_block_merge_and_shape(cli, tmp_path):
    out = tmp_path / "model.svg"
    res = cli("graph", RESNET20, "-o", str(out))
    assert res.code == 0 and f"wrote {out} (svg)" in res.out
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    spec = cnnspec.load_spec(RESNET20)
    layers = list(leaves(spec.trace.rows))
    nodes = root.findall(f".//{SVG}g[@class='node']")
    texts = [[t.text for t in g.findall(f"{SVG}text")] for g in nodes]
    merges = [t for t in texts if t == ["add"]]
    assert len(merges) == 9  # one per residual block
    assert len(nodes) == len(layers) + 9 + 2  # every layer, every merge, input and output
    assert sum(1 for t in texts if t[0] == "conv2d") == 19 + 2  # 19 convolutions, 2 projection shortcuts
    clusters = [g.find(f"{SVG}text").text for g in root.findall(f".//{SVG}g[@class='cluster']")]
    assert clusters.count("basic") == 9 and "repeat x3" in clusters and clusters.count("repeat x2") == 2
    labels = {t.text for g in root.findall(f".//{SVG}g[@class='edge']") for t in g.findall(f"{SVG}text")}
    assert {"3 x 32 x 32", "16 x 32 x 32", "32 x 16 x 16", "64 x 8 x 8", "64", "10"} <= labels
    dashed = root.findall(f".//{SVG}polyline[@stroke-dasharray]")
    assert len(dashed) == 2 * 7  # the 7 identity shortcuts, each in and out of its pass-through
    for poly in root.iter(f"{SVG}polyline"):  # every edge points down the page
        ys = [float(p.split(",")[1]) for p in poly.get("points").split()]
        assert ys == sorted(ys)


def test_mermaid_and_dot_text(cli, tmp_path):
    res = cli("graph", str(ROOT / "specs" / "inception_cifar.yaml"), "--format", "mermaid")
    assert res.code == 0 and res.out.startswith("flowchart TB\n")
    assert res.out.count('subgraph') == res.out.count("\n  end") + res.out.count("\n    end") + res.out.count(
        "\n      end") and 'subgraph c' in res.out
    assert re.search(r'-->\|"128 x 32 x 32"\| n\d+', res.out)  # the concat of the first inception block
    assert res.out.count('(("concat"))') == 3
    dot_file = tmp_path / "m.dot"
    assert cli("graph", RESNET20, "-o", str(dot_file)).code == 0
    dot = dot_file.read_text()
    assert dot.startswith('digraph "resnet20-cifar" {') and dot.rstrip().endswith("}")
    assert dot.count("subgraph cluster_") == 9 + 3 and dot.count("style=dashed") == 14
    assert '[label="64 x 8 x 8"]' in dot and dot.count("{") == dot.count("}")


def test_graph_of_an_invalid_spec_is_its_errors(cli, write):
    res = cli("graph", write("input: [1, 8, 8]\nlayers: [{type: conv2d, out_channels: 2}]\n"))
    assert res.code == 1 and "missing required key 'kernel_size'" in res.err and not res.out  # errors on stderr
    assert cli("graph", "/nonexistent.yaml").code == 2


def test_graph_never_imports_torch(tmp_path):
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch is poisoned')\n")
    path = os.pathsep.join([str(poison.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run([sys.executable, "-m", "cnnspec", "graph", str(ROOT / "specs" / "resnet18.yaml"),
                          "--format", "dot"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(" -> ") > 60


class Gated(Residual):
    """A plugin's own two-path composite whose merge node says what it does (``merge_of``)."""

    name = "gated"

    def merge_of(self, p):
        return "multiply"


def test_a_composites_merge_node_is_labelled_by_its_type() -> None:
    from cnnspec.registry.manager import default_registry
    from cnnspec.spec.check import check
    from cnnspec.spec.yamlpos import load
    from cnnspec.tools.graph import Node, Par, tree

    reg = default_registry()
    reg.entries = {k: dict(v) for k, v in reg.entries.items()}
    reg.owners = dict(reg.owners)
    reg.add("layer", Gated(), "test")

    def merge_label(kind):
        spec = check(load(f"input: [2, 4, 4]\nlayers: [{{type: {kind}, layers: [relu]}}]\n", "s.yaml"), reg).spec
        (par,) = [e for e in tree(spec.trace).items if isinstance(e, Par)]
        assert isinstance(par.merge, Node)
        return par.merge.lines

    assert merge_label("residual") == ["add"]  # Residual.merge_of: sum
    assert merge_label("gated") == ["multiply"]
