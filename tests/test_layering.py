"""Data flows one way: no package imports from a package above its own, and no import cycle hides anywhere.

Imports are read from the source (top-level and function-local alike, relative or absolute), so a
cycle broken only by a late import still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "cnnspec"
# Lowest first. A package may import its own layer or any layer below, never one above.
LAYERS = [
    {"errors", "version"},  # leaves
    {"util"},  # hostile-file reads, the console
    {"registry"},  # hook specs, the types plugins register, the registry, plugin loading and trust
    {"spec"},  # text -> checked Spec, no torch
    {"build", "data"},  # Spec -> nn.Sequential; what datasets share
    {"plugins"},  # the built-in plugins (the registry imports them by name, when a spec uses them)
    {"train"},  # runner, loop, run folder, checkpoints, distributed, host
    {"tools", "sweep"},  # eval/predict/export/plot/graph/schema; sweeps
    {"cli", "plugin", "__main__", "__init__"},  # the command line, the plugin API, the library facade
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _package(dotted: str) -> str:
    """The first-level name under cnnspec: 'cnnspec.spec.check' -> 'spec'; 'cnnspec' -> '__init__'."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(source: str, me: str, is_package: bool) -> set[str]:
    """Every cnnspec module that ``source`` (the module ``me``) imports, as dotted names."""
    found: set[str] = set()
    here = me.split(".") if is_package else me.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "cnnspec" or module.startswith("cnnspec."):
                # "from cnnspec.spec import check" imports the module cnnspec.spec.check
                found.update(f"{module}.{a.name}" if (PACKAGE.parent / module.replace(".", "/") / a.name).exists()
                             or (PACKAGE.parent / (module.replace(".", "/") + f"/{a.name}.py")).exists()
                             else module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cnnspec"))
    return {m for m in found if m.split(".")[0] == "cnnspec"}


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {_dotted(p): _imported(p.read_text(), _dotted(p), p.name == "__init__.py") for p in SOURCES}


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in GRAPH} - set(RANK))
    assert not missing, f"give these packages a layer in LAYERS: {missing}"


@pytest.mark.parametrize("me", sorted(GRAPH))
def test_no_module_imports_from_above(me):
    above = sorted(m for m in GRAPH[me] if RANK.get(_package(m), -1) > RANK[_package(me)])
    assert not above, f"{me} (layer {RANK[_package(me)]}) imports {above} from a layer above"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (a module's imports of its own package's __init__ left out), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph or m.startswith(n + "."):  # a submodule importing its parent package
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_late_imports():
    src = {"cnnspec.a": "from cnnspec.b import x\n", "cnnspec.b": "def f():\n    from cnnspec.a import y\n"}
    graph = {m: _imported(s, m, False) for m, s in src.items()}
    assert _cycle(graph) == ["cnnspec.a", "cnnspec.b", "cnnspec.a"]


def test_imports_are_read_in_every_form():
    src = ("import cnnspec.train.loop\nfrom cnnspec.train.runner import x\nfrom . import show\n"
           "def f():\n    from ..cli import main\n    from cnnspec.spec import check\n")
    assert _imported(src, "cnnspec.tools.graph", False) == {
        "cnnspec.train.loop", "cnnspec.train.runner", "cnnspec.tools.show", "cnnspec.cli", "cnnspec.spec.check"}


FIRST_PARTY = sorted((ROOT / "plugins").rglob("*.py"))


@pytest.mark.parametrize("path", FIRST_PARTY, ids=[str(p.relative_to(ROOT)) for p in FIRST_PARTY])
def test_first_party_plugins_use_only_the_plugin_api(path):
    me = ".".join(path.relative_to(path.parents[1]).with_suffix("").parts)
    used = sorted(m for m in _imported(path.read_text(), me, path.name == "__init__.py") if m != "cnnspec.plugin")
    assert not used, f"{path.relative_to(ROOT)} imports {used}; import from cnnspec.plugin instead"


def test_the_plugin_api_names_what_it_exports():
    import cnnspec.plugin as api

    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing, f"cnnspec.plugin.__all__ names what it lacks: {missing}"


MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def _sizes(path: Path) -> list[tuple[str, str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            out.append((kind, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1))
    return out


def test_no_class_or_function_is_too_long():
    too_long = [f"{where} ({n} lines)" for p in SOURCES + FIRST_PARTY for kind, where, n in _sizes(p)
                if n > (MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES)]
    assert not too_long, (f"classes over {MAX_CLASS_LINES} lines or functions over {MAX_FUNCTION_LINES}; "
                          "cut them along their seams:\n" + "\n".join(too_long))
