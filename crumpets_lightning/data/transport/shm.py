"""Shared-memory batch slots: named POSIX segments owned (created and unlinked) by the loader's main process.

Each slot is one segment that holds one batch of every buffer of the worker (``image``, ``label``, ...), laid
out by :class:`BatchLayout`. Workers open segments by name and write rows in place; the main process hands
the caller numpy views of the segment, so no byte is copied after the worker wrote it.

Segments are created with ``os.open`` + ``mmap`` under ``/dev/shm`` rather than with
``multiprocessing.shared_memory``, whose resource tracker warns about and unlinks segments it did not create.
Names are ``crumpets-lightning-<owner pid>-<token>-<slot>``, so segments of a process that was SIGKILLed can be
recognised and removed by :func:`sweep_stale_resources`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import math
import mmap
import os
import re
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from crumpets_lightning.data.workers.base import BufferSpec

__all__ = [
    "RESOURCE_PREFIX",
    "BatchLayout",
    "SharedBatchRing",
    "SlotRegistrar",
    "create_segment",
    "open_segment",
    "sweep_stale_resources",
    "unlink_segment",
]

RESOURCE_PREFIX = "crumpets-lightning-"
_SHM_DIR = "/dev/shm"
_ALIGN = 64
_STALE_NAME = re.compile(rf"^{RESOURCE_PREFIX}(\d+)-")


class BatchLayout:
    """Where each buffer of a batch lives inside one slot.

    Args:
        specs: the worker's buffer specs (``key -> (shape, dtype, fill)``).
        batch_size: rows per slot.
    """

    def __init__(self, specs: Mapping[str, BufferSpec], batch_size: int) -> None:
        self.batch_size = batch_size
        self.specs = dict(specs)
        self.offsets: dict[str, int] = {}
        offset = 0
        for key, (shape, dtype, _) in self.specs.items():
            self.offsets[key] = offset
            size = batch_size * math.prod(shape) * dtype.itemsize
            offset += -(-size // _ALIGN) * _ALIGN
        self.nbytes = max(offset, _ALIGN)

    def views(self, buffer: object, rows: int | None = None) -> dict[str, np.ndarray]:
        """Arrays ``[rows, *shape]`` of every buffer on top of ``buffer`` (anything with the buffer protocol)."""
        rows = self.batch_size if rows is None else rows
        out = {}
        for key, (shape, dtype, _) in self.specs.items():
            count = self.batch_size * math.prod(shape)
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=self.offsets[key])  # type: ignore[call-overload]
            out[key] = array.reshape((self.batch_size, *shape))[:rows]
        return out

    def allocate(self, rows: int) -> dict[str, np.ndarray]:
        """Fresh private arrays ``[rows, *shape]`` (used when shared memory is off)."""
        return {key: np.empty((rows, *shape), dtype=dtype) for key, (shape, dtype, _) in self.specs.items()}

    def reset_row(self, views: Mapping[str, np.ndarray], row: int) -> None:
        """Set one row of every buffer to its fill value."""
        for key, (_, _, fill) in self.specs.items():
            views[key][row : row + 1] = fill


def _path(name: str) -> str:
    return os.path.join(_SHM_DIR, name)


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create the named segment ``name`` of ``size`` bytes (mode 0600) and map it.

    Raises:
        OSError: ``/dev/shm`` is missing or full, or the name exists.
    """
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        os.unlink(_path(name))
        raise
    finally:
        os.close(fd)


def open_segment(name: str) -> mmap.mmap:
    """Map an existing segment (in a worker process)."""
    fd = os.open(_path(name), os.O_RDWR)
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


def segment_exists(name: str) -> bool:
    """Whether the named segment still exists."""
    return os.path.exists(_path(name))


def unlink_segment(name: str) -> None:
    """Remove the segment's name (memory goes once every mapping is gone); a missing name is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_resources() -> list[str]:
    """Remove segments in ``/dev/shm`` and socket directories in the temp dir whose owner pid is dead.

    DDP ranks are SIGKILLed when one fails, so nothing of theirs could clean up; every loader calls this
    at start.

    Returns:
        The paths removed.
    """
    removed = []
    for directory, is_dir in ((_SHM_DIR, False), (tempfile.gettempdir(), True)):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            match = _STALE_NAME.match(name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            path = os.path.join(directory, name)
            try:
                if is_dir:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        continue
                else:
                    os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    return removed


class SlotRegistrar(Protocol):
    """Told about every slot's memory while it exists (e.g. to page-lock it for fast copies to a GPU)."""

    def register(self, address: int, nbytes: int) -> bool:
        """A slot was mapped at ``address``; return whether it was registered."""

    def unregister(self, address: int) -> None:
        """A registered slot is about to be unmapped."""


def _address(memory: mmap.mmap) -> int:
    probe = ctypes.c_char.from_buffer(memory)
    try:
        return ctypes.addressof(probe)
    finally:
        del probe


@dataclass
class _Slot:
    name: str
    memory: mmap.mmap
    views: dict[str, np.ndarray] = field(default_factory=dict)
    registered_at: int | None = None


class SharedBatchRing:
    """A growable ring of shared-memory batch slots.

    A slot is *free*, *busy* (the loader assigned it to a batch the workers are writing) or *held* (its
    batch was handed to the caller). A held slot comes back only when every array made from it (and every
    tensor made from those arrays) is gone, so a batch stays valid as long as it is referenced. When the
    caller holds every slot, :meth:`grow` adds one (warning once) up to ``max_slots``; a slot that comes back
    while the slots not held by the caller exceed the initial count is removed, so memory returns to the
    configured size once the caller lets go.

    Args:
        layout: the batch layout of one slot.
        nslots: the initial number of slots (>= 2).
        max_slots: the most slots :meth:`grow` may reach.
        token: distinguishes this ring's segment names from other rings of the same process.
        registrar: told about every slot created (and before it is unmapped), e.g. to page-lock it.
    """

    def __init__(
        self, layout: BatchLayout, nslots: int, max_slots: int, token: str, registrar: SlotRegistrar | None = None
    ) -> None:
        self._registrar = registrar
        self.layout = layout
        self.base_slots = nslots
        self.max_slots = max(max_slots, nslots)
        self._prefix = f"{RESOURCE_PREFIX}{os.getpid()}-{token}-"
        self._slots: dict[int, _Slot] = {}
        self._free: collections.deque[int] = collections.deque()
        # Appended to by finalizers (possibly from any thread, during garbage collection): deque is atomic.
        self._returned: collections.deque[int] = collections.deque()
        self._held: set[int] = set()
        self._next_id = 0
        self._warned = False
        self._closed = False
        try:
            for _ in range(nslots):
                self._free.append(self._create())
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def held(self) -> int:
        """How many slots hold batches the caller still references."""
        self._collect_returned()
        return len(self._held)

    def _create(self) -> int:
        slot_id = self._next_id
        self._next_id += 1
        name = f"{self._prefix}{slot_id}"
        slot = _Slot(name, create_segment(name, self.layout.nbytes))
        self._slots[slot_id] = slot
        if self._registrar is not None:
            address = _address(slot.memory)
            if self._registrar.register(address, self.layout.nbytes):
                slot.registered_at = address
        return slot_id

    def _destroy(self, slot_id: int) -> None:
        slot = self._slots.pop(slot_id)
        if slot.registered_at is not None and self._registrar is not None:
            self._registrar.unregister(slot.registered_at)
            slot.registered_at = None
        unlink_segment(slot.name)
        slot.views.clear()
        # BufferError: someone still references the memory; it is unmapped when they let go
        with contextlib.suppress(BufferError):
            slot.memory.close()

    def _collect_returned(self) -> None:
        while self._returned:
            slot_id = self._returned.popleft()
            self._held.discard(slot_id)
            if slot_id in self._slots:
                self.release(slot_id)

    def acquire(self) -> int | None:
        """A free slot id, or None when every slot is busy or held."""
        self._collect_returned()
        return self._free.popleft() if self._free else None

    def grow(self) -> int:
        """Add a slot because the caller holds all of them (warns once).

        Raises:
            RuntimeError: the ring already has ``max_slots`` slots.
        """
        if len(self._slots) >= self.max_slots:
            raise RuntimeError(
                f"The caller holds all {len(self._slots)} shared-memory batches of this loader (the most it may "
                f"allocate is {self.max_slots}); release batches you no longer need (do not keep them in lists, "
                "copy the arrays you want to keep) or pass a larger shared_memory slot count"
            )
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"The caller holds all {len(self._slots)} shared-memory batch slots; allocating more (up to "
                f"{self.max_slots}). Copy arrays you keep beyond the next batch to avoid this.",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._create()

    def release(self, slot_id: int) -> None:
        """Give back a busy slot (or a returned held one); grown slots beyond the initial count are removed."""
        if self._closed:
            return
        if len(self._slots) - len(self._held) > self.base_slots:
            self._destroy(slot_id)
        else:
            self._free.append(slot_id)

    def name(self, slot_id: int) -> str:
        """The segment name of a slot (what workers open)."""
        return self._slots[slot_id].name

    def views(self, slot_id: int) -> dict[str, np.ndarray]:
        """The main process's private full-size views of a slot (to move rows)."""
        slot = self._slots[slot_id]
        if not slot.views:
            slot.views = self.layout.views(slot.memory)
        return slot.views

    def export(self, slot_id: int, rows: int) -> dict[str, np.ndarray]:
        """Hand a slot's first ``rows`` rows to the caller; the slot comes back once every view is gone."""
        slot = self._slots[slot_id]
        # A fresh ctypes object per batch owns the export: numpy views (and torch tensors) keep it alive,
        # and its finalizer tells the ring when the last of them is gone.
        owner = (ctypes.c_char * self.layout.nbytes).from_buffer(slot.memory)
        weakref.finalize(owner, self._returned.append, slot_id)
        self._held.add(slot_id)
        return self.layout.views(owner, rows)

    def close(self) -> None:
        """Unlink every segment (exactly once); memory still referenced by the caller stays valid."""
        if self._closed:
            return
        self._closed = True
        for slot_id in list(self._slots):
            self._destroy(slot_id)
        self._free.clear()
