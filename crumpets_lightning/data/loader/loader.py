"""``TurboDataLoader``: the crumpets multi-process loader (ZeroMQ work queues, batches in shared memory).

How a batch is made
-------------------
An :class:`~crumpets_lightning.data.loader.plan.EpochPlan` decides each epoch's order, shard, batches and
steps. An :class:`~crumpets_lightning.data.loader.epoch.EpochIterator` picks a free shared-memory slot for
each upcoming batch and hands the :class:`~crumpets_lightning.data.transport.pool.WorkerPool` its chunks:
the indices only, since workers read a random-access source themselves (inherited through ``fork``).
Workers write their rows straight into the slot and reply with a short message. The caller gets numpy views
of the slot: no per-sample Python and no copy on the consumer side. The slot is reused only after every
view of it is gone, so a batch stays valid as long as the caller references it.

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
:meth:`~TurboDataLoader.state_dict` / :meth:`~TurboDataLoader.load_state_dict` (exact mid-epoch resume, at
step granularity) and :meth:`~TurboDataLoader.set_shard` are what the DataModule uses;
:meth:`~TurboDataLoader.steps` gives the per-step loader Lightning iterates.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from crumpets_lightning.data._checks import check_bool, check_int, check_seconds, default_nworkers
from crumpets_lightning.data.loader.epoch import EpochIterator, Runtime, warn_skipped
from crumpets_lightning.data.loader.plan import EpochPlan
from crumpets_lightning.data.transport.pool import WorkerPool
from crumpets_lightning.data.transport.shm import BatchLayout, SharedBatchRing, SlotRegistrar, sweep_stale_resources
from crumpets_lightning.data.workers.base import Worker

__all__ = ["TurboDataLoader"]

_MAX_GROWTH = 4
_STATE_VERSION = 2
_MAX_SEED = 2**63


def _is_random_access(source: object) -> bool:
    return (
        hasattr(source, "__len__")
        and hasattr(source, "__getitem__")
        and not isinstance(source, (str, bytes, bytearray, Mapping))
    )


class _SamplerProxy:
    """What Lightning finds as ``loader.sampler``: forwards ``set_epoch`` to the loader."""

    def __init__(self, loader: TurboDataLoader) -> None:
        self._loader = weakref.ref(loader)

    def set_epoch(self, epoch: int) -> None:
        loader = self._loader()
        if loader is not None:
            loader.set_epoch(epoch)


class _RuntimeHolder:
    """Lets the ``weakref.finalize`` safety net stop whatever runtime is current."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None

    def close(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.close()


class _BatchIterator:
    """The crumpets iteration: ``(iteration, mini_batches)`` for every batch of one epoch."""

    def __init__(self, loader: TurboDataLoader) -> None:
        self._loader = loader
        self.epoch = loader.epoch_iterator()

    def __iter__(self) -> _BatchIterator:
        return self

    def __next__(self) -> tuple[int, list[dict[str, Any]]]:
        batch = self.epoch.next_batch()
        steps = [number for number, (start, stop) in enumerate(batch.steps) if stop > start] or [0]
        return self.epoch.deliver(batch, len(batch.steps)), [batch.step(number) for number in steps]

    def __len__(self) -> int:
        return self._loader._remaining_batches(self.epoch)


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
            iterated afresh each epoch, an iterator continues where the last epoch stopped (with ``length``:
            after the epoch's ``length`` items, on every rank, also those it skipped or cut).
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
        shuffle: a new order every epoch (random-access sources only). A source with
            ``shuffled_order(seed, epoch)`` (e.g. sharded files) provides its own order.
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
        TypeError: an argument has the wrong type, e.g. ``worker_template`` is not a ``Worker``.

    Example::

        loader = TurboDataLoader(MsgpackDataset("train.msgpack"), 64, ClassificationWorker(...), nworkers=4,
                                 shuffle=True, seed=0)
        with loader:
            for epoch in range(3):
                for iteration, mini_batches in loader:
                    images = mini_batches[0]["image"]
    """

    #: page-locks the shared-memory slots when the loader starts (set by subclasses that copy to a GPU)
    slot_registrar: SlotRegistrar | None = None

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
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected `name` to be None or a str but got {name!r}")
        self.name = name or "TurboDataLoader"
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.nworkers = default_nworkers() if nworkers is None else check_int("nworkers", nworkers, 1)
        self.num_mini_batches = check_int("num_mini_batches", num_mini_batches, 1)
        if self.batch_size % self.num_mini_batches:
            raise ValueError(
                f"Expected `batch_size` ({self.batch_size}) to be divisible by `num_mini_batches` "
                f"({self.num_mini_batches}): every mini-batch has batch_size // num_mini_batches samples"
            )
        self.start_iteration = check_int("start_iteration", start_iteration, 0)
        if isinstance(shared_memory, (bool, np.bool_)):
            self._nslots = 2 * self.nworkers + 2 if shared_memory else 0
        else:
            self._nslots = check_int("shared_memory (True, False or a slot count)", shared_memory, 2)
        self.timeout = check_seconds("timeout", timeout)
        self._seed_given = seed is not None
        self.seed = secrets.randbits(63) if seed is None else check_int("seed", seed, 0, _MAX_SEED)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        self.skip_bad_samples = check_bool("skip_bad_samples", skip_bad_samples)
        self.worker_template = worker_template
        self._random_access = _is_random_access(iterable)
        if isinstance(iterable, (Mapping, str, bytes)) or not (self._random_access or isinstance(iterable, Iterable)):
            raise TypeError(
                f"Expected `iterable` to be a sequence or an iterable of samples but got {type(iterable).__name__}"
            )
        if self.shuffle and not self._random_access:
            raise ValueError(
                "shuffle=True needs a random-access source (with __len__ and __getitem__, e.g. a list or a "
                f"MsgpackDataset), got a stream of type {type(iterable).__name__}"
            )
        self.iterable = iterable
        if length is not None:
            length = check_int("length", length, 0 if self._random_access else 1)
        elif self._random_access:
            length = len(iterable)  # type: ignore[arg-type]
        self._length: int | None = length
        self._holder = _RuntimeHolder()
        self._finalizer = weakref.finalize(self, self._holder.close)
        self.rank, self.world_size = 0, 1
        self.set_shard(rank, world_size)
        #: keys of samples dropped because of ``skip_bad_samples``
        self.skipped_samples: list[object] = []
        self.batch_sampler = None
        self._iteration = self.start_iteration
        self._next_epoch = 0
        self._resume: tuple[int, int] | None = None
        self._current: EpochIterator | None = None
        self._persistent_stream: Iterator[Any] | None = None

    # -- the plan ------------------------------------------------------------------------------------------

    @property
    def plan(self) -> EpochPlan:
        """The epoch plan for the current settings (order, shard, batches, steps, padding)."""
        source = self.iterable
        return EpochPlan(
            self._length,
            self.batch_size,
            num_mini_batches=self.num_mini_batches,
            drop_last=self.drop_last,
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            seed=self.seed,
            available=len(source) if self._random_access else None,  # type: ignore[arg-type]
            shuffled_order=getattr(source, "shuffled_order", None) if self.shuffle else None,
        )

    # -- properties and small API ---------------------------------------------------------------------------

    @property
    def sampler(self) -> _SamplerProxy:
        """An object with ``set_epoch`` (what Lightning calls every epoch), forwarding to :meth:`set_epoch`."""
        return _SamplerProxy(self)

    @property
    def epoch(self) -> int:
        """The epoch of the running epoch iterator, else the epoch the next one will use."""
        current = self._current
        if current is not None and current.started and not current.finished:
            return current.epoch
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
        epoch = check_int("epoch", epoch, 0)
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
            ValueError: bad values, or a stream without ``length`` sharded over several ranks.
            RuntimeError: the loader is running.
        """
        world_size = check_int("world_size", world_size, 1)
        rank = check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"Expected `rank` to be in [0, {world_size}) but got {rank}")
        if self.running and (rank, world_size) != (self.rank, self.world_size):
            raise RuntimeError(f"{self.name}: set_shard() must be called before the loader starts; call stop() first")
        if world_size > 1 and self._length is None:
            raise ValueError(f"{self.name}: a streamed source needs `length` when sharded over {world_size} ranks")
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank.

        Raises:
            TypeError: a stream without ``length`` has no known length.
        """
        if self._length is None:
            raise TypeError(f"{self.name} streams an iterable of unknown length; pass `length` to get len()")
        return self.plan.num_batches

    def _remaining_batches(self, iterator: EpochIterator) -> int:
        if iterator.started:
            return iterator.remaining_batches()
        if self._resume is not None:
            return len(self) - self.plan.batch_of_step(self._resume[1])
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
        for key in ("_holder", "_finalizer", "_current", "_persistent_stream"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._current = None
        self._persistent_stream = None
        self._holder = _RuntimeHolder()
        self._finalizer = weakref.finalize(self, self._holder.close)

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: enough to continue the current epoch exactly (see :meth:`load_state_dict`).

        ``steps_done`` counts the steps (mini-batches) of the epoch handed out, ``batches_done`` the whole
        batches among them.
        """
        current = self._current
        if self._resume is not None:
            epoch, steps = self._resume
        elif current is not None and current.started:
            epoch, steps = current.epoch, current.steps_done
        else:
            epoch, steps = self._next_epoch, 0
        return {
            "version": _STATE_VERSION,
            "epoch": epoch,
            "steps_done": steps,
            "batches_done": self.plan.batches_done(steps),
            "iteration": self._iteration,
            "seed": self.seed,
            "samples": self._length,
            "batch_size": self.batch_size,
            "num_mini_batches": self.num_mini_batches,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next epoch iterator yields the rest of the saved epoch.

        The batches (and steps) are exactly those an uninterrupted run would have produced. A state saved at
        the end of an epoch continues with the next epoch. A loader built with ``seed=None`` adopts the
        saved seed.

        Raises:
            ValueError: not a loader state, or one from a loader with a different seed, sample count, batch
                size, num_mini_batches, world size, shuffle or drop_last setting.
        """
        missing = {"epoch", "batches_done", "iteration", "seed"} - set(
            state_dict if isinstance(state_dict, Mapping) else ()
        )
        if missing:
            raise ValueError(
                f"{self.name}: not a loader state (missing {sorted(missing)}) but {state_dict!r}; was the checkpoint "
                "written with a different data loader?"
            )
        if state_dict["seed"] != self.seed and self._seed_given:
            raise ValueError(
                f"{self.name}: the saved state was made with seed {state_dict['seed']} but this loader has seed "
                f"{self.seed}; build the loader with the same seed to resume"
            )
        for key, mine in (
            ("samples", self._length),
            ("batch_size", self.batch_size),
            ("num_mini_batches", self.num_mini_batches),
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
        epoch = int(state_dict["epoch"])
        steps = int(state_dict.get("steps_done", int(state_dict["batches_done"]) * self.num_mini_batches))
        if self._length is not None and steps >= self.plan.num_steps:
            epoch, steps = epoch + 1, 0
        self._resume = (epoch, steps)
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
            ring = SharedBatchRing(
                layout, self._nslots, _MAX_GROWTH * self._nslots, secrets.token_hex(4), self.slot_registrar
            )
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
                getattr(self.iterable, "sample_key", None),
            )
        except BaseException:
            if ring is not None:
                ring.close()
            raise
        self._holder.runtime = Runtime(pool, ring, layout, self._nslots or 2 * self.nworkers + 2)

    def stop(self) -> None:
        """Stop and join the workers, close sockets, remove shared memory. Idempotent.

        Batches you still reference stay valid. A later ``next()`` on a new iterator starts again.
        """
        self._current = None
        self._holder.close()

    def __enter__(self) -> TurboDataLoader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        return _BatchIterator(self)

    def epoch_iterator(self) -> EpochIterator:
        """A new epoch (starts nothing until its first batch); what ``iter()`` and ``StepLoader`` build on."""
        return EpochIterator(self)

    def convert(self, buffers: dict[str, np.ndarray]) -> dict[str, Any]:
        """Turn one batch's buffers into what this loader yields (the hook subclasses override).

        Called once per batch, before the batch is split into mini-batches (steps), so what it returns must
        support slicing along the first dimension.

        Args:
            buffers: ``key -> numpy array [rows, ...]``, views of the batch's shared-memory slot.

        Returns:
            ``key -> value``; this class returns ``buffers`` unchanged.
        """
        return buffers

    # -- used by EpochIterator -----------------------------------------------------------------------------

    def _begin_epoch(self, iterator: EpochIterator) -> None:
        if not self.running:
            self.start()
        runtime = self._holder.runtime
        assert runtime is not None
        if self._resume is not None:
            (epoch, step), self._resume = self._resume, None
        else:
            epoch, step = self._next_epoch, 0
        self._next_epoch = epoch + 1
        stream = None if self._random_access else self._stream_for_epoch()
        self._current = iterator
        iterator.begin(runtime, self.plan, epoch, step, stream)

    def _is_current(self, iterator: EpochIterator) -> bool:
        return iterator is self._current and self.running

    def _count_batch(self) -> int:
        self._iteration += 1
        return self._iteration

    def _skipped(self, skipped: list[tuple[object, str]], seq: int, epoch: int) -> None:
        self.skipped_samples.extend(key for key, _ in skipped)
        warn_skipped(self.name, skipped, seq, epoch)

    def _stream_for_epoch(self) -> Iterator[Any]:
        iterator = iter(self.iterable)
        if iterator is self.iterable:
            # an iterator continues across epochs
            if self._persistent_stream is None:
                self._persistent_stream = iterator
            return self._persistent_stream
        return iterator
