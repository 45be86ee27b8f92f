"""``TurboDataLoader``: the crumpets multi-process loader (ZeroMQ work queues, batches in shared memory).

How a batch is made
-------------------
The main process plans each epoch (which sample indices go into which batch, on this rank), picks a free
shared-memory slot for each upcoming batch and sends each worker a *chunk* of the batch: the indices only,
since workers read a random-access source themselves (inherited through ``fork``). Workers write their rows
straight into the slot and reply with a short message. The main process hands the caller numpy views of the
slot: no per-sample Python and no copy on the consumer side. The slot is reused only after every view of
it is gone, so a batch stays valid as long as the caller references it.

Determinism
-----------
Sample ``i`` of epoch ``e`` is prepared with ``numpy.random.Generator(PCG64([seed, e, i]))``; the shuffle
order of epoch ``e`` comes from its own generator. Batches come out in order. The output is therefore
bitwise identical whatever ``nworkers`` and however the work is scheduled.

Lightning
---------
``iter()`` starts nothing (Lightning calls it to probe); processes start at the first ``next()``, at
:meth:`TurboDataLoader.start` or on ``with loader:``. Every ``iter()`` is a fresh epoch of exactly
``len(loader)`` batches, even after an abandoned iterator. :meth:`~TurboDataLoader.set_epoch`,
:meth:`~TurboDataLoader.state_dict` / :meth:`~TurboDataLoader.load_state_dict` (exact mid-epoch resume) and
:meth:`~TurboDataLoader.set_shard` (``rank`` / ``world_size`` read from the trainer in ``setup()``) are what
the DataModule uses.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import math
import os
import pickle
import secrets
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crumpets_lightning.data.errors import SampleError, WorkerError
from crumpets_lightning.data.transport.pool import Chunk, WorkerPool
from crumpets_lightning.data.transport.shm import BatchLayout, SharedBatchRing, sweep_stale_resources
from crumpets_lightning.data.workers.base import Worker

__all__ = ["TurboDataLoader"]

_SHUFFLE_STREAM = 0x5348_5546  # spawn key that keeps shuffle generators apart from per-sample ones
_POLL_S = 0.5
_MAX_GROWTH = 4
_STATE_VERSION = 1


def _is_random_access(source: object) -> bool:
    return (
        hasattr(source, "__len__")
        and hasattr(source, "__getitem__")
        and not isinstance(source, (str, bytes, bytearray, Mapping))
    )


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an int >= {minimum} but got {value!r}")
    return int(value)


@dataclass
class _PendingBatch:
    """A batch assigned to a slot whose chunks are being prepared."""

    generation: int
    seq: int
    slot: int | None
    chunks: list[tuple[int, int]]
    outstanding: int
    error: BaseException | None = None
    results: dict[int, tuple[int, dict[str, list[Any]], list[tuple[object, str]], list[Any]]] = field(
        default_factory=dict
    )

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.chunks)


@dataclass
class _EpochRun:
    """One epoch iterator's progress."""

    generation: int
    epoch: int
    first_batch: int
    nbatches: int | None
    order: np.ndarray | None
    stream: Iterator[Any] | None = None
    stream_position: int = 0
    stream_head: list[Any] = field(default_factory=list)
    next_assign: int = 0
    next_yield: int = 0
    pending: dict[int, _PendingBatch] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.next_yield


class _Runtime:
    """Everything that exists only while the loader runs: processes, sockets, shared memory."""

    def __init__(self, pool: WorkerPool, ring: SharedBatchRing | None, max_inflight: int) -> None:
        self.pool = pool
        self.ring = ring
        self.max_inflight = max_inflight
        self.queue: collections.deque[tuple[_PendingBatch, Chunk]] = collections.deque()
        self.inflight: dict[tuple[int, int], _PendingBatch] = {}
        self.next_worker = 0
        self.owner_pid = os.getpid()

    def close(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        try:
            self.pool.close()
        finally:
            if self.ring is not None:
                self.ring.close()
            self.queue.clear()
            self.inflight.clear()


class _RuntimeHolder:
    """Lets the ``weakref.finalize`` / ``atexit`` safety net stop whatever runtime is current."""

    def __init__(self) -> None:
        self.runtime: _Runtime | None = None

    def close(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.close()


class _SamplerProxy:
    """What Lightning finds as ``loader.sampler``: forwards ``set_epoch`` to the loader."""

    def __init__(self, loader: TurboDataLoader) -> None:
        self._loader = weakref.ref(loader)

    def set_epoch(self, epoch: int) -> None:
        loader = self._loader()
        if loader is not None:
            loader.set_epoch(epoch)


class _EpochIterator:
    """One epoch of a loader; created by ``iter(loader)``, starts its work at the first ``next()``."""

    def __init__(self, loader: TurboDataLoader) -> None:
        self._loader = loader
        self._run: _EpochRun | None = None

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> tuple[int, list[dict[str, Any]]]:
        return self._loader._next_item(self)

    def __len__(self) -> int:
        if self._run is None:
            return self._loader._remaining_batches()
        if self._run.nbatches is None:
            raise TypeError("this epoch reads a stream of unknown length")
        return self._run.nbatches - self._run.next_yield


class TurboDataLoader:
    """Fast parallel loading and processing of samples by worker processes, batches in shared memory.

    Iterating yields ``(iteration, mini_batches)`` as in crumpets: ``iteration`` counts batches from
    ``start_iteration + 1`` across epochs; ``mini_batches`` is a list of ``num_mini_batches`` dicts of
    ``batch_size // num_mini_batches`` rows each. Buffer keys (``image``, ``label``, ...) map to numpy arrays
    that are views of shared memory, valid as long as you reference them; lists the worker appended to in
    ``batch`` map to lists in sample order. A short last batch (``drop_last=False``) has fewer rows, never
    stale ones; with ``num_mini_batches > 1`` its last mini-batches are shorter and empty ones are omitted
    (the list always holds at least one mini-batch).

    Args:
        iterable: the samples (dicts, or msgpack bytes as written by :func:`~.codec.pack_sample`). A
            random-access sequence (``__len__`` + ``__getitem__``, e.g. :class:`~.datasets.MsgpackDataset`)
            is read by the workers themselves and allows ``shuffle``, sharding and exact resume. Any other
            iterable is streamed: the main process iterates it and sends the samples; a re-iterable is
            iterated afresh each epoch, an iterator continues where the last epoch stopped.
        batch_size: samples per batch.
        worker_template: a :class:`~.worker.Worker` instance, copied into every worker process.
        nworkers: worker processes; None means one per usable CPU.
        length: samples per epoch. Defaults to ``len(iterable)``; required for streams that should be cut
            into epochs (e.g. ``itertools.cycle``). A random-access source longer than ``length`` is cut, a
            shorter one is repeated (in a new order when shuffling).
        num_mini_batches: split each batch into this many mini-batches (must divide ``batch_size``).
        start_iteration: the iteration counter starts after this number.
        shared_memory: True for ``2 * nworkers + 2`` shared-memory slots, an int >= 2 for that many, False to
            send results through ZeroMQ as bytes (works anywhere, copies).
        seed: seeds shuffling and every sample's generator; None draws one (see :attr:`seed`).
        shuffle: a new order every epoch (random-access sources only).
        drop_last: drop the last batch when it is short (and, when sharding, samples that do not divide
            evenly among ranks instead of repeating some).
        rank: this process's shard (see :meth:`set_shard`).
        world_size: the number of shards.
        timeout: seconds without any progress from the workers before ``TimeoutError``.
        skip_bad_samples: drop samples whose worker raised :class:`~.errors.SampleError` (their batch gets
            shorter), record their keys in :attr:`skipped_samples` and warn, instead of raising.
        name: shown in messages and process names.

    Raises:
        ValueError: a numeric argument is out of range or ``num_mini_batches`` does not divide
            ``batch_size``.
        TypeError: ``worker_template`` is not a ``Worker`` or ``iterable`` is not iterable.

    Example::

        loader = TurboDataLoader(MsgpackDataset("train.msgpack"), 64, ClassificationWorker(...), nworkers=4,
                                 shuffle=True, seed=0)
        with loader:
            for epoch in range(3):
                for iteration, mini_batches in loader:
                    images = mini_batches[0]["image"]
    """

    def __init__(
        self,
        iterable: Iterable[Any],
        batch_size: int,
        worker_template: Worker,
        nworkers: int | None = None,
        length: int | None = None,
        num_mini_batches: int = 1,
        start_iteration: int = 0,
        shared_memory: bool | int = True,
        *,
        seed: int | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        timeout: float = 120.0,
        skip_bad_samples: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(worker_template, Worker):
            raise TypeError(
                f"Expected `worker_template` to be a crumpets_lightning Worker instance but got "
                f"{type(worker_template).__name__}; subclass BufferWorker"
            )
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if nworkers is None:
            nworkers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.nworkers = _check_int("nworkers", nworkers, 1)
        self.num_mini_batches = _check_int("num_mini_batches", num_mini_batches, 1)
        if self.batch_size % self.num_mini_batches:
            raise ValueError(
                f"Expected `batch_size` ({self.batch_size}) to be divisible by `num_mini_batches` "
                f"({self.num_mini_batches})"
            )
        self.start_iteration = _check_int("start_iteration", start_iteration, 0)
        if isinstance(shared_memory, bool):
            self._nslots = 2 * self.nworkers + 2 if shared_memory else 0
        else:
            self._nslots = _check_int("shared_memory", shared_memory, 2)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"Expected `timeout` to be a positive number of seconds but got {timeout!r}")
        self.timeout = float(timeout)
        if seed is None:
            self._seed_given = False
            seed = secrets.randbits(63)
        else:
            self._seed_given = True
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.name = name or "TurboDataLoader"
        self.worker_template = worker_template
        self._random_access = _is_random_access(iterable)
        if not self._random_access and not isinstance(iterable, Iterable):
            raise TypeError(
                f"Expected `iterable` to be a sequence or an iterable of samples but got {type(iterable).__name__}"
            )
        if isinstance(iterable, Mapping):
            raise TypeError("Expected `iterable` to be a sequence or an iterable of samples but got a mapping")
        if self.shuffle and not self._random_access:
            raise ValueError(
                "shuffle=True needs a random-access source (with __len__ and __getitem__, e.g. a list or a "
                f"MsgpackDataset), got a stream of type {type(iterable).__name__}"
            )
        self.iterable = iterable
        if length is None and self._random_access:
            length = len(iterable)  # type: ignore[arg-type]
        self._length: int | None = None if length is None else _check_int("length", length, 0)
        if length is not None and length == 0 and not self._random_access:
            raise ValueError("Expected `length` to be a positive int but got 0")
        self._holder = _RuntimeHolder()
        self._finalizer = weakref.finalize(self, self._holder.close)
        self.rank = 0
        self.world_size = 1
        self.set_shard(rank, world_size)
        #: keys of samples dropped because of ``skip_bad_samples``
        self.skipped_samples: list[object] = []
        self.batch_sampler = None
        self._iteration = self.start_iteration
        self._next_epoch = 0
        self._resume: tuple[int, int] | None = None
        self._generation = 0
        self._run: _EpochRun | None = None
        self._persistent_stream: Iterator[Any] | None = None

    # -- properties and small API ---------------------------------------------------------------------------

    @property
    def sampler(self) -> _SamplerProxy:
        """An object with ``set_epoch`` (what Lightning calls every epoch), forwarding to :meth:`set_epoch`."""
        return _SamplerProxy(self)

    @property
    def epoch(self) -> int:
        """The epoch of the running epoch iterator, else the epoch the next one will use."""
        if self._run is not None and (self._run.nbatches is None or self._run.next_yield < self._run.nbatches):
            return self._run.epoch
        if self._resume is not None:
            return self._resume[0]
        return self._next_epoch

    @property
    def iteration(self) -> int:
        """The iteration number of the last batch yielded (``start_iteration`` before the first)."""
        return self._iteration

    @property
    def running(self) -> bool:
        """Whether worker processes are running."""
        return self._holder.runtime is not None

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty when not running)."""
        runtime = self._holder.runtime
        return [] if runtime is None else runtime.pool.pids

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next epoch iterator that has not produced a batch yet.

        A pending resume point (:meth:`load_state_dict`) keeps its own epoch.
        """
        epoch = _check_int("epoch", epoch, 0)
        if self._resume is not None and self._resume[0] != epoch:
            warnings.warn(
                f"{self.name}: set_epoch({epoch}) while resuming epoch {self._resume[0]} from a saved state; "
                "the saved epoch is continued first",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self._next_epoch = epoch

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only every ``world_size``-th sample starting at ``rank`` (distributed training).

        The epoch's order is padded with samples from its start to a multiple of ``world_size`` (cut instead
        when ``drop_last``), so every rank yields the same number of batches.

        Raises:
            ValueError: bad values.
            RuntimeError: the loader is running.
        """
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"Expected `rank` to be in [0, {world_size}) but got {rank}")
        if self.running and (rank, world_size) != (self.rank, self.world_size):
            raise RuntimeError(f"{self.name}: set_shard() must be called before the loader starts; call stop() first")
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank.

        Raises:
            TypeError: a stream without ``length`` has no known length.
        """
        if self._length is None:
            raise TypeError(f"{self.name} streams an iterable of unknown length; pass `length` to get len()")
        return self._batches_for(self._length)

    def _batches_for(self, samples: int) -> int:
        if self.drop_last:
            return (samples // self.world_size) // self.batch_size
        return math.ceil(math.ceil(samples / self.world_size) / self.batch_size)

    def _remaining_batches(self) -> int:
        if self._resume is not None:
            return len(self) - self._resume[1]
        return len(self)

    def __repr__(self) -> str:
        try:
            batches: object = len(self)
        except TypeError:
            batches = "unknown"
        return (
            f"{type(self).__name__}(name={self.name!r}, samples={self._length}, batch_size={self.batch_size}, "
            f"batches={batches}, nworkers={self.nworkers}, num_mini_batches={self.num_mini_batches}, "
            f"seed={self.seed}, epoch={self.epoch}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
            f"shard={self.rank}/{self.world_size}, worker={type(self.worker_template).__name__}, "
            f"running={self.running})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_holder", "_finalizer", "_run", "_persistent_stream"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._run = None
        self._persistent_stream = None
        self._holder = _RuntimeHolder()
        self._finalizer = weakref.finalize(self, self._holder.close)

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: enough to continue the current epoch exactly (see :meth:`load_state_dict`)."""
        if self._resume is not None:
            epoch, done = self._resume
        elif self._run is not None:
            epoch, done = self._run.epoch, self._run.delivered
        else:
            epoch, done = self._next_epoch, 0
        return {
            "version": _STATE_VERSION,
            "epoch": epoch,
            "batches_done": done,
            "iteration": self._iteration,
            "seed": self.seed,
            "samples": self._length,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next epoch iterator yields the rest of the saved epoch.

        The batches are exactly those an uninterrupted run would have produced. A state saved at the end of
        an epoch continues with the next epoch. A loader built with ``seed=None`` adopts the saved seed.

        Raises:
            ValueError: the state comes from a loader with a different seed, sample count, batch size, world
                size, shuffle or drop_last setting.
        """
        missing = {"epoch", "batches_done", "iteration", "seed"} - set(state_dict)
        if missing:
            raise ValueError(f"{self.name}: not a loader state, missing {sorted(missing)}")
        if state_dict["seed"] != self.seed and self._seed_given:
            raise ValueError(
                f"{self.name}: the saved state was made with seed {state_dict['seed']} but this loader has seed "
                f"{self.seed}; build the loader with the same seed to resume"
            )
        for key, mine in (
            ("samples", self._length),
            ("batch_size", self.batch_size),
            ("world_size", self.world_size),
            ("shuffle", self.shuffle),
            ("drop_last", self.drop_last),
        ):
            if key in state_dict and state_dict[key] != mine:
                raise ValueError(
                    f"{self.name}: the saved state has {key}={state_dict[key]!r} but this loader has {key}={mine!r}; "
                    "a saved epoch can only be continued by a loader that makes the same batches"
                )
        self.seed = int(state_dict["seed"])
        epoch, done = int(state_dict["epoch"]), int(state_dict["batches_done"])
        if self._length is not None and done >= len(self):
            epoch, done = epoch + 1, 0
        self._resume = (epoch, done)
        self._iteration = int(state_dict["iteration"])

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes (done automatically at the first ``next()``).

        Raises:
            ValueError: the source is empty.
        """
        if self.running:
            return
        if self._random_access and len(self.iterable) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{self.name}: the source {type(self.iterable).__name__} has no samples")
        if self._length == 0:
            raise ValueError(f"{self.name}: length is 0, there is nothing to load")
        sweep_stale_resources()
        # imported once here so forked workers can limit its threads
        with contextlib.suppress(ImportError):
            import cv2  # noqa: F401
        layout = BatchLayout(self.worker_template.buffer_specs, self.batch_size)
        ring = None
        if self._nslots:
            token = secrets.token_hex(4)
            ring = SharedBatchRing(layout, self._nslots, _MAX_GROWTH * self._nslots, token)
        try:
            # read-only tables built once here are shared by every forked worker
            self.worker_template.prepare_shared()
            pool = WorkerPool(
                self.worker_template,
                self.nworkers,
                self.iterable if self._random_access else None,  # type: ignore[arg-type]
                layout,
                self.seed,
                self.skip_bad_samples,
                self.name,
            )
        except BaseException:
            if ring is not None:
                ring.close()
            raise
        self._layout = layout
        self._holder.runtime = _Runtime(pool, ring, self._nslots or 2 * self.nworkers + 2)

    def stop(self) -> None:
        """Stop and join the workers, close sockets, remove shared memory. Idempotent.

        Batches you still reference stay valid. A later ``next()`` on a new iterator starts again.
        """
        self._run = None
        self._holder.close()

    def __enter__(self) -> TurboDataLoader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __iter__(self) -> _EpochIterator:
        return _EpochIterator(self)

    # -- epoch planning ------------------------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch`` (random-access sources)."""
        available = len(self.iterable)  # type: ignore[arg-type]
        total = self._length if self._length is not None else available
        if self.shuffle:
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence([self.seed, epoch], spawn_key=(_SHUFFLE_STREAM,)))
            )
            parts = [rng.permutation(available) for _ in range(math.ceil(total / available))]
            order = np.concatenate(parts)[:total]
        else:
            order = np.resize(np.arange(available, dtype=np.int64), total)
        return self._shard(order.astype(np.int64))

    def _shard(self, order: np.ndarray) -> np.ndarray:
        ws = self.world_size
        if ws == 1:
            return order
        order = order[: len(order) // ws * ws] if self.drop_last else np.resize(order, len(order) + -len(order) % ws)
        return order[self.rank :: ws]

    def _begin_run(self) -> _EpochRun:
        if not self.running:
            self.start()
        runtime = self._holder.runtime
        assert runtime is not None
        self._abandon(runtime)
        self._generation += 1
        runtime.pool.set_generation(self._generation)
        if self._resume is not None:
            epoch, first = self._resume
            self._resume = None
        else:
            epoch, first = self._next_epoch, 0
        self._next_epoch = epoch + 1
        if self._random_access:
            order = self._epoch_order(epoch)
            nbatches = len(order) // self.batch_size if self.drop_last else math.ceil(len(order) / self.batch_size)
            run = _EpochRun(self._generation, epoch, first, nbatches, order)
        else:
            if self.world_size > 1 and self._length is None:
                raise ValueError(
                    f"{self.name}: a streamed source needs `length` when sharded over {self.world_size} ranks"
                )
            stream_batches = None if self._length is None else len(self)
            run = _EpochRun(self._generation, epoch, first, stream_batches, None, stream=self._stream_for_epoch())
        run.next_assign = run.next_yield = first
        self._run = run
        return run

    def _stream_for_epoch(self) -> Iterator[Any]:
        iterator = iter(self.iterable)
        if iterator is self.iterable:
            # an iterator continues across epochs
            if self._persistent_stream is None:
                self._persistent_stream = iterator
            return self._persistent_stream
        return iterator

    def _abandon(self, runtime: _Runtime) -> None:
        """Discard the current run's unfinished work; its slots come back once workers stop writing them."""
        run, self._run = self._run, None
        for batch, _ in runtime.queue:
            batch.outstanding -= 1
        runtime.queue.clear()
        if run is None:
            return
        for batch in run.pending.values():
            if batch.outstanding == 0:
                runtime.inflight.pop((batch.generation, batch.seq), None)
                if batch.slot is not None and runtime.ring is not None:
                    runtime.ring.release(batch.slot)

    def _stream_indices(self, run: _EpochRun, seq: int) -> tuple[np.ndarray, list[Any]] | None:
        """Read this rank's samples of batch ``seq`` from the stream (positions and payloads)."""
        ws, rank, total = self.world_size, self.rank, self._length
        shard_len = None
        if total is not None:
            padded = total // ws * ws if self.drop_last else total + (-total) % ws
            shard_len = padded // ws
        start = seq * self.batch_size
        stop = start + self.batch_size if shard_len is None else min(start + self.batch_size, shard_len)
        positions, payloads = [], []
        assert run.stream is not None
        for j in range(start, stop):
            wanted = rank + ws * j
            if total is not None and wanted >= total:
                source_position = wanted - total
                positions.append(source_position)
                payloads.append(run.stream_head[source_position])
                continue
            item = None
            while run.stream_position <= wanted:
                try:
                    item = next(run.stream)
                except StopIteration:
                    if total is not None:
                        raise ValueError(
                            f"{self.name}: the iterable ended after {run.stream_position} samples of epoch "
                            f"{run.epoch} but length={total}; pass a re-iterable (a list) or itertools.cycle for "
                            "several epochs, or the right length"
                        ) from None
                    item = None
                    break
                if run.stream_position < ws:
                    run.stream_head.append(item)
                run.stream_position += 1
            else:
                positions.append(wanted)
                payloads.append(item)
                continue
            break
        if not positions:
            return None
        return np.asarray(positions, dtype=np.int64), payloads

    # -- scheduling ----------------------------------------------------------------------------------------

    def _assign(self, runtime: _Runtime, run: _EpochRun, slot: int | None) -> bool:
        seq = run.next_assign
        payloads: list[Any] | None = None
        if run.order is not None:
            indices = run.order[seq * self.batch_size : (seq + 1) * self.batch_size]
        else:
            found = self._stream_indices(run, seq)
            if found is None:
                run.nbatches = seq
                return False
            indices, payloads = found
        splits = np.array_split(np.arange(len(indices)), min(self.nworkers, len(indices)))
        chunks = [(int(part[0]), len(part)) for part in splits if len(part)]
        batch = _PendingBatch(run.generation, seq, slot, chunks, outstanding=len(chunks))
        slot_name = None if slot is None or runtime.ring is None else runtime.ring.name(slot)
        for offset, count in chunks:
            chunk = Chunk(
                run.generation,
                seq,
                slot_name,
                offset,
                run.epoch,
                indices[offset : offset + count],
                None if payloads is None else payloads[offset : offset + count],
            )
            runtime.queue.append((batch, chunk))
        run.pending[seq] = batch
        runtime.inflight[(run.generation, seq)] = batch
        run.next_assign += 1
        return True

    def _schedule(self, runtime: _Runtime, run: _EpochRun) -> None:
        ring = runtime.ring
        while (run.nbatches is None or run.next_assign < run.nbatches) and len(run.pending) < runtime.max_inflight:
            slot = None
            if ring is not None:
                slot = ring.acquire()
                if slot is None:
                    if run.next_assign != run.next_yield:
                        break  # the batches already in flight come first
                    if any(b.slot is not None for b in runtime.inflight.values()):
                        break  # an abandoned run's slot is still being written: wait for it
                    gc.collect()
                    slot = ring.acquire()
                    if slot is None:
                        slot = ring.grow()
            if not self._assign(runtime, run, slot):
                if slot is not None and ring is not None:
                    ring.release(slot)
                break
        self._dispatch(runtime)

    def _dispatch(self, runtime: _Runtime) -> None:
        pool = runtime.pool
        n = pool.nworkers
        # At most two chunks per worker (one running, one queued so it never waits for a round trip): a chunk
        # queued behind a slow sample cannot move to another worker, the rest stays here for whoever is free.
        cap = 2 if pool.all_ready else 1
        while runtime.queue:
            candidates = [w for w in range(n) if pool.ready[w] and pool.outstanding[w] < cap]
            if not candidates:
                return
            start = runtime.next_worker
            wid = min(candidates, key=lambda w: (pool.outstanding[w], (w - start) % n))
            runtime.next_worker = (wid + 1) % n
            _, chunk = runtime.queue.popleft()
            pool.send(wid, chunk)

    def _handle(self, runtime: _Runtime, frames: list[Any]) -> None:
        header = pickle.loads(frames[0].buffer)
        kind, wid = header[0], header[1]
        if kind == "ready":
            runtime.pool.handle_ready(wid)
            return
        generation, seq = header[2], header[3]
        if kind == "error" and generation < 0:
            raise self._error_from(header[4:])
        runtime.pool.outstanding[wid] -= 1
        batch = runtime.inflight.get((generation, seq))
        current = self._run is not None and generation == self._run.generation
        if batch is None:
            return
        if kind == "error" and current and batch.error is None:
            # raised when this batch is due, so the batches before it are still delivered
            batch.error = self._error_from(header[4:])
        if kind == "done" and current:
            offset, written, lists, skipped = header[4:8]
            batch.results[offset] = (written, lists, skipped, frames[1:])
        batch.outstanding -= 1
        if batch.outstanding == 0:
            del runtime.inflight[(generation, seq)]
            if not current and batch.slot is not None and runtime.ring is not None:
                runtime.ring.release(batch.slot)

    def _error_from(self, fields: tuple[Any, ...]) -> Exception:
        exc_type, message, key, worker_traceback, is_sample_error = fields
        if is_sample_error:
            error: Exception = SampleError(
                f"{message}\n\nWorker traceback (most recent call last):\n{worker_traceback.rstrip()}", key
            )
            error.worker_traceback = worker_traceback  # type: ignore[attr-defined]
            return error
        return WorkerError(f"{exc_type}: {message}", key, worker_traceback, exc_type)

    # -- producing batches ---------------------------------------------------------------------------------

    def _next_item(self, iterator: _EpochIterator) -> tuple[int, Any]:
        if iterator._run is None:
            iterator._run = self._begin_run()
        run = iterator._run
        if run is not self._run:
            raise RuntimeError(
                f"{self.name}: this epoch iterator was superseded by a newer one or the loader was stopped; "
                "call iter(loader) again"
            )
        mini_batches = self._produce(run)
        self._iteration += 1
        return self._iteration, self._convert(mini_batches)

    def _convert(self, mini_batches: list[dict[str, Any]]) -> Any:
        """Turn numpy mini-batches into what this loader yields (subclasses make tensors)."""
        return mini_batches

    def _produce(self, run: _EpochRun) -> list[dict[str, Any]]:
        """The next batch of ``run`` (blocking), split into mini-batches.

        Raises:
            StopIteration: the epoch is over.
        """
        if run.nbatches is not None and run.next_yield >= run.nbatches:
            raise StopIteration
        runtime = self._holder.runtime
        assert runtime is not None
        try:
            last_progress = time.monotonic()
            while True:
                self._schedule(runtime, run)
                batch = run.pending.get(run.next_yield)
                if batch is None and run.nbatches is not None and run.next_yield >= run.nbatches:
                    raise StopIteration
                if batch is not None and batch.error is not None:
                    raise batch.error
                if batch is not None and batch.complete:
                    break
                waited = time.monotonic() - last_progress
                if waited > self.timeout:
                    raise TimeoutError(
                        f"{self.name}: no progress from the workers for {self.timeout:g} s while waiting for batch "
                        f"{run.next_yield} of epoch {run.epoch}; a worker may be stuck in prepare() or setup(). "
                        "Raise `timeout` if samples are legitimately that slow."
                    )
                messages = runtime.pool.poll(min(_POLL_S, self.timeout - waited + 0.01))
                for frames in messages:
                    self._handle(runtime, frames)
                if messages:
                    last_progress = time.monotonic()
        except StopIteration:
            raise
        except BaseException:
            self.stop()
            raise
        del run.pending[run.next_yield]
        run.next_yield += 1
        return self._assemble(runtime, run, batch)

    def _assemble(self, runtime: _Runtime, run: _EpochRun, batch: _PendingBatch) -> list[dict[str, Any]]:
        layout = self._layout
        lists: dict[str, list[Any]] = {}
        skipped: list[tuple[object, str]] = []
        moves: list[tuple[int, int, int]] = []
        total = 0
        for offset, _ in batch.chunks:
            written, chunk_lists, chunk_skipped, _frames = batch.results[offset]
            if written and offset != total:
                moves.append((offset, total, written))
            total += written
            for key, values in chunk_lists.items():
                lists.setdefault(key, []).extend(values)
            skipped.extend(chunk_skipped)
        if batch.slot is not None and runtime.ring is not None:
            if moves:
                views = runtime.ring.views(batch.slot)
                for source, target, count in moves:
                    for view in views.values():
                        view[target : target + count] = view[source : source + count]
            arrays = runtime.ring.export(batch.slot, total)
        else:
            arrays = layout.allocate(total)
            row = 0
            for offset, _ in batch.chunks:
                written, _lists, _skipped, frames = batch.results[offset]
                for frame, (key, (shape, dtype, _fill)) in zip(frames, layout.specs.items()):
                    arrays[key][row : row + written] = np.frombuffer(frame.buffer, dtype=dtype).reshape(
                        (written, *shape)
                    )
                row += written
        if skipped:
            self.skipped_samples.extend(key for key, _ in skipped)
            details = "; ".join(f"{key!r}: {message}" for key, message in skipped[:5])
            warnings.warn(
                f"{self.name}: skipped {len(skipped)} bad sample(s) in batch {batch.seq} of epoch {run.epoch} "
                f"(skip_bad_samples=True): {details}",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._split(arrays, lists, total)

    def _split(self, arrays: dict[str, np.ndarray], lists: dict[str, list[Any]], total: int) -> list[dict[str, Any]]:
        if self.num_mini_batches == 1:
            return [{**arrays, **lists}]
        size = self.batch_size // self.num_mini_batches
        mini_batches: list[dict[str, Any]] = []
        for start in itertools.islice(itertools.count(0, size), self.num_mini_batches):
            if start >= total and mini_batches:
                break
            mini: dict[str, Any] = {key: array[start : start + size] for key, array in arrays.items()}
            for key, values in lists.items():
                mini[key] = values[start : start + size] if len(values) == total else values
            mini_batches.append(mini)
        return mini_batches
