"""MsgpackDataset's index: datadings sidecars (checked against the real datadings package), our own index."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
from datadings.index import load_keys, load_offsets
from datadings.reader import MsgpackReader
from datadings.writer import FileWriter

from crumpets_lightning.data.sources import MsgpackDataset, write_msgpack
from crumpets_lightning.data.sources import index as index_module
from crumpets_lightning.data.transport.codec import pack_sample, unpack_sample


def samples(n: int, start: int = 0) -> list[dict]:
    return [{"key": f"img{i:04d}", "image": bytes([i % 256]) * (3 + i % 7), "label": i % 5} for i in range(start, n)]


def write_with_datadings(path: Path, items: list[dict]) -> None:
    with FileWriter(path, overwrite=True, disable=True) as writer:
        for sample in items:
            writer.write(sample)


def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the file was scanned although an index exists")

    monkeypatch.setattr(index_module, "scan_offsets", refuse)


def test_datadings_file_opens_from_its_offsets_sidecar_without_a_scan(tmp_path, monkeypatch):
    path = tmp_path / "dd.msgpack"
    items = samples(40)
    write_with_datadings(path, items)
    # datadings' own description of its sidecars: n + 1 big-endian u64 offsets, first 0, last the file size
    raw = np.fromfile(f"{path}.offsets", dtype=">u8")
    assert len(raw) == 41 and raw[0] == 0 and raw[-1] == path.stat().st_size
    assert msgpack.unpackb(Path(f"{path}.keys").read_bytes()) == [s["key"] for s in items]
    no_scan(monkeypatch)
    dataset = MsgpackDataset(path)
    assert len(dataset) == 40 and "datadings" in dataset.sample_index.origin
    np.testing.assert_array_equal(dataset.sample_index.offsets, load_offsets(path))
    for i in (0, 17, 39):
        got = unpack_sample(dataset[i])
        assert got["key"] == items[i]["key"] and got["image"] == items[i]["image"] and got["label"] == items[i]["label"]
    assert [dataset.sample_key(i) for i in (0, 39, -1)] == ["img0000", "img0039", "img0039"]
    assert not Path(f"{path}.crumpets-index").exists()
    assert isinstance(dataset.sample_index.offsets, np.memmap)


def test_datadings_file_without_sidecars_is_scanned_once_then_opens_from_our_index(tmp_path, monkeypatch):
    path = tmp_path / "dd.msgpack"
    write_with_datadings(path, samples(25))
    for suffix in (".offsets", ".keys"):
        os.unlink(f"{path}{suffix}")
    first = MsgpackDataset(path)
    assert len(first) == 25 and Path(f"{path}.crumpets-index").is_file()
    assert first.sample_key(3) == 3  # no keys sidecar: the index names the sample
    no_scan(monkeypatch)
    second = MsgpackDataset(path)
    assert second.sample_index.origin.startswith("index file")
    np.testing.assert_array_equal(second.sample_index.offsets, first.sample_index.offsets)
    assert [unpack_sample(second[i])["key"] for i in (0, 24)] == ["img0000", "img0024"]


def test_datadings_reads_what_write_msgpack_writes(tmp_path):
    path = tmp_path / "ours.msgpack"
    items = samples(12)
    assert write_msgpack(items, path) == 12
    np.testing.assert_array_equal(load_offsets(path), np.asarray(MsgpackDataset(path).sample_index.offsets))
    assert load_keys(path) == [s["key"] for s in items]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # datadings warns that its optional hash and filter files are absent
        reader = MsgpackReader(path)
    assert len(reader) == 12
    got = reader.get(7)
    assert got["key"] == "img0007" and got["image"] == items[7]["image"]


def test_write_msgpack_writes_keys_only_when_every_sample_has_one(tmp_path):
    path = tmp_path / "mixed.msgpack"
    write_msgpack([{"key": "a", "x": 1}, pack_sample({"key": "b"}), {"x": 3}], path)
    assert not Path(f"{path}.keys").exists() and Path(f"{path}.offsets").exists()
    assert MsgpackDataset(path).sample_key(1) == 1
    write_msgpack([{"key": "a", "x": 1}, pack_sample({"y": [1, 2], "key": "b"})], path)
    assert MsgpackDataset(path).sample_key(1) == "b"


def test_stale_own_index_is_rebuilt_when_size_or_mtime_changes(tmp_path):
    path = tmp_path / "plain.msgpack"
    a = [pack_sample({"key": "a", "pad": b"x" * 10}), pack_sample({"key": "b", "pad": b"x" * 10})]
    path.write_bytes(b"".join(a))
    assert len(MsgpackDataset(path)) == 2
    # appended: the size changes
    path.write_bytes(b"".join(a) + pack_sample({"key": "c"}))
    dataset = MsgpackDataset(path)
    assert [unpack_sample(dataset[i])["key"] for i in range(len(dataset))] == ["a", "b", "c"]
    # same size, other sample boundaries: only the modification time tells
    size = path.stat().st_size
    b = [pack_sample({"key": "d", "pad": b"y" * 2})]
    rest = size - len(b[0])
    filler = pack_sample({"key": "e", "pad": b""})
    filler = pack_sample({"key": "e", "pad": b"z" * (rest - len(filler))})
    path.write_bytes(b[0] + filler)
    assert path.stat().st_size == size
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    dataset = MsgpackDataset(path)
    assert [unpack_sample(dataset[i])["key"] for i in range(len(dataset))] == ["d", "e"]


def test_stale_datadings_offsets_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "dd.msgpack"
    write_with_datadings(path, samples(5))
    with open(path, "ab") as f:
        f.write(pack_sample({"key": "late"}))
    with pytest.warns(UserWarning, match=r"stale index .*dd\.msgpack\.offsets.*last offset"):
        dataset = MsgpackDataset(path)
    assert len(dataset) == 6 and unpack_sample(dataset[5])["key"] == "late"


def test_index_goes_to_the_cache_folder_when_the_data_folder_is_read_only(tmp_path, monkeypatch, private_cache):
    path = tmp_path / "ro" / "plain.msgpack"
    path.parent.mkdir()
    path.write_bytes(b"".join(pack_sample({"i": i}) for i in range(9)))
    write = index_module.write_own_index

    def read_only_data_folder(target: Path, *args: object) -> None:
        if target.parent == path.parent:
            raise PermissionError(13, "Permission denied", str(target))
        write(target, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(index_module, "write_own_index", read_only_data_folder)
    assert len(MsgpackDataset(path)) == 9
    assert not Path(f"{path}.crumpets-index").exists()
    cached = list((private_cache / "index").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("plain.msgpack.crumpets-index")
    no_scan(monkeypatch)
    reopened = MsgpackDataset(path)
    assert str(cached[0]) in reopened.sample_index.origin and len(reopened) == 9


def test_index_is_mapped_and_pickles_as_a_map_not_a_copy(tmp_path):
    path = tmp_path / "x.msgpack"
    write_msgpack(samples(3000), path)
    dataset = pickle.loads(pickle.dumps(MsgpackDataset(path)))
    assert isinstance(dataset.sample_index.offsets, np.memmap)
    assert len(pickle.dumps(dataset)) < 2000  # the 3001 offsets (24 kB) are mapped again, not copied
    assert unpack_sample(dataset[2999])["key"] == "img2999"


def test_corrupt_sidecar_length_falls_back_to_a_scan(tmp_path):
    path = tmp_path / "x.msgpack"
    write_msgpack(samples(4), path)
    Path(f"{path}.offsets").write_bytes(b"\x00" * 13)
    with pytest.warns(UserWarning, match="stale index"):
        assert len(MsgpackDataset(path)) == 4
