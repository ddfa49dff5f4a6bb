"""List the tensors (name, dtype, shape) in a weights file without importing torch or numpy.

Two formats are read:

* safetensors: an 8-byte little-endian header length, a JSON header, then the raw tensor bytes;
* torch's zip format (what ``torch.save`` writes since torch 1.6): ``<prefix>/data.pkl`` is a pickle whose
  tensors point, through persistent ids, at the raw storages ``<prefix>/data/<key>``.

The pickle is read by pickle's pure-Python unpickler restricted to an allow-list of opcodes and of globals
(dict types, torch's tensor rebuild functions, storage types and dtypes), each mapped to a harmless stand-in
defined here; any other global (``os.system``, a model class, ...) is refused without being imported.
Every tensor is checked against the bytes that back it, so a truncated or inconsistent file is reported
instead of being trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard

__all__ = ["TensorInfo", "WeightsFile", "WeightsFileError", "read_weights"]

MAX_SAFETENSORS_HEADER = 100_000_000  # bytes of JSON
MAX_PICKLE = 64 << 20  # bytes of data.pkl
MAX_TENSORS = 1_000_000
MAX_DEPTH = 64  # nesting of containers in the pickled object
MAX_NODES = 5_000_000  # objects visited while converting the pickle (shared sub-objects count each time)
MAX_ZIP_ENTRIES = MAX_TENSORS + 1_000
MAX_CENTRAL_DIRECTORY = 256 << 20  # bytes
IN_MEMORY_LIMIT = 1 << 30  # files up to this size are read into memory once; larger ones are streamed
_CHUNK = 16 << 20

# torch dtype name -> bytes per element in a storage (torch stores the sub-byte and "bits" types one per byte)
_TORCH_ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "complex128": 16, "complex64": 8, "complex32": 4, "bcomplex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
    **{f"uint{n}": 1 for n in range(1, 8)},
    **{f"int{n}": 1 for n in range(1, 8)},
}  # fmt: skip
# alternative attribute names of torch dtypes (a pickle names dtypes canonically, but accept these too)
_TORCH_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32", "short": "int16",
    "cfloat": "complex64", "cdouble": "complex128", "chalf": "complex32",
}  # fmt: skip
# legacy typed storage class -> dtype of its elements (torch.save still writes these names in torch 2.x)
_STORAGE_DTYPE = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}  # fmt: skip
# safetensors dtype -> (torch-style name, bits per element).  F4 packs two values per byte; torch reads it as
# float4_e2m1fn_x2 (one byte per element) with the last dimension halved.  F6_* have no torch dtype.
_SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64), "F32": ("float32", 32), "F16": ("float16", 16), "BF16": ("bfloat16", 16),
    "I64": ("int64", 64), "I32": ("int32", 32), "I16": ("int16", 16), "I8": ("int8", 8),
    "U64": ("uint64", 64), "U32": ("uint32", 32), "U16": ("uint16", 16), "U8": ("uint8", 8), "BOOL": ("bool", 8),
    "C64": ("complex64", 64), "F8_E4M3": ("float8_e4m3fn", 8), "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2": ("float8_e5m2", 8), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8), "F8_E8M0": ("float8_e8m0fnu", 8),
    "F4": ("float4_e2m1fn_x2", 4), "F6_E2M3": ("float6_e2m3fn", 6), "F6_E3M2": ("float6_e3m2fn", 6),
}  # fmt: skip

# what torch.save wrote before 1.6 (and with _use_new_zipfile_serialization=False): a pickled magic number
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_RESAVE_HINT = "load it with the torch that wrote it and re-save it with a current torch: torch.save(obj, path)"
_OTHER_FORMATS = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras .h5)"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"GGUF", "a GGUF file"),
    (b"\x1f\x8b", "a gzip-compressed file"),
)
# torch rebuild functions for tensor kinds this reader does not describe
_UNSUPPORTED_REBUILDS = {
    "_rebuild_qtensor": "quantized",
    "_rebuild_sparse_tensor": "sparse",
    "_rebuild_nested_tensor": "nested",
    "_rebuild_meta_tensor_no_storage": "meta-device",
    "_rebuild_wrapper_subclass": "tensor-subclass",
    "_rebuild_device_tensor_from_numpy": "XLA/MTIA-device",
    "_rebuild_device_tensor_from_cpu_tensor": "XLA/MTIA-device",
}


@dataclass(frozen=True)
class TensorInfo:
    """The dtype (torch-style name, e.g. "float32") and shape of one tensor in a weights file."""

    dtype: str
    shape: tuple[int, ...]


class WeightsFileError(Exception):
    """A weights file that cannot be read; the message is one line a user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", " ").replace("\n", " "))  # one line, whatever it quotes


@dataclass(frozen=True)
class WeightsFile:
    """What read_weights found in a weights file: its format, hash and tree of tensors and plain values."""

    path: Path
    format: str  # "safetensors" | "torch-zip"
    sha256: str  # of the exact bytes read
    size: int
    # The top-level object: nested dicts whose leaves are TensorInfo or plain python values (int, float, str,
    # bool, None, bytes, list, tuple, set).  A pickled torch.dtype becomes the string "torch.float32" etc.,
    # a torch.device the string "cuda:0".  Keys are as pickled (str; optimizer states also use int keys).
    tree: dict[str, object]
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors "__metadata__"; empty for torch-zip

    def state_dict(self, key: str | None = None) -> dict[str, TensorInfo]:
        """The flat name -> TensorInfo mapping at `key` (dotted path into the tree); None = the top level.

        Raises WeightsFileError if that is not a mapping of tensors (e.g. "'model' holds an int, not a state dict").
        """
        node = self.tree if key is None else _lookup(self.tree, key)
        where = "the top level" if key is None else repr(key)
        if not isinstance(node, dict):
            raise WeightsFileError(f"{where} holds {_describe(node)}, not a state dict")
        result: dict[str, TensorInfo] = {}
        for name, value in node.items():
            if not isinstance(name, str):
                raise WeightsFileError(f"{where} is not a state dict: its key {name!r} is not a string")
            if not isinstance(value, TensorInfo):
                hint = _state_dict_hint(node) if key is None else ""
                raise WeightsFileError(
                    f"{where} is not a state dict: {name!r} holds {_describe(value)}, not a tensor{hint}"
                )
            result[name] = value
        return result


def read_weights(path: str | Path, max_bytes: int = 4 << 30) -> WeightsFile:
    """Read the tensor names, dtypes and shapes of a safetensors or torch.save file, without torch."""
    path = Path(path)
    with _open_regular_file(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise WeightsFileError(f"file is {size} bytes, over the limit of {max_bytes} bytes (max_bytes)")
            if size <= IN_MEMORY_LIMIT:  # one read, then zipfile / the header parser work on the bytes in memory
                data = fh.read(size + 1)
                if len(data) != size:
                    raise WeightsFileError(f"file changed while being read ({size} bytes expected, {len(data)})")
                digest = hashlib.sha256(data).hexdigest()
                stream: IO[bytes] = io.BytesIO(data)
            else:  # hash in chunks, then parse from the open file (only the header / directory / data.pkl)
                digest = _hash_stream(fh, size)
                stream = fh
            stream.seek(0)
            fmt = _detect_format(stream.read(512), size, path)
            metadata: dict[str, str] = {}
            if fmt == "safetensors":
                tree, metadata = _read_safetensors(stream, size)
            else:
                tree = _read_torch_zip(stream, size)
        except OSError as exc:
            raise WeightsFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return WeightsFile(path=path, format=fmt, sha256=digest, size=size, tree=tree, metadata=metadata)


# --- reading the file ---------------------------------------------------------------------------------------


def _open_regular_file(path: Path) -> IO[bytes]:
    """Open `path` for reading without blocking (a FIFO would block) and refuse anything but a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise WeightsFileError(f"cannot open {path}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "directory" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else "special file"
        raise WeightsFileError(f"not a regular file: {path} is a {kind}")
    return os.fdopen(fd, "rb")


def _hash_stream(fh: IO[bytes], size: int) -> str:
    """sha256 of a large file, read in chunks; the file must still be `size` bytes long."""
    digest = hashlib.sha256()
    total = 0
    while chunk := fh.read(_CHUNK):
        total += len(chunk)
        if total > size:
            break
        digest.update(chunk)
    if total != size:
        raise WeightsFileError(f"file changed while being read ({size} bytes expected, {total} read)")
    return digest.hexdigest()


def _detect_format(head: bytes, size: int, path: Path) -> str:
    """Tell the format from the first bytes (and, for safetensors, the suffix); refuse what cannot be read."""
    if size == 0:
        raise WeightsFileError("empty file (0 bytes): not a weights file")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "torch-zip"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        raise WeightsFileError(f"old torch.save format (before torch 1.6, not a zip): {_RESAVE_HINT}")
    if head[257:262] == b"ustar":
        raise WeightsFileError(f"a tar archive (the oldest torch.save format?), unsupported: {_RESAVE_HINT}")
    if head[8:9] == b"{" or path.suffix.lower() == ".safetensors":
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise WeightsFileError(f"a plain pickle, not a torch.save zip or safetensors file: {_RESAVE_HINT}")
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            raise WeightsFileError(f"{what}, not a torch.save zip or safetensors file")
    raise WeightsFileError(f"not a torch.save zip or safetensors file (it starts with {head[:8]!r})")


# --- safetensors ----------------------------------------------------------------------------------------------


def _read_safetensors(stream: IO[bytes], size: int) -> tuple[dict[str, object], dict[str, str]]:
    """Parse and check a safetensors header: returns (name -> TensorInfo in header order, __metadata__)."""
    if size < 8:
        raise WeightsFileError(f"truncated safetensors file: {size} bytes, shorter than its 8-byte header length")
    stream.seek(0)
    (header_len,) = struct.unpack("<Q", stream.read(8))  # little-endian u64: bytes of JSON that follow
    if header_len > MAX_SAFETENSORS_HEADER:
        raise WeightsFileError(f"safetensors header length {header_len} is over the 100 MB limit: corrupt file")
    if header_len > size - 8:
        raise WeightsFileError(
            f"truncated or not safetensors: the header length is {header_len} bytes, but only {size - 8} follow"
        )
    try:
        header = json.loads(stream.read(header_len), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WeightsFileError(f"corrupt safetensors header: invalid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise WeightsFileError("corrupt safetensors header: the JSON is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsFileError("corrupt safetensors header: __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise WeightsFileError(f"more than {MAX_TENSORS} tensors: refusing to read")
    data_len = size - 8 - header_len  # the data area follows the header
    spans = {name: _safetensors_entry(name, entry, data_len) for name, entry in header.items()}
    _check_packed(spans, data_len)
    return {name: info for name, (info, _, _) in spans.items()}, metadata


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: refuse a header that names a tensor twice."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise WeightsFileError(f"corrupt safetensors header: {key!r} appears twice")
        result[key] = value
    return result


def _safetensors_entry(name: str, entry: object, data_len: int) -> tuple[TensorInfo, int, int]:
    """Check one header entry; returns (TensorInfo, begin, end) with offsets relative to the data area."""
    if not isinstance(entry, dict):
        raise WeightsFileError(f"corrupt safetensors header: entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
        raise WeightsFileError(f"tensor {name!r} has an unknown safetensors dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise WeightsFileError(f"corrupt safetensors header: tensor {name!r} has shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise WeightsFileError(f"corrupt safetensors header: tensor {name!r} has data_offsets {offsets!r}")
    begin, end = offsets
    if begin > end or end > data_len:
        raise WeightsFileError(
            f"truncated or inconsistent: tensor {name!r} has data_offsets [{begin}, {end}], "
            f"outside the {data_len}-byte data area"
        )
    torch_dtype, bits = _SAFETENSORS_DTYPES[dtype]
    nbits = _numel(shape) * bits
    if nbits % 8 or nbits // 8 != end - begin:
        raise WeightsFileError(
            f"inconsistent: tensor {name!r} ({dtype}, shape {shape}) needs {nbits / 8:g} bytes, "
            f"but data_offsets [{begin}, {end}] hold {end - begin}"
        )
    if dtype == "F4":  # two 4-bit values per byte: torch's float4_e2m1fn_x2 has the last dimension halved
        if not shape or shape[-1] % 2:
            raise WeightsFileError(f"inconsistent: F4 tensor {name!r} has shape {shape}, last dimension not even")
        shape = [*shape[:-1], shape[-1] // 2]
    return TensorInfo(torch_dtype, tuple(shape)), begin, end


def _check_packed(spans: dict[str, tuple[TensorInfo, int, int]], data_len: int) -> None:
    """The safetensors loader wants the tensors back to back, covering the data area exactly; so do we."""
    position = 0
    for name, (_, begin, end) in sorted(spans.items(), key=lambda item: (item[1][1], item[1][2])):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap after byte {position}"
            raise WeightsFileError(f"inconsistent: tensor {name!r} starts at byte {begin} of the data area: {what}")
        position = end
    if position != data_len:
        raise WeightsFileError(
            f"inconsistent: the data area is {data_len} bytes, but the tensors cover only {position}"
        )


# --- torch zip -------------------------------------------------------------------------------------------------


def _read_torch_zip(stream: IO[bytes], size: int) -> dict[str, object]:
    """Read <prefix>/data.pkl of a torch.save zip with the restricted unpickler; check tensors against storages."""
    _check_zip_entry_count(stream, size)
    try:
        archive = zipfile.ZipFile(stream)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise WeightsFileError(f"truncated or not a zip: {exc}") from exc
    with archive:
        prefix = _archive_prefix(infos)
        _check_zip_layout(stream, infos, size)
        pickle_info = archive.getinfo(f"{prefix}/data.pkl")
        if pickle_info.file_size > MAX_PICKLE:
            raise WeightsFileError(f"data.pkl is {pickle_info.file_size} bytes, over the limit of {MAX_PICKLE} bytes")
        try:
            with archive.open(pickle_info) as member:
                data = member.read(MAX_PICKLE + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise WeightsFileError(f"corrupt zip: cannot read {pickle_info.filename!r}: {exc}") from exc
        if len(data) > MAX_PICKLE:
            raise WeightsFileError(f"data.pkl is over the limit of {MAX_PICKLE} bytes")
        record_sizes = {info.filename: info.file_size for info in infos}
    obj = _unpickle(data)
    if not isinstance(obj, dict):
        raise WeightsFileError(f"the file holds {_describe(obj)}, not a dict (a state dict or a checkpoint)")
    tree = _TreeBuilder(prefix, record_sizes).convert(obj, "", 0)
    assert isinstance(tree, dict)
    return tree


def _check_zip_entry_count(stream: IO[bytes], size: int) -> None:
    """Refuse a zip whose central directory is huge (zipfile would build an object per entry in memory)."""
    tail_len = min(size, (1 << 16) + 22)  # the end-of-central-directory record (22 bytes) and its comment
    stream.seek(size - tail_len)
    tail = stream.read(tail_len)
    # end of central directory: signature, disk numbers (2 x u16), entries on disk and total (2 x u16),
    # central directory size (u32), its offset (u32), comment length (u16); zipfile looks for it the same way
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0" else tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return  # zipfile will report the damage
    (cd_size,) = struct.unpack_from("<I", tail, at + 12)
    eocd_pos = size - tail_len + at
    if cd_size == 0xFFFFFFFF:  # zip64: a 56-byte record, located by a 20-byte locator, holds the u64 size
        cd_size = _zip64_central_directory_size(stream, tail[max(at - 20, 0) : at], size)
    if cd_size > eocd_pos:
        return  # a directory bigger than what precedes it: zipfile will report the damage
    if cd_size > MAX_CENTRAL_DIRECTORY:
        raise WeightsFileError(f"the zip directory is {cd_size} bytes, too big for a weights file: refusing to read")
    start = max(eocd_pos - cd_size - 76, 0)  # the directory precedes the (zip64) end records
    stream.seek(start)
    if stream.read(eocd_pos - start).count(b"PK\x01\x02") > MAX_ZIP_ENTRIES:  # one signature per entry
        raise WeightsFileError(f"the zip has more than {MAX_ZIP_ENTRIES} entries: refusing to read")


def _check_zip_layout(stream: IO[bytes], infos: list[zipfile.ZipInfo], size: int) -> None:
    """Every entry lies inside the file, and the first one starts where the directory says (a local header)."""
    # zipfile shifts all offsets when the directory is not where the end record says (bytes were cut out of or
    # inserted into the file); the storages are not read, so check that the first local header is in place
    damaged = "truncated or damaged zip: the entries are not where its directory says"
    for info in infos:
        if info.header_offset < 0:
            raise WeightsFileError(damaged)
        if info.header_offset + info.compress_size > size:
            raise WeightsFileError(f"truncated: zip entry {info.filename!r} runs past the end of the file")
    stream.seek(min(info.header_offset for info in infos))
    if stream.read(4) != b"PK\x03\x04":
        raise WeightsFileError(damaged)


def _zip64_central_directory_size(stream: IO[bytes], locator: bytes, size: int) -> int:
    """The central directory size from the zip64 end record that `locator` points to (0 if absent)."""
    if len(locator) != 20 or not locator.startswith(b"PK\x06\x07"):
        return 0
    (record_pos,) = struct.unpack_from("<Q", locator, 8)
    if record_pos > size:
        return 0
    stream.seek(record_pos)
    record = stream.read(56)
    if len(record) != 56 or not record.startswith(b"PK\x06\x06"):
        return 0
    (cd_size,) = struct.unpack_from("<Q", record, 40)  # after signature, sizes, versions, disks and counts
    return int(cd_size)


def _archive_prefix(infos: list[zipfile.ZipInfo]) -> str:
    """The folder that holds data.pkl (torch uses the file's stem, or "archive"); refuse other zips."""
    names = [info.filename for info in infos]
    prefixes = [name[: -len("/data.pkl")] for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        raise WeightsFileError(
            "a TorchScript archive (torch.jit.save), not a state dict: "
            "re-save it with torch.save(model.state_dict(), path)"
        )
    if len(prefixes) != 1:
        found = "no" if not prefixes else "several"
        shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
        raise WeightsFileError(f"a zip with {found} <folder>/data.pkl, not a torch.save file (entries: {shown})")
    return prefixes[0]


# --- the restricted unpickler ------------------------------------------------------------------------------------


class _Sealed:
    """Base of the stand-ins the unpickler hands out: a pickle cannot modify them (BUILD opcode)."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise WeightsFileError("corrupt data.pkl: it tries to set the state of a torch object")


@dataclass(frozen=True)
class _DType(_Sealed):
    """Stand-in for a torch.dtype global such as torch.float32."""

    name: str


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stand-in for a storage class: torch.FloatStorage etc., or torch.storage.UntypedStorage (bytes)."""

    dtype: str


@dataclass(frozen=True)
class _Storage(_Sealed):
    """A storage record named by a persistent id: <prefix>/data/<key> holds numel elements of dtype."""

    key: str
    dtype: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _TORCH_ITEMSIZE[self.dtype]


@dataclass(frozen=True, eq=False)
class _Tensor(_Sealed):
    """A dense tensor as torch would rebuild it: a view (offset, shape, stride) of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _TypeMarker(_Sealed):
    """Stand-in for torch.Tensor / torch.nn.Parameter as named by _rebuild_from_type_v2."""

    name: str


class _PickledDict(dict[Any, Any]):
    """collections.OrderedDict / Counter: a plain dict; the `_metadata` attribute of a state dict is dropped."""

    def __setstate__(self, state: object) -> None:
        pass


class _PickleStream(io.BytesIO):
    """The pure-Python unpickler takes a line cut short by the end of the data as whole; refuse it instead."""

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        if not line.endswith(b"\n"):
            raise EOFError("pickle data was truncated")
        return line


def _refuse_opcode(name: str) -> Callable[[Any], None]:
    def refuse(_unpickler: Any) -> None:
        raise WeightsFileError(f"corrupt data.pkl: it uses the pickle opcode {name}, which torch.save never writes")

    return refuse


class _OpcodeTable(dict[int, Callable[[Any], None]]):
    """The unpickler's dispatch table, with a clear error for a byte that is no opcode."""

    def __missing__(self, opcode: int) -> Callable[[Any], None]:
        raise WeightsFileError(f"corrupt data.pkl: byte {opcode:#04x} is not a pickle opcode")


# Opcodes torch.save never writes and that need not be trusted: protocol-0 object creation (INST, OBJ), the
# copyreg extension registry (EXT*), text persistent ids, and protocol-5 buffers (BYTEARRAY8 allocates the
# size it claims before reading; NEXT_BUFFER / READONLY_BUFFER refer to out-of-band data).
_REFUSED_OPCODES = {
    "INST": pickle.INST, "OBJ": pickle.OBJ, "EXT1": pickle.EXT1, "EXT2": pickle.EXT2, "EXT4": pickle.EXT4,
    "PERSID": pickle.PERSID, "BYTEARRAY8": pickle.BYTEARRAY8, "NEXT_BUFFER": pickle.NEXT_BUFFER,
    "READONLY_BUFFER": pickle.READONLY_BUFFER,
}  # fmt: skip


class _RestrictedUnpickler(pickle._Unpickler):
    """Unpickles torch's data.pkl into stand-ins; refuses every global and opcode that is not on the allow-list.

    It is pickle's pure-Python unpickler (about 2x slower than the C one, a few ms for a CNN's data.pkl): its
    opcode table can be restricted, and it does not act on hostile lengths the way the C one can.
    """

    dispatch = _OpcodeTable(
        {
            **pickle._Unpickler.dispatch,
            **{opcode[0]: _refuse_opcode(name) for name, opcode in _REFUSED_OPCODES.items()},
        }
    )

    def __init__(self, data: bytes) -> None:
        super().__init__(_PickleStream(data), encoding="utf-8")
        self.tensor_count = 0
        self._storages: dict[str, _Storage] = {}
        self._rebuilders: dict[str, Callable[..., _Tensor]] = {
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": _rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
        }

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{_MODULE_ALIASES.get(module, module)}.{name}"
        found = self._rebuilders.get(qualname) or _ALLOWED_GLOBALS.get(qualname)
        if found is not None:
            return found
        if module == "torch._utils" and name in _UNSUPPORTED_REBUILDS:
            raise WeightsFileError(
                f"unsupported: the file holds {_UNSUPPORTED_REBUILDS[name]} tensors (torch._utils.{name}); "
                "only dense CPU/GPU tensors can be listed"
            )
        if module.split(".")[0] == "numpy":
            hint = "save python numbers (float(x), array.tolist()) or tensors instead of numpy values"
        else:
            hint = "save model.state_dict() and plain values rather than objects of other classes"
        raise WeightsFileError(
            f"not a state dict: the pickle refers to {qualname}, which is not allowed (only tensors, dicts, lists "
            f"and plain values are); {hint}"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        # torch.save writes ("storage", storage type, key, location, numel); numel counts elements of the
        # storage type (bytes for UntypedStorage).  As torch.load does, the first record of a key wins.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsFileError(f"corrupt data.pkl: unknown persistent id {str(pid)[:80]!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_count(numel):
            raise WeightsFileError(f"corrupt data.pkl: bad storage record {str(pid)[:80]!r}")
        return self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))

    def _rebuild_tensor(self, storage: object, offset: object, size: object, stride: object, *_: object) -> _Tensor:
        # _rebuild_tensor(storage, offset, size, stride) and
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
        if not isinstance(storage, _Storage):
            raise WeightsFileError("corrupt data.pkl: a tensor is rebuilt from something that is not a storage")
        return self._new_tensor(storage, offset, size, stride, storage.dtype)

    def _rebuild_tensor_v3(
        self, storage: object, offset: object, size: object, stride: object, _grad: object, _hooks: object,
        dtype: object, *_: object,
    ) -> _Tensor:  # fmt: skip
        # written for dtypes without a typed storage class (uint16, float8_*, ...): the storage is
        # UntypedStorage (numel = bytes) and the tensor's dtype comes as an argument, e.g. torch.float8_e4m3fn
        if not isinstance(storage, _Storage) or not isinstance(dtype, _DType):
            raise WeightsFileError("corrupt data.pkl: bad arguments to torch._utils._rebuild_tensor_v3")
        return self._new_tensor(storage, offset, size, stride, dtype.name)

    def _rebuild_from_type_v2(self, func: object, new_type: object, args: object, _state: object) -> _Tensor:
        # written for a tensor that carries python attributes: func(*args) builds it, then it is cast to new_type
        rebuilders = (self._rebuild_tensor, self._rebuild_tensor_v3, _rebuild_parameter)
        if not (
            func in rebuilders and callable(func) and isinstance(new_type, _TypeMarker) and isinstance(args, tuple)
        ):
            raise WeightsFileError("unsupported: a tensor subclass (torch._tensor._rebuild_from_type_v2)")
        result = func(*args)
        assert isinstance(result, _Tensor)
        return result

    def _new_tensor(self, storage: _Storage, offset: object, size: object, stride: object, dtype: str) -> _Tensor:
        self.tensor_count += 1
        if self.tensor_count > MAX_TENSORS:
            raise WeightsFileError(f"more than {MAX_TENSORS} tensors: refusing to read")
        if not _is_count(offset) or not _is_counts(size) or not _is_counts(stride) or len(size) != len(stride):
            raise WeightsFileError(
                f"corrupt data.pkl: tensor with offset {offset!r}, size {str(size)[:80]}, stride {str(stride)[:80]}"
            )
        return _Tensor(storage, offset, tuple(size), tuple(stride), dtype)


def _rebuild_parameter(data: object, *_: object) -> _Tensor:
    # nn.Parameter: _rebuild_parameter(data, requires_grad, backward_hooks) and
    # _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state); data is a rebuilt tensor
    if not isinstance(data, _Tensor):
        raise WeightsFileError("corrupt data.pkl: a Parameter is rebuilt from something that is not a tensor")
    return data


def _unpickle(data: bytes) -> object:
    """Run the restricted unpickler; any failure becomes a WeightsFileError."""
    try:
        return _RestrictedUnpickler(data).load()
    except WeightsFileError:
        raise
    except EOFError as exc:
        raise WeightsFileError("corrupt data.pkl: it ends before its STOP opcode (truncated)") from exc
    except Exception as exc:  # UnpicklingError, EOFError, TypeError from a bad REDUCE, MemoryError, ...
        raise WeightsFileError(f"corrupt data.pkl: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _make_set(items: object = ()) -> set[object]:
    return set(_plain_items(items))


def _make_frozenset(items: object = ()) -> frozenset[object]:
    return frozenset(_plain_items(items))


def _plain_items(items: object) -> list[object]:
    if not isinstance(items, (list, tuple)):
        raise WeightsFileError("corrupt data.pkl: a set is built from something that is not a list")
    return list(items)


def _encode(text: object, encoding: object = "latin1") -> bytes:
    # pickle protocol 2 writes bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise WeightsFileError("corrupt data.pkl: unexpected arguments to _codecs.encode")
    return text.encode("latin1")


def _make_bytearray(*args: object) -> bytes:
    # protocol 2 writes bytearray(b) as bytearray(str, "latin-1"); never bytearray(huge int)
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    if len(args) == 2:
        return _encode(args[0], args[1])
    raise WeightsFileError("corrupt data.pkl: unexpected arguments to bytearray")


def _make_complex(real: object = 0.0, imag: object = 0.0) -> complex:
    if not isinstance(real, (int, float)) or not isinstance(imag, (int, float)):
        raise WeightsFileError("corrupt data.pkl: unexpected arguments to complex")
    return complex(real, imag)


def _make_device(kind: object, index: object = None) -> str:
    # torch.device("cuda", 0) -> "cuda:0"
    if not isinstance(kind, str) or not (index is None or _is_count(index)):
        raise WeightsFileError("corrupt data.pkl: unexpected arguments to torch.device")
    return kind if index is None else f"{kind}:{index}"


def _make_size(dims: object = ()) -> tuple[int, ...]:
    if not _is_counts(dims):
        raise WeightsFileError("corrupt data.pkl: unexpected arguments to torch.Size")
    return tuple(dims)


def _allowed_globals() -> dict[str, object]:
    """Every global a torch.save state dict or checkpoint may name, mapped to its harmless stand-in here."""
    allowed: dict[str, object] = {
        "collections.OrderedDict": _PickledDict,
        "collections.Counter": _PickledDict,
        "builtins.set": _make_set,
        "builtins.frozenset": _make_frozenset,
        "builtins.bytearray": _make_bytearray,
        "builtins.complex": _make_complex,
        "_codecs.encode": _encode,
        "torch.device": _make_device,
        "torch.Size": _make_size,
        "torch.storage.UntypedStorage": _StorageType("uint8"),
        "torch.UntypedStorage": _StorageType("uint8"),
    }
    for name in ("torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter", "torch.nn.Parameter"):
        allowed[name] = _TypeMarker(name)
    for dtype in _TORCH_ITEMSIZE:
        allowed[f"torch.{dtype}"] = _DType(dtype)
    for alias, dtype in _TORCH_DTYPE_ALIASES.items():
        allowed[f"torch.{alias}"] = _DType(dtype)
    for storage, dtype in _STORAGE_DTYPE.items():
        allowed[f"torch.{storage}"] = allowed[f"torch.cuda.{storage}"] = _StorageType(dtype)
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()
_MODULE_ALIASES = {"__builtin__": "builtins"}  # python 2 names in protocol-2 pickles


# --- converting the unpickled object into the tree ---------------------------------------------------------------


class _TreeBuilder:
    """Turns the unpickled object into plain dicts / lists / TensorInfo, checking each tensor's storage."""

    def __init__(self, prefix: str, record_sizes: dict[str, int]) -> None:
        self.prefix = prefix
        self.record_sizes = record_sizes
        self.nodes = 0

    def convert(self, obj: object, path: str, depth: int) -> object:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise WeightsFileError(f"more than {MAX_NODES} objects in data.pkl: refusing to read")
        if depth > MAX_DEPTH:
            raise WeightsFileError(f"nested deeper than {MAX_DEPTH} levels at {path!r}: not a state dict")
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return obj
        if isinstance(obj, _Tensor):
            return self.tensor(obj, path)
        if isinstance(obj, dict):
            return {self.key(k, path): self.convert(v, _join(path, k), depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return tuple(self.convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))
        if isinstance(obj, (set, frozenset)):
            return type(obj)(self.convert(v, f"{path}{{}}", depth + 1) for v in obj)
        if isinstance(obj, _DType):
            return f"torch.{obj.name}"
        where = repr(path) if path else "the top level"
        raise WeightsFileError(f"not a state dict: {where} holds a bare {type(obj).__name__.lstrip('_')}")

    def key(self, key: object, path: str) -> object:
        if key is None or isinstance(key, (bool, int, float, str, bytes)):
            return key
        where = f"under {path!r}" if path else "at the top level"
        raise WeightsFileError(f"not a state dict: a key {where} is {_describe(key)}")

    def tensor(self, tensor: _Tensor, name: str) -> TensorInfo:
        """Check that the storage record exists, is complete, and holds every element the view reaches."""
        storage = tensor.storage
        record = f"{self.prefix}/data/{storage.key}"
        have = self.record_sizes.get(record)
        if have is None:
            raise WeightsFileError(f"inconsistent: tensor {name!r} uses storage {record!r}, missing from the zip")
        if have < storage.nbytes:
            raise WeightsFileError(
                f"truncated: storage {record!r} is {have} bytes, tensor {name!r} needs {storage.nbytes}"
            )
        itemsize = _TORCH_ITEMSIZE[tensor.dtype]
        if 0 in tensor.shape:
            extent = 0
        else:  # one past the furthest element the view reaches, in bytes (offset and strides count elements)
            last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
            extent = (last + 1) * itemsize
        if extent > storage.nbytes:
            raise WeightsFileError(
                f"inconsistent: tensor {name!r} ({tensor.dtype}, shape {list(tensor.shape)}, stride "
                f"{list(tensor.stride)}, offset {tensor.offset}) needs {extent} bytes of storage {record!r}, "
                f"which holds {storage.nbytes}"
            )
        return TensorInfo(tensor.dtype, tensor.shape)


# --- small helpers -----------------------------------------------------------------------------------------------


def _is_count(value: object) -> TypeGuard[int]:
    """A non-negative int (not a bool)."""
    return type(value) is int and value >= 0


def _is_counts(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(_is_count(v) for v in value)


def _numel(shape: list[int]) -> int:
    """Product of the dimensions, stopping early once absurdly large (a hostile header could list many)."""
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > 1 << 80:
            break
    return numel


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: object) -> str:
    """'an int', 'a dict of 3 entries', 'a tensor (float32, shape [3])', ... for error messages."""
    if value is None:
        return "None"
    if isinstance(value, TensorInfo):
        return f"a tensor ({value.dtype}, shape {list(value.shape)})"
    if isinstance(value, dict):
        return f"a dict of {len(value)} entries"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} items"
    name = type(value).__name__.lstrip("_")
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _lookup(tree: dict[str, object], key: str) -> object:
    """Follow a dotted path; at each level the longest run of parts that is a key wins ("model.layer1.0" works)."""
    node: object = tree
    parts = key.split(".")
    done: list[str] = []
    while parts:
        if not isinstance(node, dict):
            raise WeightsFileError(f"{'.'.join(done)!r} holds {_describe(node)}, so it has no {parts[0]!r}")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in node:
                node, done, parts = node[candidate], [*done, candidate], parts[n:]
                break
        else:
            keys = ", ".join(repr(k) for k in list(node)[:10]) + (", ..." if len(node) > 10 else "")
            where = f"under {'.'.join(done)!r}" if done else "at the top level"
            raise WeightsFileError(f"no key {key!r} in the file ({where} there are: {keys or 'no keys'})")
    return node


def _state_dict_hint(tree: dict[Any, object]) -> str:
    """'; try state_dict("model")' when the top level is a checkpoint that holds state dicts."""
    candidates = [
        key
        for key, value in tree.items()
        if isinstance(value, dict) and value and all(isinstance(v, TensorInfo) for v in value.values())
    ]
    return "; try " + " or ".join(f"state_dict({key!r})" for key in candidates[:3]) if candidates else ""
