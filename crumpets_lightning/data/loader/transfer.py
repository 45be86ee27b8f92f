"""Host -> GPU copies of batches straight from page-locked shared-memory slots.

:class:`SlotTransfer` is the loader's :class:`~crumpets_lightning.data.transport.shm.SlotRegistrar`: when the
loader starts, every slot of its ring is page-locked once (``cudaHostRegister``), and unregistered before
it is unmapped. A batch whose buffers lie in registered slots is copied to the device directly from the slot
on a side stream with ``non_blocking=True``; the slot stays referenced (so no worker can overwrite it) until
that copy's CUDA event has completed, and is released then. When registration fails or is unavailable the
batch is copied into pinned memory first, as a plain ``pin_memory()`` + ``to(device)`` would.

The CUDA calls sit behind a small backend (:class:`CudaBackend`), so path selection and release ordering
can be tested on machines without a GPU with a fake one.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["CudaBackend", "SlotTransfer", "TransferBackend"]


class TransferBackend(Protocol):
    """The device operations :class:`SlotTransfer` needs."""

    def register(self, address: int, nbytes: int) -> bool:
        """Page-lock host memory; return whether it worked."""

    def unregister(self, address: int) -> None:
        """Undo :meth:`register`."""

    def side_stream(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which copies are issued on the side stream."""

    def copy(self, host: torch.Tensor) -> torch.Tensor:
        """Issue a non-blocking copy of ``host`` to the device (inside :meth:`side_stream`)."""

    def pin(self, host: torch.Tensor) -> torch.Tensor:
        """A page-locked copy of ``host``."""

    def record(self) -> Any:
        """An event recorded on the side stream after the copies issued so far."""

    def wait(self, event: Any) -> None:
        """Make the consumer's (current) stream wait for ``event`` without blocking the host."""

    def query(self, event: Any) -> bool:
        """Whether ``event`` completed."""

    def synchronize(self, event: Any) -> None:
        """Block until ``event`` completed."""


class CudaBackend:
    """:class:`TransferBackend` on a CUDA device (page-locking through ``torch.cuda.cudart()``).

    Args:
        device: the CUDA device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream: Any = None
        self._consumer: Any = None

    def register(self, address: int, nbytes: int) -> bool:
        try:
            return int(torch.cuda.cudart().cudaHostRegister(address, nbytes, 0)) == 0
        except Exception:  # no CUDA runtime bindings, not supported here: fall back to pinned copies
            return False

    def unregister(self, address: int) -> None:
        with contextlib.suppress(Exception):
            torch.cuda.cudart().cudaHostUnregister(address)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        consumer = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            self._consumer = consumer
            yield

    def copy(self, host: torch.Tensor) -> torch.Tensor:
        tensor = host.to(self.device, non_blocking=True)
        # allocated on the side stream, used on the consumer's: keep its memory until that stream is done
        tensor.record_stream(self._consumer)
        return tensor

    def pin(self, host: torch.Tensor) -> torch.Tensor:
        return host.pin_memory()

    def record(self) -> Any:
        event = torch.cuda.Event()
        event.record(self._stream)
        return event

    def wait(self, event: Any) -> None:
        torch.cuda.current_stream(self.device).wait_event(event)

    def query(self, event: Any) -> bool:
        return bool(event.query())

    def synchronize(self, event: Any) -> None:
        event.synchronize()


class SlotTransfer:
    """Copies batches to the device; page-locks the loader's slots (it is the ring's registrar).

    Args:
        backend: the device operations (a :class:`CudaBackend` for real use).
    """

    def __init__(self, backend: TransferBackend) -> None:
        self.backend = backend
        #: registered regions: start address -> size
        self.regions: dict[int, int] = {}
        # copies issued straight from slots: (event, what keeps the slot referenced until the event completed)
        self._in_flight: collections.deque[tuple[Any, object]] = collections.deque()

    # -- SlotRegistrar -------------------------------------------------------------------------------------

    def register(self, address: int, nbytes: int) -> bool:
        """Page-lock a slot; False (and the pinned-copy path for its batches) when that fails."""
        if not self.backend.register(address, nbytes):
            return False
        self.regions[address] = nbytes
        return True

    def unregister(self, address: int) -> None:
        """Unlock a slot before it is unmapped, after every copy in flight has finished."""
        self.finish()
        if self.regions.pop(address, None) is not None:
            self.backend.unregister(address)

    # -- copies --------------------------------------------------------------------------------------------

    def covers(self, array: np.ndarray) -> bool:
        """Whether ``array``'s memory lies inside one registered slot."""
        start = array.__array_interface__["data"][0]
        end = start + array.nbytes
        return any(base <= start and end <= base + size for base, size in self.regions.items())

    def in_flight(self) -> int:
        """Copies from slots whose completion has not been seen yet (their slots are still held)."""
        return len(self._in_flight)

    def to_device(self, buffers: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Issue the copies of one batch; the consumer's stream waits for them (the host does not).

        Straight from the slot when every buffer lies in a registered slot (the slot is released only once
        the copy's event completed), else through pinned memory.
        """
        self.collect()
        direct = bool(self.regions) and all(self.covers(array) for array in buffers.values() if array.nbytes)
        out = {}
        with self.backend.side_stream():
            for key, array in buffers.items():
                host = torch.from_numpy(array)
                out[key] = self.backend.copy(host if direct else self.backend.pin(host))
            event = self.backend.record()
        self.backend.wait(event)
        if direct:
            self._in_flight.append((event, buffers))
        return out

    def collect(self) -> None:
        """Let go of the slots whose copies have completed (in issue order)."""
        while self._in_flight and self.backend.query(self._in_flight[0][0]):
            self._in_flight.popleft()

    def finish(self) -> None:
        """Wait for every copy in flight and let go of their slots."""
        while self._in_flight:
            event, _ = self._in_flight[0]
            self.backend.synchronize(event)
            self._in_flight.popleft()
