"""TurboDataLoader: iteration, shapes, lengths, determinism, shuffling, sharding, streams, shared memory."""

from __future__ import annotations

import gc
import itertools
import math
import os
import warnings
from typing import Any

import cv2
import numpy as np
import pytest

from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.transport.codec import pack_sample
from crumpets_lightning.data.workers.base import Worker
from tests.conftest import crumpets_shm_segments, descendants
from tests.data._helpers import (
    DecodeWorker,
    EchoWorker,
    PartialWorker,
    collect,
    concat,
    synthetic_images,
    value_samples,
)


def flatten(lists):
    return [x for sub in lists for x in sub]


def values_of(batches):
    return [[int(v) for m in mini_batches for v in m["value"].ravel()] for mini_batches in batches]


def test_batches_hold_the_samples_in_order_with_worker_outputs():
    samples = value_samples(10)
    with TurboDataLoader(samples, 4, EchoWorker(), nworkers=2, seed=3) as loader:
        items = [
            (iteration, [{k: (v.copy() if hasattr(v, "copy") else v) for k, v in m.items()} for m in mb])
            for iteration, mb in loader
        ]
    assert [iteration for iteration, _ in items] == [1, 2, 3]
    assert values_of([mb for _, mb in items]) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    first = items[0][1][0]
    assert first["value"].shape == (4, 1) and first["value"].dtype == np.int64
    assert first["block"].shape == (4, 2, 3) and first["block"].dtype == np.uint8
    assert first["key"] == ["s0", "s1", "s2", "s3"]
    # per-sample generator = PCG64([seed, epoch, index])
    expected = [np.random.Generator(np.random.PCG64([3, 0, i])).random() for i in range(4)]
    np.testing.assert_array_equal(first["draw"].ravel(), expected)


def test_packed_bytes_and_real_images_decode_in_workers():
    images = synthetic_images(6, size=(16, 16))
    samples = [pack_sample({"image": data, "label": i, "key": f"img{i}"}) for i, data in enumerate(images)]
    with TurboDataLoader(samples, 3, DecodeWorker((16, 16), jitter=False), nworkers=2, seed=0) as loader:
        batches = collect(loader)
    got = concat(batches, "image")
    for i, data in enumerate(images):
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].transpose(2, 0, 1)
        np.testing.assert_array_equal(got[i], reference)
    assert concat(batches, "label").ravel().tolist() == list(range(6))


@pytest.mark.parametrize(
    ("n", "batch", "drop_last", "expected"), [(10, 4, False, 3), (10, 4, True, 2), (8, 4, True, 2)]
)
def test_len_matches_the_batches_yielded(n, batch, drop_last, expected):
    loader = TurboDataLoader(value_samples(n), batch, EchoWorker(), nworkers=1, drop_last=drop_last)
    assert len(loader) == expected
    batches = collect(loader)
    loader.stop()
    assert len(batches) == expected
    sizes = [len(mb[0]["value"]) for mb in batches]
    assert sizes == [batch] * (n // batch) + ([] if drop_last or n % batch == 0 else [n % batch])


def test_mini_batches_have_no_stale_rows_in_a_short_last_batch():
    loader = TurboDataLoader(value_samples(9), 8, PartialWorker(fill=-7), nworkers=2, num_mini_batches=4, seed=0)
    batches = collect(loader, epochs=2)
    loader.stop()
    assert [len(mb) for mb in batches] == [4, 1, 4, 1]
    assert [len(m["value"]) for m in batches[0]] == [2, 2, 2, 2]
    assert batches[1][0]["value"].ravel().tolist() == [8]
    assert values_of(batches) == [list(range(8)), [8]] * 2
    # the buffers the worker did not write show their fill value, not rows of an earlier batch
    assert all((m["draw"] == 0).all() and (m["block"] == 0).all() for mb in batches for m in mb)


def test_num_mini_batches_must_divide_batch_size():
    with pytest.raises(ValueError, match="divisible"):
        TurboDataLoader(value_samples(4), 6, EchoWorker(), nworkers=1, num_mini_batches=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"nworkers": 0}, "nworkers"),
        ({"timeout": 0}, "timeout"),
        ({"shared_memory": 1}, "shared_memory"),
        ({"length": -1}, "length"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    args = {"batch_size": 2, "nworkers": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        TurboDataLoader(value_samples(4), worker_template=EchoWorker(), **args)


def test_zero_length_source_fails_clearly_at_first_use():
    loader = TurboDataLoader([], 2, EchoWorker(), nworkers=1)
    it = iter(loader)
    with pytest.raises(ValueError, match="no samples"):
        next(it)
    assert not loader.running


def test_worker_template_must_be_a_worker():
    with pytest.raises(TypeError, match="Worker"):
        TurboDataLoader(value_samples(4), 2, object(), nworkers=1)  # type: ignore[arg-type]


def run_epochs(nworkers, seed, shuffle=True, epochs=2, **kwargs):
    loader = TurboDataLoader(
        value_samples(23), 5, EchoWorker(), nworkers=nworkers, seed=seed, shuffle=shuffle, **kwargs
    )
    batches = collect(loader, epochs)
    loader.stop()
    return batches


def test_output_is_bitwise_identical_for_1_2_4_workers_and_across_runs():
    reference = run_epochs(1, seed=11)
    for nworkers in (2, 4, 2):
        other = run_epochs(nworkers, seed=11)
        assert len(other) == len(reference)
        for a, b in zip(reference, other):
            for ma, mb in zip(a, b):
                assert ma.keys() == mb.keys()
                for key in ("value", "draw", "block"):
                    assert ma[key].tobytes() == mb[key].tobytes()
                assert ma["key"] == mb["key"]


def test_different_seeds_give_different_orders_and_draws():
    a, b = run_epochs(2, seed=1), run_epochs(2, seed=2)
    assert values_of(a) != values_of(b)
    assert not np.array_equal(concat(a, "draw"), concat(b, "draw"))


def test_seed_none_draws_a_recorded_seed():
    a = TurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1)
    b = TurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1)
    assert isinstance(a.seed, int) and a.seed != b.seed


def test_shuffle_is_a_new_permutation_every_epoch():
    batches = run_epochs(2, seed=5, epochs=3)
    per_epoch = [flatten(values_of(batches[i * 5 : (i + 1) * 5])) for i in range(3)]
    for order in per_epoch:
        assert sorted(order) == list(range(23))
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]
    assert per_epoch[0] != list(range(23))


def test_unshuffled_epochs_keep_order_but_draw_new_augmentations():
    batches = run_epochs(2, seed=5, shuffle=False, epochs=2)
    first, second = batches[:5], batches[5:]
    assert values_of(first) == values_of(second)
    assert not np.array_equal(concat(first, "draw"), concat(second, "draw"))
    expected = [np.random.Generator(np.random.PCG64([5, 1, i])).random() for i in range(23)]
    np.testing.assert_array_equal(concat(second, "draw").ravel(), expected)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_is_disjoint_and_ranks_have_equal_lengths(world_size, drop_last):
    n, batch = 23, 4
    shards, lengths = [], []
    for rank in range(world_size):
        loader = TurboDataLoader(
            value_samples(n),
            batch,
            EchoWorker(),
            nworkers=2,
            seed=9,
            shuffle=True,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        batches = collect(loader)
        lengths.append((len(loader), len(batches)))
        loader.stop()
        shards.append(flatten(values_of(batches)))
    assert len({length for pair in lengths for length in pair}) == 1
    everything = flatten(shards)
    if drop_last:
        assert len(everything) == len(set(everything))
        assert len(everything) == (n // world_size) // batch * batch * world_size
    else:
        # every sample is seen, repeats only pad the order to a multiple of world_size
        assert set(everything) == set(range(n))
        assert len(everything) == math.ceil(n / world_size) * world_size
        padding = len(everything) - n
        assert len(everything) - len(set(everything)) == padding


def test_set_shard_after_construction_and_not_while_running():
    loader = TurboDataLoader(value_samples(10), 2, EchoWorker(), nworkers=1)
    loader.set_shard(1, 2)
    assert len(loader) == 3
    assert flatten(values_of(collect(loader))) == [1, 3, 5, 7, 9]
    with pytest.raises(RuntimeError, match="set_shard"):
        loader.set_shard(0, 2)
    loader.stop()


def test_streamed_list_generator_and_cycle():
    # an iterator without length runs to exhaustion
    loader = TurboDataLoader((s for s in value_samples(7)), 3, EchoWorker(), nworkers=2, seed=1)
    assert values_of(collect(loader)) == [[0, 1, 2], [3, 4, 5], [6]]
    loader.stop()
    # itertools.cycle with length: each epoch takes `length` samples and the stream continues
    loader = TurboDataLoader(itertools.cycle(value_samples(5)), 2, EchoWorker(), nworkers=2, length=5, seed=1)
    assert len(loader) == 3
    assert values_of(collect(loader, epochs=2)) == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4]]
    loader.stop()

    # a re-iterable that is not a sequence is iterated afresh each epoch; packed bytes work too
    class Reiterable:
        def __iter__(self):
            return iter([pack_sample(s) for s in value_samples(4)])

    loader = TurboDataLoader(Reiterable(), 4, EchoWorker(), nworkers=1, seed=2)
    batches = collect(loader, epochs=2)
    loader.stop()
    assert values_of(batches) == [[0, 1, 2, 3]] * 2
    # streamed samples get the generator of their position in the stream
    expected = [np.random.Generator(np.random.PCG64([2, 1, i])).random() for i in range(4)]
    np.testing.assert_array_equal(batches[1][0]["draw"].ravel(), expected)


def test_streamed_iterator_that_runs_out_before_length_fails_clearly():
    loader = TurboDataLoader(iter(value_samples(3)), 2, EchoWorker(), nworkers=1, length=3)
    collect(loader)
    with pytest.raises(ValueError, match="ended after 0 samples"):
        collect(loader)
    loader.stop()


def test_streamed_input_cannot_shuffle():
    with pytest.raises(ValueError, match="shuffle"):
        TurboDataLoader(iter(value_samples(3)), 2, EchoWorker(), nworkers=1, shuffle=True)


def test_iter_starts_no_processes():
    loader = TurboDataLoader(value_samples(6), 2, EchoWorker(), nworkers=2)
    before = set(descendants())
    it = iter(loader)
    iter(loader)
    assert set(descendants()) == before and not loader.running
    next(it)
    assert loader.running and len(loader.worker_pids) == 2
    loader.stop()
    assert not loader.running


def test_abandoned_iterator_then_fresh_iterator_yields_a_full_epoch():
    loader = TurboDataLoader(value_samples(30), 4, EchoWorker(), nworkers=2, seed=4, shuffle=True)
    reference_loader = TurboDataLoader(value_samples(30), 4, EchoWorker(), nworkers=2, seed=4, shuffle=True)
    reference = collect(reference_loader, epochs=2)
    reference_loader.stop()
    it = iter(loader)
    next(it)
    next(it)  # abandoned midway (like Lightning's sanity check or limit_train_batches)
    loader.set_epoch(1)
    fresh = collect(loader)
    assert len(fresh) == len(loader) == 8
    assert values_of(fresh) == values_of(reference[8:])
    with pytest.raises(RuntimeError, match="superseded"):
        next(it)
    loader.stop()


def test_set_epoch_before_or_after_iter_takes_effect():
    def epoch_values(order):
        loader = TurboDataLoader(value_samples(12), 4, EchoWorker(), nworkers=1, seed=8, shuffle=True)
        if order == "before":
            loader.set_epoch(5)
            it = iter(loader)
        else:
            it = iter(loader)
            loader.set_epoch(5)
        out = [mb[0]["value"].ravel().tolist() for _, mb in it]
        loader.stop()
        assert loader.epoch == 6
        return out

    before, after = epoch_values("before"), epoch_values("after")
    assert before == after
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([8, 5], spawn_key=(0x53485546,))))
    assert flatten(before) == rng.permutation(12).tolist()


def test_epochs_auto_increment_without_set_epoch():
    loader = TurboDataLoader(value_samples(4), 4, EchoWorker(), nworkers=1, seed=1)
    assert loader.epoch == 0
    draws = [concat(collect(loader), "draw").ravel() for _ in range(3)]
    loader.stop()
    for epoch, got in enumerate(draws):
        np.testing.assert_array_equal(
            got, [np.random.Generator(np.random.PCG64([1, epoch, i])).random() for i in range(4)]
        )


def test_batches_are_views_of_shared_memory_and_stay_valid_while_held():
    loader = TurboDataLoader(value_samples(40), 4, EchoWorker(), nworkers=1, seed=0, shared_memory=2)
    held = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _, mini_batches in loader:
            held.append(mini_batches[0]["value"])  # hold 3 batches at most, more than the 2 slots
            if len(held) > 3:
                held.pop(0)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "holds all" in messages[0]
    assert [a.ravel().tolist() for a in held] == [[28, 29, 30, 31], [32, 33, 34, 35], [36, 37, 38, 39]]
    assert not held[0].flags.owndata
    runtime = loader._holder.runtime
    grown = len(runtime.ring)
    assert grown > 2
    held.clear()
    del mini_batches
    gc.collect()
    collect(loader)  # released grown slots are removed again
    assert len(runtime.ring) == 2
    segments = crumpets_shm_segments()
    loader.stop()
    assert len(segments - crumpets_shm_segments()) == 2


def test_holding_every_batch_raises_a_clear_error_not_a_hang():
    loader = TurboDataLoader(value_samples(40), 2, EchoWorker(), nworkers=1, shared_memory=2)
    held = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="release batches"):
            for _, mini_batches in loader:
                held.append(mini_batches)
    assert len(held) == 8  # 4x the configured slots
    assert held[0][0]["value"].ravel().tolist() == [0, 1]  # earlier batches were never overwritten
    assert not loader.running


def test_without_shared_memory_results_arrive_as_copies():
    a = run_epochs(2, seed=3, shared_memory=False)
    b = run_epochs(1, seed=3)
    assert values_of(a) == values_of(b)
    np.testing.assert_array_equal(concat(a, "block"), concat(b, "block"))


def test_repr_names_the_configuration():
    loader = TurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1, seed=5, name="train")
    text = repr(loader)
    assert "train" in text and "batch_size=2" in text and "seed=5" in text and "EchoWorker" in text


class SharedTableWorker(EchoWorker):
    """Builds a table in ``prepare_shared``; every sample reports who built it, how often, and its own pid."""

    def __init__(self) -> None:
        super().__init__()
        self.add_buffer("shared", ((4,), np.int64))
        self.built_by = -1
        self.calls = 0
        self.table: np.ndarray | None = None

    def prepare_shared(self) -> None:
        self.built_by = os.getpid()
        self.calls += 1
        self.table = np.arange(7, dtype=np.int64)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        super().prepare(sample, batch, buffers)
        table_sum = -1 if self.table is None else int(self.table.sum())
        buffers["shared"][...] = (self.built_by, self.calls, os.getpid(), table_sum)


def test_prepare_shared_runs_once_in_the_parent_before_workers_fork():
    template = SharedTableWorker()
    with TurboDataLoader(value_samples(8), 2, template, nworkers=2, seed=1) as loader:
        rows = np.concatenate([m["shared"] for _, mini_batches in loader for m in mini_batches])
    assert template.calls == 1 and template.built_by == os.getpid()
    assert (rows[:, 0] == os.getpid()).all()  # built in this (the parent) process ...
    assert (rows[:, 1] == 1).all()  # ... once, and the workers inherited it instead of building their own
    assert (rows[:, 2] != os.getpid()).all()  # the samples really ran in other processes
    assert (rows[:, 3] == sum(range(7))).all()


def test_prepare_shared_defaults_to_doing_nothing():
    worker = EchoWorker()
    before = dict(vars(worker))
    assert Worker.prepare_shared(worker) is None
    assert vars(worker) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": "x"}, TypeError, r"`timeout` to be a positive number of seconds but got 'x'"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"seed": -1}, ValueError, r"`seed` to be an int in \[0, 9223372036854775808\) but got -1"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": "1"}, TypeError, r"`seed` to be an int .* but got '1' \(str\)"),
        ({"batch_size": 2.0}, TypeError, r"`batch_size` to be an int >= 1 but got 2.0"),
        ({"nworkers": "4"}, TypeError, "nworkers"),
        ({"num_mini_batches": 0}, ValueError, "num_mini_batches"),
        ({"start_iteration": -1}, ValueError, "start_iteration"),
        ({"shared_memory": "yes"}, TypeError, "shared_memory"),
        ({"shuffle": "yes"}, TypeError, r"`shuffle` to be a bool \(true or false\) but got 'yes'"),
        ({"drop_last": 1}, TypeError, "drop_last"),
        ({"skip_bad_samples": None}, TypeError, "skip_bad_samples"),
        ({"world_size": 0}, ValueError, "world_size"),
        ({"rank": -1}, ValueError, "rank"),
        ({"name": 3}, TypeError, "name"),
    ],
)
def test_every_argument_is_checked_at_construction_naming_it(kwargs, error, match):
    args = {"batch_size": 2, "nworkers": 1, **kwargs}
    with pytest.raises(error, match=match):
        TurboDataLoader(value_samples(4), worker_template=EchoWorker(), **args)


@pytest.mark.parametrize("source", [{"a": 1}, "samples.msgpack", 42])
def test_a_source_that_is_no_iterable_of_samples_is_rejected(source):
    with pytest.raises(TypeError, match="`iterable` to be a sequence or an iterable of samples"):
        TurboDataLoader(source, 2, EchoWorker(), nworkers=1)


def test_a_stream_without_length_cannot_be_sharded():
    with pytest.raises(ValueError, match="needs `length`"):
        TurboDataLoader(iter(value_samples(4)), 2, EchoWorker(), nworkers=1, world_size=2)


def _memory_owner(array: np.ndarray) -> object:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base


def test_results_arrive_as_private_arrays_without_shared_memory_and_as_slot_views_with_it():
    for shared_memory in (False, True):
        loader = TurboDataLoader(value_samples(8), 4, EchoWorker(), nworkers=2, seed=3, shared_memory=shared_memory)
        arrays = [mini_batches[0]["value"] for _, mini_batches in loader]
        loader.stop()
        assert [a.ravel().tolist() for a in arrays] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        owners = [_memory_owner(a) for a in arrays]
        if shared_memory:
            assert all(owner is not None for owner in owners)  # a view of a slot's mapping
        else:
            assert all(owner is None for owner in owners)  # numpy owns the memory: a private copy
        del arrays, owners


class _ManySource:
    """A random-access source with ``read_many``; what a sample says tells which way it was read."""

    def __init__(self, n: int, fail_many: bool = False, bad: int | None = None) -> None:
        self.n, self.fail_many, self.bad = n, fail_many, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index == self.bad:
            raise OSError(f"cannot read sample {index}")
        return {"value": index, "key": f"one-{index}"}

    def read_many(self, indices: list[int]) -> list[dict[str, Any]]:
        if self.fail_many:
            raise OSError("the batched read failed")
        return [{"value": 1000 + index, "key": f"many-{index}"} for index in indices]


def test_workers_read_each_chunk_with_one_read_many_call_when_the_source_has_it():
    loader = TurboDataLoader(_ManySource(12), 6, EchoWorker(), nworkers=2, seed=0)
    values = concat(collect(loader), "value").ravel().tolist()
    loader.stop()
    assert values == [1000 + i for i in range(12)]  # every sample came through read_many


def test_a_failing_read_many_falls_back_to_reading_each_sample_so_errors_name_it():
    loader = TurboDataLoader(_ManySource(12, fail_many=True), 6, EchoWorker(), nworkers=2, seed=0)
    assert concat(collect(loader), "value").ravel().tolist() == list(range(12))  # read one by one
    loader.stop()
    loader = TurboDataLoader(_ManySource(12, fail_many=True, bad=7), 6, EchoWorker(), nworkers=2, seed=0)
    with pytest.raises(SampleError, match="sample 7: reading it from the source failed: OSError: cannot read sample 7"):
        collect(loader)
    loader = TurboDataLoader(
        _ManySource(12, fail_many=True, bad=7), 6, EchoWorker(), nworkers=2, seed=0, skip_bad_samples=True
    )
    with pytest.warns(RuntimeWarning, match="skipped 1 bad sample"):
        values = concat(collect(loader), "value").ravel().tolist()
    loader.stop()
    assert values == [i for i in range(12) if i != 7] and loader.skipped_samples == [7]


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_sharded_iterator_stream_starts_every_epoch_at_the_same_item_on_every_rank(drop_last: bool) -> None:
    def epochs(rank: int) -> list[list[int]]:
        stream = ({"value": i, "key": f"s{i}"} for i in itertools.count())  # one iterator over all epochs
        loader = TurboDataLoader(
            stream, 2, EchoWorker(), nworkers=1, length=10, rank=rank, world_size=3, drop_last=drop_last
        )
        out = [concat(collect(loader), "value").ravel().tolist() for _ in range(2)]
        loader.stop()
        return out

    for rank in range(3):
        first, second = epochs(rank)
        assert second == [value + 10 for value in first], (rank, first, second)  # epoch 2: items 10..19
        if drop_last:
            assert first == [rank, rank + 3]  # 3 whole samples per rank, cut to one batch of 2
        else:
            assert first == [rank, rank + 3, rank + 6, rank + 9 if rank == 0 else rank - 1]  # padded
