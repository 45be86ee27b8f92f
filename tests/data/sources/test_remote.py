"""Remote sources: fsspec URLs read in byte ranges (memory filesystem, loopback HTTP), caches, Trainer.fit."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import cv2
import fsspec
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from crumpets_lightning.data.datamodule import CrumpetsDataModule
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.sources import MsgpackDataset, ShardedDataset, open_source, write_msgpack
from crumpets_lightning.data.sources import remote as remote_module
from crumpets_lightning.data.transport.codec import unpack_sample
from tests.data._helpers import EchoWorker, collect, concat
from tests.data.sources.range_server import RangeServer

SIZE = 8


def write_samples(path: Path, n: int) -> list[dict[str, Any]]:
    items = [{"key": f"s{i}", "value": i, "pad": bytes([i]) * (i % 11)} for i in range(n)]
    write_msgpack(items, path)
    return items


def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the remote file was scanned although an index exists")

    monkeypatch.setattr(remote_module, "scan_offsets", refuse)


@pytest.fixture
def memory_folder() -> Any:
    fs = fsspec.filesystem("memory")
    fs.mkdir("/cl-test")
    yield fs
    fs.rm("/cl-test", recursive=True)


def test_memory_url_with_and_without_an_offsets_sidecar(tmp_path, memory_folder, monkeypatch, private_cache):
    local = tmp_path / "x.msgpack"
    items = write_samples(local, 30)
    memory_folder.pipe("/cl-test/with.msgpack", local.read_bytes())
    memory_folder.pipe("/cl-test/with.msgpack.offsets", Path(f"{local}.offsets").read_bytes())
    memory_folder.pipe("/cl-test/with.msgpack.keys", Path(f"{local}.keys").read_bytes())
    memory_folder.pipe("/cl-test/bare.msgpack", local.read_bytes())
    with_sidecar = MsgpackDataset("memory://cl-test/with.msgpack")
    assert "datadings" in with_sidecar.sample_index.origin and with_sidecar.sample_key(29) == "s29"
    bare = MsgpackDataset("memory://cl-test/bare.msgpack")  # scanned once, index kept in the cache folder
    assert len(bare) == 30 and bare.sample_key(4) == 4
    assert [p.name.endswith("bare.msgpack.crumpets-index") for p in (private_cache / "index").iterdir()] == [True]
    no_scan(monkeypatch)
    again = MsgpackDataset("memory://cl-test/bare.msgpack")
    assert again.sample_index.origin.startswith("index file")
    for dataset in (with_sidecar, again, pickle.loads(pickle.dumps(again))):
        assert [unpack_sample(dataset[i])["value"] for i in range(30)] == [s["value"] for s in items]
    # a changed remote file (other size) is not described by the cached index: scanned again
    memory_folder.pipe("/cl-test/bare.msgpack", local.read_bytes()[: int(with_sidecar.sample_index.offsets[20])])
    monkeypatch.undo()
    assert len(MsgpackDataset("memory://cl-test/bare.msgpack")) == 20


def test_memory_glob_of_shards(tmp_path, memory_folder):
    for k in range(3):
        local = tmp_path / f"train-{k}.msgpack"
        write_msgpack([{"value": 10 * k + i} for i in range(k + 2)], local)
        for suffix in ("", ".offsets"):
            memory_folder.pipe(f"/cl-test/train-{k}.msgpack{suffix}", Path(f"{local}{suffix}").read_bytes())
    dataset = open_source("memory://cl-test/train-*.msgpack")
    assert isinstance(dataset, ShardedDataset) and len(dataset) == 9
    assert [unpack_sample(dataset[i])["value"] for i in range(9)] == [0, 1, 10, 11, 12, 20, 21, 22, 23]
    with pytest.raises(FileNotFoundError, match="matches no files"):
        open_source("memory://cl-test/val-*.msgpack")


def _data_requests(server: RangeServer, name: str) -> list[tuple[str, str | None]]:
    return [(method, rng) for method, path, rng in server.requests if path == f"/{name}"]


def test_http_source_reads_each_sample_with_one_range_request(tmp_path, served):
    root, server = served
    items = write_samples(root / "x.msgpack", 25)
    dataset = MsgpackDataset(server.url("x.msgpack"))
    # opening: the size (HEAD) and the offsets sidecar; no byte of the data itself
    assert [method for method, _ in _data_requests(server, "x.msgpack")] == ["HEAD"]
    server.clear()
    assert unpack_sample(dataset[13]) == items[13]
    start, stop = dataset.sample_index.span(13)
    assert _data_requests(server, "x.msgpack") == [("GET", f"bytes={start}-{stop - 1}")]
    assert dataset.sample_key(7) == "s7"


def test_http_source_in_forked_workers_matches_the_local_file(tmp_path, served):
    root, server = served
    write_samples(root / "x.msgpack", 22)
    remote = open_source(server.url("x.msgpack"))
    local = open_source(root / "x.msgpack")
    got = []
    for source in (remote, local):
        loader = TurboDataLoader(source, 4, EchoWorker(), nworkers=2, shuffle=True, seed=3)
        got.append(concat(collect(loader), "value").ravel().tolist())
        loader.stop()
    assert got[0] == got[1] and sorted(got[0]) == list(range(22))
    ranges = [rng for method, rng in _data_requests(server, "x.msgpack") if method == "GET"]
    assert len(ranges) == 22 and all(re.fullmatch(r"bytes=\d+-\d+", rng or "") for rng in ranges)


def test_http_without_range_support_is_a_clear_error(tmp_path):
    write_samples(tmp_path / "x.msgpack", 3)
    with RangeServer(tmp_path, ranges=False) as server:
        dataset = MsgpackDataset(server.url("x.msgpack"))
        with pytest.raises(OSError, match="must support HTTP range requests"):
            dataset[1]


def test_http_source_without_sidecar_is_scanned_once_then_opens_from_the_cache(tmp_path, served, monkeypatch):
    root, server = served
    write_samples(root / "x.msgpack", 12)
    for suffix in (".offsets", ".keys"):
        (root / f"x.msgpack{suffix}").unlink()
    assert len(MsgpackDataset(server.url("x.msgpack"))) == 12
    server.clear()
    no_scan(monkeypatch)
    dataset = MsgpackDataset(server.url("x.msgpack"))
    assert len(dataset) == 12 and [m for m, _ in _data_requests(server, "x.msgpack")] == ["HEAD"]


def test_local_sample_cache_serves_the_next_epochs(tmp_path, served):
    root, server = served
    items = write_samples(root / "x.msgpack", 16)
    cache = tmp_path / "samples"
    dataset = open_source(server.url("x.msgpack"), cache_dir=cache)
    first = [unpack_sample(dataset[i]) for i in range(16)]
    fetched = [rng for method, rng in _data_requests(server, "x.msgpack") if method == "GET"]
    assert len(fetched) == 16
    server.clear()
    # another dataset (as another process would build it) finds the samples on disk
    other = pickle.loads(pickle.dumps(MsgpackDataset(server.url("x.msgpack"), cache_dir=cache)))
    assert [unpack_sample(other[i]) for i in range(16)] == first == items
    assert [m for m, _ in _data_requests(server, "x.msgpack")] == ["HEAD"]


class _TinyModel(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3 * SIZE * SIZE, 3)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.layer(batch["image"].float().flatten(1) / 255.0)
        return nn.functional.cross_entropy(logits, batch["label"].reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Labels(Callback):
    def __init__(self) -> None:
        self.labels: list[int] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.labels.extend(batch["label"].reshape(-1).tolist())


def test_trainer_fit_over_an_http_source(served):
    root, server = served
    rng = np.random.default_rng(0)
    items = []
    for i in range(12):
        ok, png = cv2.imencode(".png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        assert ok
        items.append({"key": f"img{i}", "image": png.tobytes(), "label": i % 3})
    write_msgpack(items, root / "train.msgpack")
    dm = CrumpetsDataModule(
        train=server.url("train.msgpack"), batch_size=4, nworkers=2, image_size=(SIZE, SIZE), timeout=30.0
    )
    labels = _Labels()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[labels],
    )
    trainer.fit(_TinyModel(), datamodule=dm)
    assert trainer.global_step == 6
    assert sorted(labels.labels) == sorted([s["label"] for s in items] * 2)
    ranges = [rng for method, rng in _data_requests(server, "train.msgpack") if method == "GET"]
    assert len(ranges) == 24 and all(rng is not None for rng in ranges)


def test_read_many_fetches_concurrently_and_equals_single_reads(tmp_path, served):
    root, server = served
    write_samples(root / "x.msgpack", 20)
    dataset = MsgpackDataset(server.url("x.msgpack"), cache_dir=tmp_path / "samples")
    wanted = [19, 0, 7, -1, 7]
    single = [dataset[i] for i in wanted]
    server.clear()
    fresh = MsgpackDataset(server.url("x.msgpack"))
    assert fresh.read_many(wanted) == single
    gets = [rng for method, rng in _data_requests(server, "x.msgpack") if method == "GET"]
    assert len(gets) == 5 and fresh.read_many([]) == []
    server.clear()
    assert dataset.read_many([0, 7, 19, 3]) == [dataset[i] for i in (0, 7, 19, 3)]  # cached ones are not fetched
    assert len([m for m, _ in _data_requests(server, "x.msgpack") if m == "GET"]) == 1  # only sample 3, once
    with pytest.raises(IndexError, match="out of range"):
        fresh.read_many([0, 20])


def test_http_url_with_a_query_string_is_a_file_not_a_glob(served, monkeypatch):
    root, server = served
    write_samples(root / "x.msgpack", 6)
    no_scan(monkeypatch)  # the sidecar is found as x.msgpack.offsets?v=2
    dataset = open_source(server.url("x.msgpack?v=2"))
    assert isinstance(dataset, MsgpackDataset) and len(dataset) == 6
    assert ("GET", "/x.msgpack.offsets?v=2", None) in server.requests


def test_sample_cache_is_shared_by_forked_workers_across_epochs(tmp_path, served):
    root, server = served
    write_samples(root / "x.msgpack", 18)
    dataset = open_source(server.url("x.msgpack"), cache_dir=tmp_path / "samples")
    loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=2, shuffle=True, seed=1)
    first = concat(collect(loader), "value").ravel().tolist()
    fetched = len([m for m, _ in _data_requests(server, "x.msgpack") if m == "GET"])
    second = concat(collect(loader), "value").ravel().tolist()
    loader.stop()
    assert fetched == 18 and sorted(first) == sorted(second) == list(range(18)) and first != second
    assert len([m for m, _ in _data_requests(server, "x.msgpack") if m == "GET"]) == 18  # epoch 2 read the cache
