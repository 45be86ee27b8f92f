"""check_source / open_source: sources recognised by their content when given, not at the first batch."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from crumpets_lightning.data.sources import (
    ImageFolderDataset,
    MsgpackDataset,
    ShardedDataset,
    check_source,
    open_source,
    write_msgpack,
)
from crumpets_lightning.data.sources import image_folder as image_folder_module
from crumpets_lightning.data.sources import index as index_module
from crumpets_lightning.data.transport.codec import pack_sample


def test_a_text_file_is_refused_naming_the_file_and_what_was_expected(tmp_path):
    text = tmp_path / "labels.txt"
    text.write_text("cat\ndog\n" * 16)
    for call in (check_source, open_source):
        with pytest.raises(ValueError, match=r"labels\.txt.*not a msgpack file of samples.*0x63.*expected a msgpack"):
            call(str(text))
    with pytest.raises(ValueError, match=r"Shard .*labels\.txt"):
        check_source([text])


def test_recognised_sources(tmp_path):
    path = tmp_path / "a.msgpack"
    write_msgpack([{"x": 1}], path)
    raw = tmp_path / "raw.msgpack"
    raw.write_bytes(pack_sample({"x": 2}) + pack_sample({"x": 3}))  # no sidecar: recognised by its first byte
    empty = tmp_path / "empty.msgpack"
    empty.write_bytes(b"")
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "cat" / "1.png").write_bytes(b"png")
    for source in (path, str(raw), empty, tmp_path / "folder", str(tmp_path / "*.msgpack"), [path, raw], [{"x": 1}]):
        check_source(source)
    assert isinstance(open_source(path), MsgpackDataset)
    assert isinstance(open_source(tmp_path / "folder"), ImageFolderDataset)
    assert len(open_source(empty)) == 0
    glob_source = open_source(str(tmp_path / "*.msgpack"))
    assert isinstance(glob_source, ShardedDataset) and len(glob_source) == 3
    samples = [b"\x81\xa1x\x01"]
    assert open_source(samples) is samples


def test_mistakes_name_the_source_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing_here.*does not exist.*expected a msgpack file"):
        check_source(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match=r"train-\*\.msgpack.*matches no files"):
        check_source(str(tmp_path / "train-*.msgpack"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.msgpack").write_bytes(pack_sample({"x": 1}))
    with pytest.raises(ValueError, match=r"without class folders.*flat/\*\.msgpack"):
        check_source(tmp_path / "flat")
    with pytest.raises(TypeError, match="mixes paths with dict items"):
        check_source([str(tmp_path / "flat" / "a.msgpack"), {"x": 1}])
    with pytest.raises(TypeError, match="got int"):
        check_source(42)
    with pytest.raises(ValueError, match=r"protocol 'nosuchproto'"):
        check_source("nosuchproto://bucket/x.msgpack")
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "cat" / "1.png").write_bytes(b"png")
    with pytest.raises(ValueError, match="not to the image folder"):
        open_source(tmp_path / "folder", shuffle_window=8)
    with pytest.raises(ValueError, match="not to a list of samples"):
        open_source([{"x": 1}], shuffle_window=8)


def test_check_source_does_not_scan_a_file_without_an_index(tmp_path, monkeypatch):
    path = tmp_path / "big.msgpack"
    write_msgpack(({"i": i, "pad": b"p" * 100} for i in range(2_000)), path)
    os.unlink(f"{path}.offsets")  # without an index, opening scans; checking must not

    def refuse(*args: object) -> None:
        raise AssertionError("check_source scanned the file")

    monkeypatch.setattr(index_module, "scan_offsets", refuse)
    check_source(path)
    check_source([path, path])
    with pytest.raises(AssertionError, match="scanned"):
        open_source(path)


def test_image_folder_keys_order_and_nested_folders(tmp_path):
    for relative in ("b/2.jpg", "b/1.PNG", "b/sub/0.jpg", "a/z.jpeg", "a/notes.txt", "a/deeper/x/y.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(relative.encode())
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes == ["a", "b"]
    keys = [dataset.sample_key(i) for i in range(len(dataset))]
    assert keys == ["a/z.jpeg", "a/deeper/x/y.png", "b/1.PNG", "b/2.jpg", "b/sub/0.jpg"]  # files, then subfolders
    assert dataset[3] == {"image": b"b/2.jpg", "label": 1, "key": "b/2.jpg"}


def test_image_folder_listing_is_cached_and_relisted_when_a_folder_changes(tmp_path, monkeypatch, private_cache):
    root = tmp_path / "photos"
    for relative in ("cat/1.jpg", "cat/old/2.jpg", "dog/3.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    monkeypatch.setattr(image_folder_module, "LISTING_CACHE_MIN_FILES", 0)
    ImageFolderDataset(root)
    assert not (private_cache / "folders").exists()  # folders modified just now: no listing kept
    for folder in (root, root / "cat", root / "cat" / "old", root / "dog"):
        os.utime(folder, ns=(0, time.time_ns() - 60_000_000_000))  # settled a minute ago
    first = ImageFolderDataset(root)
    assert len(list((private_cache / "folders").iterdir())) == 1
    real_scandir = os.scandir
    scans: list[str] = []

    def counting_scandir(path: Any) -> Any:
        scans.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(image_folder_module.os, "scandir", counting_scandir)
    again = ImageFolderDataset(root)
    assert scans == [] and again.files == first.files and again.classes == ["cat", "dog"]
    (root / "cat" / "old" / "4.jpg").write_bytes(b"y")  # only the nested folder changes
    changed = ImageFolderDataset(root)
    assert scans and [changed.sample_key(i) for i in range(len(changed))] == [
        "cat/1.jpg",
        "cat/old/2.jpg",
        "cat/old/4.jpg",
        "dog/3.png",
    ]
    scans.clear()
    (root / "bird").mkdir()
    (root / "bird" / "5.jpg").write_bytes(b"z")
    assert ImageFolderDataset(root).classes == ["bird", "cat", "dog"] and scans
    scans.clear()
    assert len(ImageFolderDataset(root, cache_listing=False)) == 5 and scans
