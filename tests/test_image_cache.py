"""The decoded image cache and streamed batches: built once, rebuilt when the folder changes, never
used half-written; streamed training equals resident training; unreadable pictures are listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnspec.data import cache as cache_mod
from cnnspec.data import cache_build
from cnnspec.data.cache import Listing, cache_root, find_cache, open_cache
from cnnspec.data.stream import StreamedImages, batches
from cnnspec.errors import DataError
from cnnspec.plugins import image_folder
from cnnspec.plugins.image_folder import ImageFolderParams, listing


def make_folder(root: Path, counts: dict[str, dict[str, int]], size: tuple[int, int] = (12, 10)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in counts.items():
        for k, (cls, n) in enumerate(classes.items()):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                a[..., k % 3] = 40 * k  # each class a little different
                Image.fromarray(a).save(d / f"img{i}.png")


def folder_listing(root: Path) -> Listing:
    return listing(ImageFolderParams(size=(8, 8)), str(root))


def test_built_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    first = open_cache(folder_listing(tmp_path), (8, 8), 3, quiet=True)
    assert first.built and first.splits["train"].pixels.shape == (5, 3, 8, 8)
    assert first.splits["train"].labels.tolist() == [0, 0, 0, 1, 1] and first.classes == ["a", "b"]
    assert first.folder.parent == cache_root() and (first.folder / "manifest.json").is_file()

    def no_decoding(*a: object) -> None:
        raise AssertionError("a cached folder was decoded again")

    monkeypatch.setattr(cache_build, "build", no_decoding)
    again = open_cache(folder_listing(tmp_path), (8, 8), 3, quiet=True)
    assert not again.built and again.folder == first.folder
    assert np.array_equal(np.asarray(again.splits["train"].pixels), np.asarray(first.splits["train"].pixels))


def test_cached_pixels_are_what_the_in_memory_reader_gave(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision import transforms

    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}}, size=(31, 17))
    for channels in (1, 3):
        s = image_folder.load_image_folder(str(tmp_path), "train", "test", (9, 12), channels)
        steps = [transforms.Resize((9, 12))] + ([transforms.Grayscale(1)] if channels == 1 else [])
        with Image.open(tmp_path / "train" / "a" / "img1.png") as img:
            want = transforms.ToTensor()(transforms.Compose(steps)(img.convert("RGB")))
        assert torch.allclose(s.train_x[1], want, atol=1e-6)


def test_changed_folder_rebuilds(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    first = open_cache(folder_listing(tmp_path), (8, 8), 3, quiet=True)
    picture = tmp_path / "train" / "a" / "img0.png"
    os.utime(picture, ns=(picture.stat().st_atime_ns, picture.stat().st_mtime_ns + 10**9))  # touched
    touched = open_cache(folder_listing(tmp_path), (8, 8), 3, quiet=True)
    assert touched.built and touched.folder != first.folder
    make_folder(tmp_path, {"train": {"c": 1}, "test": {"c": 1}})  # a new class
    grown = open_cache(folder_listing(tmp_path), (8, 8), 3, quiet=True)
    assert grown.built and grown.classes == ["a", "b", "c"] and len(grown.splits["train"].labels) == 5
    other_size = open_cache(folder_listing(tmp_path), (6, 6), 3, quiet=True)
    assert other_size.built and other_size.shape == (3, 6, 6)


def test_half_written_cache_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "imgs", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    found = folder_listing(tmp_path / "imgs")
    calls = 0

    def interrupted(task: object) -> object:  # Ctrl-C after the first chunk
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return real(task)  # type: ignore[arg-type]

    real = cache_build.decode_chunk
    monkeypatch.setattr(cache_build, "decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_cache(found, (8, 8), 3, quiet=True)
    key = cache_mod.cache_key(found, (8, 8), 3)
    # only the partial build (kept to be resumed) and its lock: nothing under the key's own name
    assert find_cache(found, (8, 8), 3) is None
    assert sorted(p.name for p in cache_root().iterdir()) == [f"{key}.lock", f"{key}.partial"]
    monkeypatch.setattr(cache_build, "decode_chunk", real)

    folder = cache_root() / key  # a folder without its manifest
    folder.mkdir(parents=True)
    (folder / "train.u8").write_bytes(b"\0" * 10)
    assert find_cache(found, (8, 8), 3) is None
    built = open_cache(found, (8, 8), 3, quiet=True)  # finished from the partial build, put in its place
    assert built.built and built.folder == folder and sorted(p.name for p in cache_root().iterdir()) == [key]
    (built.folder / "train.u8").write_bytes(b"\0" * 10)  # cut short on disk: sizes disagree
    assert find_cache(found, (8, 8), 3) is None
    stale = cache_root() / "feed.tmp-999999999"  # an older version's build whose process is gone
    stale.mkdir()
    assert open_cache(found, (8, 8), 3, quiet=True).built and not stale.exists()
    assert find_cache(found, (8, 8), 3) is not None


def _counting(monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> list[int]:
    """Count the pictures decode_chunk is given; raise KeyboardInterrupt after ``stop_after`` chunks."""
    from cnnspec.data.decode import decode_chunk as real

    decoded: list[int] = []

    def counted(task: tuple) -> object:  # type: ignore[type-arg]
        if stop_after is not None and len(decoded) >= stop_after:
            raise KeyboardInterrupt
        decoded.append(len(task[2]))
        return real(task)

    monkeypatch.setattr(cache_build, "decode_chunk", counted)
    return decoded


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "imgs", {"train": {"a": 60, "b": 50}, "test": {"a": 20, "b": 21}}, size=(9, 7))
    (tmp_path / "imgs" / "train" / "a" / "broken.png").write_bytes(b"not a png")  # compacted away at the end
    found = folder_listing(tmp_path / "imgs")
    monkeypatch.setattr(cache_build, "CHUNK", 16)
    whole = open_cache(found, (8, 8), 3, root=tmp_path / "whole", quiet=True)  # built in one go

    decoded = _counting(monkeypatch, stop_after=4)  # Ctrl-C as the fifth chunk starts
    with pytest.raises(KeyboardInterrupt):
        open_cache(found, (8, 8), 3, quiet=True)
    assert sum(decoded) == 64 and find_cache(found, (8, 8), 3) is None  # the partial build is never opened
    decoded = _counting(monkeypatch)
    resumed = open_cache(found, (8, 8), 3, quiet=True)
    assert resumed.built and sum(decoded) == 152 - 64  # only the pictures not decoded before
    assert _files(resumed.folder) == _files(whole.folder)  # byte for byte, manifest included
    assert [p for p, _ in resumed.unreadable] == [str(tmp_path / "imgs" / "train" / "a" / "broken.png")]


def test_a_partial_build_of_a_changed_folder_is_discarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "imgs", {"train": {"a": 40, "b": 30}, "test": {"a": 5, "b": 5}})
    monkeypatch.setattr(cache_build, "CHUNK", 16)
    _counting(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        open_cache(folder_listing(tmp_path / "imgs"), (8, 8), 3, quiet=True)
    old = cache_mod.cache_key(folder_listing(tmp_path / "imgs"), (8, 8), 3)
    assert (cache_root() / f"{old}.partial").is_dir()
    make_folder(tmp_path / "imgs", {"train": {"c": 2}, "test": {"c": 1}})  # the folder changed
    decoded = _counting(monkeypatch)
    built = open_cache(folder_listing(tmp_path / "imgs"), (8, 8), 3, quiet=True)
    assert sum(decoded) == 83 and built.folder.name != old  # all of it, under the new key
    # the old partial removed; its lock file stays (unlinked, a waiter on it and a newcomer could both build)
    assert sorted(p.name for p in cache_root().iterdir()) == sorted([f"{old}.lock", built.folder.name])


INTERRUPTED_BUILD = """
import sys, time
from cnnspec.data import cache_build, decode
from cnnspec.data.cache import open_cache
from cnnspec.plugins.image_folder import ImageFolderParams, listing

real = decode.decode
def slow(*a):
    time.sleep(0.01)
    return real(*a)

decode.decode = slow  # the forked workers inherit it
cache_build.CHUNK, cache_build.IN_PROCESS_BELOW, cache_build.SAVE_EVERY = 8, 0, 0.0
open_cache(listing(ImageFolderParams(size=(8, 8)), sys.argv[1]), (8, 8), 3, root=sys.argv[2], workers=2)
"""


def test_ctrl_c_during_a_pooled_build_keeps_what_was_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """SIGINT to a process building with two workers: the chunks it received are on disk and recorded;
    the next build decodes only the rest, and its cache equals one built in one go."""
    import signal
    import subprocess
    import sys
    import time

    make_folder(tmp_path / "imgs", {"train": {"a": 150, "b": 150}, "test": {"a": 10, "b": 10}})
    found = folder_listing(tmp_path / "imgs")
    partial = tmp_path / "c" / f"{cache_mod.cache_key(found, (8, 8), 3)}.partial"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_BUILD, str(tmp_path / "imgs"), str(tmp_path / "c")],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until a few chunks are recorded
            try:
                if len(json.loads((partial / "progress.json").read_text())["done"]) >= 3:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "the next run continues from there" in err
    done = json.loads((partial / "progress.json").read_text())["done"]
    kept = sum(min(8, (150 * 2 if cid.startswith("train") else 20) - int(cid.split(":")[1])) for cid in done)
    assert 0 < kept < 320
    monkeypatch.setattr(cache_build, "CHUNK", 8)
    decoded = _counting(monkeypatch)
    resumed = open_cache(found, (8, 8), 3, root=tmp_path / "c", workers=1, quiet=True)
    assert sum(decoded) == 320 - kept
    whole = open_cache(found, (8, 8), 3, root=tmp_path / "whole", workers=1, quiet=True)
    assert _files(resumed.folder) == _files(whole.folder)


def test_worker_processes_decode_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path, {"train": {"a": 70, "b": 70}, "test": {"a": 1, "b": 1}})
    (tmp_path / "train" / "b" / "zz.png").write_bytes(b"broken")
    alone = open_cache(folder_listing(tmp_path), (8, 8), 3, root=tmp_path / "c1", workers=1, quiet=True)
    monkeypatch.setattr(cache_build, "IN_PROCESS_BELOW", 0)
    monkeypatch.setattr(cache_build, "CHUNK", 16)
    pooled = open_cache(folder_listing(tmp_path), (8, 8), 3, root=tmp_path / "c2", workers=2, quiet=True)
    for split in ("train", "test"):
        assert np.array_equal(np.asarray(alone.splits[split].pixels), np.asarray(pooled.splits[split].pixels))
        assert np.array_equal(alone.splits[split].labels, pooled.splits[split].labels)
    assert [p for p, _ in pooled.unreadable] == [str(tmp_path / "train" / "b" / "zz.png")]
    assert len(pooled.splits["train"].labels) == 140  # the broken one left out, the rows compacted


def test_unreadable_and_hostile_pictures_are_listed(tmp_path: Path) -> None:
    from PIL import Image

    make_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png")
    Image.new("1", (12_000, 12_000)).save(tmp_path / "train" / "b" / "bomb.png")  # 144 megapixels
    png = (tmp_path / "train" / "a" / "img0.png").read_bytes()
    (tmp_path / "train" / "a" / "truncated.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(DataError, match=r"3 of 9 images cannot be read \(max_unreadable is 0\)") as e:
        image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 3)
    assert "broken.png" in str(e.value) and "truncated.png" in str(e.value)
    assert "bomb.png (144000000 x" not in str(e.value) and "decompression bomb" in str(e.value)
    s = image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 3, max_unreadable=3)
    assert len(s.train_x) == 4 and s.train_y.tolist() == [0, 0, 1, 1]


def test_csv_and_held_out_sources(tmp_path: Path) -> None:
    make_folder(tmp_path, {"all": {"cat": 5, "dog": 5}})
    rows = [f"all/{c}/img{i}.png,{c}" for c in ("cat", "dog") for i in range(5)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    p = ImageFolderParams(size=(8, 8), csv="list.csv", test_fraction=0.2)
    found = listing(p, str(tmp_path))
    assert found.classes == ["cat", "dog"]
    assert [len(found.splits[s]) for s in ("train", "test")] == [8, 2]
    assert sorted(label for _, label in found.splits["test"]) == [0, 1]  # every class held out
    assert listing(p, str(tmp_path)).splits == found.splits  # the same pictures every time
    folder = listing(ImageFolderParams(size=(8, 8), train_dir="all", test_fraction=0.2), str(tmp_path))
    assert sorted(found.splits["test"]) == sorted(folder.splits["test"])
    with pytest.raises(DataError, match="needs a test split"):
        listing(ImageFolderParams(size=(8, 8), csv="list.csv"), str(tmp_path))
    (tmp_path / "bad.csv").write_text("a.png,cat,extra\n")
    with pytest.raises(DataError, match=r"bad.csv:1: expected 'path,label'"):
        listing(ImageFolderParams(size=(8, 8), csv="bad.csv", test_fraction=0.5), str(tmp_path))


def test_streamed_batches_equal_resident_ones(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": {"a": 6, "b": 5}, "test": {"a": 1, "b": 1}})
    s = image_folder.load_image_folder(str(tmp_path), "train", "test", (8, 8), 3, stream=True)
    assert isinstance(s.train_x, StreamedImages)
    resident = s.train_x.resident()
    m, sd = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25])
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    norm = (resident - m.view(1, -1, 1, 1)) / sd.view(1, -1, 1, 1)
    got = list(batches(s.train_x.normalised(m, sd), s.train_y, order, 4, 1, 2))
    want = list(batches(norm, s.train_y, order, 4, 1, 2))
    assert len(got) == len(want) == 1
    assert torch.equal(got[0][0], want[0][0]) and torch.equal(got[0][1], want[0][1])
    sub = s.train_x.subset(torch.tensor([5, 1]))
    assert torch.equal(sub[0:2], resident[[5, 1]]) and len(sub) == 2
    from cnnspec.data.splits import channel_stats

    for a, b in zip(s.train_x.channel_stats(chunk=3), channel_stats(resident), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


SPEC = """\
name: imgs
input: [3, 8, 8]
layers:
  - {{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}}
  - batchnorm2d
  - relu
  - flatten
  - {{type: linear, out_features: 2}}
data:
  dataset: {{type: image_folder, size: [8, 8], in_memory: {in_memory}}}
  root: {root}
  batch_size: 4
  val_split: 0.2
  normalize: {{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
  augment: [horizontal_flip]
train: {{epochs: 2, seed: 5, optimizer: {{type: sgd, lr: 0.1, momentum: 0.9}}}}
"""


def test_streamed_training_equals_resident_training(tmp_path: Path, cli, monkeypatch) -> None:
    make_folder(tmp_path / "imgs", {"train": {"a": 9, "b": 8}, "test": {"a": 2, "b": 3}})
    rows = {}
    for in_memory in ("true", "false"):
        spec = tmp_path / f"{in_memory}.yaml"
        spec.write_text(SPEC.format(in_memory=in_memory, root=tmp_path / "imgs"))
        res = cli("run", str(spec), "--output", str(tmp_path / f"run-{in_memory}"), "--quiet")
        assert res.code == 0, res.text
        lines = (tmp_path / f"run-{in_memory}" / "metrics.jsonl").read_text().splitlines()
        rows[in_memory] = [{k: v for k, v in json.loads(ln).items() if "second" not in k and k != "time"}
                           for ln in lines]
    assert rows["true"] == rows["false"] and len(rows["true"]) == 2


def test_large_sets_stream_and_small_ones_stay_resident(tmp_path: Path) -> None:
    from cnnspec.data.splits import prepare_data
    from cnnspec.spec.load import load_spec

    make_folder(tmp_path / "imgs", {"train": {"a": 4, "b": 4}, "test": {"a": 1, "b": 1}})
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(SPEC.format(in_memory="null", root=tmp_path / "imgs"))
    spec = load_spec(str(spec_file))
    cpu = torch.device("cpu")
    assert not prepare_data(spec, cpu, budget=10**9).streamed  # 10 images of 768 B as float32
    streamed = prepare_data(spec, cpu, budget=1000)
    assert streamed.streamed and streamed.resident_bytes == 0 and streamed.source
    assert tuple(streamed.train[0].shape) == (6, 3, 8, 8) and tuple(streamed.val[0].shape) == (2, 3, 8, 8)


PROBE = """
import sys, torch
from pathlib import Path
from cnnspec.plugins import image_folder
from cnnspec.data.stream import batches

def anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

s = image_folder.load_image_folder(sys.argv[1], "train", "test", (128, 128), 3, stream=True)
order = torch.randperm(len(s.train_x))
before, peak = anon(), 0
for xb, _ in batches(s.train_x, s.train_y, order, 32, 0, len(order) // 32):
    peak = max(peak, anon() - before)
print(s.train_x.float_bytes, peak)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_streaming_keeps_anonymous_memory_to_a_few_batches(tmp_path: Path) -> None:
    """600 pictures of 3 x 128 x 128 are 118 MB as float32 (29 MB as uint8, the page cache's):
    a whole epoch read from the stream, 32 at a time (6 MB a batch), adds a few batches to the
    process's anonymous memory (a fresh process, so no other test's memory is counted; glibc's
    mmap threshold fixed, so a freed batch is returned and RssAnon shows what is held: about 13 MB
    here, where glibc's own tuning keeps up to 50 MB of freed batches for reuse)."""
    import subprocess
    import sys

    make_folder(tmp_path, {"train": {"a": 300, "b": 300}, "test": {"a": 1, "b": 1}}, size=(128, 128))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}).stdout.split()
    float_bytes, peak = int(out[0]), int(out[1])
    assert float_bytes > 110e6
    assert peak < 40e6, f"RssAnon grew by {peak / 1e6:.0f} MB while streaming"  # not the 118 MB set


def test_data_command(tmp_path: Path, cli) -> None:
    from PIL import Image

    make_folder(tmp_path / "imgs", {"train": {"a": 9, "b": 3}, "test": {"a": 2, "b": 3}}, size=(20, 16))
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(in_memory="null", root=tmp_path / "imgs"))
    res = cli("data", str(spec), "--format", "json", "--sheet", str(tmp_path / "sheet.png"))
    assert res.code == 0, res.text
    info = json.loads(res.out)
    assert info["classes"] == ["a", "b"] and info["sample_shape"] == [3, 8, 8]
    assert sum(info["counts"]["train"]) + sum(info["counts"]["val"]) == 12 and info["counts"]["test"] == [2, 3]
    assert info["sizes"] == {"20 x 16": 17} and info["modes"] == {"RGB": 17} and info["built"]
    with Image.open(tmp_path / "sheet.png") as sheet:  # two rows (classes) of up to six 8 x 8 pictures
        assert sheet.size == (2 + 6 * 10, 2 + 2 * 10)
    res = cli("data", str(spec))
    assert res.code == 0 and "reused" in res.out and "20 x 16: 17" in res.out
    assert "total" in res.out and "largest / smallest in train" in res.out
