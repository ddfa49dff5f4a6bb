"""Reading a saved Keras model without Keras or TensorFlow: its config (JSON) and each layer's weights (h5py).

Three inputs: a Keras 3 ``.keras`` file (a zip of ``config.json`` and ``model.weights.h5``), a
legacy ``.h5`` full model (the config in the ``model_config`` attribute, the weights under
``model_weights``), or a ``model.to_json()`` config with an optional weights file (Keras 3's
``.weights.h5``, or a legacy one). Files are read whole, capped, from regular files only
(util.files), and h5py opens the bytes in memory. Weights come back per layer name, in the
order of the layer's ``weights`` in Keras (kernel before bias; gamma, beta, moving mean, moving
variance).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.errors import ToolError
from cnnspec.util.files import read_regular

MAX_BYTES = 2 << 30  # a model file
MAX_CONFIG = 64 << 20  # its JSON config
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class KerasFileError(ToolError):
    """The file is not a Keras model cnnspec can read (exit 2)."""


@dataclass
class KerasModel:
    """A Keras model as saved: ``config`` is ``{"class_name": ..., "config": {...}}``."""

    path: str
    config: dict[str, Any]
    weights: dict[str, list[Any]] | None = None  # layer name -> numpy arrays, in Keras' order
    keras_version: str | None = None
    format: str = "keras"  # "keras", "h5" or "json"


def read_model(path: str | Path, weights: str | Path | None = None) -> KerasModel:
    """The model's config and (if the file has them, or ``weights`` is given) its weights."""
    data = _read(path, MAX_BYTES)
    if data.startswith(b"PK"):
        model = _read_keras_zip(str(path), data)
    elif data.startswith(HDF5_MAGIC):
        model = _read_legacy_h5(str(path), data)
    else:
        model = KerasModel(str(path), _json(str(path), data), format="json")
    if weights is not None:
        if model.weights is not None:
            raise KerasFileError(f"{path}: the model file holds its weights already; --weights is for a JSON config")
        model.weights = _read_weights_h5(str(weights), _read(weights, MAX_BYTES))
    return model


def _read(path: str | Path, limit: int) -> bytes:
    try:
        data = read_regular(path, limit)
    except FileNotFoundError:
        raise KerasFileError(f"{path}: no such file") from None
    except OSError as e:
        raise KerasFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise KerasFileError(f"{path}: larger than {limit >> 20} MiB; refused")
    return data


def _json(path: str, data: bytes) -> dict[str, Any]:
    if len(data) > MAX_CONFIG:
        raise KerasFileError(f"{path}: the model config is larger than {MAX_CONFIG >> 20} MiB; refused")
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KerasFileError(f"{path}: not a .keras file, a .h5 model or a JSON model config ({e})") from None
    if not isinstance(config, dict) or "class_name" not in config or not isinstance(config.get("config"), dict):
        raise KerasFileError(f"{path}: JSON, but not a Keras model config (model.to_json()): "
                             "no class_name and config at the top")
    return config


def _read_keras_zip(path: str, data: bytes) -> KerasModel:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise KerasFileError(f"{path}: a zip without config.json: not a Keras 3 .keras file")
            config = _json(f"{path}:config.json", _member(z, "config.json", MAX_CONFIG))
            meta = json.loads(_member(z, "metadata.json", 1 << 20)) if "metadata.json" in names else {}
            blob = _member(z, "model.weights.h5", MAX_BYTES) if "model.weights.h5" in names else None
    except zipfile.BadZipFile as e:
        raise KerasFileError(f"{path}: not a readable zip ({e})") from None
    weights = _read_weights_h5(f"{path}:model.weights.h5", blob) if blob is not None else None
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return KerasModel(path, config, weights, version if isinstance(version, str) else None, "keras")


def _member(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    if z.getinfo(name).file_size > limit:
        raise KerasFileError(f"{name}: larger than {limit >> 20} MiB; refused")
    with z.open(name) as f:
        return f.read(limit + 1)


def _h5(path: str, data: bytes) -> Any:
    try:
        import h5py
    except ImportError:
        raise KerasFileError("reading Keras' HDF5 files needs h5py: pip install 'cnnspec[keras-import]'") from None
    try:
        return h5py.File(io.BytesIO(data), "r")
    except OSError as e:
        raise KerasFileError(f"{path}: not a readable HDF5 file ({e})") from None


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy_h5(path: str, data: bytes) -> KerasModel:
    f = _h5(path, data)
    with f:
        if "model_config" not in f.attrs:
            raise KerasFileError(f"{path}: an HDF5 file without a model config: a weights file? Give the model "
                                 "(.keras, or its JSON config with --weights FILE)")
        config = _json(path, _text(f.attrs["model_config"]).encode())
        version = _text(f.attrs["keras_version"]) if "keras_version" in f.attrs else None
        weights = _legacy_weights(f["model_weights"]) if "model_weights" in f else None
    return KerasModel(path, config, weights, version, "h5")


def _read_weights_h5(path: str, data: bytes) -> dict[str, list[Any]]:
    f = _h5(path, data)
    with f:
        if "model_weights" in f:
            return _legacy_weights(f["model_weights"])
        if "layer_names" in f.attrs:  # a legacy save_weights file
            return _legacy_weights(f)
        if "layers" in f:
            return _keras3_weights(f["layers"])
    raise KerasFileError(f"{path}: no Keras weights in this HDF5 file (neither a 'layers' group nor layer_names)")


def _legacy_weights(root: Any) -> dict[str, list[Any]]:
    """Keras 2 and legacy-format files: a group per layer, its ``weight_names`` attribute in order."""
    out: dict[str, list[Any]] = {}
    for name in root.attrs.get("layer_names", list(root.keys())):
        group = root[_text(name)]
        out[_text(name)] = [group[_text(w)][()] for w in group.attrs.get("weight_names", [])]
    return out


def _keras3_weights(layers: Any) -> dict[str, list[Any]]:
    """Keras 3: ``layers/<key>/vars/0, 1, ...``; the layer's own name is the ``vars`` group's ``name``
    attribute (the key is Keras' snake-case class name, numbered)."""
    out: dict[str, list[Any]] = {}
    for key in layers:
        node = layers[key]
        v = node.get("vars")
        if v is None:
            continue
        name = _text(v.attrs["name"]) if "name" in v.attrs else key
        out[name] = [v[str(i)][()] for i in range(len(v))]
    return out
