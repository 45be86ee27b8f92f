"""Shards as one source: lists and globs, the global and the shard-aware order, DDP ranks and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.sources import ShardedDataset, WindowShuffledShards, open_source, write_msgpack
from crumpets_lightning.data.sources.shards import window_shuffled_order
from crumpets_lightning.data.transport.codec import unpack_sample
from tests.data._helpers import EchoWorker, collect, concat


def make_shards(folder: Path, lengths: list[int], keys: bool = True) -> list[Path]:
    """Shards ``train-000.msgpack``... whose samples hold their global index as ``value``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, value = [], 0
    for k, length in enumerate(lengths):
        items = []
        for _ in range(length):
            items.append({"value": value, **({"key": f"s{value}"} if keys else {})})
            value += 1
        paths.append(folder / f"train-{k:03d}.msgpack")
        write_msgpack(items, paths[-1])
    return paths


def values(dataset: ShardedDataset) -> list[int]:
    return [unpack_sample(dataset[i])["value"] for i in range(len(dataset))]


def test_a_list_and_a_glob_of_shards_are_one_source(tmp_path):
    paths = make_shards(tmp_path / "shards", [5, 0, 3, 7])
    by_list = open_source([str(p) for p in paths])
    by_glob = open_source(str(tmp_path / "shards" / "train-*.msgpack"))
    for dataset in (by_list, by_glob):
        assert type(dataset) is ShardedDataset
        assert len(dataset) == 15 and values(dataset) == list(range(15))
    assert [by_glob.sample_key(i) for i in (0, 5, 14, -1)] == ["s0", "s5", "s14", "s14"]
    assert by_glob.locate(8) == (3, 0)  # the empty shard 1 holds nothing
    assert unpack_sample(by_list[-1])["value"] == 14 and [unpack_sample(b)["value"] for b in by_list[4:6]] == [4, 5]
    with pytest.raises(IndexError, match="15 samples"):
        by_list[15]


def test_sample_key_without_keys_names_the_shard_and_position(tmp_path):
    dataset = ShardedDataset(make_shards(tmp_path, [2, 4], keys=False))
    assert dataset.sample_key(3) == "train-001.msgpack#1"


def test_window_order_is_a_pure_shard_aware_permutation(tmp_path):
    lengths = [12, 8, 16, 4]  # multiples of the window
    dataset = WindowShuffledShards(make_shards(tmp_path, lengths), shuffle_window=4)
    order = dataset.shuffled_order(seed=7, epoch=2)
    assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(40))
    np.testing.assert_array_equal(order, dataset.shuffled_order(7, 2))
    np.testing.assert_array_equal(order, window_shuffled_order(lengths, 4, 7, 2))
    assert not np.array_equal(order, dataset.shuffled_order(7, 3))
    assert not np.array_equal(order, dataset.shuffled_order(8, 2))
    # every window holds 4 consecutive samples of one shard, shuffled; shards are read one after the other
    starts = np.cumsum([0, *lengths])
    windows = np.sort(order.reshape(-1, 4), axis=1)
    assert (np.diff(windows, axis=1) == 1).all()
    shard_of_window = np.searchsorted(starts, windows[:, 0], side="right") - 1
    assert len(np.unique(shard_of_window)) == 4
    changes = np.flatnonzero(np.diff(shard_of_window)) + 1
    assert len(changes) == 3  # each shard's windows are contiguous in the order
    assert any(windows[:, 0] != order.reshape(-1, 4)[:, 0])  # the windows are shuffled, not sorted
    # shard order varies between epochs
    firsts = {int(np.searchsorted(starts, dataset.shuffled_order(7, e)[0], side="right") - 1) for e in range(12)}
    assert len(firsts) > 1


def test_window_order_with_a_short_last_window_and_one_file(tmp_path):
    paths = make_shards(tmp_path, [10])
    dataset = open_source(paths[0], shuffle_window=4)
    assert isinstance(dataset, WindowShuffledShards) and len(dataset) == 10
    order = dataset.shuffled_order(0, 0)
    assert sorted(order.tolist()) == list(range(10))
    assert sorted(order[:4].tolist()) == [0, 1, 2, 3] and sorted(order[8:].tolist()) == [8, 9]
    assert isinstance(open_source(str(tmp_path / "train-*.msgpack"), shuffle_window=3), WindowShuffledShards)


def test_arguments_are_checked(tmp_path):
    paths = make_shards(tmp_path, [3])
    with pytest.raises(ValueError, match=r"shuffle_window.*int >= 1.*0"):
        WindowShuffledShards(paths, shuffle_window=0)
    with pytest.raises(ValueError, match="shuffle_window"):
        open_source(paths, shuffle_window=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        ShardedDataset([])
    with pytest.raises(TypeError, match="list of msgpack file paths"):
        ShardedDataset(str(paths[0]))
    with pytest.raises(ValueError, match="seed=-1"):
        WindowShuffledShards(paths, shuffle_window=2).shuffled_order(-1, 0)
    with pytest.raises(FileNotFoundError, match=r"missing\.msgpack"):
        open_source([paths[0], tmp_path / "missing.msgpack"])


def test_global_shuffle_over_shards_in_the_loader_two_ranks_and_resume(tmp_path):
    dataset = open_source(make_shards(tmp_path, [7, 9, 6]))
    assert not hasattr(dataset, "shuffled_order")  # the loader's own global permutation
    per_rank = []
    for rank in (0, 1):
        loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=1, shuffle=True, seed=5, rank=rank, world_size=2)
        per_rank.append(concat(collect(loader), "value").ravel().tolist())
        loader.stop()
    assert len(per_rank[0]) == len(per_rank[1]) == 11
    assert sorted(per_rank[0] + per_rank[1]) == list(range(22)) and per_rank[0] != sorted(per_rank[0])
    # stop after two batches, resume in a new loader: the rest of the same epoch
    loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=2, shuffle=True, seed=5, drop_last=True)
    iterator = iter(loader)
    head = [value for _ in range(2) for value in next(iterator)[1][0]["value"].ravel().tolist()]
    state = loader.state_dict()
    loader.stop()
    resumed = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=1, shuffle=True, seed=5, drop_last=True)
    resumed.load_state_dict(state)
    tail = concat(collect(resumed), "value").ravel().tolist()
    resumed.stop()
    full = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=1, shuffle=True, seed=5, drop_last=True)
    whole = concat(collect(full), "value").ravel().tolist()
    full.stop()
    assert head + tail == whole and len(whole) == 20


def test_read_many_over_shards_keeps_the_order(tmp_path):
    dataset = ShardedDataset(make_shards(tmp_path, [3, 4, 2]))
    wanted = [8, 0, 4, 3, 8, -2]
    assert dataset.read_many(wanted) == [dataset[i] for i in wanted]
    assert [unpack_sample(b)["value"] for b in dataset.read_many(wanted)] == [8, 0, 4, 3, 8, 7]


def test_window_order_through_the_loader_epochs_ranks_and_resume(tmp_path):
    dataset = open_source(make_shards(tmp_path, [8, 6, 10]), shuffle_window=4)
    assert isinstance(dataset, WindowShuffledShards)
    loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=2, shuffle=True, seed=9)
    epochs = [concat(collect(loader), "value").ravel().tolist() for _ in range(2)]
    loader.stop()
    # the epoch plan follows the source's order (values are the global sample indices)
    assert epochs == [dataset.shuffled_order(9, 0).tolist(), dataset.shuffled_order(9, 1).tolist()]
    per_rank = []
    for rank in (0, 1):
        loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=1, shuffle=True, seed=9, rank=rank, world_size=2)
        per_rank.append(concat(collect(loader), "value").ravel().tolist())
        loader.stop()
    assert len(per_rank[0]) == len(per_rank[1]) == 12
    assert sorted(per_rank[0] + per_rank[1]) == list(range(24))
    loader = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=1, shuffle=True, seed=9)
    iterator = iter(loader)
    head = [value for _ in range(3) for value in next(iterator)[1][0]["value"].ravel().tolist()]
    state = loader.state_dict()
    loader.stop()
    resumed = TurboDataLoader(dataset, 4, EchoWorker(), nworkers=2, shuffle=True, seed=9)
    resumed.load_state_dict(state)
    tail = concat(collect(resumed), "value").ravel().tolist()
    resumed.stop()
    assert head + tail == epochs[0]
