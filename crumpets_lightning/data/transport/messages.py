"""The messages between the main process and its worker processes, as named types (internal).

Work goes to a worker as one :class:`Chunk`; every chunk gets exactly one reply: :class:`Done`,
:class:`Failure` or :class:`Discarded`. A worker announces itself with :class:`Ready` (or a
:class:`Failure` with ``seq == -1`` when its ``setup()`` failed). Messages are pickled: they only travel over
the loader's private ipc sockets between processes of one program (samples read from files never are, see
:mod:`~crumpets_lightning.data.transport.codec`). A :class:`Done` without shared memory is followed by one
frame of raw bytes per buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Chunk", "Discarded", "Done", "Failure", "Ready", "Reply"]


@dataclass(frozen=True)
class Chunk:
    """A piece of one batch for one worker.

    Attributes:
        generation: the epoch run it belongs to; workers skip chunks of abandoned runs.
        seq: the batch number within the run.
        slot: the shared-memory segment name, or None when results travel as bytes.
        row_offset: the first row of the batch this chunk fills.
        epoch: seeds the per-sample generators together with the loader seed and the sample index.
        indices: sample indices (into the source, or positions in a stream).
        payloads: the samples themselves for streamed input (None for random access).
    """

    generation: int
    seq: int
    slot: str | None
    row_offset: int
    epoch: int
    indices: np.ndarray
    payloads: list[Any] | None = None


@dataclass(frozen=True)
class Ready:
    """A worker finished ``setup()`` and listens for chunks."""

    wid: int
    pid: int


@dataclass(frozen=True)
class Done:
    """A chunk is prepared.

    Attributes:
        wid: the worker.
        generation: the chunk's run.
        seq: the chunk's batch.
        row_offset: the chunk's first row in the batch.
        written: rows written (fewer than the chunk's samples when bad ones were skipped).
        lists: what the worker appended to ``batch`` lists, in sample order.
        skipped: ``(key, message)`` of every sample skipped because of ``skip_bad_samples``.
        skipped_rows: the positions in the chunk of the skipped samples.
    """

    wid: int
    generation: int
    seq: int
    row_offset: int
    written: int
    lists: dict[str, list[Any]]
    skipped: list[tuple[object, str]]
    skipped_rows: list[int]


@dataclass(frozen=True)
class Failure:
    """Preparing a sample (or ``setup()``, when ``seq == -1``) raised.

    Attributes:
        wid: the worker.
        generation: the chunk's run (-1 for ``setup()``).
        seq: the chunk's batch (-1 for ``setup()``).
        row_offset: the chunk's first row (-1 for ``setup()``).
        exc_type: the exception type's name.
        message: ``str()`` of the exception.
        key: the sample's key (or index), None for ``setup()``.
        worker_traceback: the formatted traceback in the worker.
        is_sample_error: the exception was a :class:`~crumpets_lightning.data.errors.SampleError`.
    """

    wid: int
    generation: int
    seq: int
    row_offset: int
    exc_type: str
    message: str
    key: object
    worker_traceback: str
    is_sample_error: bool

    @property
    def during_setup(self) -> bool:
        """Whether the worker's ``setup()`` failed (no chunk involved)."""
        return self.seq < 0


@dataclass(frozen=True)
class Discarded:
    """A chunk of an abandoned run was skipped (its slot rows may be partly written)."""

    wid: int
    generation: int
    seq: int
    row_offset: int


#: every reply a worker sends
Reply = Ready | Done | Failure | Discarded
