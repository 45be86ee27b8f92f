"""Fault injection against the loader (issue 7): every kind of worker exception, dying workers and parents,
slow samples, consumers that hold batches, and Ctrl-C in the main process.

Each test is bounded in time and the autouse ``no_leaks`` fixture checks that nothing (processes, /dev/shm
segments, socket directories, files) is left behind. Tests already in ``tests/data/test_loader_faults.py``
(ValueError / KeyError / custom exceptions, SIGKILL and ``os._exit`` inside ``prepare``, a killed parent with
idle workers, 100 start/stop cycles) are not repeated here.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crumpets_lightning.data.errors import WorkerDiedError, WorkerError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from tests.conftest import crumpets_shm_segments, crumpets_socket_dirs
from tests.data._helpers import EchoWorker, value_samples

REPO = Path(__file__).resolve().parents[2]


class UnpicklableArgsError(Exception):
    """An exception whose args hold a lock: pickling it fails."""

    def __init__(self) -> None:
        super().__init__("holds a lock", threading.Lock())


class BrokenStrError(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class CustomBaseException(BaseException):
    """Derives from BaseException, not Exception (like SystemExit and KeyboardInterrupt)."""


def _raise(kind: str) -> None:
    if kind == "unpicklable":
        raise UnpicklableArgsError()
    if kind == "broken_str":
        raise BrokenStrError()
    if kind == "system_exit":
        raise SystemExit(3)
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt
    if kind == "custom_base":
        raise CustomBaseException("a BaseException subclass")
    if kind == "memory":
        raise MemoryError("cannot allocate 1 TiB")
    if kind == "generator_exit":
        raise GeneratorExit
    raise AssertionError(kind)


class RaisingWorker(EchoWorker):
    """Raises an exception of ``kind`` for the sample whose value is ``bad_value``."""

    def __init__(self, bad_value: int, kind: str) -> None:
        super().__init__()
        self.bad_value = bad_value
        self.kind = kind

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        if sample["value"] == self.bad_value:
            _raise(self.kind)
        super().prepare(sample, batch, buffers)


class SleepyWorker(EchoWorker):
    """Sleeps ``seconds`` per sample, and ``slow_seconds`` for the sample whose value is ``slow_value``."""

    def __init__(self, seconds: float, slow_value: int = -1, slow_seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.slow_value = slow_value
        self.slow_seconds = slow_seconds

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        time.sleep(self.slow_seconds if sample["value"] == self.slow_value else self.seconds)
        super().prepare(sample, batch, buffers)


def _drain(loader: Any) -> int:
    count = 0
    for _ in loader:
        count += 1
    return count


def _expected_draws(seed: int, epoch: int, indices: list[int]) -> list[float]:
    return [np.random.Generator(np.random.PCG64([seed, epoch, i])).random() for i in indices]


# -- exceptions of every kind inside a worker ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "type_name", "text"),
    [
        ("unpicklable", "UnpicklableArgsError", "holds a lock"),
        ("broken_str", "BrokenStrError", ""),
        ("system_exit", "SystemExit", "3"),
        ("keyboard_interrupt", "KeyboardInterrupt", ""),
        ("custom_base", "CustomBaseException", "a BaseException subclass"),
        ("memory", "MemoryError", "cannot allocate 1 TiB"),
        ("generator_exit", "GeneratorExit", ""),
    ],
)
def test_any_exception_in_a_worker_raises_with_key_and_traceback(kind: str, type_name: str, text: str) -> None:
    loader = TurboDataLoader(value_samples(24), 4, RaisingWorker(9, kind), nworkers=2, seed=0)
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        _drain(loader)
    assert time.monotonic() - start < 10
    error = info.value
    assert error.exc_type == type_name
    assert error.key == "s9" and "s9" in str(error)
    assert text in str(error)
    assert "in _raise" in error.worker_traceback and type_name in error.worker_traceback
    assert not loader.running
    # the loader starts afresh on the next iteration and is fine up to the bad sample
    it = iter(loader)
    assert next(it)[1][0]["value"].ravel().tolist() == [0, 1, 2, 3]
    loader.stop()


def test_a_worker_killed_between_epochs_is_noticed_at_the_next_epoch() -> None:
    loader = TurboDataLoader(value_samples(8), 4, EchoWorker(), nworkers=2, seed=0)
    assert _drain(loader) == 2
    victim = loader.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=rf"pid {victim}\b.*SIGKILL"):
        _drain(loader)
    assert time.monotonic() - start < 10
    assert not loader.running


def test_a_worker_terminated_from_outside_mid_epoch_raises() -> None:
    loader = TurboDataLoader(value_samples(200), 4, SleepyWorker(0.01), nworkers=2, seed=0)
    it = iter(loader)
    next(it)
    victim = loader.worker_pids[1]
    os.kill(victim, signal.SIGTERM)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match="SIGTERM"):
        for _ in it:
            pass
    assert time.monotonic() - start < 10


# -- the main process dies -------------------------------------------------------------------------------------


def test_killed_main_process_takes_busy_workers_with_it_and_the_next_loader_sweeps(tmp_path: Path) -> None:
    """Workers stuck inside prepare() (not polling their parent) must still exit when the parent is SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from crumpets_lightning.data.loader.loader import TurboDataLoader
        from tests.reliability.test_faults import SleepyWorker
        from tests.data._helpers import value_samples
        loader = TurboDataLoader(value_samples(64), 4, SleepyWorker(0.0, slow_value=4, slow_seconds=60), nworkers=2)
        it = iter(loader)
        next(it)
        print(" ".join(map(str, loader.worker_pids)), loader._holder.runtime.pool.socket_dir, flush=True)
        next(it)  # blocks: one worker sleeps in prepare(), the other soon waits for work
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=tmp_path, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        pids, socket_dir = [int(p) for p in line[:-1]], line[-1]
        assert len(pids) == 2
        time.sleep(0.2)  # let the parent block in next() while a worker sleeps in prepare()
        assert any(f"crumpets-lightning-{process.pid}-" in name for name in crumpets_shm_segments())
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "workers outlived their SIGKILLed parent"
    with TurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1) as loader:
        assert _drain(loader) == 2
    assert not any(f"crumpets-lightning-{process.pid}-" in name for name in crumpets_shm_segments())
    assert not Path(socket_dir).exists()
    assert not any(name.startswith(f"crumpets-lightning-{process.pid}-") for name in crumpets_socket_dirs())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- a slow sample ---------------------------------------------------------------------------------------------


def test_a_slow_sample_holds_up_only_its_own_batch() -> None:
    """One sample sleeps 1.5 s: batches before it are not delayed, the others are prepared meanwhile."""
    slow_seconds, per_sample = 1.5, 0.03
    samples = value_samples(48)  # 12 batches of 4; the slow sample 9 is in batch 2
    loader = TurboDataLoader(samples, 4, SleepyWorker(per_sample, 9, slow_seconds), nworkers=2, seed=0)
    loader.start()  # process start-up is not what this test measures
    arrivals = []
    values = []
    start = time.monotonic()
    for _, mini_batches in loader:
        arrivals.append(time.monotonic() - start)
        values.extend(mini_batches[0]["value"].ravel().tolist())
    loader.stop()
    assert values == list(range(48))
    # batches 0 and 1 do not contain the slow sample: they come long before it is done
    assert arrivals[1] < 1.0, arrivals
    assert arrivals[2] >= slow_seconds
    # the pipeline kept going while the slow sample slept: the next few batches were ready by then, except
    # at most one chunk queued behind the slow sample (2 samples, 0.06 s); preparing batches 3-6 afterwards
    # would take 4 * 4 * 0.03 / 2 = 0.24 s more
    assert arrivals[6] - arrivals[2] < 0.15, arrivals
    # and the whole epoch is bounded by the slow sample plus a little of the normal work
    assert arrivals[-1] < slow_seconds + 1.0, arrivals


# -- a consumer that holds batches -----------------------------------------------------------------------------


def test_holding_more_batches_than_slots_warns_once_keeps_data_and_frees_memory_after() -> None:
    seed = 7
    loader = TurboDataLoader(value_samples(40), 4, EchoWorker(), nworkers=2, seed=seed, shared_memory=3)
    loader.start()
    base_segments = _own_segments()
    held = []
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _, mini_batches in loader:
            held.append(mini_batches[0])  # keep 7 of 10 batches: more than the 3 slots, within the 4x cap
            if len(held) > 7:
                held.pop(0)
    assert time.monotonic() - start < 10
    grown = _own_segments()
    assert len(grown) > len(base_segments)
    warned = [w for w in caught if issubclass(w.category, RuntimeWarning) and "holds all" in str(w.message)]
    assert len(warned) == 1
    # every held batch still has exactly its own samples and draws (nothing overwritten)
    for number, batch in enumerate(held, start=3):
        indices = list(range(4 * number, 4 * number + 4))
        assert batch["value"].ravel().tolist() == indices
        np.testing.assert_array_equal(batch["draw"].ravel(), _expected_draws(seed, 0, indices))
        assert batch["key"] == [f"s{i}" for i in indices]
    held.clear()
    del mini_batches, batch
    gc.collect()
    # released: the next epoch runs on the configured slots and the grown segments are gone
    assert _drain(loader) == 10
    after = _own_segments()
    assert len(after) == len(base_segments) == 3
    assert sum(after.values()) == sum(base_segments.values())
    loader.stop()


def _own_segments() -> dict[str, int]:
    """This process's shared-memory segments (other test runs on the machine have their own) and sizes."""
    prefix = f"crumpets-lightning-{os.getpid()}-"
    return {name: os.path.getsize(f"/dev/shm/{name}") for name in crumpets_shm_segments() if name.startswith(prefix)}


# -- Ctrl-C in the main process --------------------------------------------------------------------------------


def test_ctrl_c_from_the_consumer_loop_inside_with_stops_everything() -> None:
    loader = TurboDataLoader(value_samples(80), 4, EchoWorker(), nworkers=2, seed=0)
    seen = 0
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), loader:
        for _ in loader:
            seen += 1
            if seen == 3:
                signal.raise_signal(signal.SIGINT)
    assert time.monotonic() - start < 10
    assert seen == 3
    assert not loader.running and loader.worker_pids == []


def test_ctrl_c_while_waiting_for_a_batch_stops_the_loader_and_it_restarts_cleanly() -> None:
    loader = TurboDataLoader(value_samples(24), 4, SleepyWorker(0.0, 5, 30.0), nworkers=2, seed=0, timeout=60)
    it = iter(loader)
    next(it)
    pids = loader.worker_pids
    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(it)  # batch 1 holds the 30 s sample: the main process waits in poll when Ctrl-C comes
    finally:
        timer.cancel()
    assert time.monotonic() - start < 10
    assert not loader.running
    assert not any(_alive(pid) for pid in pids)
    # a new epoch starts new workers and works up to the slow sample
    it = iter(loader)
    assert next(it)[1][0]["value"].ravel().tolist() == [0, 1, 2, 3]
    loader.stop()
