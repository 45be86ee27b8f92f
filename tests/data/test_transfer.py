"""SlotTransfer on the CPU with a fake device backend: path selection, page-locking, slot release ordering."""

from __future__ import annotations

import contextlib
import gc

import numpy as np
import pytest
import torch

from crumpets_lightning.data.loader.transfer import CudaBackend, SlotTransfer
from crumpets_lightning.data.transport.shm import BatchLayout, SharedBatchRing


class FakeEvent:
    def __init__(self) -> None:
        self.done = False


class FakeBackend:
    """Records every call; copies are clones; events complete only when the test says so."""

    def __init__(self, can_register: bool = True) -> None:
        self.can_register = can_register
        self.calls: list[tuple[str, object]] = []
        self.events: list[FakeEvent] = []
        self.copied_from: list[int] = []

    def register(self, address, nbytes):
        self.calls.append(("register", address))
        return self.can_register

    def unregister(self, address):
        self.calls.append(("unregister", address))

    def side_stream(self):
        return contextlib.nullcontext()

    def copy(self, host):
        self.copied_from.append(host.data_ptr())
        return host.clone()

    def pin(self, host):
        self.calls.append(("pin", host.data_ptr()))
        return host.clone()

    def record(self):
        event = FakeEvent()
        self.events.append(event)
        return event

    def wait(self, event):
        self.calls.append(("wait", event))

    def query(self, event):
        return event.done

    def synchronize(self, event):
        self.calls.append(("synchronize", event))
        event.done = True


LAYOUT = BatchLayout({"image": ((3, 4, 4), np.dtype(np.uint8), 0), "label": ((1,), np.dtype(np.int64), 0)}, 4)


def ring_with(transfer: SlotTransfer, nslots: int = 2) -> SharedBatchRing:
    return SharedBatchRing(LAYOUT, nslots, nslots, f"t{id(transfer) % 10000}", registrar=transfer)


def export_batch(ring: SharedBatchRing, value: int) -> tuple[int, dict[str, np.ndarray]]:
    slot = ring.acquire()
    assert slot is not None
    views = ring.views(slot)
    views["image"][:] = value
    views["label"][:] = value
    return slot, ring.export(slot, 3)


def test_registered_slots_are_copied_directly_and_held_until_the_copy_event_completes():
    backend = FakeBackend()
    transfer = SlotTransfer(backend)
    ring = ring_with(transfer)
    try:
        assert [name for name, _ in backend.calls] == ["register", "register"]
        assert len(transfer.regions) == 2
        slot, buffers = export_batch(ring, 7)
        addresses = [array.__array_interface__["data"][0] for array in buffers.values()]
        out = transfer.to_device(buffers)
        assert backend.copied_from == addresses  # straight from the slot, no pinned staging copy
        assert not any(name == "pin" for name, _ in backend.calls)
        assert ("wait", backend.events[0]) in backend.calls  # the consumer's stream waits, not the host
        assert out["image"].shape == (3, 3, 4, 4) and int(out["label"][0, 0]) == 7
        del buffers
        gc.collect()
        # the copy is still in flight: the slot must not come back (a worker could overwrite it)
        assert transfer.in_flight() == 1
        assert ring.acquire() is not None and ring.acquire() is None
        backend.events[0].done = True
        transfer.collect()
        gc.collect()
        assert transfer.in_flight() == 0
        assert ring.acquire() == slot  # released only now
    finally:
        ring.close()


def test_failed_registration_falls_back_to_a_pinned_copy_and_releases_at_once():
    backend = FakeBackend(can_register=False)
    transfer = SlotTransfer(backend)
    ring = ring_with(transfer)
    try:
        assert not transfer.regions
        slot, buffers = export_batch(ring, 3)
        out = transfer.to_device(buffers)
        assert sum(name == "pin" for name, _ in backend.calls) == 2  # every buffer staged in pinned memory
        assert transfer.in_flight() == 0
        del buffers
        gc.collect()
        assert ring.acquire() is not None and ring.acquire() == slot  # nothing holds the slot
        assert int(out["image"].max()) == 3
    finally:
        ring.close()
    assert not any(name == "unregister" for name, _ in backend.calls)


def test_a_batch_outside_the_registered_slots_takes_the_pinned_path():
    backend = FakeBackend()
    transfer = SlotTransfer(backend)
    ring = ring_with(transfer)
    try:
        private = {"image": np.ones((2, 3, 4, 4), np.uint8)}
        transfer.to_device(private)
        assert any(name == "pin" for name, _ in backend.calls) and transfer.in_flight() == 0
    finally:
        ring.close()


def test_slots_are_unregistered_before_unmapping_after_copies_in_flight_finished():
    backend = FakeBackend()
    transfer = SlotTransfer(backend)
    ring = ring_with(transfer)
    _, buffers = export_batch(ring, 1)
    transfer.to_device(buffers)
    del buffers
    ring.close()
    names = [name for name, _ in backend.calls]
    assert names.count("unregister") == 2 and not transfer.regions
    assert names.index("synchronize") < names.index("unregister")  # no unlock under a running copy
    assert transfer.in_flight() == 0


def test_cuda_backend_registration_fails_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert CudaBackend(torch.device("cuda")).register(0, 64) is False
