"""A spec's ``weights:`` file checked against the model it describes, without torch.

The file's tensors (util.weightsfile reads their names, dtypes and shapes, not their values) are
matched with the built model's state dict (spec.tensors) by name (``mapping: cnnspec``) or by
order (``torchvision``, ``timm``, ``position``). Every tensor the model needs must be there with
its shape, else an error at the layer's line; tensors nothing takes are a warning; layers in
``skip`` are initialised fresh. ``run`` later loads exactly the bytes checked here (same SHA-256).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cnnspec.errors import KeyPath, Problem, path_str
from cnnspec.spec.loadplan import WeightsCheck
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.sections import Component, WeightsSection
from cnnspec.spec.selectors import SelectorError, matcher
from cnnspec.spec.shapes import ShapeTrace, fmt
from cnnspec.spec.tensors import Planned, Unknown, module_paths, plan
from cnnspec.spec.yamlpos import Located

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.util.weightsfile import TensorInfo, WeightsFile

SECTION: KeyPath = ("weights",)
BY_ORDER = ("torchvision", "timm", "position")
COUNTER = "num_batches_tracked"  # BatchNorm's step counter: old torchvision and timm files lack it
_KINDS = {"float": ("float16", "bfloat16", "float32", "float64"), "int": ("int64", "int32", "int16", "int8", "uint8")}


def check_weights(located: Located, section: WeightsSection, trace: ShapeTrace
                  ) -> tuple[WeightsCheck | None, list[Problem], list[Problem]]:
    """The check's result, its errors and its warnings (all located)."""
    from cnnspec.util.weightsfile import WeightsFileError, read_weights  # zipfile, pickle: only for a weights file

    at = _at(located)
    path = Path(section.file).expanduser()
    if not path.is_absolute():
        path = Path(located.file).parent / path
    if not path.exists() and not path.is_symlink():
        return None, [at(("file",), f"weights.file: {section.file} not found (looked at {path}; a relative path "
                                    "is relative to the spec's folder)")], []
    try:
        wf = read_weights(path)
    except (WeightsFileError, OSError) as e:
        return None, [at(("file",), f"weights.file: {section.file}: {_reason(e)}")], []
    if section.sha256 is not None and section.sha256 != wf.sha256:
        return None, [at(("sha256",), f"weights.sha256: {section.file} has SHA-256 {wf.sha256}, not the one "
                                      "the spec names; refused")], []
    if wf.format == "safetensors" and section.mapping in BY_ORDER:
        return None, [at(("mapping",), f"weights.mapping: {section.mapping} aligns tensors in the file's order, "
                                       "and a .safetensors file keeps none (its tensors are sorted by name); use "
                                       "the .pth file, or mapping: cnnspec with the model's names")], []
    key, tensors, problem = _state_dict(wf, section, at)
    if problem is not None:
        return None, [problem], []
    try:
        entries = plan(trace)
    except Unknown as e:
        return None, [_at_layer(located, e.component, f"{_label(e.component)}: its layer type declares no "
                                      "tensors rule, so a weights file cannot be checked against it")], []
    result = WeightsCheck(path, wf.sha256, wf.size, wf.format, key, section.strip)
    skipped, errors = _skipped(located, section, trace, entries)
    if errors:
        return None, errors, []
    if section.mapping == "cnnspec":
        errors = _by_name(located, result, entries, skipped, tensors)
    else:
        errors = _by_order(located, section, result, entries, skipped, tensors)
    warnings = []
    if result.unused and not errors:
        names = ", ".join(result.unused[:5]) + (f" and {len(result.unused) - 5} more" if len(result.unused) > 5 else "")
        n = len(result.unused)
        warnings.append(at(("file",), f"weights.file: {n} tensor{'s' if n != 1 else ''} in {section.file} "
                                      f"{'are' if n != 1 else 'is'} not used: {names}"))
    return (None if errors else result), errors, warnings


def _at(located: Located) -> Callable[[tuple[str, ...], str], Problem]:
    """Locates a problem at a key of the weights section (or the section, when the key is not written)."""
    return lambda key, message: located.problem(SECTION + key, message)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"cannot read ({e.strerror or e})"
    return str(e)


def _state_dict(wf: WeightsFile, section: WeightsSection, at: Callable[[tuple[str, ...], str], Problem]
                ) -> tuple[str | None, dict[str, TensorInfo], Problem | None]:
    """The file's state dict (at ``key``, or found), names stripped of ``strip``."""
    keys = [section.key] if section.key is not None else [None, "model", "state_dict"]
    first: Exception | None = None
    for key in keys:
        try:
            tensors = wf.state_dict(key)
        except Exception as e:  # WeightsFileError: not a mapping of tensors there
            first = first or e
            continue
        if section.strip:
            tensors = {k.removeprefix(section.strip): v for k, v in tensors.items()}
        return key, tensors, None
    where = ("key",) if section.key is not None else ("file",)
    return None, {}, at(where, f"weights.{where[0]}: {section.file}: {first}")


def _skipped(located: Located, section: WeightsSection, trace: ShapeTrace,
             entries: list[Planned]) -> tuple[set[str], list[Problem]]:
    """The module paths ``skip`` names, or located errors."""
    paths = module_paths(trace)
    out: set[str] = set()
    errors = []
    for i, selector in enumerate(section.skip):
        try:
            out |= matcher(selector, paths, len(trace.rows))
        except SelectorError as e:
            errors.append(located.problem(SECTION + ("skip", i), f"weights.skip[{i}]: {e}"))
    return out, errors


def _by_name(located: Located, result: WeightsCheck, entries: list[Planned], skipped: set[str],
             tensors: dict[str, TensorInfo]) -> list[Problem]:
    errors = []
    taken = set()
    for e in entries:
        if e.module in skipped:
            result.fresh.append(e)
            taken.add(e.key)
            continue
        got = tensors.get(e.key)
        if got is None:
            errors.append(_at_layer(located, e.component, f"{_label(e.component)}: the weights file has no "
                                          f"tensor '{e.key}' ({_shape(e.shape)}); skip the layer to "
                                          "initialise it fresh (weights.skip)"))
            continue
        taken.add(e.key)
        errors += _fits(located, e, e.key, got)
        result.assign.append((e, e.key))
    result.unused = [k for k in tensors if k not in taken]
    return errors


def _by_order(located: Located, section: WeightsSection, result: WeightsCheck, entries: list[Planned],
              skipped: set[str], tensors: dict[str, TensorInfo]) -> list[Problem]:
    """Align in order. With equal counts, position i meets position i (skipped ones are not loaded);
    otherwise the skipped layers are left out and the file's extra tensors at the end are unused."""
    files = list(tensors.items())
    wanted = entries
    if section.mapping != "position" and not any(k.endswith(COUNTER) for k, _ in files):
        result.filled = [e for e in entries if e.key.endswith(COUNTER)]
        wanted = [e for e in entries if not e.key.endswith(COUNTER)]
    if len(files) != len(wanted):
        result.fresh = [e for e in wanted if e.module in skipped]
        wanted = [e for e in wanted if e.module not in skipped]
    errors: list[Problem] = []
    for i, e in enumerate(wanted):
        if i >= len(files):
            errors.append(_at_layer(located, e.component, f"{_label(e.component)}: the weights file ends after "
                                          f"{len(files)} tensors; '{e.key}' ({_shape(e.shape)}) is the "
                                          f"{_nth(i + 1)} the model needs (weights.mapping: {section.mapping} "
                                          "aligns them in order)"))
            break
        name, got = files[i]
        if e.module in skipped:
            result.fresh.append(e)
            continue
        fits = _fits(located, e, name, got, hint=f" (the {_nth(i + 1)} tensor of each: weights.mapping: "
                     f"{section.mapping} aligns them in order; the file has {len(files)}, the model needs "
                     f"{len(wanted)})" if len(files) != len(wanted) or e.key.endswith(COUNTER) else "")
        if fits:
            errors += fits
            break  # one misalignment shifts everything after it: report the first
        result.assign.append((e, name))
    result.unused = [k for k, _ in files[len(wanted):]]
    return errors


def _fits(located: Located, e: Planned, name: str, got: TensorInfo, hint: str = "") -> list[Problem]:
    """Errors if the file's tensor ``name`` cannot be loaded into the model's entry ``e``."""
    label = _label(e.component)
    hint = hint or "; to initialise this layer fresh instead, name it in weights.skip"
    if got.shape != e.shape:
        return [_at_layer(located, e.component, f"{label}: the file's '{name}' is {_shape(got.shape)} but the "
                                f"layer's '{e.key}' is {_shape(e.shape)}{hint}")]
    kind = next((k for k, names in _KINDS.items() if e.tensor.dtype in names), None)
    if kind is not None and got.dtype not in _KINDS[kind]:
        return [_at_layer(located, e.component, f"{label}: the file's '{name}' holds {got.dtype}, the layer's "
                                f"'{e.key}' needs {e.tensor.dtype}")]
    return []


def _at_layer(located: Located, comp: Component, message: str) -> Problem:
    """A problem at a layer's line; inside a block's body, also which use of the block (as check says)."""
    report = Reporter(located)
    with report.inside(comp.trail):
        report.fail(comp.path, message)
    return report.problems[0]


def _label(comp: object) -> str:
    return f"{path_str(getattr(comp, 'path', ()))} {getattr(comp, 'name', '?')}"


def _shape(shape: tuple[int, ...]) -> str:
    return fmt(shape) if shape else "a scalar"


def _nth(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
