"""``EpochPlan``: which samples go into which batch and step of an epoch, on one rank (pure, no processes).

This module is the only place that knows the arithmetic of an epoch: the order of the samples (sequential,
shuffled from ``(seed, epoch)`` or by the source's own ``shuffled_order``), ``length`` (a longer source is
cut, a shorter one repeated), the DDP shard (padded with repeats, or cut when ``drop_last``), the number
of batches and of steps, and where a step-granularity resume point falls.

Rows, batches and steps
-----------------------
Rank ``r`` of ``world_size`` ranks reads global positions ``r, r + world_size, ...`` of the epoch's order.
Without ``drop_last`` the order is padded to a multiple of ``world_size`` with its own first samples (the
padded rows are marked, see :attr:`EpochPlan.padding`); with ``drop_last`` it is cut instead, and so is the
last short batch. Batches have ``batch_size`` rows (the last may be shorter); each batch is split into
steps of ``batch_size // num_mini_batches`` rows (the last step of a short batch is shorter, empty ones do
not exist). Order, cuts and padding are decided at the full batch size, so the samples an epoch uses do
not depend on ``num_mini_batches``.

Example::

    >>> plan = EpochPlan(10, 4, world_size=3, rank=2)
    >>> plan.order(0).tolist(), plan.padding.tolist()
    ([2, 5, 8, 1], [False, False, False, True])
    >>> plan.num_batches, plan.num_steps
    (1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["EpochPlan", "PlannedBatch"]

#: spawn key that keeps shuffle generators apart from the per-sample ones (``PCG64([seed, epoch, index])``)
SHUFFLE_STREAM = 0x5348_5546

#: ``shuffled_order(seed, epoch) -> permutation of range(len(source))`` (a source's own order, contract C8)
ShuffledOrder = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of an epoch on this rank: rows ``[start, stop)`` of the rank's order.

    Attributes:
        seq: the batch number in the epoch.
        start: first row (into :meth:`EpochPlan.order`); a multiple of the step size.
        stop: one past the last row (for a stream of unknown length: at most, it may end before).
        first_step: the epoch's step number of this batch's first step.
    """

    seq: int
    start: int
    stop: int
    first_step: int


@dataclass(frozen=True)
class EpochPlan:
    """The layout of every epoch of a loader on one rank.

    Args:
        samples: samples per epoch over all ranks (``length``), or None for a stream of unknown length.
        batch_size: rows per full batch.
        num_mini_batches: steps per full batch (divides ``batch_size``).
        drop_last: cut the samples that do not divide among the ranks and the last short batch.
        rank: this rank.
        world_size: the number of ranks.
        shuffle: a new order every epoch.
        seed: seeds the shuffle.
        available: ``len(source)`` for a random-access source, None for a stream (rows are then positions
            in the stream).
        shuffled_order: the source's own ``shuffled_order(seed, epoch)`` used when shuffling (contract C8).

    Raises:
        ValueError: inconsistent arguments (the loader checks the user's arguments before).
    """

    samples: int | None
    batch_size: int
    num_mini_batches: int = 1
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    shuffle: bool = False
    seed: int = 0
    available: int | None = None
    shuffled_order: ShuffledOrder | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_mini_batches < 1 or self.batch_size % self.num_mini_batches:
            raise ValueError(f"batch_size {self.batch_size} must be a positive multiple of {self.num_mini_batches}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.samples is None and self.world_size > 1:
            raise ValueError(f"a stream of unknown length cannot be sharded over {self.world_size} ranks")
        if self.shuffle and self.available is None:
            raise ValueError("only a random-access source can be shuffled")

    # -- sizes ---------------------------------------------------------------------------------------------

    @property
    def step_size(self) -> int:
        """Rows per full step."""
        return self.batch_size // self.num_mini_batches

    @property
    def pads(self) -> bool:
        """Whether shards are padded with repeats (then every step carries a ``padding`` mask)."""
        return self.world_size > 1 and not self.drop_last

    @cached_property
    def rows(self) -> int | None:
        """Rows this rank yields per epoch (None: unknown, a stream read until it ends)."""
        if self.samples is None:
            return None
        if self.drop_last:
            return self.samples // self.world_size // self.batch_size * self.batch_size
        return -(-self.samples // self.world_size)

    @cached_property
    def num_batches(self) -> int:
        """Batches per epoch on this rank.

        Raises:
            TypeError: a stream of unknown length.
        """
        return -(-self._known_rows() // self.batch_size)

    @cached_property
    def num_steps(self) -> int:
        """Steps per epoch on this rank (the same on every rank).

        Raises:
            TypeError: a stream of unknown length.
        """
        return -(-self._known_rows() // self.step_size)

    def _known_rows(self) -> int:
        if self.rows is None:
            raise TypeError("a stream of unknown length has no known number of batches; pass `length`")
        return self.rows

    # -- batches and steps ---------------------------------------------------------------------------------

    def batch(self, seq: int, start_step: int | None = None) -> PlannedBatch:
        """Batch ``seq``, optionally beginning at epoch step ``start_step`` (a resume point inside it)."""
        start = seq * self.batch_size
        first_step = seq * self.num_mini_batches
        if start_step is not None:
            if not first_step <= start_step < first_step + self.num_mini_batches:
                raise ValueError(f"step {start_step} is not in batch {seq}")
            start, first_step = start_step * self.step_size, start_step
        stop = start - start % self.batch_size + self.batch_size
        if self.rows is not None:
            stop = min(stop, self.rows)
        return PlannedBatch(seq, start, stop, first_step)

    def batch_of_step(self, step: int) -> int:
        """The batch that holds epoch step ``step`` (every batch but the last has ``num_mini_batches`` steps)."""
        return step // self.num_mini_batches

    def batches_done(self, steps: int) -> int:
        """Whole batches among the first ``steps`` steps of an epoch (the short last batch counts when done)."""
        if self.rows is not None and steps >= self.num_steps:
            return self.num_batches
        return steps // self.num_mini_batches

    def step_bounds(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The steps of rows ``[start, stop)`` of a batch, as ``(first, last + 1)`` rows relative to ``start``."""
        size = self.step_size
        return [(row - start, min(row + size, stop) - start) for row in range(start, stop, size)]

    # -- order and padding ---------------------------------------------------------------------------------

    def order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices (random access) or stream positions for ``epoch``, int64 ``[rows]``.

        Raises:
            TypeError: a stream of unknown length (its positions are simply ``0, 1, 2, ...``).
        """
        rows = self._known_rows()
        if self.available is None:
            assert self.samples is not None
            return self.positions(0, rows) % max(self.samples, 1)
        total = self.samples if self.samples is not None else self.available
        if self.world_size == 1:
            return self._global_order(epoch, total)[:rows]
        order = self._global_order(epoch, total)
        used = total // self.world_size * self.world_size if self.drop_last else total + -total % self.world_size
        if used > total and total:
            order = np.resize(order, used)
        return np.ascontiguousarray(order[self.rank : used : self.world_size][:rows])

    @cached_property
    def padding(self) -> np.ndarray | None:
        """Per row of :meth:`order`: True where the row repeats a sample to pad this rank's shard.

        None when the plan does not pad (one rank, or ``drop_last``).
        """
        if not self.pads:
            return None
        assert self.samples is not None
        return self.positions(0, self._known_rows()) >= self.samples

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Global positions in the epoch's order of this rank's rows ``[start, stop)`` (a stream reads these)."""
        return np.arange(start, stop, dtype=np.int64) * self.world_size + self.rank

    def _global_order(self, epoch: int, total: int) -> np.ndarray:
        available = self.available
        assert available is not None
        if total == 0 or available == 0:
            return np.zeros(0, dtype=np.int64)
        repeats = math.ceil(total / available)
        if not self.shuffle:
            return np.resize(np.arange(available, dtype=np.int64), total)
        if self.shuffled_order is not None:
            parts = [self._source_order(epoch, part) for part in range(repeats)]
        else:
            sequence = np.random.SeedSequence([self.seed, epoch], spawn_key=(SHUFFLE_STREAM,))
            rng = np.random.Generator(np.random.PCG64(sequence))
            parts = [rng.permutation(available) for _ in range(repeats)]
        return np.concatenate(parts)[:total].astype(np.int64, copy=False)

    def _source_order(self, epoch: int, part: int) -> np.ndarray:
        """The source's order; repeats of a short source use seeds derived from (seed, epoch, part)."""
        assert self.shuffled_order is not None and self.available is not None
        seed = self.seed
        if part:
            state = np.random.SeedSequence([self.seed, epoch, part], spawn_key=(SHUFFLE_STREAM,)).generate_state(2)
            seed = int(state[0]) << 31 | int(state[1]) >> 1
        order = np.asarray(self.shuffled_order(seed, epoch))
        if order.shape != (self.available,) or order.dtype.kind not in "iu":
            raise ValueError(
                f"source.shuffled_order({seed}, {epoch}) must return an integer permutation of "
                f"range({self.available}) but returned an array of shape {order.shape} and dtype {order.dtype}"
            )
        if len(order) and (order.min() < 0 or order.max() >= self.available):
            raise ValueError(f"source.shuffled_order({seed}, {epoch}) returned indices outside range({self.available})")
        return order.astype(np.int64, copy=False)
