"""TurboDataLoader failure handling: worker errors and deaths, bad samples, hostile payloads, leaks."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest

from crumpets_lightning.data.errors import SampleError, WorkerDiedError, WorkerError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.transport.codec import pack_sample
from tests.conftest import crumpets_shm_segments
from tests.data._helpers import (
    DecodeWorker,
    EchoWorker,
    FailingWorker,
    SelfKillWorker,
    SetupFailingWorker,
    collect,
    concat,
    synthetic_images,
    value_samples,
)

REPO = Path(__file__).resolve().parents[2]


def drain(loader):
    for _ in loader:
        pass


@pytest.mark.parametrize(
    ("error", "type_name", "text"),
    [
        ("value", "ValueError", "cannot handle value 13"),
        ("custom", "CustomWorkerProblem", "custom failure"),
        ("key", "KeyError", "missing_field"),
    ],
)
def test_worker_exception_raises_with_key_and_traceback(error, type_name, text):
    loader = TurboDataLoader(value_samples(40), 4, FailingWorker(13, error), nworkers=2, seed=0)
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        drain(loader)
    assert time.monotonic() - start < 10
    raised = info.value
    assert raised.key == "s13" and raised.exc_type == type_name
    assert text in str(raised) and "s13" in str(raised)
    assert "Traceback" in raised.worker_traceback and "in prepare" in raised.worker_traceback
    assert "_helpers.py" in str(raised)
    assert not loader.running
    # the loader can be used again afterwards (a new iterator restarts the workers)
    it = iter(loader)
    assert next(it)[1][0]["value"].ravel().tolist() == [0, 1, 2, 3]
    loader.stop()


def test_sample_error_is_reraised_as_sample_error_naming_the_sample():
    loader = TurboDataLoader(value_samples(10), 4, FailingWorker(6, "sample"), nworkers=2)
    with pytest.raises(SampleError, match="s6") as info:
        drain(loader)
    assert info.value.key == "s6" and "deliberately bad" in str(info.value)
    assert "in prepare" in info.value.worker_traceback


def test_skip_bad_samples_drops_and_counts_them():
    samples = value_samples(10)
    samples[3] = {"key": "broken-3"}
    samples[8] = {"key": "broken-8"}
    loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=2, seed=0, skip_bad_samples=True)
    with pytest.warns(RuntimeWarning, match="broken-3"):
        batches = collect(loader)
    loader.stop()
    assert [m[0]["value"].ravel().tolist() for m in batches] == [[0, 1, 2], [4, 5, 6, 7], [9]]
    assert next(m[0]["key"] for m in batches) == ["s0", "s1", "s2"]
    assert loader.skipped_samples == ["broken-3", "broken-8"]
    # rows were compacted: the draws belong to the samples that are there
    np.testing.assert_array_equal(
        batches[1][0]["draw"].ravel(), [np.random.Generator(np.random.PCG64([0, 0, i])).random() for i in (4, 5, 6, 7)]
    )


def test_skip_bad_samples_still_raises_other_exceptions():
    loader = TurboDataLoader(value_samples(8), 4, FailingWorker(2, "value"), nworkers=1, skip_bad_samples=True)
    with pytest.raises(WorkerError, match="ValueError"):
        drain(loader)


def test_setup_failure_is_reported():
    loader = TurboDataLoader(value_samples(8), 4, SetupFailingWorker(), nworkers=2)
    with pytest.raises(WorkerError, match="setup broke"):
        drain(loader)
    assert not loader.running


@pytest.mark.parametrize("worker", [SelfKillWorker(5), FailingWorker(5, "exit")], ids=["sigkill", "os_exit"])
def test_worker_dying_raises_within_seconds(worker):
    loader = TurboDataLoader(value_samples(40), 4, worker, nworkers=2)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"SIGKILL|code 3") as info:
        drain(loader)
    assert time.monotonic() - start < 10
    assert "pid" in str(info.value)
    assert not loader.running


def test_worker_killed_from_outside_raises_within_seconds():
    loader = TurboDataLoader(value_samples(400), 4, FailingWorker(399, "hang"), nworkers=2, shared_memory=2)
    it = iter(loader)
    next(it)
    victim = loader.worker_pids[1]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"pid {victim}.*SIGKILL"):
        for _ in it:
            pass
    assert time.monotonic() - start < 10


def test_no_progress_raises_timeout_error():
    loader = TurboDataLoader(value_samples(8), 4, FailingWorker(1, "hang"), nworkers=1, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="batch 0 of epoch 0"):
        drain(loader)
    assert time.monotonic() - start < 8
    assert not loader.running


def test_corrupt_image_missing_image_and_bad_label_name_the_sample():
    good = synthetic_images(1, size=(8, 8))[0]
    cases = [
        ({"image": b"\xff\xd8\xff\xe0 not really a jpeg", "label": 0, "key": "corrupt.jpg"}, "corrupt.jpg", "decoded"),
        ({"label": 0, "key": "noimage"}, "noimage", "'image'"),
        ({"image": good, "label": "cat", "key": "badlabel"}, "badlabel", "label must be an int"),
    ]
    for sample, key, text in cases:
        loader = TurboDataLoader([sample], 1, DecodeWorker((8, 8)), nworkers=1)
        with pytest.raises(SampleError, match=text) as info:
            drain(loader)
        assert info.value.key == key


class _Bomb:
    """Unpickling this creates a marker file: proves whether anything was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_hostile_payloads_raise_sample_errors_and_nothing_is_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    pickled = pickle.dumps(_Bomb(str(marker)))
    object_array = {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": pickled}
    hostile = [
        msgpack.packb({"value": 1, "arr": object_array}, use_bin_type=True),
        msgpack.packb({"value": 1, "ext": msgpack.ExtType(42, pickled)}, use_bin_type=True),
        msgpack.packb([1, 2, 3], use_bin_type=True),
        pack_sample({"value": 1, "payload": b"x" * 100})[:-20],
        pickled,
    ]
    for index, payload in enumerate(hostile):
        loader = TurboDataLoader([pack_sample({"value": 0}), payload], 2, EchoWorker(), nworkers=1)
        with pytest.raises(SampleError) as info:
            drain(loader)
        assert info.value.key == 1, index
    assert not marker.exists()


def test_main_process_killed_workers_exit_and_leftovers_are_swept(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from crumpets_lightning.data.loader.loader import TurboDataLoader
        from tests.data._helpers import EchoWorker, value_samples
        loader = TurboDataLoader(value_samples(100), 4, EchoWorker(), nworkers=2)
        it = iter(loader)
        next(it)
        print(" ".join(map(str, loader.worker_pids)), loader._holder.runtime.pool.socket_dir, flush=True)
        time.sleep(60)
        """
    )
    before_shm = crumpets_shm_segments()
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=tmp_path, text=True)
    try:
        line = process.stdout.readline().split()
        pids, socket_dir = [int(p) for p in line[:-1]], line[-1]
        assert len(pids) == 2
        left = crumpets_shm_segments() - before_shm
        assert any(f"crumpets-lightning-{process.pid}-" in name for name in left)
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "workers outlived their killed parent"
    assert Path(socket_dir).exists()  # SIGKILL left it behind ...
    with TurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1):
        pass
    # ... and starting any loader sweeps what dead processes left
    assert not [name for name in crumpets_shm_segments() if f"-{process.pid}-" in name]
    assert not Path(socket_dir).exists()


_CYCLES_SCRIPT = """
import json, os, stat, sys, tempfile
sys.path.insert(0, {repo!r})
import numpy as np
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.workers.base import BufferWorker

class EchoWorker(BufferWorker):
    def __init__(self):
        super().__init__(value=((1,), np.int64))

    def prepare(self, sample, batch, buffers):
        buffers["value"][0] = sample["value"]

def value_samples(n):
    return [{{"value": i}} for i in range(n)]

def parent_of(pid):
    try:  # a process elsewhere on the machine may end between listdir and open
        with open(f"/proc/{{pid}}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[1]
    except OSError:
        return None

def resources():
    children = [p for p in os.listdir("/proc") if p.isdigit() and parent_of(p) == str(os.getpid())]
    tmp = tempfile.gettempdir()
    return [len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")), len(children),
            len([n for n in os.listdir("/dev/shm") if n.startswith(f"crumpets-lightning-{{os.getpid()}}-")]),
            len([n for n in os.listdir(tmp) if n.startswith(f"crumpets-lightning-{{os.getpid()}}-")])]

samples = value_samples(8)
loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=2, shared_memory=2)
next(iter(loader))  # warm up lazy imports and allocations
loader.stop()
before = resources()
modes, removed = set(), True
for cycle in range(100):
    loader = TurboDataLoader(samples, 4, EchoWorker(), nworkers=1 + cycle % 2, shared_memory=2)
    it = iter(loader)
    next(it)
    socket_dir = loader._holder.runtime.pool.socket_dir
    modes.add(stat.S_IMODE(os.stat(socket_dir).st_mode))
    assert socket_dir.startswith(tempfile.gettempdir())
    loader.stop()
    removed = removed and not os.path.exists(socket_dir)
    del it, loader
print(json.dumps({{"before": before, "after": resources(), "modes": sorted(modes), "removed": removed}}))
"""


@pytest.mark.slow
def test_hundred_start_stop_cycles_leak_nothing(tmp_path):
    # In a fresh interpreter without torch: forking a process that has torch loaded costs ~50 ms, which
    # would make 100 cycles slow without testing anything more about the loader.
    script = _CYCLES_SCRIPT.format(repo=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=100, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"], "fds, threads, children, /dev/shm segments or socket dirs grew"
    assert report["modes"] == [0o700]
    assert report["removed"]


def test_stop_is_idempotent_and_batches_outlive_it():
    loader = TurboDataLoader(value_samples(8), 4, EchoWorker(), nworkers=1)
    _, mini_batches = next(iter(loader))
    loader.stop()
    loader.stop()
    assert mini_batches[0]["value"].ravel().tolist() == [0, 1, 2, 3]  # still readable after unlink
    del mini_batches


def test_garbage_collected_loader_stops_its_workers():
    loader = TurboDataLoader(value_samples(8), 4, EchoWorker(), nworkers=2)
    next(iter(loader))
    pids = loader.worker_pids
    del loader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gc

        gc.collect()
    assert not any(
        Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" for pid in pids
    )


class _WarpWorker(EchoWorker):
    """Runs an OpenCV op big enough for OpenCV to use its thread pool, then echoes the sample."""

    def prepare(self, sample, batch, buffers):
        image = np.full((1200, 1200, 3), sample["value"], np.uint8)
        cv2.warpAffine(image, np.float32([[0.5, 0, 0], [0, 0.5, 0]]), (600, 600))
        super().prepare(sample, batch, buffers)


def test_workers_forked_after_opencv_used_its_thread_pool_do_not_hang():
    # Regression: a child forked while OpenCV's pool threads were parked inherited their condition variables
    # and blocked forever in its first OpenCV call.
    image = np.zeros((2000, 2000, 3), np.uint8)
    for _ in range(3):
        cv2.warpAffine(image, np.float32([[0.5, 0, 0], [0, 0.5, 0]]), (1000, 1000))
    time.sleep(0.5)  # let the pool threads go to sleep on their condition variable
    threads = cv2.getNumThreads()
    loader = TurboDataLoader(value_samples(8), 4, _WarpWorker(), nworkers=2, timeout=15)
    try:
        values = concat(collect(loader), "value").ravel()
    finally:
        loader.stop()
    assert values.tolist() == list(range(8))
    assert cv2.getNumThreads() == threads  # the caller's OpenCV setting is restored


class KeyedSamples(list):
    """A list source with ``sample_key`` (contract C6)."""

    def sample_key(self, index: int) -> object:
        return f"file-{index}.jpg"


def test_worker_killed_mid_chunk_names_exactly_the_samples_it_held():
    # one worker, batches of 4: the worker holds batch 1's chunk (samples 4-7) when it kills itself at 5;
    # batch 0 was answered (its reply had time to leave the worker), so its samples are not named
    worker = SelfKillWorker(5, settle_s=0.3)
    loader = TurboDataLoader(KeyedSamples(value_samples(8)), 4, worker, nworkers=1, shared_memory=2)
    with pytest.raises(WorkerDiedError, match="SIGKILL") as info:
        drain(loader)
    assert info.value.keys == [f"file-{i}.jpg" for i in range(4, 8)]
    assert "'file-5.jpg'" in str(info.value) and "'file-3.jpg'" not in str(info.value)
    # without sample_key the indices name them
    loader = TurboDataLoader(value_samples(8), 4, SelfKillWorker(5, settle_s=0.3), nworkers=1, shared_memory=2)
    with pytest.raises(WorkerDiedError) as info:
        drain(loader)
    assert info.value.keys == [4, 5, 6, 7]
    assert pickle.loads(pickle.dumps(info.value)).keys == [4, 5, 6, 7]


def test_timeout_names_the_samples_the_workers_hold():
    loader = TurboDataLoader(KeyedSamples(value_samples(4)), 2, FailingWorker(1, "hang"), nworkers=1, timeout=1.0)
    with pytest.raises(TimeoutError, match=r"hold samples 'file-0.jpg', 'file-1.jpg'"):
        drain(loader)


def test_sample_error_tells_how_to_skip_bad_samples():
    sample = {"image": b"\xff\xd8\xff\xe0 not really a jpeg", "label": 0, "key": "corrupt.jpg"}
    loader = TurboDataLoader([sample], 1, DecodeWorker((8, 8)), nworkers=1)
    with pytest.raises(SampleError, match="skip_bad_samples=True") as info:
        drain(loader)
    assert "corrupt.jpg" in str(info.value) and "cannot be decoded" in str(info.value)
