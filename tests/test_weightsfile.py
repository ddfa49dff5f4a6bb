"""util.weightsfile: fixtures are written with torch / torchvision / safetensors, read back without them."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from conftest import ROOT
from torch import nn

from cnnspec.util import weightsfile
from cnnspec.util.weightsfile import TensorInfo, WeightsFile, WeightsFileError, read_weights


def expected_infos(sd: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {k: TensorInfo(str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in sd.items()}


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = torchvision.models.resnet18().state_dict()
    return save(sd, tmp_path_factory.mktemp("r18") / "resnet18.pth"), sd


def rewrite_zip(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy a zip entry by entry; `change` returns the new bytes of an entry, or None to drop it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(WeightsFileError) as info:
        read_weights(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- hand-made data.pkl: tensors that point at storages, as torch.save writes them -----------------------------


class FakeStorage:
    def __init__(self, key: str, storage_type: object, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.args: tuple[object, ...] = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (torch._utils._rebuild_tensor_v2, self.args)


class FakePickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, FakeStorage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def fake_torch_zip(path: Path, obj: object, records: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    FakePickler(buf, protocol=2).dump(obj)
    entries = {"archive/data.pkl": buf.getvalue(), "archive/version": b"3\n"}
    entries.update({f"archive/data/{key}": data for key, data in records.items()})
    return make_zip(path, entries)


# --- torch zip: what torch.save writes ---------------------------------------------------------------------------


@pytest.mark.parametrize("build", [torchvision.models.resnet18, torchvision.models.mobilenet_v3_small, bn_model])
def test_state_dict_of_models(tmp_path: Path, build: Callable[[], nn.Module]) -> None:
    model = build()
    if isinstance(model, nn.Sequential):
        model(torch.zeros(1, 3, 8, 8))  # materialise the LazyLinear
    sd = model.state_dict()
    path = save(sd, tmp_path / "model.pth")
    weights = read_weights(path)
    got = weights.state_dict()
    assert list(got.items()) == list(expected_infos(sd).items())  # same keys, same order
    assert weights.format == "torch-zip"
    assert weights.size == path.stat().st_size
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert any(k.endswith("num_batches_tracked") and v == TensorInfo("int64", ()) for k, v in got.items())


def test_dtypes_views_and_parameters(tmp_path: Path) -> None:
    big = torch.arange(100, dtype=torch.float32)
    param = nn.Parameter(torch.zeros(2, 3))
    param_with_state = nn.Parameter(torch.zeros(4))
    param_with_state.note = "python attribute"  # type: ignore[attr-defined]  # -> _rebuild_parameter_with_state
    tagged = torch.ones(3)
    tagged.tag = 1  # type: ignore[attr-defined]  # a tensor with python state -> _rebuild_from_type_v2
    sd = {
        "half": torch.zeros(2, 3, dtype=torch.float16),
        "bf16": torch.zeros(5, dtype=torch.bfloat16),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "big": big,
        "slice": big[10:20],  # shares big's storage, offset 10
        "strided": big[5::7],
        "expanded": torch.zeros(3, 1).expand(3, 4),  # stride 0
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "bool": torch.tensor([True, False]),
        "uint8": torch.zeros(3, dtype=torch.uint8),
        "int32": torch.zeros(3, dtype=torch.int32),
        "complex": torch.zeros(2, dtype=torch.complex64),
        "fp8": torch.zeros(4, dtype=torch.float8_e4m3fn),  # untyped storage + _rebuild_tensor_v3
        "uint16": torch.zeros(6, dtype=torch.uint16)[2:],
        "param": param,
        "param_with_state": param_with_state,
        "tagged": tagged,
    }
    got = read_weights(save(sd, tmp_path / "mixed.pt")).state_dict()
    assert got == expected_infos(sd)
    assert got["transposed"] == TensorInfo("float32", (4, 3))
    assert got["param"] == TensorInfo("float32", (2, 3))


def test_checkpoint(tmp_path: Path) -> None:
    model = bn_model()
    model(torch.zeros(2, 3, 8, 8))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "loss": 0.25,
        "name": "run-1",
        "raw": b"\x00\xff",
        "dtype": torch.float16,
        "device": torch.device("cuda", 0),
        "classes": {"cat", "dog"},
        "nested": {"a.b": {"w": torch.zeros(2)}},
    }
    weights = read_weights(save(checkpoint, tmp_path / "ckpt.pt"))
    assert weights.state_dict("model") == expected_infos(model.state_dict())
    tree = weights.tree
    assert (tree["epoch"], tree["loss"], tree["name"], tree["raw"]) == (3, 0.25, "run-1", b"\x00\xff")
    assert (tree["dtype"], tree["device"], tree["classes"]) == ("torch.float16", "cuda:0", {"cat", "dog"})
    optimizer_tree = tree["optimizer"]
    assert isinstance(optimizer_tree, dict)
    assert optimizer_tree["state"][0]["step"] == TensorInfo("float32", ())
    assert weights.state_dict("nested.a.b") == {"w": TensorInfo("float32", (2,))}  # the key "a.b" has a dot
    with pytest.raises(WeightsFileError, match="'epoch' holds an int, not a state dict"):
        weights.state_dict("epoch")
    with pytest.raises(WeightsFileError, match=r"top level is not a state dict.*try state_dict\('model'\)"):
        weights.state_dict()
    with pytest.raises(WeightsFileError, match="no key 'modle'.*'model'"):
        weights.state_dict("modle")
    with pytest.raises(WeightsFileError, match="not a tensor"):
        weights.state_dict("optimizer")


def test_streamed_read_matches_in_memory(
    monkeypatch: pytest.MonkeyPatch, resnet18_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    path, sd = resnet18_file
    in_memory = read_weights(path)
    monkeypatch.setattr(weightsfile, "IN_MEMORY_LIMIT", 0)  # force the chunked-hash + zipfile-on-file path
    streamed = read_weights(path)
    assert streamed == in_memory
    assert streamed.state_dict() == expected_infos(sd)


def test_deflated_zip_still_reads(tmp_path: Path) -> None:
    sd = {"w": torch.zeros(4, 4)}
    src = save(sd, tmp_path / "a.pt")
    dst = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert read_weights(dst).state_dict() == expected_infos(sd)


# --- safetensors -----------------------------------------------------------------------------------------------


def write_safetensors(path: Path, header: dict[str, Any], data: bytes, header_len: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def test_safetensors(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    sd = torchvision.models.mobilenet_v3_small().state_dict()
    sd["extra.fp8"] = torch.zeros(3, 2, dtype=torch.float8_e5m2)
    sd["extra.u16"] = torch.zeros(7, dtype=torch.uint16)
    sd["extra.bf16"] = torch.zeros(1, 2, dtype=torch.bfloat16)
    sd["extra.fp4"] = torch.zeros(4, 3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    path = tmp_path / "m.safetensors"
    st.save_file(sd, path, metadata={"format": "pt"})
    weights = read_weights(path)
    assert weights.format == "safetensors"
    assert weights.metadata == {"format": "pt"}
    assert weights.state_dict() == expected_infos(sd)
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert st.load_file(path)["extra.fp4"].shape == (4, 3)  # what torch sees for F4 ([4, 6] in the header)


def test_safetensors_without_suffix_is_detected_by_content(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "weights.bin", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
    )
    assert read_weights(path).state_dict() == {"a": TensorInfo("float32", (2,))}


@pytest.mark.parametrize(
    ("header", "data", "meaning"),
    [
        ({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, b"\0" * 20, "inconsistent: tensor 'w'"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "'w' has data_offsets [4, 0]"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "cover only 4"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            "overlaps",
        ),
        ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unknown safetensors dtype 'X9'"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape [-1]"),
        ({"w": [1, 2]}, b"", "entry 'w' is not an object"),
        ({"__metadata__": {"n": 1}}, b"", "__metadata__"),
    ],
    ids=[
        "size-mismatch",
        "past-end",
        "begin-after-end",
        "trailing-bytes",
        "overlap",
        "dtype",
        "shape",
        "entry",
        "meta",
    ],
)
def test_safetensors_bad_headers(tmp_path: Path, header: dict[str, Any], data: bytes, meaning: str) -> None:
    assert meaning in error_of(write_safetensors(tmp_path / "bad.safetensors", header, data))


def test_safetensors_header_length_bigger_than_file(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "big.safetensors", {}, b"", header_len=10_000)
    assert "truncated" in error_of(path) and "10000" in error_of(path)
    path = write_safetensors(tmp_path / "huge.safetensors", {}, b"", header_len=1 << 62)
    assert "header length" in error_of(path)


def test_safetensors_invalid_json_and_duplicates(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, "a": {}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    assert "'a' appears twice" in error_of(path)
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    assert "invalid JSON" in error_of(path)
    path.write_bytes(b"\x01\x00")
    assert "truncated" in error_of(path)


# --- hostile or broken files -------------------------------------------------------------------------------------


def test_truncated_zip(tmp_path: Path, resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    data = resnet18_file[0].read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or not a zip" in error_of(path)


@pytest.mark.parametrize("damage", ["cut", "insert"])
def test_bytes_cut_out_or_inserted(
    tmp_path: Path, resnet18_file: tuple[Path, dict[str, torch.Tensor]], damage: str
) -> None:
    data = resnet18_file[0].read_bytes()
    middle = len(data) // 2  # inside a storage: data.pkl and the directory stay intact
    damaged = data[:middle] + data[middle + 1000 :] if damage == "cut" else data[:middle] + b"x" * 1000 + data[middle:]
    path = tmp_path / "damaged.pth"
    path.write_bytes(damaged)
    assert "truncated or damaged zip" in error_of(path)


def test_storage_cut_short(tmp_path: Path) -> None:
    sd = {"a": torch.zeros(10), "b": torch.zeros(64, 16)}
    src = save(sd, tmp_path / "ok.pt")
    dst = rewrite_zip(src, tmp_path / "short.pt", lambda name, data: data[:1024] if name == "ok/data/1" else data)
    message = error_of(dst)
    assert message.startswith("truncated") and "'ok/data/1' is 1024 bytes" in message and "'b' needs 4096" in message


def test_storage_missing(tmp_path: Path) -> None:
    src = save({"a": torch.zeros(10)}, tmp_path / "ok.pt")
    dst = rewrite_zip(src, tmp_path / "gone.pt", lambda name, data: None if name == "ok/data/0" else data)
    message = error_of(dst)
    assert "'a'" in message and "missing" in message


def test_view_beyond_its_storage(tmp_path: Path) -> None:
    storage = FakeStorage("0", torch.FloatStorage, 4)
    obj = {"ok": FakeTensor(storage, 0, (2, 2), (2, 1)), "bad": FakeTensor(storage, 2, (3,), (1,))}
    path = fake_torch_zip(tmp_path / "view.pt", obj, {"0": b"\0" * 16})
    message = error_of(path)
    assert message.startswith("inconsistent: tensor 'bad'") and "needs 20 bytes" in message and "holds 16" in message


def test_pickle_calling_os_system_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = make_zip(tmp_path / "evil.pt", {"evil/data.pkl": pickle.dumps({"x": Evil()}, protocol=2)})
    message = error_of(path)
    assert "not a state dict" in message and f"{os.system.__module__}.system" in message  # posix.system
    # the same written by hand with the module name os, in protocol 0
    path = make_zip(tmp_path / "evil0.pt", {"evil0/data.pkl": f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()})
    assert "the pickle refers to os.system" in error_of(path)

    class EvilEval:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (eval, (f"open({str(marker)!r}, 'w')",))

    path = make_zip(tmp_path / "eval.pt", {"eval/data.pkl": pickle.dumps({"x": EvilEval()}, protocol=2)})
    assert "the pickle refers to builtins.eval" in error_of(path)
    assert not marker.exists()


def test_pickled_model_object(tmp_path: Path) -> None:
    message = error_of(save(nn.Linear(2, 2), tmp_path / "model.pt"))
    assert "torch.nn.modules.linear.Linear" in message and "state_dict()" in message


def test_legacy_and_plain_pickles(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    message = error_of(legacy)
    assert "old torch.save format" in message and "torch.save(obj, path)" in message
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    assert "plain pickle" in error_of(plain)


@pytest.mark.parametrize(
    ("content", "meaning"),
    [
        (b"", "empty file"),
        (bytes(range(256)) * 4, "not a torch.save zip or safetensors file"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "HDF5"),
        (b"PK\x03\x04" + b"\0" * 100, "truncated or not a zip"),
    ],
    ids=["empty", "bytes", "hdf5", "zip-header-only"],
)
def test_not_weights(tmp_path: Path, content: bytes, meaning: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    assert meaning in error_of(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    error_of(path)  # whatever the bytes look like, a WeightsFileError and nothing else


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_weights(fifo)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "read_weights blocked on a FIFO"
    assert isinstance(outcome[0], WeightsFileError) and "FIFO" in str(outcome[0])


def test_directory_and_missing_file(tmp_path: Path) -> None:
    assert "directory" in error_of(tmp_path)
    assert "cannot open" in error_of(tmp_path / "nope.pt")


def test_max_bytes(resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    with pytest.raises(WeightsFileError, match="max_bytes"):
        read_weights(resnet18_file[0], max_bytes=1000)


def test_torchscript_archive(tmp_path: Path) -> None:
    entries = {"m/data.pkl": pickle.dumps({}), "m/code/__torch__/m.py": b"", "m/constants.pkl": b""}
    assert "TorchScript" in error_of(make_zip(tmp_path / "m.pt", entries))


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_unsupported_tensor_kinds(tmp_path: Path) -> None:
    quantized = torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8)
    assert "quantized" in error_of(save({"q": quantized}, tmp_path / "q.pt"))
    assert "sparse" in error_of(save({"s": torch.zeros(3, 3).to_sparse()}, tmp_path / "s.pt"))
    assert "not a dict" in error_of(save(torch.zeros(3), tmp_path / "t.pt"))


def test_nesting_and_cycles(tmp_path: Path) -> None:
    deep: list[object] = []
    for _ in range(100):
        deep = [deep]
    assert "nested deeper than 64" in error_of(save({"deep": deep}, tmp_path / "deep.pt"))
    cycle: list[object] = []
    cycle.append(cycle)
    assert "nested deeper than 64" in error_of(save({"cycle": cycle}, tmp_path / "cycle.pt"))


def test_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared: list[object] = [1]
    for _ in range(40):  # 2**40 paths through 41 objects: refused, not expanded
        shared = [shared, shared]
    monkeypatch.setattr(weightsfile, "MAX_NODES", 10_000)
    assert "more than 10000 objects" in error_of(save({"dag": shared}, tmp_path / "dag.pt"))
    many = save({f"t{i}": torch.zeros(1) for i in range(6)}, tmp_path / "many.pt")
    monkeypatch.setattr(weightsfile, "MAX_TENSORS", 5)
    assert "more than 5 tensors" in error_of(many)
    monkeypatch.setattr(weightsfile, "MAX_PICKLE", 100)
    assert "data.pkl is" in error_of(save({"w": torch.zeros(1)}, tmp_path / "pkl.pt"))
    monkeypatch.setattr(weightsfile, "MAX_ZIP_ENTRIES", 3)
    assert "more than 3 entries" in error_of(many)


def test_corrupt_data_pkl(tmp_path: Path) -> None:
    src = save({"w": torch.zeros(2)}, tmp_path / "ok.pt")
    dst = rewrite_zip(src, tmp_path / "bad.pt", lambda name, data: data[:40] if name.endswith("data.pkl") else data)
    assert "corrupt data.pkl" in error_of(dst)
    bad_pid = fake_torch_zip(tmp_path / "pid.pt", {"w": FakeTensor(FakeStorage("0", "nope", 1), 0, (1,), (1,))}, {})
    assert "corrupt data.pkl" in error_of(bad_pid)
    opcode = make_zip(tmp_path / "op.pt", {"op/data.pkl": b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"."})
    assert "pickle opcode BYTEARRAY8" in error_of(opcode)  # would allocate 1 TB before reading in the C unpickler


# --- without torch, and fast ---------------------------------------------------------------------------------------


def test_reads_without_torch_or_numpy(tmp_path: Path, resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, sd = resnet18_file
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    script = textwrap.dedent(
        f"""
        import json, sys, time
        started = time.perf_counter()
        from cnnspec.util.weightsfile import read_weights
        imported = time.perf_counter()
        weights = read_weights({str(path)!r})
        done = time.perf_counter()
        print(json.dumps({{
            "import_s": imported - started, "read_s": done - imported, "size": weights.size,
            "tensors": len(weights.state_dict()), "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules,
        }}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    print(
        f"\nresnet18 ({report['size'] / 1e6:.1f} MB, {report['tensors']} tensors): "
        f"read_weights {report['read_s'] * 1000:.0f} ms, import {report['import_s'] * 1000:.0f} ms"
    )
    assert report["tensors"] == len(sd)
    assert not report["torch"] and not report["numpy"]


def test_weights_file_is_frozen(resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    weights = read_weights(str(resnet18_file[0]))
    assert isinstance(weights, WeightsFile) and weights.path == resnet18_file[0]
    with pytest.raises(AttributeError):
        weights.size = 0  # type: ignore[misc]


def test_zip64_end_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = {"w": torch.zeros(3)}
    src = save(sd, tmp_path / "src.pt")
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # makes zipfile write the zip64 end records
        dst = rewrite_zip(src, tmp_path / "z64.pt", lambda name, data: data)
    data = bytearray(dst.read_bytes())
    assert data[-22:-18] == b"PK\x05\x06" and b"PK\x06\x06" in data
    data[-10:-6] = b"\xff\xff\xff\xff"  # central directory size: "see the zip64 record", as for a > 4 GB one
    dst.write_bytes(bytes(data))
    assert read_weights(dst).state_dict() == expected_infos(sd)
    monkeypatch.setattr(weightsfile, "MAX_CENTRAL_DIRECTORY", 10)
    assert "the zip directory is" in error_of(dst)
