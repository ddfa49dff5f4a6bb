"""The contract documents itself: every hook has a test and an entry in the docs (README.md and
docs/*.md), and every built-in type is in the docs' tables and in `cnnspec schema` (in the manner
of datasette's meta-tests)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from cnnspec.registry import hookspecs
from cnnspec.registry.hookspecs import KINDS
from cnnspec.registry.manager import default_registry

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = "\n".join(p.read_text() for p in DOC_FILES)
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if callable(fn) and hasattr(fn, "cnnspec_spec"))
TEST_SOURCES = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py"}
BUILT_IN = sorted((kind, name) for kind in KINDS for name in default_registry().names(kind)
                  if default_registry().owner(kind, name).startswith("cnnspec.plugins."))


def test_hooks_are_found():
    assert {"register_layers", "before_training", "after_epoch", "after_training"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_arguments(hook):
    import inspect

    assert getattr(hookspecs, hook).__doc__, f"hook {hook} has no docstring"
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"`{hook}(" in DOCS or f"`{hook}`" in DOCS, f"the docs do not document hook {hook}"
    if not hook.startswith("register_"):
        assert f"`{hook}({args})`" in DOCS, f"the docs should show {hook}({args})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook):
    implemented = [name for name, src in TEST_SOURCES.items()
                   if re.search(rf"def {hook}\(", src)]
    assert implemented, f"no test implements the hook {hook}"


@pytest.mark.parametrize(("kind", "name"), BUILT_IN, ids=[f"{k}:{n}" for k, n in BUILT_IN])
def test_every_built_in_type_is_in_the_docs(kind, name):
    assert f"`{name}`" in DOCS, f"the docs' tables do not list the {kind} type '{name}'"


def test_the_docs_are_read():
    assert (ROOT / "docs" / "layers.md").exists() and len(DOC_FILES) > 10


def test_every_built_in_type_is_in_the_json_schema(cli):
    res = cli("schema")
    assert res.code == 0
    text = json.dumps(json.loads(res.out))
    missing = [f"{k}:{n}" for k, n in BUILT_IN if f'"{n}"' not in text]
    assert not missing, f"not in `cnnspec schema`: {missing}"
    assert len(BUILT_IN) > 40  # the whole registry was looked at
