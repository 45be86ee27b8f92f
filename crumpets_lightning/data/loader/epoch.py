"""One epoch of a loader: :class:`EpochIterator` owns its epoch's state and turns the plan into batches.

The iterator asks the :class:`~crumpets_lightning.data.loader.plan.EpochPlan` which rows come next, picks a
free shared-memory slot for each upcoming batch, splits the batch into chunks for the
:class:`~crumpets_lightning.data.transport.pool.WorkerPool`, collects the replies and hands out each batch in
order as a :class:`LoadedBatch`: numpy views of the slot (rows of skipped bad samples compacted away), the
worker's lists, the source index and padding mask of every row (slices of the plan's arrays) and the row
bounds of its steps. No per-sample Python runs here.

:class:`Runtime` is what exists only while a loader runs (the pool, the slot ring, the slots being written);
it outlives iterators, so an abandoned iterator's slots come back once the workers stop writing them.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from crumpets_lightning.data.loader.plan import EpochPlan, PlannedBatch
from crumpets_lightning.data.transport.messages import Chunk, Discarded, Done, Failure
from crumpets_lightning.data.transport.pool import WorkerPool, error_from_failure
from crumpets_lightning.data.transport.shm import BatchLayout, SharedBatchRing

__all__ = ["EpochIterator", "EpochOwner", "LoadedBatch", "Runtime"]

_POLL_S = 0.5
_KEYS_SHOWN = 20


class Runtime:
    """The processes, sockets and shared memory of a running loader.

    Args:
        pool: the worker processes.
        ring: the shared-memory slots (None: results travel through ZeroMQ as bytes).
        layout: the batch layout.
        max_inflight: the most batches being prepared at once.
    """

    def __init__(self, pool: WorkerPool, ring: SharedBatchRing | None, layout: BatchLayout, max_inflight: int) -> None:
        self.pool = pool
        self.ring = ring
        self.layout = layout
        self.max_inflight = max_inflight
        #: slot of every batch assigned and not handed out yet, by (generation, seq)
        self.assigned: dict[tuple[int, int], int | None] = {}
        self.generation = 0
        self.owner_pid = os.getpid()

    def new_generation(self) -> int:
        """Abandon the current run's unfinished work and start a new run; return its generation."""
        self.pool.drop_queued()
        self.generation += 1
        self.pool.set_generation(self.generation)
        for key in [key for key in self.assigned if self.pool.in_flight(*key) == 0]:
            self.release(key)
        return self.generation

    def release(self, key: tuple[int, int]) -> None:
        """The abandoned batch ``key`` is no longer written: give its slot back."""
        slot = self.assigned.pop(key, None)
        if slot is not None and self.ring is not None:
            self.ring.release(slot)

    def close(self) -> None:
        """Stop the workers and free the shared memory (only in the process that started them)."""
        if os.getpid() != self.owner_pid:
            return
        try:
            self.pool.close()
        finally:
            if self.ring is not None:
                self.ring.close()
            self.assigned.clear()


@dataclass
class LoadedBatch:
    """A batch ready for the caller.

    Attributes:
        seq: the batch number in the epoch.
        first_step: the epoch step number of its first step.
        buffers: what the loader's ``convert`` made of the rows: numpy views of shared memory (private arrays
            without it) for ``TurboDataLoader``, tensors for ``TorchTurboDataLoader``.
        lists: what the worker appended to ``batch`` lists, in sample order.
        index: int64 ``[rows]``: the source index (stream position) of every row.
        padding: bool ``[rows]``: True on rows that repeat a sample to pad the shard; None when not padding.
        steps: ``(start, stop)`` rows of each of its steps (an empty step only when all its samples were
            skipped as bad).
    """

    seq: int
    first_step: int
    buffers: dict[str, Any]
    lists: dict[str, list[Any]]
    index: np.ndarray
    padding: np.ndarray | None
    steps: list[tuple[int, int]]

    @property
    def rows(self) -> int:
        """Rows in the batch."""
        return len(self.index)

    def step(self, number: int) -> dict[str, Any]:
        """Step ``number`` of this batch: the rows of every buffer and list."""
        start, stop = self.steps[number]
        if len(self.steps) == 1 and start == 0 and stop == self.rows:
            return {**self.buffers, **self.lists}
        out = {key: value[start:stop] for key, value in self.buffers.items()}
        for key, values in self.lists.items():
            out[key] = values[start:stop] if len(values) == self.rows else values
        return out


@dataclass
class _Pending:
    """A batch assigned to a slot whose chunks are being prepared."""

    planned: PlannedBatch
    slot: int | None
    chunks: list[tuple[int, int]]
    index: np.ndarray
    error: BaseException | None = None
    results: dict[int, tuple[Done, list[Any]]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.chunks)


class _StreamReader:
    """Reads a stream's samples by global position (skipping other ranks'); keeps the first few for padding."""

    def __init__(self, stream: Iterator[Any], samples: int | None, keep: int) -> None:
        self.stream = stream
        self.samples = samples
        self.keep = keep
        self.head: list[Any] = []
        self.position = 0
        self.ended = False

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """The samples at ``positions`` (ascending), fewer when a stream of unknown length ends.

        Raises:
            ValueError: a stream of known length ended early.
        """
        found: list[int] = []
        payloads: list[Any] = []
        for wanted in positions.tolist():
            if self.samples is not None and wanted >= self.samples:  # padding: a repeat of the epoch's start
                found.append(wanted - self.samples)
                payloads.append(self.head[wanted - self.samples])
                continue
            while self.position <= wanted:
                try:
                    item = next(self.stream)
                except StopIteration:
                    if self.samples is not None:
                        raise ValueError(
                            f"the iterable ended after {self.position} samples but length={self.samples}; pass a "
                            "re-iterable (a list) or itertools.cycle for several epochs, or the right length"
                        ) from None
                    self.ended = True
                    return np.asarray(found, dtype=np.int64), payloads
                if self.position < self.keep:
                    self.head.append(item)
                self.position += 1
            found.append(wanted)
            payloads.append(item)
        return np.asarray(found, dtype=np.int64), payloads

    def drain(self) -> None:
        """Read (and drop) the epoch's positions no rank of this one needed, up to ``samples``.

        Every epoch then takes exactly ``samples`` items of an iterator on every rank, so the next epoch starts
        at the same item everywhere (other ranks' positions, cut samples of ``drop_last``).
        """
        if self.samples is None:
            return
        for _ in itertools.islice(self.stream, max(0, self.samples - self.position)):
            self.position += 1


class EpochOwner(Protocol):
    """What an :class:`EpochIterator` needs from the loader that made it (``TurboDataLoader``)."""

    name: str
    timeout: float

    def _begin_epoch(self, iterator: EpochIterator) -> None: ...

    def _is_current(self, iterator: EpochIterator) -> bool: ...

    def _skipped(self, skipped: list[tuple[object, str]], seq: int, epoch: int) -> None: ...

    def _count_batch(self) -> int: ...

    def convert(self, buffers: dict[str, np.ndarray]) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class EpochIterator:
    """One epoch of a loader, from the first batch after ``start_step`` to the end (or the stream's end).

    Created by the loader; its work starts at the first :meth:`next_batch`. A newer iterator of the same
    loader, or ``stop()``, supersedes it.

    Args:
        loader: the loader (provides the runtime, the plan and where the epoch starts).
    """

    def __init__(self, loader: EpochOwner) -> None:
        self._loader = loader
        self._runtime: Runtime | None = None
        self.generation = -1
        self.epoch = -1
        self.plan: EpochPlan | None = None
        #: epoch steps handed to the caller (where a resume would continue); see :meth:`deliver`
        self.steps_done = 0
        self._iteration = 0
        self._order: np.ndarray | None = None
        self._stream: _StreamReader | None = None
        self._num_batches: int | None = None
        self._first_step = 0
        self._next_assign = 0
        self._next_yield = 0
        self._pending: dict[int, _Pending] = {}

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the epoch has begun (its first batch was asked for)."""
        return self._runtime is not None

    @property
    def finished(self) -> bool:
        """Whether every batch of the epoch was handed out."""
        return self._num_batches is not None and self._next_yield >= self._num_batches

    def remaining_batches(self) -> int:
        """Batches not handed out yet.

        Raises:
            TypeError: a stream of unknown length.
        """
        if self._num_batches is None:
            raise TypeError("this epoch reads a stream of unknown length")
        return self._num_batches - self._next_yield

    def deliver(self, batch: LoadedBatch, steps: int) -> int:
        """Record that the caller now holds the first ``steps`` steps of ``batch`` (where a resume continues).

        Returns:
            The loader's iteration number of ``batch`` (counted when its first step is delivered).
        """
        if self.steps_done <= batch.first_step:
            self._iteration = self._loader._count_batch()
        self.steps_done = batch.first_step + steps
        return self._iteration

    def begin(
        self, runtime: Runtime, plan: EpochPlan, epoch: int, start_step: int, stream: Iterator[Any] | None
    ) -> None:
        """Start the epoch at ``start_step`` (called by the loader at the first batch)."""
        self._runtime = runtime
        self.generation = runtime.new_generation()
        self.plan, self.epoch = plan, epoch
        self.steps_done = self._first_step = start_step
        self._next_assign = self._next_yield = plan.batch_of_step(start_step)
        if stream is None:
            self._order = plan.order(epoch)
            self._num_batches = plan.num_batches
        else:
            self._stream = _StreamReader(stream, plan.samples, keep=plan.world_size)
            self._num_batches = None if plan.rows is None else plan.num_batches

    # -- producing batches ---------------------------------------------------------------------------------

    def next_batch(self) -> LoadedBatch:
        """The next batch (blocking until the workers prepared it).

        Raises:
            StopIteration: the epoch is over.
            RuntimeError: a newer iterator superseded this one.
            WorkerError, SampleError, WorkerDiedError, TimeoutError: see the loader.
        """
        if not self.started:
            self._loader._begin_epoch(self)
        if self.finished:
            raise StopIteration
        runtime = self._runtime
        assert runtime is not None
        if not self._loader._is_current(self):
            raise RuntimeError(
                f"{self._loader.name}: this epoch iterator was superseded by a newer one or the loader was stopped; "
                "call iter(loader) again"
            )
        try:
            pending = self._wait(runtime)
        except StopIteration:
            raise
        except BaseException:
            self._loader.stop()
            raise
        del self._pending[self._next_yield]
        self._next_yield += 1
        return self._assemble(runtime, pending)

    def _wait(self, runtime: Runtime) -> _Pending:
        timeout = self._loader.timeout
        last_progress = time.monotonic()
        while True:
            self._schedule(runtime)
            pending = self._pending.get(self._next_yield)
            if pending is None and self.finished:
                raise StopIteration
            if pending is not None and pending.error is not None:
                raise pending.error
            if pending is not None and pending.complete:
                return pending
            waited = time.monotonic() - last_progress
            if waited > timeout:
                raise TimeoutError(self._timeout_message(runtime))
            replies = runtime.pool.poll(min(_POLL_S, timeout - waited + 0.01))
            for reply, frames in replies:
                self._on_reply(runtime, reply, frames)
            if replies:
                last_progress = time.monotonic()

    def _timeout_message(self, runtime: Runtime) -> str:
        keys = runtime.pool.held_keys(generation=self.generation, seq=self._next_yield)
        shown = ", ".join(map(repr, keys[:_KEYS_SHOWN])) + (" ..." if len(keys) > _KEYS_SHOWN else "")
        held = f" (the workers still hold samples {shown})" if keys else ""
        return (
            f"{self._loader.name}: no progress from the workers for {self._loader.timeout:g} s while waiting for "
            f"batch {self._next_yield} of epoch {self.epoch}{held}; a worker may be stuck in prepare() or setup(). "
            "Raise `timeout` if samples are legitimately that slow."
        )

    def _on_reply(self, runtime: Runtime, reply: Done | Failure | Discarded, frames: list[Any]) -> None:
        key = (reply.generation, reply.seq)
        if reply.generation != self.generation:
            if runtime.pool.in_flight(*key) == 0:
                runtime.release(key)  # an abandoned run's batch is no longer written
            return
        pending = self._pending.get(reply.seq)
        if pending is None:
            return
        if isinstance(reply, Failure) and pending.error is None:
            # raised when this batch is due, so the batches before it are still delivered
            pending.error = error_from_failure(reply)
        elif isinstance(reply, Done):
            pending.results[reply.row_offset] = (reply, frames)

    def _schedule(self, runtime: Runtime) -> None:
        ring = runtime.ring
        while (self._num_batches is None or self._next_assign < self._num_batches) and len(
            self._pending
        ) < runtime.max_inflight:
            if self._stream is not None and self._stream.ended:
                self._num_batches = self._next_assign  # a stream of unknown length ran out
                break
            slot = None
            if ring is not None:
                slot = ring.acquire()
                if slot is None:
                    if self._next_assign != self._next_yield:
                        break  # the batches already in flight come first
                    if runtime.assigned:
                        break  # an abandoned run's slot is still being written: wait for it
                    gc.collect()
                    slot = ring.acquire()
                    if slot is None:
                        slot = ring.grow()
            if not self._assign(runtime, slot):
                if slot is not None and ring is not None:
                    ring.release(slot)
                break
        runtime.pool.dispatch()

    def _assign(self, runtime: Runtime, slot: int | None) -> bool:
        plan = self.plan
        assert plan is not None
        seq = self._next_assign
        start_step = self._first_step if seq == plan.batch_of_step(self._first_step) else None
        planned = plan.batch(seq, start_step)
        payloads: list[Any] | None = None
        if self._stream is None:
            assert self._order is not None
            index = self._order[planned.start : planned.stop]
        else:
            try:
                index, payloads = self._stream.read(plan.positions(planned.start, planned.stop))
            except ValueError as error:
                raise ValueError(f"{self._loader.name}: epoch {self.epoch}: {error}") from None
            if seq + 1 == self._num_batches:
                self._stream.drain()  # the next epoch starts at item `length` on every rank
            if not len(index):
                self._num_batches = seq
                return False
            planned = dataclasses.replace(planned, stop=planned.start + len(index))
        nchunks = min(runtime.pool.nworkers, len(index))
        bounds = np.linspace(0, len(index), nchunks + 1).astype(np.int64)
        splits = [(int(a), int(b - a)) for a, b in itertools.pairwise(bounds) if b > a]
        slot_name = None if slot is None or runtime.ring is None else runtime.ring.name(slot)
        for offset, count in splits:
            runtime.pool.submit(
                Chunk(
                    self.generation,
                    seq,
                    slot_name,
                    offset,
                    self.epoch,
                    index[offset : offset + count],
                    None if payloads is None else payloads[offset : offset + count],
                )
            )
        self._pending[seq] = _Pending(planned, slot, splits, index)
        runtime.assigned[(self.generation, seq)] = slot
        self._next_assign += 1
        return True

    def _assemble(self, runtime: Runtime, pending: _Pending) -> LoadedBatch:
        lists: dict[str, list[Any]] = {}
        skipped: list[tuple[object, str]] = []
        skipped_rows: list[int] = []
        moves: list[tuple[int, int, int]] = []
        total = 0
        for offset, _ in pending.chunks:
            done, _frames = pending.results[offset]
            if done.written and offset != total:
                moves.append((offset, total, done.written))
            total += done.written
            for key, values in done.lists.items():
                lists.setdefault(key, []).extend(values)
            skipped.extend(done.skipped)
            skipped_rows.extend(offset + row for row in done.skipped_rows)
        layout = runtime.layout
        runtime.assigned.pop((self.generation, pending.planned.seq), None)
        if pending.slot is not None and runtime.ring is not None:
            if moves:
                views = runtime.ring.views(pending.slot)
                for source, target, count in moves:
                    for view in views.values():
                        view[target : target + count] = view[source : source + count]
            buffers = runtime.ring.export(pending.slot, total)
        else:
            buffers = layout.allocate(total)
            row = 0
            for offset, _ in pending.chunks:
                done, frames = pending.results[offset]
                for frame, (key, (shape, dtype, _fill)) in zip(frames, layout.specs.items()):
                    buffers[key][row : row + done.written] = np.frombuffer(frame.buffer, dtype=dtype).reshape(
                        (done.written, *shape)
                    )
                row += done.written
        plan = self.plan
        assert plan is not None
        planned = pending.planned
        padding = None if plan.padding is None else plan.padding[planned.start : planned.stop]
        steps = plan.step_bounds(planned.start, planned.stop)
        index = pending.index
        if skipped_rows:
            kept = np.ones(len(index), dtype=bool)
            kept[skipped_rows] = False
            before = np.concatenate([[0], np.cumsum(kept)])
            steps = [(int(before[a]), int(before[b])) for a, b in steps]
            index = index[kept]
            padding = None if padding is None else padding[kept]
            self._loader._skipped(skipped, pending.planned.seq, self.epoch)
        converted = self._loader.convert(buffers)
        return LoadedBatch(planned.seq, planned.first_step, converted, lists, index, padding, steps)


def warn_skipped(name: str, skipped: list[tuple[object, str]], seq: int, epoch: int) -> None:
    """Warn about samples dropped because of ``skip_bad_samples``."""
    details = "; ".join(f"{key!r}: {message}" for key, message in skipped[:5])
    warnings.warn(
        f"{name}: skipped {len(skipped)} bad sample(s) in batch {seq} of epoch {epoch} (skip_bad_samples=True): "
        f"{details}",
        RuntimeWarning,
        stacklevel=6,
    )
