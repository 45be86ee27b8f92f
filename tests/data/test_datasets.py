"""Datasets: msgpack files, image folders, write_msgpack round trips, open_source; and the codec."""

from __future__ import annotations

import os
import pickle

import msgpack
import msgpack_numpy
import numpy as np
import pytest

from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.sources import ImageFolderDataset, MsgpackDataset, open_source, write_msgpack
from crumpets_lightning.data.transport.codec import pack_sample, unpack_sample
from tests.data._helpers import DecodeWorker, collect, concat, photo_crops


def test_write_then_read_msgpack_round_trip(tmp_path):
    samples = [
        {"image": bytes([i]) * (10 + i), "label": i, "key": f"k{i}", "arr": np.arange(i, dtype=np.int16)}
        for i in range(7)
    ]
    seen = []
    path = tmp_path / "data.msgpack"
    assert write_msgpack(samples, path, progress=seen.append) == 7
    assert seen == list(range(1, 8))
    # the file and its datadings index (offsets, keys); no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.msgpack", "data.msgpack.keys", "data.msgpack.offsets"]
    dataset = MsgpackDataset(path)
    assert len(dataset) == 7
    for i in (0, 3, -1):
        got = unpack_sample(dataset[i])
        want = samples[i]
        assert got["image"] == want["image"] and got["label"] == want["label"] and got["key"] == want["key"]
        np.testing.assert_array_equal(got["arr"], want["arr"])
    # the file is plain concatenated msgpack-numpy maps: the reference decoder reads it too
    with open(path, "rb") as f:
        reference = list(msgpack.Unpacker(f, object_hook=msgpack_numpy.decode, raw=False))
    assert [r["key"] for r in reference] == [s["key"] for s in samples]
    with pytest.raises(IndexError, match="out of range"):
        dataset[7]


def test_msgpack_dataset_reads_files_written_by_msgpack_numpy_and_survives_pickle_and_fork(tmp_path):
    path = tmp_path / "ref.msgpack"
    with open(path, "wb") as f:
        for i in range(5):
            f.write(
                msgpack.packb({"value": np.int64(i), "key": f"r{i}"}, use_bin_type=True, default=msgpack_numpy.encode)
            )
    dataset = pickle.loads(pickle.dumps(MsgpackDataset(path)))
    assert unpack_sample(dataset[4])["value"] == 4
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reads with its own handle
        os.write(write, dataset[2])
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    with os.fdopen(read, "rb") as f:
        assert f.read() == dataset[2]


def test_corrupt_and_missing_msgpack_files_name_path_and_offset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.msgpack"):
        MsgpackDataset(tmp_path / "nope.msgpack")
    path = tmp_path / "cut.msgpack"
    good = pack_sample({"a": 1})
    path.write_bytes(good + pack_sample({"image": b"x" * 50})[:-10])
    with pytest.raises(ValueError, match=rf"cut.msgpack.*offset {len(good)}"):
        MsgpackDataset(path)
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(good + b"\xc1")
    with pytest.raises(ValueError, match=rf"bad.msgpack.*offset {len(good)}"):
        MsgpackDataset(bad)


def test_image_folder_dataset_lists_classes_and_files(tmp_path):
    images = photo_crops(5, size=(20, 24))
    layout = {"cat": [0, 1], "dog": [2, 3, 4]}
    for name, indices in layout.items():
        (tmp_path / name).mkdir()
        for i in indices:
            (tmp_path / name / f"{i}.JPG").write_bytes(images[i])
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes == ["cat", "dog"]
    assert len(dataset) == 5
    assert dataset[0] == {"image": images[0], "label": 0, "key": "cat/0.JPG"}
    assert dataset[4]["label"] == 1 and dataset[4]["key"] == "dog/4.JPG"
    assert isinstance(open_source(tmp_path), ImageFolderDataset)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)


def test_image_folder_to_msgpack_to_loader(tmp_path):
    images = photo_crops(6, size=(20, 24))
    for i, data in enumerate(images):
        folder = tmp_path / "photos" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(data)
    path = tmp_path / "photos.msgpack"
    assert write_msgpack(ImageFolderDataset(tmp_path / "photos"), path) == 6
    source = open_source(path)
    assert isinstance(source, MsgpackDataset)
    loader_a = TurboDataLoader(source, 4, DecodeWorker((8, 8)), nworkers=2, seed=1)
    loader_b = TurboDataLoader(open_source(tmp_path / "photos"), 4, DecodeWorker((8, 8)), nworkers=1, seed=1)
    a, b = collect(loader_a), collect(loader_b)
    loader_a.stop()
    loader_b.stop()
    np.testing.assert_array_equal(concat(a, "image"), concat(b, "image"))
    assert concat(a, "label").ravel().tolist() == [0, 0, 0, 1, 1, 1]


def test_open_source_rejects_what_it_cannot_read(tmp_path):
    samples = [{"a": 1}]
    assert open_source(samples) is samples
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        open_source(tmp_path / "nothing_here")
    with pytest.raises(TypeError, match="int"):
        open_source(42)


def test_write_msgpack_rejects_bad_samples_and_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="sample 1"):
        write_msgpack([{"a": 1}, 3], tmp_path / "x.msgpack")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="sample 0"):
        write_msgpack([b"\x93\x01\x02\x03"], tmp_path / "x.msgpack")
    assert list(tmp_path.iterdir()) == []


def test_codec_round_trips_and_matches_msgpack_numpy():
    sample = {
        "image": b"\xff\xd8jpeg",
        "label": np.int64(3),
        "points": np.arange(6, dtype=np.float32).reshape(3, 2),
        "record": np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
        "key": "a/b.jpg",
        "z": 1 + 2j,
    }
    packed = pack_sample(sample)
    assert packed == msgpack.packb(sample, use_bin_type=True, default=msgpack_numpy.encode)
    got = unpack_sample(packed)
    assert got["image"] == sample["image"] and got["label"] == 3 and got["key"] == "a/b.jpg" and got["z"] == 1 + 2j
    np.testing.assert_array_equal(got["points"], sample["points"])
    assert got["record"].dtype == sample["record"].dtype
    got["points"][0, 0] = 7  # decoded arrays are writable
    with pytest.raises(TypeError, match="object"):
        pack_sample({"bad": np.array([object()])})
    with pytest.raises(TypeError, match="dict"):
        pack_sample([1])  # type: ignore[arg-type]


def test_codec_refuses_hostile_input_without_unpickling(tmp_path):
    marker = tmp_path / "marker"

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Bomb())
    cases = {
        "object array": msgpack.packb(
            {"x": {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": payload}}, use_bin_type=True
        ),
        "structured with object": msgpack.packb(
            {"x": {b"nd": True, b"type": [["a", "|O"]], b"kind": b"V", b"shape": [1], b"data": payload}},
            use_bin_type=True,
        ),
        "extension": msgpack.packb({"x": msgpack.ExtType(7, payload)}, use_bin_type=True),
        "not a map": msgpack.packb("just a string"),
        "truncated": pack_sample({"x": b"y" * 40})[:-5],
        "pickle bytes": payload,
        "wrong size": msgpack.packb(
            {"x": {b"nd": True, b"type": "<i4", b"kind": b"", b"shape": [4], b"data": b"123"}}, use_bin_type=True
        ),
    }
    for name, data in cases.items():
        with pytest.raises(SampleError, match="sample 'bad-sample'"):
            unpack_sample(data, key="bad-sample")
        assert not marker.exists(), name
