"""Worker processes of a loader and the ZeroMQ plumbing between them and the main process.

Processes are forked (explicitly, whatever the platform default) before the main process creates its
ZeroMQ context. Each worker resets SIGINT/SIGTERM to their defaults (a Lightning run's handlers would hang
it), asks the kernel to SIGKILL it when its parent dies and also watches its parent pid, limits OpenCV to
one thread, creates its own context, binds a PULL socket for work and connects a PUSH socket for results.

Sockets are ipc endpoints in a private 0700 directory under the temp dir (never TCP). The main process
binds one PULL socket for results and, once a worker reports ready, connects a PUSH socket to it; it sends
each work chunk to the least loaded ready worker.

Messages are pickled: they only travel between processes of the same program (samples from files are
decoded by :func:`~crumpets_lightning.data.transport.codec.unpack_sample`, which never unpickles).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import zmq

from crumpets_lightning.data.errors import SampleError, WorkerDiedError, WorkerError
from crumpets_lightning.data.transport.codec import unpack_sample
from crumpets_lightning.data.transport.messages import Chunk, Discarded, Done, Failure, Ready, Reply
from crumpets_lightning.data.transport.shm import RESOURCE_PREFIX, BatchLayout, open_segment, segment_exists
from crumpets_lightning.data.workers.base import Worker

__all__ = ["Chunk", "WorkerPool", "error_from_failure"]

_PR_SET_PDEATHSIG = 1
_WORKER_POLL_MS = 200
_STOP_GRACE_S = 2.0
_KILL_GRACE_S = 1.0
# control block shared with the workers (anonymous shared mmap created before fork): [generation, stop]
_GENERATION = 0
_STOP = 1
_KEYS_SHOWN = 20


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def describe_exit(exitcode: int | None) -> str:
    """Human-readable form of a ``Process.exitcode``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        return f"killed by {_signal_name(-exitcode)} (exit code {exitcode})"
    return f"exited with code {exitcode}"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved here, in the parent: a child forked while another thread of a busy parent (a DDP rank, say) held
# the dynamic loader's lock would block forever in dlopen() if it looked prctl up itself.
_PRCTL = _load_prctl()


def _set_parent_death_signal() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _WorkerLoop:
    """Runs in a worker process: receives chunks, prepares samples, replies."""

    def __init__(
        self,
        wid: int,
        template: Worker,
        source: Sequence[Any] | None,
        layout: BatchLayout,
        control: np.ndarray,
        socket_dir: str,
        seed: int,
        skip_bad_samples: bool,
    ) -> None:
        self.wid = wid
        self.template = template
        self.source = source
        self.layout = layout
        self.control = control
        self.socket_dir = socket_dir
        self.seed = seed
        self.skip_bad_samples = skip_bad_samples
        self.segments: dict[str, dict[str, np.ndarray]] = {}

    def run(self, parent_pid: int) -> None:
        """The worker process's whole life (called in the forked child)."""
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _set_parent_death_signal()
        if os.getppid() != parent_pid:
            return
        self.worker = self.template.copy()
        context = zmq.Context()
        work = context.socket(zmq.PULL)
        results = context.socket(zmq.PUSH)
        try:
            work.bind(f"ipc://{self.socket_dir}/work-{self.wid}")
            results.setsockopt(zmq.RECONNECT_IVL, 5)
            results.connect(f"ipc://{self.socket_dir}/results")
            try:
                self.worker.setup()
            except BaseException as error:  # SystemExit, KeyboardInterrupt, ... are reported too
                results.send(self._failure(error, None, None))
                return
            if self.control[_STOP]:
                return
            results.send(pickle.dumps(Ready(self.wid, os.getpid())))
            while not self.control[_STOP]:
                if not work.poll(_WORKER_POLL_MS):
                    if os.getppid() != parent_pid:
                        return
                    continue
                message = work.recv()
                if self.control[_STOP] or message == b"stop":
                    return
                chunk: Chunk = pickle.loads(message)
                results.send_multipart(self._process(chunk), copy=False)
        finally:
            # deliver a last error reply unless the main process is stopping us or gone
            linger = 0 if self.control[_STOP] or os.getppid() != parent_pid else 2000
            work.close(linger=0)
            results.close(linger=linger)
            context.term()

    def _failure(self, error: BaseException, chunk: Chunk | None, key: object) -> bytes:
        """A pickled :class:`Failure` for ``error`` (raised in ``setup()`` when ``chunk`` is None)."""
        if isinstance(error, SampleError):
            exc_type, message, is_sample_error = type(error).__name__, error.message, True
            key = key if error.key is None else error.key
        else:
            exc_type, is_sample_error = type(error).__name__, False
            try:
                message = str(error)
            except Exception:
                message = f"<str() of the {type(error).__name__} raised>"
        where = (-1, -1, -1) if chunk is None else (chunk.generation, chunk.seq, chunk.row_offset)
        failure = Failure(self.wid, *where, exc_type, message, key, traceback.format_exc(), is_sample_error)
        return pickle.dumps(failure, protocol=pickle.HIGHEST_PROTOCOL)

    def _views(self, name: str) -> dict[str, np.ndarray]:
        views = self.segments.get(name)
        if views is None:
            # grown slots the main process removed again: let their memory go
            for old in [n for n in self.segments if not segment_exists(n)]:
                del self.segments[old]
            views = self.layout.views(open_segment(name))
            self.segments[name] = views
        return views

    def _read_chunk(self, chunk: Chunk) -> list[Any] | None:
        """The chunk's samples from one ``source.read_many`` call, or None to read them one by one.

        A source with ``read_many`` (msgpack files, shards) fetches a remote chunk's samples concurrently, in
        one round trip instead of one per sample. When it fails, None: every sample is then read on its own,
        so an error names its sample (and ``skip_bad_samples`` skips only that one).
        """
        read_many = getattr(self.source, "read_many", None)
        if read_many is None or len(chunk.indices) < 2:
            return None
        try:
            payloads = list(read_many(chunk.indices.tolist()))
        except Exception:
            return None
        return payloads if len(payloads) == len(chunk.indices) else None

    def _sample(self, index: int, payload: Any) -> dict[str, Any]:
        if self.source is not None and payload is None:
            try:
                payload = self.source[index]
            except Exception as error:
                raise SampleError(
                    f"reading it from the source failed: {type(error).__name__}: {error}", index
                ) from error
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return unpack_sample(payload, key=index)
        if isinstance(payload, dict):
            return payload
        raise SampleError(f"a sample must be a dict or msgpack-packed bytes, got {type(payload).__name__}", index)

    def _process(self, chunk: Chunk) -> list[Any]:
        generation = chunk.generation
        discarded = [pickle.dumps(Discarded(self.wid, generation, chunk.seq, chunk.row_offset))]
        if self.control[_GENERATION] > generation:
            return discarded
        rows = len(chunk.indices)
        if chunk.slot is None:
            views = self.layout.allocate(rows)
            row = 0
        else:
            views = self._views(chunk.slot)
            row = chunk.row_offset
        first_row = row
        lists: dict[str, list[Any]] = {}
        skipped: list[tuple[object, str]] = []
        skipped_rows: list[int] = []
        worker = self.worker
        payloads = chunk.payloads if self.source is None else self._read_chunk(chunk)
        for position, index in enumerate(chunk.indices.tolist()):
            if self.control[_GENERATION] > generation or self.control[_STOP]:
                return discarded
            key: object = index
            lengths = {name: len(values) for name, values in lists.items()}
            try:
                sample = self._sample(index, None if payloads is None else payloads[position])
                key = sample.get("key", index)
                if isinstance(key, bytes):
                    key = key.decode("utf-8", errors="replace")
                worker.rng = np.random.Generator(np.random.PCG64([self.seed, chunk.epoch, index]))
                worker.sample_key = key
                self.layout.reset_row(views, row)
                worker.prepare(sample, lists, {name: view[row] for name, view in views.items()})
                row += 1
            except SampleError as error:
                if not self.skip_bad_samples:
                    return [self._failure(error, chunk, key)]
                for name in list(lists):
                    if name in lengths:
                        del lists[name][lengths[name] :]
                    else:
                        del lists[name]
                skipped.append((key, str(error)))
                skipped_rows.append(position)
            except BaseException as error:  # any type, SystemExit and KeyboardInterrupt too: report, never die
                return [self._failure(error, chunk, key)]
        written = row - first_row
        done = Done(self.wid, generation, chunk.seq, chunk.row_offset, written, lists, skipped, skipped_rows)
        header = pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)
        if chunk.slot is not None:
            return [header]
        return [header, *(np.ascontiguousarray(view[:written]) for view in views.values())]


@contextlib.contextmanager
def _single_threaded_opencv() -> Iterator[None]:
    """Fork with OpenCV's thread pool shut down, then restore it in this process.

    A child forked while OpenCV's pool threads exist inherits the pool's locks and condition variables but not
    its threads: its first parallel call (or ``cv2.setNumThreads``) then blocks forever. Setting one thread
    before the fork joins the pool, so children start with a serial OpenCV (one core per worker anyway).
    """
    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _wait_all(processes: list[Any], timeout: float) -> list[Any]:
    """Wait until every process ended or ``timeout`` passed; return those still running."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if p.exitcode is None]
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        multiprocessing.connection.wait([p.sentinel for p in alive], timeout=remaining)
        alive = [p for p in alive if p.exitcode is None]
    return alive


class WorkerPool:
    """The worker processes of one loader run, the sockets to talk to them, and the dispatch of work.

    The pool owns its bookkeeping: :meth:`submit` queues chunks, :meth:`dispatch` sends them to the least
    loaded ready workers (at most two each, so a chunk never waits behind a slow sample for long),
    :meth:`poll` decodes replies and counts them off. It knows which samples every worker holds, so a
    worker's death (:class:`~crumpets_lightning.data.errors.WorkerDiedError`) and a timeout name them.

    Args:
        template: the worker template (copied into each process by fork).
        nworkers: how many processes.
        source: the random-access source the workers read samples from, or None for streamed input.
        layout: the batch layout (also used when shared memory is off).
        seed: the loader seed.
        skip_bad_samples: drop samples that raise ``SampleError`` instead of failing.
        name: used in error messages.
        sample_key: names a sample index in messages (the source's ``sample_key``; default: the index).
    """

    def __init__(
        self,
        template: Worker,
        nworkers: int,
        source: Sequence[Any] | None,
        layout: BatchLayout,
        seed: int,
        skip_bad_samples: bool,
        name: str,
        sample_key: Callable[[int], object] | None = None,
    ) -> None:
        self.name = name
        self._sample_key = sample_key
        self.nworkers = nworkers
        self.owner_pid = os.getpid()
        self.socket_dir = tempfile.mkdtemp(prefix=f"{RESOURCE_PREFIX}{self.owner_pid}-")
        self._control_memory = mmap.mmap(-1, 16)
        self._control = np.frombuffer(self._control_memory, dtype=np.int64, count=2)
        self.processes: list[Any] = []
        self.ready: list[bool] = [False] * nworkers
        self._held: list[deque[Chunk]] = [deque() for _ in range(nworkers)]
        self._queue: deque[Chunk] = deque()
        self._in_flight: Counter[tuple[int, int]] = Counter()
        self._next_worker = 0
        self._senders: list[zmq.Socket | None] = [None] * nworkers
        self._context: zmq.Context | None = None
        self._results: zmq.Socket | None = None
        self._poller = zmq.Poller()
        self._closed = False
        endpoint = f"ipc://{self.socket_dir}/work-{nworkers - 1}"
        if len(endpoint) > 100:
            self.close()
            raise OSError(
                f"The temp directory path {tempfile.gettempdir()!r} is too long for ZeroMQ ipc sockets "
                "(about 100 characters at most); set TMPDIR to a shorter directory"
            )
        try:
            context = multiprocessing.get_context("fork")
            with _single_threaded_opencv():
                for wid in range(self.nworkers):
                    loop = _WorkerLoop(
                        wid, template, source, layout, self._control, self.socket_dir, seed, skip_bad_samples
                    )
                    process = context.Process(
                        target=loop.run, args=(self.owner_pid,), name=f"{name}-worker-{wid}", daemon=True
                    )
                    process.start()
                    self.processes.append(process)
            # Only now (after every fork) does this process create its own ZeroMQ context and threads.
            self._context = zmq.Context()
            self._results = self._context.socket(zmq.PULL)
            self._results.bind(f"ipc://{self.socket_dir}/results")
            self._poller.register(self._results, zmq.POLLIN)
            for process in self.processes:
                self._poller.register(process.sentinel, zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self.processes if p.pid is not None]

    def set_generation(self, generation: int) -> None:
        """Tell the workers to skip chunks of older generations."""
        self._control[_GENERATION] = generation

    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk; :meth:`dispatch` sends it when a worker is free."""
        self._queue.append(chunk)
        self._in_flight[(chunk.generation, chunk.seq)] += 1

    def drop_queued(self) -> None:
        """Forget the chunks not sent yet (their run was abandoned)."""
        for chunk in self._queue:
            self._count_off(chunk.generation, chunk.seq)
        self._queue.clear()

    def in_flight(self, generation: int, seq: int) -> int:
        """Chunks of batch ``seq`` of run ``generation`` queued or sent and not answered yet."""
        return self._in_flight.get((generation, seq), 0)

    def dispatch(self) -> None:
        """Send queued chunks to the least loaded ready workers (round robin among equals)."""
        n = self.nworkers
        # At most two chunks per worker (one running, one queued so it never waits for a round trip): a chunk
        # queued behind a slow sample cannot move to another worker, the rest stays here for whoever is free.
        cap = 2 if all(self.ready) else 1
        while self._queue:
            candidates = [w for w in range(n) if self.ready[w] and len(self._held[w]) < cap]
            if not candidates:
                return
            start = self._next_worker
            wid = min(candidates, key=lambda w: (len(self._held[w]), (w - start) % n))
            self._next_worker = (wid + 1) % n
            chunk = self._queue.popleft()
            sender = self._senders[wid]
            assert sender is not None
            sender.send(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
            self._held[wid].append(chunk)

    def poll(self, timeout_s: float) -> list[tuple[Done | Failure | Discarded, list[Any]]]:
        """Wait up to ``timeout_s`` for replies; return every chunk reply available with its extra frames.

        Raises:
            WorkerError: a worker's ``setup()`` failed.
            WorkerDiedError: a worker process ended.
        """
        assert self._results is not None
        events = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        replies: list[tuple[Done | Failure | Discarded, list[Any]]] = []
        received = False
        while True:
            try:
                frames = self._results.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received = True
            reply: Reply = pickle.loads(frames[0].buffer)
            if isinstance(reply, Ready):
                self._connect(reply.wid)
            elif isinstance(reply, Failure) and reply.during_setup:
                raise error_from_failure(reply)
            else:
                self._answered(reply)
                replies.append((reply, frames[1:]))
        if received or len(events) <= (self._results in events):
            return replies
        # a worker ended: give its last reply (an error report, say) a moment to arrive first
        if self._results.poll(200):
            return self.poll(0)
        self.check_alive()
        return replies

    def _answered(self, reply: Done | Failure | Discarded) -> None:
        held = self._held[reply.wid]
        for chunk in held:
            if (chunk.generation, chunk.seq, chunk.row_offset) == (reply.generation, reply.seq, reply.row_offset):
                held.remove(chunk)
                break
        self._count_off(reply.generation, reply.seq)

    def _count_off(self, generation: int, seq: int) -> None:
        key = (generation, seq)
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]

    def _connect(self, wid: int) -> None:
        """A worker reported ready: connect to its work socket."""
        assert self._context is not None
        sender = self._context.socket(zmq.PUSH)
        sender.setsockopt(zmq.LINGER, 0)
        sender.connect(f"ipc://{self.socket_dir}/work-{wid}")
        self._senders[wid] = sender
        self.ready[wid] = True

    def held_keys(self, wid: int | None = None, generation: int | None = None, seq: int | None = None) -> list[object]:
        """Keys (or indices) of the samples sent to worker ``wid`` (default: any) and not answered yet.

        Only chunks of batch ``seq`` of run ``generation`` count when those are given.
        """
        keys: list[object] = []
        for w in range(self.nworkers) if wid is None else (wid,):
            for chunk in self._held[w]:
                if generation is not None and (chunk.generation, chunk.seq) != (generation, seq):
                    continue
                keys.extend(self._keys(chunk))
        return keys

    def _keys(self, chunk: Chunk) -> list[object]:
        indices = chunk.indices.tolist()
        if chunk.payloads is not None:
            return [
                payload.get("key", index) if isinstance(payload, dict) else index
                for index, payload in zip(indices, chunk.payloads)
            ]
        if self._sample_key is None:
            return indices
        keys = []
        for index in indices:
            try:
                keys.append(self._sample_key(index))
            except Exception:  # naming must never hide the real problem
                keys.append(index)
        return keys

    def check_alive(self) -> None:
        """Raise :class:`WorkerDiedError` (naming the samples it held) if any worker process ended."""
        for wid, process in enumerate(self.processes):
            if process.exitcode is not None:
                keys = self.held_keys(wid)
                if keys:
                    shown = ", ".join(map(repr, keys[:_KEYS_SHOWN]))
                    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
                    held = f"while it held samples {shown}{more} (one of them may have caused it)"
                else:
                    held = "while it held no samples"
                raise WorkerDiedError(
                    f"Worker {wid} (pid {process.pid}) of loader {self.name!r} {describe_exit(process.exitcode)} "
                    f"{held}. A worker killed by SIGKILL often ran out of memory: use fewer workers or a smaller "
                    "batch; otherwise check the worker's setup() and prepare() code.",
                    keys,
                )

    def close(self) -> None:
        """Stop and join every worker (terminate / kill after a short grace), close sockets, remove the dir."""
        if self._closed or os.getpid() != self.owner_pid:
            return
        self._closed = True
        self._control[_STOP] = 1
        for sender in self._senders:
            if sender is not None:
                with contextlib.suppress(zmq.ZMQError):
                    sender.send(b"stop", zmq.NOBLOCK)
        alive = [p for p in self.processes if p.exitcode is None]
        for wid, process in enumerate(self.processes):
            if not self.ready[wid] and process.exitcode is None:
                # not listening yet (still starting or in setup()): nothing to finish, end it now
                with contextlib.suppress(OSError):
                    process.terminate()
        for grace, action in ((_STOP_GRACE_S, "terminate"), (_KILL_GRACE_S, "kill"), (_KILL_GRACE_S, None)):
            alive = _wait_all(alive, grace)
            if alive and action is not None:
                for process in alive:
                    with contextlib.suppress(OSError):
                        getattr(process, action)()
        for process in self.processes:
            if process.exitcode is not None:
                process.join()
                process.close()
        for sender in self._senders:
            if sender is not None:
                sender.close(linger=0)
        if self._results is not None:
            self._results.close(linger=0)
        if self._context is not None:
            self._context.term()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def error_from_failure(failure: Failure) -> Exception:
    """The exception the main process raises for a worker's :class:`Failure` reply."""
    if failure.is_sample_error:
        error: Exception = SampleError(
            f"{failure.message}\n\nTo skip bad samples instead of failing (they are counted in "
            "`skipped_samples` and warned about), pass skip_bad_samples=True to the loader or the DataModule."
            f"\n\nWorker traceback (most recent call last):\n{failure.worker_traceback.rstrip()}",
            failure.key,
        )
        error.worker_traceback = failure.worker_traceback  # type: ignore[attr-defined]
        return error
    return WorkerError(
        f"{failure.exc_type}: {failure.message}", failure.key, failure.worker_traceback, failure.exc_type
    )
