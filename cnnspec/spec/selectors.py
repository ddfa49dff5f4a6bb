"""Which layers a fine-tuning setting names (``train.freeze``, ``train.lr_multipliers``, ``weights.skip``).

A selector is a top-level layer index (negative counts from the end), a range ``"a:b"`` of top-level
indices (as Python slices), or a module path of the built model with ``*`` wildcards: ``"4"`` is the
fifth layer and everything inside it, ``"4.main.*"`` the layers on its main path.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

_RANGE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")


class SelectorError(ValueError):
    """A selector that names no layer of the model."""


def matcher(selector: int | str, paths: Sequence[str], layers: int) -> set[str]:
    """The module paths (of ``paths``, every layer's) that ``selector`` names; SelectorError if none.

    ``layers`` is the number of top-level layers."""
    if isinstance(selector, int):
        index = selector + layers if selector < 0 else selector
        if not 0 <= index < layers:
            raise SelectorError(f"layer {selector} does not exist: the model has {layers} layers (0 to {layers - 1})")
        return _under(paths, {str(index)})
    m = _RANGE.match(selector)
    if m:
        lo, hi = (int(g) if g is not None else None for g in m.groups())
        chosen = range(layers)[slice(lo, hi)]
        if not chosen:
            raise SelectorError(f"the range '{selector}' holds no layer of the {layers}")
        return _under(paths, {str(i) for i in chosen})
    roots = {p for p in paths if p == selector or fnmatch.fnmatchcase(p, selector)
             or (selector.endswith(".*") and p == selector[:-2])}
    if not roots:
        raise SelectorError(f"'{selector}' names no layer (module paths look like '3', '4.main.0')")
    return _under(paths, roots)


def _under(paths: Sequence[str], roots: set[str]) -> set[str]:
    """The roots and every path inside them."""
    return {p for p in paths if p in roots or any(p.startswith(r + ".") for r in roots)}
