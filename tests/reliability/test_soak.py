"""Leak soak (issue 7): many start/stop cycles through every way a run can end, and many epochs of real
image work, with /dev/shm, open fds, threads, children, socket directories and RSS checked for growth.

Only this process's resources are counted (other test runs on the machine have their own segments). Plain
start/stop cycles are in ``tests/data/test_loader_faults.py``; here every cycle ends a different way.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN
from crumpets_lightning.data.errors import WorkerError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.workers.image import ClassificationWorker
from tests.conftest import crumpets_shm_segments, descendants
from tests.data._helpers import EchoWorker, FailingWorker, photo_crops, value_samples

_MIB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _resources() -> dict[str, Any]:
    """Counts of everything a loader could leak, for this process only."""
    pid = os.getpid()
    tmp = tempfile.gettempdir()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        # alive or zombie, not the momentary scheduling state (an idle worker wakes up to poll: R or S)
        "children": sorted((pid, state == "Z") for pid, state in descendants().items()),
        "segments": sorted(n for n in crumpets_shm_segments() if n.startswith(f"crumpets-lightning-{pid}-")),
        "socket_dirs": sorted(n for n in os.listdir(tmp) if n.startswith(f"crumpets-lightning-{pid}-")),
    }


def _settled_resources(expected: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """The resources once stopped processes are gone (returns early when they equal ``expected``)."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = _resources()
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


def _cycle(number: int, samples: list[dict[str, Any]]) -> None:
    """One loader lifetime, ended in one of several ways."""
    way = number % 5
    if way == 0:  # context manager, full epoch
        with TurboDataLoader(samples, 4, EchoWorker(), nworkers=1, shared_memory=2) as loader:
            assert sum(1 for _ in loader) == 3
    elif way == 1:  # abandoned iterator, then stop()
        loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=2, shared_memory=2)
        next(iter(loader))
        loader.stop()
    elif way == 2:  # a worker error stops the loader by itself
        loader = TurboDataLoader(samples, 4, FailingWorker(5, "value"), nworkers=2, shared_memory=2)
        try:
            for _ in loader:
                pass
        except WorkerError:
            pass
        else:
            raise AssertionError("the failing worker did not raise")
        assert not loader.running
    elif way == 3:  # no shared memory, batches held past stop()
        loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=1, shared_memory=False)
        held = [mini_batches for _, mini_batches in loader]
        loader.stop()
        assert held[-1][0]["value"].ravel().tolist() == [8, 9, 10, 11]
    else:  # never stopped explicitly: dropped while running (the garbage collector's safety net)
        loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=1, shared_memory=2)
        _, mini_batches = next(iter(loader))
        del mini_batches, loader


def test_hundred_cycles_ending_every_way_leak_nothing() -> None:
    samples = value_samples(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped-while-running loader may warn
        for number in range(5):  # warm up imports, allocator pools and every code path
            _cycle(number, samples)
        before = _settled_resources(_resources())
        rss_before = _rss()
        start = time.monotonic()
        for number in range(100):
            _cycle(number, samples)
            if number % 25 == 24:
                now = _settled_resources(before)
                assert now == before, f"after {number + 1} cycles"
    assert time.monotonic() - start < 60
    assert not [pid for pid, state in descendants().items() if state == "Z"], "zombies left"
    growth = _rss() - rss_before
    assert growth < 16 * _MIB, f"RSS grew by {growth / _MIB:.1f} MiB over 100 cycles"


def test_twenty_epochs_of_real_images_keep_memory_and_resources_constant() -> None:
    size = 32
    photos = photo_crops(24, size=(48, 64))
    samples = [{"image": data, "label": i % 3, "key": f"p{i}"} for i, data in enumerate(photos)]
    worker = ClassificationWorker(((3, size, size), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN)
    loader = TurboDataLoader(samples, 8, worker, nworkers=2, seed=3, shuffle=True, shared_memory=3)
    epochs = []
    try:
        for _ in loader:  # warm-up epoch: workers start, caches and pools fill
            pass
        first = _resources()
        rss_first = _rss()
        for epoch in range(1, 21):
            labels = []
            for _, mini_batches in loader:
                batch = mini_batches[0]
                assert batch["image"].shape == (8, 3, size, size) and batch["image"].any()
                labels.extend(batch["label"].ravel().tolist())
            assert sorted(labels) == sorted(i % 3 for i in range(24)), f"epoch {epoch}"
            epochs.append(_resources())
        rss_last = _rss()
        worker_pids = loader.worker_pids
    finally:
        loader.stop()
    # the same worker processes ran every epoch, nothing was added or lost
    assert len(worker_pids) == 2
    for epoch, resources in enumerate(epochs, start=1):
        assert resources == first, f"epoch {epoch}"
    assert rss_last - rss_first < 8 * _MIB, f"RSS grew by {(rss_last - rss_first) / _MIB:.1f} MiB in 20 epochs"
    assert _settled_resources({**first, "children": [], "segments": [], "socket_dirs": []})["segments"] == []
