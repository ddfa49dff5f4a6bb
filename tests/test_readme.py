"""The README and docs/ tell the truth about the code: every `cnnspec ...` command in their code
blocks parses against the real command line, every `specs/...` path they name exists, and every
relative link (and its #anchor) points at a file and heading that exist. Fast: nothing runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

from cnnspec.cli import _parser

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PLACEHOLDERS = {"RUN_DIR": "runs/latest", "RUN_FOLDER": "runs/latest"}
GENERATED = {"specs/resnet18-f37072fd.pth"}  # written by the tests and by docs/finetune.md's commands; gitignored


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _commands(page: Path) -> list[str]:
    """The `cnnspec` command lines in the page's code blocks (continuations joined, `a && b` split,
    `torchrun ... -m cnnspec ...` and `$ cnnspec ...` included)."""
    found = []
    for block in FENCE.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip().removeprefix("$ ")
                if part.startswith("torchrun ") and " -m cnnspec " in part:
                    part = "cnnspec " + part.split(" -m cnnspec ", 1)[1]
                if part.startswith("cnnspec "):
                    found.append(part)
    return found


COMMANDS = [(page, cmd) for page in PAGES for cmd in _commands(page)]


def test_the_readme_has_a_tour():
    readme = _commands(README)
    assert len(readme) >= 15
    assert {c.split()[1] for c in readme} >= {"validate", "run", "eval", "predict", "export", "sweep", "graph"}
    assert len(README.read_text().splitlines()) < 250, "the README is the first hour: keep it under 250 lines"


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{_rel(p)}: {c[:60]}" for p, c in COMMANDS])
def test_every_command_parses(page, command):
    argv = shlex.split(command, comments=True)[1:]
    argv = [PLACEHOLDERS.get(a, a) for a in argv]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse's way of saying no
        pytest.fail(f"{_rel(page)}: `{command}` does not parse (exit {e.code})")
    assert callable(getattr(args, "func", None)), f"{_rel(page)}: `{command}` names no command"


SPEC_PATH = re.compile(r"(?<![\w/.])specs/[\w.*/-]*[\w*]")


def _spec_paths() -> list[tuple[Path, str]]:
    return sorted({(page, m.group(0)) for page in PAGES for m in SPEC_PATH.finditer(page.read_text())})


SPEC_PATHS = _spec_paths()


@pytest.mark.parametrize(("page", "path"), SPEC_PATHS, ids=[f"{_rel(p)}: {s}" for p, s in SPEC_PATHS])
def test_every_spec_path_exists(page, path):
    if path in GENERATED:
        return
    if "*" in path:
        assert list(ROOT.glob(path)), f"{_rel(page)}: '{path}' matches nothing"
    else:
        assert (ROOT / path).exists(), f"{_rel(page)}: '{path}' does not exist"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings (outside code blocks)."""
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"^[a-z]+:", target)]


LINKS = _links()


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{_rel(p)}: {t}" for p, t in LINKS])
def test_every_relative_link_points_at_something(page, target):
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    assert dest.exists(), f"{_rel(page)}: link '{target}' points at a missing file"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{_rel(page)}: link '{target}': no such heading in {dest.name}"


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    missing = [p.name for p in DOCS if f"docs/{p.name}" not in text]
    assert not missing, f"the README links no {missing}"
