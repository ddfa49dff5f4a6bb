"""Load a spec's ``weights:`` file into the built model: exactly what ``validate`` checked.

The file is read once into memory and its SHA-256 compared with the checked one before torch
looks at it (``torch.load(weights_only=True)``, or safetensors), so a file swapped between the
check and the load is refused. Tensors go where spec.weights assigned them; skipped layers keep
the values the builder gave them; BatchNorm counters a torchvision file lacks start at zero.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch
from torch import nn

from cnnspec.errors import CheckpointError
from cnnspec.spec.loadplan import WeightsCheck

MAX_BYTES = 4 << 30


def read_checked(checked: WeightsCheck) -> bytes:
    """The file's bytes, if they are still the ones validate checked."""
    try:
        with open(checked.path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"{checked.path}: cannot read the weights file ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != checked.sha256:
        raise CheckpointError(f"{checked.path}: the weights file changed after it was checked "
                              f"(SHA-256 {digest[:12]}, checked {checked.sha256[:12]}); refused")
    return data


def file_tensors(checked: WeightsCheck, data: bytes) -> dict[str, torch.Tensor]:
    """The file's state dict as torch tensors, at the checked key (names as in the file)."""
    if checked.format == "safetensors":
        from safetensors.torch import load as load_safetensors

        tree: Any = load_safetensors(data)
    else:
        tree = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if checked.key is not None:
        for part in _parts(tree, checked.key):
            tree = tree[part]
    return dict(tree)


def load_weights(model: nn.Module, checked: WeightsCheck) -> None:
    """Copy the checked file's tensors into ``model`` (in place)."""
    tensors = file_tensors(checked, read_checked(checked))
    if checked.strip:
        tensors = {k.removeprefix(checked.strip): v for k, v in tensors.items()}
    state = model.state_dict()
    with torch.no_grad():
        for entry, name in checked.assign:
            state[entry.key].copy_(tensors[name])  # casts float16/bfloat16 files to the model's dtype
        for entry in checked.filled:
            state[entry.key].zero_()
    model.load_state_dict(state)


def _parts(tree: Any, key: str) -> list[str]:
    """A dotted key split as util.weightsfile found it: the longest run of parts that is a key wins."""
    parts, out, node = key.split("."), [], tree
    while parts:
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if isinstance(node, dict) and candidate in node:
                out.append(candidate)
                node, parts = node[candidate], parts[n:]
                break
        else:
            raise CheckpointError(f"no key {key!r} in the weights file")
    return out
