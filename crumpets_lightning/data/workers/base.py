"""Worker base classes: the contract between the loader and the code that turns one sample into outputs.

How the loader drives a worker
------------------------------
``TurboDataLoader`` copies the worker template into each worker process (by ``fork``). In the process it
calls :meth:`Worker.setup` once, then for every sample:

1. sets ``worker.rng`` to a fresh :class:`numpy.random.Generator` seeded from ``(seed, epoch, index)`` of
   that sample, so draws do not depend on which process handles it;
2. sets ``worker.sample_key`` to the sample's ``key`` field (or its index when it has none), for messages;
3. hands it a row of each shared-memory buffer, already reset to the buffer's fill value, and calls
   ``worker.prepare(sample, batch, buffers)``.

``sample`` is a ``dict`` (msgpack-packed samples are decoded safely first; nothing is ever unpickled).
``buffers`` maps each buffer key to a writable ``numpy`` array of the buffer's per-sample shape: write the
results there (this *is* the shared memory the main process reads, so nothing is copied again).
``batch`` is a ``dict`` of lists shared by the samples of a batch: append small per-sample values that do not
fit a fixed-size buffer (strings, variable-length arrays). The main process receives them as lists in
sample order. Raise :class:`~crumpets_lightning.data.errors.SampleError` for a bad sample; any exception is
reported in the main process with the sample's key and the worker traceback.

Example::

    class MyWorker(BufferWorker):
        def __init__(self):
            super().__init__()
            self.add_buffer("image", ((3, 32, 32), np.uint8))
            self.add_buffer("label", ((1,), np.int64))

        def prepare(self, sample, batch, buffers):
            buffers["image"][...] = decode_and_resize(sample["image"])
            buffers["label"][0] = sample["label"]
            batch.setdefault("key", []).append(self.sample_key)
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["BufferSpec", "BufferWorker", "Worker", "make_buffer_spec", "make_fill_value"]

#: A normalised buffer spec: per-sample shape, dtype and a fill array broadcastable to ``(1, *shape)``.
BufferSpec = tuple[tuple[int, ...], np.dtype, np.ndarray]


def make_fill_value(shape: tuple[int, ...], dtype: Any, fill_value: Any = 0) -> np.ndarray:
    """Return an array that fills a batch of ``shape`` / ``dtype`` buffers with ``fill_value``.

    A scalar fills every element (every channel). A sequence gives one value per entry of the first
    dimension of ``shape`` (the channels of a CHW image) and is padded with unit dimensions, so the result
    has shape ``(1, len(fill_value), 1, ..., 1)``.

    Example::

        >>> make_fill_value((3, 4, 4), np.uint8, (1, 2, 3)).shape
        (1, 3, 1, 1)
    """
    dtype = np.dtype(dtype)
    value = np.asarray(fill_value)
    if value.dtype.kind == "O":
        raise TypeError(f"fill_value must be numeric, got {fill_value!r}")
    if value.ndim == 0:
        return np.full((1,) + (1,) * len(shape), value, dtype=dtype)
    if value.ndim != 1:
        raise ValueError(f"fill_value must be a scalar or a 1-d sequence, got shape {value.shape}")
    if len(shape) == 0 or value.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"fill_value {fill_value!r} has {value.shape[0]} entries but the buffer shape {shape} "
            f"has {shape[0] if shape else 0} channels; give a scalar or one value per channel"
        )
    return value.astype(dtype).reshape((1, value.shape[0]) + (1,) * (len(shape) - 1))


def make_buffer_spec(spec: Any) -> BufferSpec:
    """Normalise ``(shape, dtype)``, ``(shape, dtype, fill_value)`` or a template ``ndarray`` to a spec."""
    if isinstance(spec, np.ndarray):
        return tuple(int(s) for s in spec.shape), spec.dtype, make_fill_value(spec.shape, spec.dtype, 0)
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise ValueError(f"A buffer spec is (shape, dtype) or (shape, dtype, fill_value), got {spec!r}")
    shape_in = spec[0]
    if isinstance(shape_in, (int, np.integer)):
        shape_in = (shape_in,)
    try:
        shape = tuple(int(s) for s in shape_in)
    except TypeError:
        raise ValueError(f"Buffer shape must be a tuple of ints, got {shape_in!r}") from None
    if any(s <= 0 for s in shape):
        raise ValueError(f"Buffer shape must have positive sizes, got {shape}")
    try:
        dtype = np.dtype(spec[1])
    except TypeError:
        raise ValueError(f"Buffer dtype {spec[1]!r} is not a numpy dtype") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"Buffer dtype must be bool, integer or float, got {dtype}")
    fill = spec[2] if len(spec) == 3 else 0
    return shape, dtype, make_fill_value(shape, dtype, fill)


class Worker(abc.ABC):
    """Abstract base of all workers. Subclass :class:`BufferWorker` unless you need something special.

    Args:
        gpu_augmentation: leave the pixel augmentations for which the GPU ``Randomizer`` has a version
            (gamma/colour, contrast, noise, blur) to it, and only record their parameters.
    """

    #: Per-sample generator set by the loader before each :meth:`prepare`; use it for every random draw.
    rng: np.random.Generator
    #: The current sample's ``key`` (or index); set by the loader before each :meth:`prepare`.
    sample_key: object = None

    def __init__(self, gpu_augmentation: bool = False) -> None:
        self.gpu_augmentation = bool(gpu_augmentation)
        self.rng = np.random.default_rng(0)

    def set_gpu_augmentation(self, value: bool) -> None:
        """Set the ``gpu_augmentation`` flag (the loader does this for ``TorchTurboDataLoader``)."""
        self.gpu_augmentation = bool(value)

    @property
    def buffer_specs(self) -> dict[str, BufferSpec]:
        """Fixed-size outputs per sample, allocated in shared memory by the loader. Empty by default."""
        return {}

    def prepare_shared(self) -> None:  # noqa: B027 - optional hook
        """Called once in the main process before worker processes are forked; default does nothing.

        Build read-only tables here that every worker then shares (copy-on-write): they exist once in memory
        instead of once per worker, and no worker spends time on them at its first sample. Keep them
        read-only: a worker writing to them would copy the pages it touches.
        """

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Called once in each worker process before the first sample: open files, build tables."""

    @abc.abstractmethod
    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Turn one sample into outputs: write to ``buffers`` and/or append to lists in ``batch``."""

    def copy(self) -> Worker:
        """A copy for one worker process (``copy.copy`` semantics, buffers and params shared read-only)."""
        return copy.copy(self)


class BufferWorker(Worker):
    """Base class for workers that write constant-size per-sample outputs into shared-memory buffers.

    Args:
        gpu_augmentation: see :class:`Worker`.
        **buffers: initial buffers, ``key=(shape, dtype[, fill_value])``.
    """

    def __init__(self, gpu_augmentation: bool = False, **buffers: Any) -> None:
        super().__init__(gpu_augmentation=gpu_augmentation)
        self._buffer_specs: dict[str, BufferSpec] = {}
        self.params: dict[str, Any] = {}
        for key, spec in buffers.items():
            self.add_buffer(key, spec)

    @property
    def buffer_specs(self) -> dict[str, BufferSpec]:
        return dict(self._buffer_specs)

    def add_buffer(self, key: str, spec: Any) -> None:
        """Register an output buffer ``key`` from a spec ``(shape, dtype[, fill_value])`` or a template array."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"Buffer key must be a non-empty string, got {key!r}")
        self._buffer_specs[key] = make_buffer_spec(spec)

    def add_params(self, key: str, params: Mapping[str, Any] | None, default: Any = None) -> None:
        """Register a group of fixed parameters ``key``; ``default`` (copied) is used when ``params`` is None."""
        if params is None:
            params = copy.deepcopy(default) if default is not None else {}
        self.params[key] = dict(params) if isinstance(params, Mapping) else params

    @abc.abstractmethod
    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """See :meth:`Worker.prepare`."""
