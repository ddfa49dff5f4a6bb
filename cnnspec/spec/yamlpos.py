"""YAML loading that remembers where every key and value stands, and refuses what is unsafe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from cnnspec.errors import KeyPath, Problem, SpecError, UnreadableSpec

try:  # libyaml's composer is much faster; the pure-Python one behaves the same
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_NODES = 100_000  # a spec has hundreds of nodes; aliases that expand past this are a bomb
MAX_BYTES = 10_000_000
MAX_INT_DIGITS = 100  # sizes and seeds have a few digits; Python refuses to parse over 4,300
MAX_DEPTH = 100  # a spec nests four or five levels; the composer and checker recurse per level

_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_SEQ = "tag:yaml.org,2002:seq"
_SCALARS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null")
}


@dataclass
class Located:
    """Plain data from a YAML file plus the 1-based (line, column) of each key and value."""

    data: Any
    file: str
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    overridden: dict[KeyPath, str] = field(default_factory=dict)  # path -> the --set that wrote it

    def where(self, path: KeyPath, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``: its key when ``key`` and it has one, else its value.

        Paths that do not exist in the file (a missing key, say) fall back to their
        nearest existing parent.
        """
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return (1, 1)
            path, key = path[:-1], False

    def problem(self, path: KeyPath, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        for over, arg in self.overridden.items():
            # under the overridden value, about the component it sits in (train.optimizer), or
            # about a key the override created (--set trian.epochs=1: the file has no 'trian')
            created = bool(path) and over[: len(path)] == path and path not in self.keys
            if path[: len(over)] == over or (len(path) >= 2 and over[: len(path)] == path) or created:
                message += f" (from --set {arg})"
                break
        return Problem(line, col, message, path, self.file)


def read_text(file: str) -> str:
    """Read a spec file as UTF-8; unreadable files raise UnreadableSpec, bad bytes SpecError.

    Only regular files are read (not /dev/zero, a FIFO or a socket: opening never blocks), and
    never more than MAX_BYTES + 1 bytes, whatever the file claims its size is.
    """
    from cnnspec.util.files import NotRegularFile, read_regular

    try:
        raw = read_regular(file, MAX_BYTES)
    except FileNotFoundError:
        raise UnreadableSpec(f"{file}: no such file") from None
    except IsADirectoryError:
        raise UnreadableSpec(f"{file}: is a directory, not a spec file") from None
    except PermissionError:
        raise UnreadableSpec(f"{file}: permission denied") from None
    except NotRegularFile as e:
        if e.is_dir:
            raise UnreadableSpec(f"{file}: is a directory, not a spec file") from None
        raise UnreadableSpec(f"{file}: not a regular file (a device, pipe or socket); give a spec file") from None
    except OSError as e:
        raise UnreadableSpec(f"{file}: cannot read ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise UnreadableSpec(f"{file}: larger than {MAX_BYTES} bytes; not a spec file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        head = raw[: e.start]
        line = head.count(b"\n") + 1
        col = e.start - (head.rfind(b"\n") + 1) + 1
        msg = f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x} cannot be decoded)"
        raise SpecError([Problem(line, col, msg, (), file)], file) from None


def load(text: str, file: str = "<string>") -> Located:
    """Parse YAML text into plain data with positions; raise SpecError on any problem."""
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise SpecError(
            [Problem(1, 1, "the file is empty; a spec needs at least 'input' and 'layers'", (), file)],
            file,
        )
    _count_events(text, file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = e.problem or str(e)
        lines = text.splitlines()
        if 0 < line <= len(lines) and "\t" in lines[line - 1][: len(lines[line - 1]) - len(lines[line - 1].lstrip())]:
            what += "; YAML does not allow tabs for indentation, use spaces"
        if e.context:
            what = f"{e.context}: {what}" if "while" not in e.context else f"{what} ({e.context})"
            cm = e.context_mark
            if cm is not None and cm.line + 1 != line:
                what += f", which started at line {cm.line + 1}, column {cm.column + 1}"
        raise SpecError([Problem(line, col, f"YAML syntax: {what}", (), file)], file) from None
    except yaml.YAMLError as e:
        raise SpecError([Problem(1, 1, f"YAML syntax: {e}", (), file)], file) from None
    except RecursionError:
        raise SpecError([Problem(1, 1, "the YAML is nested too deeply", (), file)], file) from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecError([Problem(1, 1, "the file holds no YAML document", (), file)], file)
    return _Converter(loader, file).run(node)


def _count_events(text: str, file: str) -> None:
    """Refuse a document with more than MAX_NODES nodes or nested deeper than MAX_DEPTH before
    composing it: the composed node graph costs hundreds of bytes a node, the event stream
    nothing. Syntax errors are left for the composer to report with its context."""
    loader = _Loader(text)
    count = depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _refused(event, f"the YAML is nested more than {MAX_DEPTH} levels deep; refused", file)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
            if isinstance(event, yaml.NodeEvent):
                count += 1
                if count > MAX_NODES:
                    raise _refused(event, f"the document has more than {MAX_NODES} nodes; refused", file)
    except yaml.MarkedYAMLError as e:
        # libyaml (bundled with PyYAML >= 6.0.2) refuses deep nesting itself, while scanning ahead
        # of the events counted here: give the same refusal as ours, whichever comes first
        if e.problem and "nesting depth" in e.problem and e.problem_mark is not None:
            raise _refused_at(e.problem_mark, f"the YAML is nested more than {MAX_DEPTH} levels deep; refused",
                              file) from None
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()


def _refused(event: Any, message: str, file: str) -> SpecError:
    return _refused_at(event.start_mark, message, file)


def _refused_at(mark: Any, message: str, file: str) -> SpecError:
    return SpecError([Problem(mark.line + 1, mark.column + 1, message, (), file)], file)


def load_file(file: str) -> Located:
    """Read and parse a spec file (see read_text and load)."""
    return load(read_text(file), file)


class _Converter:
    """Walks a composed YAML node graph into dicts, lists and scalars, noting positions."""

    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.out = Located(None, file)
        self.problems: list[Problem] = []
        self.count = 0

    def run(self, node: yaml.Node) -> Located:
        try:
            self.out.data = self.convert(node, ())
        except _Bomb as bomb:
            raise SpecError([bomb.problem], self.out.file) from None
        except RecursionError:
            raise SpecError(
                [Problem(1, 1, "the YAML is nested too deeply", (), self.out.file)], self.out.file
            ) from None
        if self.problems:
            raise SpecError(self.problems, self.out.file)
        return self.out

    def _pos(self, node: yaml.Node) -> tuple[int, int]:
        return (node.start_mark.line + 1, node.start_mark.column + 1)

    def _fail(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        line, col = self._pos(node)
        self.problems.append(Problem(line, col, message, path, self.out.file))

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            line, col = self._pos(node)
            raise _Bomb(Problem(
                line, col,
                f"the document expands to more than {MAX_NODES} nodes (nested aliases?); refused",
                path, self.out.file,
            ))
        self.out.values.setdefault(path, self._pos(node))
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self._fail(node, path, f"unsupported YAML tag {node.tag!r}")
                return None
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._fail(node, path, f"unsupported YAML tag {node.tag!r}")
                return None
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        """Keys in order; ``<<`` merges as YAML defines them: explicit keys win, then the
        first merged mapping that has the key. Merged values count toward MAX_NODES too."""
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == _MERGE:
                sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode) or src.tag != _MAP:
                        self._fail(src, path, "'<<' merges mappings only (an alias of a mapping, or a list of them)")
                        continue
                    for key, value in self._mapping(src, path).items():
                        merged.setdefault(key, value)
                continue
            key = self._scalar(knode, path)
            if not isinstance(key, str):
                self._fail(knode, path, f"keys must be text, got {key!r}")
                continue
            if key in result:
                first = self.out.keys[path + (key,)]
                self._fail(knode, path + (key,), f"duplicate key '{key}' (first given at line {first[0]})")
                continue
            self.out.keys[path + (key,)] = self._pos(knode)
            result[key] = self.convert(vnode, path + (key,))
        return {**{k: v for k, v in merged.items() if k not in result}, **result}

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self._fail(node, path, "keys must be plain text, not a list or mapping")
            return None
        if node.tag not in _SCALARS:
            self._fail(node, path, f"unsupported YAML tag {node.tag!r}")
            return None
        if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
            self._fail(node, path, f"the integer has {len(node.value)} digits; more than {MAX_INT_DIGITS} is "
                                   "not a sensible value")
            return None
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as e:
            self._fail(node, path, f"YAML value: {getattr(e, 'problem', e)}")
            return None
        except ValueError as e:  # Python's own limits on converting numbers
            self._fail(node, path, f"YAML value: {str(e).splitlines()[0]}")
            return None


class _Bomb(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
