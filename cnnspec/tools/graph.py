"""A diagram of a checked spec (no torch): SVG drawn here, or Mermaid / Graphviz DOT text.

The trace is a series-parallel tree, so it is laid out directly: a sequence stacks its items
top to bottom, branches (a residual's main path and shortcut, a parallel's branches) stand side by
side between a fork and a merge node, and blocks, repeats and sequences are boxes around their
layers. Every edge carries the shape of the tensor on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape
from typing import Any

from cnnspec.spec.shapes import Row, ShapeTrace, fmt

FORMATS = ("svg", "mermaid", "dot")


# -- the tree to draw -----------------------------------------------------------------------------


@dataclass
class Node:
    id: str
    lines: list[str]
    shape: tuple[int, ...]
    kind: str = "layer"  # layer | io | merge | pass


@dataclass
class Seq:
    items: list[Any]


@dataclass
class Par:
    branches: list[Seq]
    merge: Node


@dataclass
class Cluster:
    id: str
    label: str
    inner: Seq


_SHORT = {"out_channels": "out", "out_features": "out", "kernel_size": "k", "stride": "s", "padding": "pad",
          "dilation": "dil", "output_size": "size", "negative_slope": "slope", "activation": "act",
          "strides": "s", "pool_size": "pool", "dilation_rate": "dil"}


def _brief(row: Row) -> str:
    """The parameters a layer was given (not its defaults), short: ``out_channels=64 kernel_size=3``."""
    comp = row.component
    if comp is None:
        return ""
    try:
        given = comp.params.model_dump(mode="json", exclude_defaults=True)
    except Exception:  # a plugin's odd params: the type alone is enough
        return ""
    parts = []
    for k, v in given.items():
        if k in ("in_channels", "in_features", "num_features"):
            continue
        v = "x".join(map(str, v)) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v
        parts.append(f"{_SHORT.get(k, k)}={v}")
    text = " ".join(parts)
    return text if len(text) <= 34 else text[:33] + "…"


def _merge_of(r: Row) -> str:
    """The merge node's label: how the composite joins its paths (``CompositeType.merge_of``), else its name."""
    t = getattr(r.component, "type", None)
    rule = getattr(t, "merge_of", None)
    merge = rule(r.component.params) if rule is not None else None
    return str(merge) if merge else r.type


class _Builder:
    def __init__(self) -> None:
        self.n = 0

    def id(self, prefix: str = "n") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def rows(self, rows: tuple[Row, ...] | list[Row]) -> Seq:
        return Seq([self.row(r) for r in rows])

    def row(self, r: Row) -> Any:
        if not r.composite:
            lines = [r.type] + ([b] if (b := _brief(r)) else [])
            return Node(self.id(), lines, r.output_shape)
        paths = [c for c in r.children if c.component is None]
        if paths and len(paths) == len(r.children):  # residual, parallel: fork and merge
            merge = r.info.get("merge") or _merge_of(r)
            label = {"sum": "add", "concat": "concat"}.get(str(merge), str(merge))
            branches = []
            for p in paths:
                seq = self.rows(p.children)
                if not seq.items:  # identity: a pass-through point in its own column
                    seq.items.append(Node(self.id(), [], p.output_shape, "pass"))
                branches.append(seq)
            par = Par(branches, Node(self.id(), [label], r.output_shape, "merge"))
            return par  # the fork and the merge node show it; no box
        notes = [f"x{v}" if k == "times" else "" for k, v in r.info.items()]
        label = r.type + "".join(f" {n}" for n in notes if n)
        return Cluster(self.id("c"), label, self.rows(r.children))


def tree(t: ShapeTrace, name: str = "") -> Seq:
    """The drawing tree of a trace: input node, the layers, output node."""
    b = _Builder()
    body = b.rows(t.rows)
    first = Node(b.id(), [f"input {name}".strip()], t.input_shape, "io")
    last = Node(b.id(), ["output"], t.output_shape, "io")
    return Seq([first, *body.items, last])


# -- edges (shared by every format) ------------------------------------------------------------------


@dataclass
class Edge:
    src: Node
    dst: Node
    dashed: bool = False


def _flow(e: Any, prev: Node | None, edges: list[Edge]) -> tuple[Node, Node]:
    """Connect ``prev`` into element ``e``; return (its first node, its last node)."""
    if isinstance(e, Node):
        if prev is not None:
            edges.append(Edge(prev, e))
        return e, e
    if isinstance(e, Cluster):
        return _flow(e.inner, prev, edges)
    if isinstance(e, Seq):
        first = None
        for item in e.items:
            head, prev = _flow(item, prev, edges)
            first = first or head
        assert first is not None and prev is not None
        return first, prev
    assert isinstance(e, Par) and prev is not None
    for br in e.branches:
        _, tail = _flow(br, prev, edges)
        edges.append(Edge(tail, e.merge, dashed=tail.kind == "pass"))
    for edge in edges:
        edge.dashed = edge.dashed or edge.dst.kind == "pass"  # identity paths are dashed
    return prev, e.merge


def edges_of(root: Seq) -> list[Edge]:
    edges: list[Edge] = []
    _flow(root, None, edges)
    return edges


def _walk(e: Any, depth: int = 0) -> Iterator[tuple[int, Any]]:
    yield depth, e
    if isinstance(e, Cluster):
        yield from _walk(e.inner, depth + 1)
    elif isinstance(e, Seq):
        for i in e.items:
            yield from _walk(i, depth)
    elif isinstance(e, Par):
        for br in e.branches:
            yield from _walk(br, depth)
        yield depth, e.merge


# -- Mermaid and DOT -------------------------------------------------------------------------------


def _label(n: Node) -> str:
    return "" if n.kind == "pass" else " / ".join(n.lines)


def _visit(e: Any, ind: str, node: Callable[[Node, str], None], opened: Callable[[Cluster, str], None],
          closed: Callable[[Cluster, str], None]) -> None:
    """Visit the drawing tree in order: each node, and each cluster's opening, inside and close."""
    if isinstance(e, Node):
        node(e, ind)
    elif isinstance(e, Cluster):
        opened(e, ind)
        _visit(e.inner, ind + "  ", node, opened, closed)
        closed(e, ind)
    elif isinstance(e, Seq):
        for item in e.items:
            _visit(item, ind, node, opened, closed)
    else:
        for branch in e.branches:
            _visit(branch, ind, node, opened, closed)
        _visit(e.merge, ind, node, opened, closed)


def mermaid(root: Seq) -> str:
    out = ["flowchart TB"]

    def node(e: Node, ind: str) -> None:
        text = "<br/>".join(escape(line) for line in e.lines).replace('"', "#quot;")
        shape = {"merge": f'(("{text}"))', "pass": "(( ))", "io": f'(["{text}"])'}.get(e.kind, f'["{text}"]')
        out.append(f"{ind}{e.id}{shape}")

    _visit(root, "  ", node, lambda c, ind: out.append(f'{ind}subgraph {c.id}["{escape(c.label)}"]'),
           lambda c, ind: out.append(f"{ind}end"))
    for ed in edges_of(root):
        arrow = "-.->" if ed.dashed else "-->"
        out.append(f'  {ed.src.id} {arrow}|"{fmt(ed.src.shape)}"| {ed.dst.id}')
    return "\n".join(out) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(root: Seq, name: str = "model") -> str:
    out = [f"digraph {_q(name)} {{", "  rankdir=TB;", '  node [shape=box, style="rounded", fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']

    def node(e: Node, ind: str) -> None:
        attrs = {"merge": "shape=circle", "pass": 'shape=point, width=0.05', "io": "shape=oval"}.get(e.kind, "")
        out.append(f"{ind}{e.id} [label={_q(chr(10).join(e.lines))}{', ' + attrs if attrs else ''}];")

    def opened(c: Cluster, ind: str) -> None:
        out.append(f"{ind}subgraph cluster_{c.id} {{ label={_q(c.label)}; style=rounded; color=gray60;")

    _visit(root, "  ", node, opened, lambda c, ind: out.append(f"{ind}}}"))
    for ed in edges_of(root):
        style = ", style=dashed" if ed.dashed else ""
        out.append(f"  {ed.src.id} -> {ed.dst.id} [label={_q(fmt(ed.src.shape))}{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


# -- SVG -------------------------------------------------------------------------------------------

CHAR, LINE, PAD, GAP, HGAP, CPAD, CTITLE = 7.0, 15, 8, 40, 24, 10, 18


@dataclass
class _Layout:
    rects: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # node id -> x, y, w, h
    clusters: list[tuple[float, float, float, float, str, int]] = field(default_factory=list)


def _node_size(n: Node) -> tuple[float, float]:
    if n.kind == "pass":
        return 70.0, 0.0  # an identity path: room for its shape label
    if n.kind == "merge":
        w = max(len(n.lines[0]) * CHAR + 16, 34)
        return w, 30.0
    w = max(max(len(s) for s in n.lines) * CHAR + 2 * PAD, 80)
    return w, len(n.lines) * LINE + 2 * PAD - 2


def _size(e: Any) -> tuple[float, float]:
    if isinstance(e, Node):
        return _node_size(e)
    if isinstance(e, Cluster):
        w, h = _size(e.inner)
        return max(w, len(e.label) * CHAR + 10) + 2 * CPAD, h + 2 * CPAD + CTITLE
    if isinstance(e, Seq):
        sizes = [_size(i) for i in e.items]
        return max((w for w, _ in sizes), default=0), sum(h for _, h in sizes) + GAP * max(len(sizes) - 1, 0)
    sizes = [_size(b) for b in e.branches]
    mw, mh = _node_size(e.merge)
    w = max(sum(w for w, _ in sizes) + HGAP * (len(sizes) - 1), mw)
    return w, max(h for _, h in sizes) + GAP + mh


def _place(e: Any, x: float, y: float, w: float, lay: _Layout, depth: int = 0) -> None:
    """Put ``e`` in the column [x, x + w) starting at height y, centred."""
    ew, eh = _size(e)
    if isinstance(e, Node):
        nw, nh = _node_size(e)
        lay.rects[e.id] = (x + (w - nw) / 2, y, nw, nh)
    elif isinstance(e, Cluster):
        cx = x + (w - ew) / 2
        lay.clusters.append((cx, y, ew, eh, e.label, depth))
        _place(e.inner, cx + CPAD, y + CPAD + CTITLE, ew - 2 * CPAD, lay, depth + 1)
    elif isinstance(e, Seq):
        for item in e.items:
            _place(item, x, y, w, lay, depth)
            y += _size(item)[1] + GAP
    else:
        bx = x + (w - ew) / 2
        top = 0.0
        for br in e.branches:
            bw, bh = _size(br)
            _place(br, bx, y, bw, lay, depth)
            top = max(top, bh)
            bx += bw + HGAP
        _place(e.merge, x, y + top + GAP, w, lay, depth)


def svg(root: Seq, title: str = "") -> str:
    lay = _Layout()
    w, h = _size(root)
    margin = 20
    _place(root, margin, margin, w, lay)
    W, H = w + 2 * margin + 60, h + 2 * margin  # room on the right for edge labels
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" height="{H:.0f}" '
           f'viewBox="0 0 {W:.0f} {H:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           f'<rect width="{W:.0f}" height="{H:.0f}" fill="white"/>']
    fills = ["#f3f6fb", "#e8eef8", "#dde6f4", "#d2ddef"]
    for x, y, cw, ch, label, depth in lay.clusters:
        out.append(f'<g class="cluster"><rect x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" rx="8" '
                   f'fill="{fills[depth % len(fills)]}" stroke="#9aaccc"/>'
                   f'<text x="{x + 8:.1f}" y="{y + 14:.1f}" font-weight="bold" fill="#345">{escape(label)}</text></g>')
    nodes = {n.id: n for _, n in _walk(root) if isinstance(n, Node)}
    for ed in edges_of(root):
        sx, sy, sw, sh = lay.rects[ed.src.id]
        tx, ty, tw, th = lay.rects[ed.dst.id]
        x1, y1, x2, y2 = sx + sw / 2, sy + sh, tx + tw / 2, ty
        # forks turn just below their source (above any box the branches sit in), merges just above the merge
        mid = y2 - GAP / 2 + 4 if ed.dst.kind == "merge" else y1 + 10
        pts = [(x1, y1), (x1, mid), (x2, mid), (x2, y2)] if abs(x1 - x2) > 0.5 else [(x1, y1), (x2, y2)]
        dash = ' stroke-dasharray="5 4"' if ed.dashed else ""
        marker = "" if ed.dst.kind == "pass" else ' marker-end="url(#arrow)"'
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<g class="edge"><polyline points="{path}" fill="none" stroke="#555"{dash}{marker}/>')
        if ed.dst.kind == "merge":  # several edges meet there: label each where it leaves
            lx, ly = x1 + 5, (y1 + 12 if ed.src.kind != "pass" else mid - 4)
        else:
            lx, ly = x2 + 5, y2 - 6
        if ed.dst.kind != "pass":
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" fill="#666">{escape(fmt(ed.src.shape))}</text>')
        out.append("</g>")
    for nid, (x, y, nw, nh) in lay.rects.items():
        n = nodes[nid]
        if n.kind == "pass":
            continue
        out.append(f'<g class="node" id="{nid}">')
        if n.kind == "merge":
            out.append(f'<ellipse cx="{x + nw / 2:.1f}" cy="{y + nh / 2:.1f}" rx="{nw / 2:.1f}" ry="{nh / 2:.1f}" '
                       'fill="#fff4d6" stroke="#b08a2e"/>')
        else:
            fill, rx = ("#e4f4e4", 14) if n.kind == "io" else ("white", 4)
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{nw:.1f}" height="{nh:.1f}" rx="{rx}" '
                       f'fill="{fill}" stroke="#333"/>')
        for i, line in enumerate(n.lines):
            ty = y + nh / 2 + (i - (len(n.lines) - 1) / 2) * LINE + 4
            weight = ' font-weight="bold"' if i == 0 else ' fill="#444" font-size="11"'
            out.append(f'<text x="{x + nw / 2:.1f}" y="{ty:.1f}" text-anchor="middle"{weight}>{escape(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render(t: ShapeTrace, fmt_name: str, name: str = "") -> str:
    """The diagram of a complete trace in ``fmt_name`` (svg, mermaid or dot)."""
    root = tree(t, name)
    if fmt_name == "mermaid":
        return mermaid(root)
    if fmt_name == "dot":
        return dot(root, name or "model")
    return svg(root, name)


SUFFIXES = {".svg": "svg", ".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot"}
_FOR = {"svg": ".svg", "mermaid": ".mmd", "dot": ".dot"}


def output_format(output: str, fmt_name: str | None) -> str:
    """The format for ``-o output``: its suffix's, or ``--format``'s when the suffix names none.

    A suffix of another format (``.png``, ``.pdf``; ``.dot`` with --format svg) is refused: the
    file would not hold what its name says. CnnspecError (exit 2)."""
    from pathlib import Path

    from cnnspec.errors import CnnspecError

    suffix = Path(output).suffix.lower()
    by_suffix = SUFFIXES.get(suffix)
    if by_suffix is not None:
        if fmt_name is not None and fmt_name != by_suffix:
            raise CnnspecError(f"-o {output}: --format {fmt_name}, but the name ends in {suffix} ({by_suffix}); "
                               f"name the file {Path(output).stem}{_FOR[fmt_name]}")
        return by_suffix
    if fmt_name is not None and suffix in ("", ".txt"):
        return fmt_name
    raise CnnspecError(f"-o {output}: graph writes SVG, Mermaid or DOT text, not "
                       f"{suffix or 'a file without a suffix'}; name the file .svg, .mmd or .dot"
                       + ("" if suffix else ", or pass --format"))


def refuse_inputs(output: str, inputs: list[str]) -> None:
    """CnnspecError (exit 2) when ``output`` is (a link to) one of the command's input files."""
    import os

    from cnnspec.errors import CnnspecError

    for path in inputs:
        try:
            same = os.path.samefile(output, path)
        except OSError:  # either does not exist: not the same file
            same = False
        if same:
            raise CnnspecError(f"-o {output} is the input {path}; graph does not overwrite it "
                               "(write the drawing to another file)")


def write_graph(spec: str, output: str | None, fmt_name: str | None, plugins: list[str]) -> None:
    """``cnnspec graph``: check the spec, draw it to ``output`` or stdout; an invalid spec raises
    SpecError, an unwritable output OSError (both reported by cli.main). The output's format
    comes from its suffix (output_format), and it is never one of the inputs (the spec, -p files;
    a plugin file ends in .py, a suffix graph does not write)."""
    import sys
    from pathlib import Path

    from cnnspec.errors import SpecError
    from cnnspec.spec.load import check_file

    if output:
        refuse_inputs(output, [spec, *plugins])
        fmt_name = output_format(output, fmt_name)
    result = check_file(spec, plugins=plugins)
    if result.spec is None:
        raise SpecError(result.problems, spec)
    text = render(result.spec.trace, fmt_name or "svg", result.spec.name)
    if not output:
        sys.stdout.write(text)
        return
    Path(output).write_text(text)
    print(f"wrote {output} ({fmt_name})")
