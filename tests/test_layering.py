"""Data flows one way: no module of the package imports a module from a layer above its own."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

PACKAGE = ROOT / "cnnspec"
# Lowest first. A module may import its own layer or any layer below, never one above.
LAYERS = [
    {"errors", "types", "files", "console"},
    {"registry", "hookspecs", "yamlpos", "shapes"},
    {"cost"},  # pure arithmetic on the shape trace
    {"spec", "plugins", "overrides", "check", "blocks", "report", "schema", "graph", "sweepspace", "trust"},
    {"build", "modules", "data", "distributed", "progress", "rundir", "host", "plot", "default_plugins", "sweepreport"},
    {"train", "trained"},
    {"runner", "tools", "sweep"},
    {"cli", "__main__", "__init__"},  # the command line, and the package's public facade
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module(path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path) -> set[str]:
    """The package's own modules that ``path`` imports (relative or absolute, lazy or not)."""
    return _imported(path.read_text(), in_subpackage=path.parent != PACKAGE)


def _imported(source: str, in_subpackage: bool) -> set[str]:
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 and not in_subpackage or node.level == 2:
                names = [base.split(".")[0]] if base else [a.name for a in node.names]
                found.update(names)
            elif node.level == 0 and base.startswith("cnnspec."):
                found.add(base.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cnnspec."))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = sorted({_module(p) for p in SOURCES} - set(RANK))
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_module_imports_from_above(path):
    me = _module(path)
    above = sorted(m for m in _imports(path) if m in RANK and RANK[m] > RANK[me])
    assert not above, f"{me} (layer {RANK[me]}) imports {above} from a layer above"


def test_imports_are_read_in_every_form():
    src = ("import cnnspec.train\nfrom cnnspec.runner import x\nfrom . import tools\n"
           "def f():\n    from .cli import main\n")
    assert _imported(src, in_subpackage=False) == {"train", "runner", "tools", "cli"}
    assert _imported("from ..data import Splits\nfrom .mnist import read_idx\n", in_subpackage=True) == {"data"}
