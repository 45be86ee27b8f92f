"""EpochPlan on its own (no processes): order, shard, padding, batch and step counts, resume points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crumpets_lightning.data.loader.plan import SHUFFLE_STREAM, EpochPlan

SIZES = [1, 2, 5, 7, 23, 37]


def plans(n, batch_size, world_size, **kwargs):
    return [EpochPlan(n, batch_size, rank=r, world_size=world_size, available=n, **kwargs) for r in range(world_size)]


def rows_of_steps(plan):
    """Every step's rows, walking the batches as the epoch iterator does."""
    steps = []
    for seq in range(plan.num_batches):
        batch = plan.batch(seq)
        steps += [(batch.start + a, batch.start + b) for a, b in plan.step_bounds(batch.start, batch.stop)]
    return steps


@pytest.mark.parametrize("world_size", range(1, 9))
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("batch_size", "num_mini_batches"), [(1, 1), (3, 1), (4, 1), (4, 2), (6, 3)])
def test_every_world_size_shards_batches_and_steps_consistently(world_size, drop_last, batch_size, num_mini_batches):
    for n, shuffle in itertools.product(SIZES, (False, True)):
        ranks = plans(n, batch_size, world_size, num_mini_batches=num_mini_batches, drop_last=drop_last,
                      shuffle=shuffle, seed=3)  # fmt: skip
        # every rank runs the same number of batches and steps
        assert len({(p.num_batches, p.num_steps, p.rows) for p in ranks}) == 1
        orders = [p.order(2) for p in ranks]
        assert all(len(order) == p.rows and order.dtype == np.int64 for order, p in zip(orders, ranks))
        everything = np.concatenate(orders)
        if drop_last:
            assert all(p.padding is None for p in ranks)
            assert len(everything) == len(set(everything.tolist()))  # nothing twice
            assert ranks[0].rows % batch_size == 0
            assert len(everything) == n // world_size // batch_size * batch_size * world_size
        else:
            # evaluation: the non-padded rows of all ranks are every sample exactly once
            if world_size == 1:
                assert ranks[0].padding is None
                real = everything
            else:
                real = np.concatenate([o[~p.padding] for o, p in zip(orders, ranks)])
                assert sum(int(p.padding.sum()) for p in ranks) == -n % world_size
                # a padded row repeats a sample of the epoch (never an out-of-range index)
                assert all(set(o[p.padding].tolist()) <= set(range(n)) for o, p in zip(orders, ranks))
            assert sorted(real.tolist()) == list(range(n))
        for p in ranks:
            steps = rows_of_steps(p)
            assert len(steps) == p.num_steps
            assert [a for a, _ in steps] == list(range(0, p.rows, p.step_size))  # contiguous, in order
            assert steps[-1][1] == p.rows if steps else p.rows == 0
            assert all(0 < b - a <= p.step_size for a, b in steps)  # no empty step, none too long


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("num_mini_batches", [1, 2, 4])
def test_resume_at_every_step_continues_with_exactly_the_remaining_rows(world_size, drop_last, num_mini_batches):
    for rank in range(world_size):
        plan = EpochPlan(29, 8, num_mini_batches=num_mini_batches, drop_last=drop_last, rank=rank,
                         world_size=world_size, shuffle=True, seed=1, available=29)  # fmt: skip
        steps = rows_of_steps(plan)
        for step in range(plan.num_steps):
            seq = plan.batch_of_step(step)
            first = plan.batch(seq, step)
            assert first.first_step == step and first.start == steps[step][0]
            resumed = [(first.start + a, first.start + b) for a, b in plan.step_bounds(first.start, first.stop)]
            for later in range(seq + 1, plan.num_batches):
                batch = plan.batch(later)
                resumed += [(batch.start + a, batch.start + b) for a, b in plan.step_bounds(batch.start, batch.stop)]
            assert resumed == steps[step:]
            assert plan.batches_done(step) == seq
        assert plan.batches_done(plan.num_steps) == plan.num_batches
        with pytest.raises(ValueError, match="not in batch"):
            plan.batch(0, plan.num_mini_batches)


def test_the_samples_of_an_epoch_do_not_depend_on_num_mini_batches():
    for world_size, drop_last in itertools.product((1, 3), (False, True)):
        orders = {
            nmb: [
                p.order(4)
                for p in plans(50, 8, world_size, num_mini_batches=nmb, drop_last=drop_last, shuffle=True, seed=9)
            ]
            for nmb in (1, 2, 4, 8)
        }
        for nmb in (2, 4, 8):
            assert all(np.array_equal(a, b) for a, b in zip(orders[1], orders[nmb]))
        steps = {
            nmb: plans(50, 8, world_size, num_mini_batches=nmb, drop_last=drop_last)[0].num_steps for nmb in orders
        }
        assert steps[2] >= 2 * steps[1] - 1 and steps[8] >= steps[4]


def test_the_shuffle_uses_the_same_permutation_stream_as_before():
    plan = EpochPlan(12, 4, shuffle=True, seed=8, available=12)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([8, 5], spawn_key=(SHUFFLE_STREAM,))))
    assert plan.order(5).tolist() == rng.permutation(12).tolist()
    assert plan.order(5).tolist() != plan.order(6).tolist()
    assert EpochPlan(12, 4, available=12).order(3).tolist() == list(range(12))


def test_length_cuts_or_repeats_the_source():
    assert EpochPlan(5, 2, available=8).order(0).tolist() == [0, 1, 2, 3, 4]
    assert EpochPlan(7, 2, available=3).order(0).tolist() == [0, 1, 2, 0, 1, 2, 0]
    shuffled = EpochPlan(7, 2, available=3, shuffle=True, seed=1).order(0)
    assert sorted(shuffled[:3].tolist()) == sorted(shuffled[3:6].tolist()) == [0, 1, 2]
    # a repeat is not padding: one rank, or a multiple of world_size, marks nothing
    assert EpochPlan(8, 2, available=3, rank=1, world_size=2).padding.tolist() == [False] * 4


class OwnOrder:
    """A source with its own shuffled order (contract C8): reversed for even epochs."""

    def __init__(self, n, bad=False):
        self.n, self.bad, self.calls = n, bad, []

    def shuffled_order(self, seed, epoch):
        self.calls.append((seed, epoch))
        if self.bad:
            return np.arange(self.n + 1)
        order = np.arange(self.n)
        return order[::-1] if epoch % 2 == 0 else np.roll(order, 1)


def test_a_source_order_is_used_when_shuffling_and_checked():
    source = OwnOrder(6)
    plan = EpochPlan(6, 2, shuffle=True, seed=4, available=6, shuffled_order=source.shuffled_order)
    assert plan.order(0).tolist() == [5, 4, 3, 2, 1, 0]
    assert plan.order(1).tolist() == [5, 0, 1, 2, 3, 4]
    assert source.calls == [(4, 0), (4, 1)]
    # repeats of a short source ask for further orders with derived seeds
    EpochPlan(9, 2, shuffle=True, seed=4, available=6, shuffled_order=source.shuffled_order).order(0)
    assert source.calls[2] == (4, 0) and source.calls[3][0] != 4
    bad = OwnOrder(6, bad=True)
    with pytest.raises(ValueError, match="permutation of range"):
        EpochPlan(6, 2, shuffle=True, available=6, shuffled_order=bad.shuffled_order).order(0)


def test_streams_have_positions_and_unknown_lengths():
    known = EpochPlan(10, 4, rank=2, world_size=3)
    assert known.order(0).tolist() == [2, 5, 8, 1]  # position 11 pads with position 1
    assert known.padding.tolist() == [False, False, False, True]
    unknown = EpochPlan(None, 4)
    assert unknown.rows is None
    with pytest.raises(TypeError, match="unknown length"):
        unknown.num_batches  # noqa: B018
    assert (unknown.batch(2).start, unknown.batch(2).stop) == (8, 12)  # at most: the stream may end before
    with pytest.raises(ValueError, match="unknown length"):
        EpochPlan(None, 4, world_size=2)
    with pytest.raises(ValueError, match="random-access"):
        EpochPlan(10, 4, shuffle=True)


def test_a_batch_larger_than_the_shard():
    assert EpochPlan(5, 8, available=5).num_batches == 1
    assert EpochPlan(5, 8, available=5, drop_last=True).num_batches == 0
    assert EpochPlan(5, 8, available=5, drop_last=True).num_steps == 0
