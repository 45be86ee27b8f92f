"""``crumpets-lightning bench``: this loader against the torch ``DataLoader`` doing the same work, as a table.

Both sides decode real JPEG photos (~500x375, ImageNet-like) and augment them with ``AUGMENTATION_TRAIN`` to
224x224 through the same :class:`~crumpets_lightning.data.workers.ClassificationWorker`, with the same number
of worker processes and the same batch size:

- this loader: :class:`~crumpets_lightning.data.loader.TurboDataLoader` (``TorchTurboDataLoader`` on the CPU
  when available, so both sides yield torch tensors);
- torch: ``torch.utils.data.DataLoader`` over a map-style dataset whose ``__getitem__`` calls the same
  worker's ``prepare`` into fresh arrays, default collate, persistent workers (its fastest setting for
  several epochs), forked like ours.

One run holds several rounds. In each, both loaders are built fresh (construct-to-first-batch time) and
finish a warm-up epoch; then, for every timed epoch, one epoch of ours, one of torch's (whose workers sit idle
meanwhile; the order alternates) and the pipeline over the same images, in one process alone and split among
``nworkers`` processes at once without any IPC (forked children, so the main process stays as a user's would
be). Measuring everything within seconds of each other exposes it to the same load from anything else on the
machine. Nothing runs between epochs: every epoch is timed from ``iter()`` to its last batch, and a loader
that kept working outside its epochs would show less worker CPU per image than the pipeline needs.

Other processes only ever slow a measurement down, so the pass/fail ratios compare the best epoch of each
(an estimate for an otherwise idle machine); the medians of the per-epoch ratios are shown beside them.

Reported:

- throughput of both loaders and the ratio (target >= 1.3x torch, SPEC section 5);
- the limit: ``min(nworkers, usable CPUs)`` x single-process pipeline rate (target >= 0.95 of it), and, for
  comparison, what ``nworkers`` pipeline processes reach at once without any IPC on this machine (cores
  shared with other load, caches and memory bandwidth shared with each other);
- main-process CPU per image (``time.process_time`` of the consumer, all its threads, during the timed
  epochs; target <= 0.05 ms) and the workers' CPU per image (``/proc`` of the live children plus
  ``RUSAGE_CHILDREN`` of reaped ones over the same window: if it fell below the single-process cost, work
  would have been done outside the measured window);
- construct-to-first-batch time minus the first batch's own work, estimated as per-image pipeline time x
  batch / nworkers (target <= 0.3 s);
- peak shared memory (our ``/dev/shm`` segments) against the configured slots, constant over epochs; the
  main process's peak RSS growth while a loader runs (``VmHWM`` reset first) and the workers' PSS (shared
  pages split among the processes that map them: their RSS would count the parent's pages once per worker).

Example::

    crumpets-lightning bench                    # defaults: ~640 photos, 2 workers, 3 rounds
    crumpets-lightning bench --json bench.json  # also write the table as JSON
    python benchmarks/bench_loader.py --quick   # seconds, for a smoke test

It lives in :mod:`crumpets_lightning.tools` (outside the library core) and needs the ``demo`` extra
(scikit-learn, for its sample photos) unless ``--data DIR`` names a folder of JPEGs.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["BenchConfig", "Row", "format_table", "load_jpegs", "main", "make_photo_jpegs", "run_benchmark"]

_SHM_DIR = Path("/dev/shm")
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")
_MIB = 1024 * 1024


@dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        images: photos per epoch (built when ``data`` is None).
        nworkers: worker processes on both sides.
        batch_size: samples per batch on both sides.
        size: output side length (square).
        rounds: interleaved rounds; results are medians over rounds.
        epochs: timed epochs per loader and round (after one warm-up epoch).
        seed: seeds the photos and the augmentation.
        data: a folder of JPEGs to use instead of the built photos.
        photo_size: ``(height, width)`` of the built photos.
    """

    images: int = 640
    nworkers: int = 2
    batch_size: int = 64
    size: int = 224
    rounds: int = 4
    epochs: int = 3
    seed: int = 0
    data: str | None = None
    photo_size: tuple[int, int] = (375, 500)


@dataclass
class Row:
    """One line of the result table.

    Attributes:
        metric: what was measured.
        value: the measured value (None when it could not be measured).
        unit: the unit of ``value``.
        target: the target as text (empty when the row is for information).
        passed: whether the target is met (None for information rows).
    """

    metric: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None


# -- data ------------------------------------------------------------------------------------------------------


def _sample_photos() -> list[np.ndarray]:
    from crumpets_lightning.tools import require_extra

    require_extra("sklearn", "demo", "crumpets-lightning bench (its photos come from scikit-learn; or pass --data DIR)")
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = []
    for name in ("china.jpg", "flower.jpg"):
        photo = cv2.imread(str(folder / name))
        if photo is None:
            raise FileNotFoundError(f"scikit-learn's sample photo {name} is missing from {folder}")
        photos.append(photo)
    return photos


def make_photo_jpegs(count: int, seed: int = 0, size: tuple[int, int] = (375, 500)) -> list[bytes]:
    """``count`` ImageNet-like JPEG photos from scikit-learn's ``china.jpg`` and ``flower.jpg``.

    Each is a random crop (40-100 % of the photo's sides, random aspect) resized to about ``size``
    (+-10 %, one in five in portrait orientation), randomly mirrored, at JPEG quality 75-95.

    Args:
        count: how many photos.
        seed: seeds the crops.
        size: nominal ``(height, width)`` of a landscape photo.

    Returns:
        The encoded JPEGs.

    Raises:
        ValueError: ``count`` or ``size`` is not positive.
    """
    if count <= 0 or min(size) <= 0:
        raise ValueError(f"Expected a positive count and size but got count={count}, size={size}")
    photos = _sample_photos()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        crop_h = int(height * rng.uniform(0.4, 1.0))
        crop_w = int(width * rng.uniform(0.4, 1.0))
        y = int(rng.integers(0, height - crop_h + 1))
        x = int(rng.integers(0, width - crop_w + 1))
        crop = photo[y : y + crop_h, x : x + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        target_h, target_w = (int(s * rng.uniform(0.9, 1.1)) for s in size)
        if rng.random() < 0.2:
            target_h, target_w = target_w, target_h
        resized = cv2.resize(
            np.ascontiguousarray(crop), (max(target_w, 1), max(target_h, 1)), interpolation=cv2.INTER_AREA
        )
        quality = int(rng.integers(75, 96))
        ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
            raise RuntimeError("OpenCV failed to encode a JPEG")
        out.append(encoded.tobytes())
    return out


def load_jpegs(folder: str | os.PathLike[str], limit: int | None = None) -> list[bytes]:
    """The bytes of the JPEG files under ``folder`` (recursively, sorted by path), at most ``limit``.

    Raises:
        FileNotFoundError: ``folder`` is not a directory or holds no JPEG.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {str(root)!r} is not a directory of JPEG files")
    paths = sorted(p for p in root.rglob("*") if p.suffix in _JPEG_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"--data {str(root)!r} holds no .jpg/.jpeg files")
    return [p.read_bytes() for p in paths[:limit]]


# -- the work both loaders do ----------------------------------------------------------------------------------


def _make_worker(size: int) -> Any:
    from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN
    from crumpets_lightning.data.workers.image import ClassificationWorker

    return ClassificationWorker(((3, size, size), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN)


def _sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, epoch, index]))


class _PreparedDataset:
    """Map-style dataset for the torch ``DataLoader``: the same worker's ``prepare`` into fresh arrays."""

    def __init__(self, samples: Sequence[dict[str, Any]], worker: Any, seed: int) -> None:
        self.samples = samples
        self.worker = worker
        self.seed = seed
        self.specs = worker.buffer_specs

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        buffers = {}
        for key, (shape, dtype, fill) in self.specs.items():
            array = np.empty(shape, dtype)
            array[...] = fill[0]
            buffers[key] = array
        self.worker.rng = _sample_generator(self.seed, 0, index)
        self.worker.sample_key = index
        self.worker.prepare(self.samples[index], {}, buffers)
        return buffers


def _one_thread_opencv(_worker_id: int = 0) -> None:
    cv2.setNumThreads(1)


def _pipeline_child(samples: Sequence[dict[str, Any]], size: int, seed: int, connection: Any) -> None:
    """Run the pipeline over every sample in one process; send (images, wall s, CPU s) back."""
    try:
        _one_thread_opencv()
        worker = _make_worker(size)
        worker.setup()
        specs = worker.buffer_specs
        buffers = {key: np.empty(shape, dtype) for key, (shape, dtype, _) in specs.items()}

        def prepare(index: int) -> None:
            for key, (_, _, fill) in specs.items():
                buffers[key][...] = fill[0]
            worker.rng = _sample_generator(seed, 0, index)
            worker.sample_key = index
            worker.prepare(samples[index], {}, buffers)

        # per-process setup (the noise pool, caches) is not per-image work: warm up like a loader's first epoch
        from crumpets_lightning.data.augment.pixel_ops import noise_pool

        noise_pool()
        for index in range(min(8, len(samples))):
            prepare(index)
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(len(samples)):
            prepare(index)
        connection.send((len(samples), time.perf_counter() - wall, time.process_time() - cpu))
    except BaseException as error:
        connection.send(error)
    finally:
        connection.close()


def _measure_pipeline(
    parts: Sequence[Sequence[dict[str, Any]]], size: int, seed: int
) -> list[tuple[int, float, float]]:
    """The pipeline over each part in its own forked child, all at once, no IPC: (images, wall s, CPU s) each."""
    context = multiprocessing.get_context("fork")
    children = []
    try:
        for part in parts:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_pipeline_child, args=(part, size, seed, sender), daemon=True)
            process.start()
            sender.close()
            children.append((process, receiver))
        results = []
        for _, receiver in children:
            if not receiver.poll(600):
                raise TimeoutError("the single-process pipeline measurement did not finish within 600 s")
            result = receiver.recv()
            if isinstance(result, BaseException):
                raise result
            results.append(result)
        return results
    finally:
        for process, receiver in children:
            receiver.close()
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()


# -- process accounting ----------------------------------------------------------------------------------------


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def _children_cpu_s() -> float:
    """CPU seconds of this process's live children (from /proc) plus every reaped child."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _children():
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + usage.ru_utime + usage.ru_stime


def _proc_kib_field(path: str, field: str) -> int:
    """The ``field:`` line of a /proc file that counts kiB (``status``, ``smaps_rollup``), in bytes; 0 if absent."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_rss_bytes(pid: int | str = "self") -> int:
    """``VmHWM`` (peak resident set) of a process; 0 when unavailable."""
    return _proc_kib_field(f"/proc/{pid}/status", "VmHWM")


def _rss_bytes() -> int:
    """Current resident set of this process."""
    return _proc_kib_field("/proc/self/status", "VmRSS")


def _pss_bytes(pid: int) -> int:
    """Proportional set size of a process (shared pages split among their users); 0 when unavailable."""
    return _proc_kib_field(f"/proc/{pid}/smaps_rollup", "Pss")


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _our_shm_bytes() -> int:
    """Bytes of the shared-memory segments this process owns (``crumpets-lightning-<pid>-*``)."""
    prefix = f"crumpets-lightning-{os.getpid()}-"
    total = 0
    try:
        entries = list(os.scandir(_SHM_DIR))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(prefix):
            try:
                total += entry.stat().st_size
            except OSError:
                continue
    return total


# -- one loader, one round -------------------------------------------------------------------------------------


@dataclass
class _LoaderRun:
    """One loader's measurements in one round (sums over its timed epochs)."""

    startup_s: float = 0.0
    images: int = 0
    wall_s: float = 0.0
    main_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    main_rss_growth: int = 0
    workers_pss: int = 0
    shm_per_epoch: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "startup_s": self.startup_s,
            "images_per_s": self.images / self.wall_s,
            "main_cpu_ms": self.main_cpu_s / self.images * 1000,
            "worker_cpu_ms": self.worker_cpu_s / self.images * 1000,
            "main_rss_growth": self.main_rss_growth,
            "workers_pss": self.workers_pss,
            "shm_per_epoch": self.shm_per_epoch,
        }


class _Measured:
    """A loader under measurement: built and warmed up by :meth:`start`, timed epoch by epoch."""

    def __init__(self, build: Callable[[], Any], close: Callable[[Any], None]) -> None:
        self.build = build
        self.close_loader = close
        self.loader: Any = None
        self.run = _LoaderRun()
        self.worker_pids: list[int] = []

    def start(self) -> None:
        """Construct, take the first batch (start-up time), finish the warm-up epoch."""
        gc.collect()
        _reset_peak_rss()
        rss_before = _rss_bytes()
        children_before = set(_children())
        start = time.perf_counter()
        self.loader = self.build()
        iterator = iter(self.loader)
        first = next(iterator)
        self.run.startup_s = time.perf_counter() - start
        del first
        for _ in iterator:
            pass
        del iterator
        self.run.main_rss_growth = max(0, _peak_rss_bytes() - rss_before)
        self.worker_pids = sorted(set(_children()) - children_before)

    def timed_epoch(self) -> float:
        """One epoch, timed (the other loader's workers sit idle meanwhile); returns its images/s."""
        children_before = _children_cpu_s()
        wall, cpu = time.perf_counter(), time.process_time()
        images = 0
        for item in self.loader:
            images += int(_batch_images(item).shape[0])
        elapsed = time.perf_counter() - wall
        self.run.wall_s += elapsed
        self.run.main_cpu_s += time.process_time() - cpu
        self.run.worker_cpu_s += _children_cpu_s() - children_before
        self.run.images += images
        return images / elapsed

    def sample_memory(self) -> None:
        self.run.shm_per_epoch.append(_our_shm_bytes())
        self.run.workers_pss = max(self.run.workers_pss, sum(_pss_bytes(pid) for pid in self.worker_pids))

    def close(self) -> None:
        if self.loader is not None:
            self.close_loader(self.loader)
            self.loader = None
            gc.collect()


def _batch_images(item: Any) -> Any:
    """The image batch of whatever a loader yields: ``(iteration, mini_batches)`` or a batch dict."""
    if isinstance(item, tuple):
        return item[1][0]["image"]
    return item["image"]


def _our_loader_class() -> type:
    try:
        from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader

        return TorchTurboDataLoader
    except ImportError:
        from crumpets_lightning.data.loader.loader import TurboDataLoader

        return TurboDataLoader


def _ours(samples: list[dict[str, Any]], config: BenchConfig, round_index: int) -> _Measured:
    loader_class = _our_loader_class()

    def build() -> Any:
        return loader_class(
            samples,
            config.batch_size,
            _make_worker(config.size),
            nworkers=config.nworkers,
            seed=config.seed + round_index,
            shuffle=True,
            name="bench",
        )

    return _Measured(build, lambda loader: loader.stop())


def _shutdown_torch_loader(loader: Any) -> None:
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    loader._iterator = None


def _torch(samples: list[dict[str, Any]], config: BenchConfig, round_index: int) -> _Measured:
    import torch
    from torch.utils.data import DataLoader

    def build() -> Any:
        return DataLoader(
            _PreparedDataset(samples, _make_worker(config.size), config.seed + round_index),  # type: ignore[arg-type]
            batch_size=config.batch_size,
            shuffle=True,
            num_workers=config.nworkers,
            persistent_workers=True,
            worker_init_fn=_one_thread_opencv,
            multiprocessing_context="fork",
            generator=torch.Generator().manual_seed(config.seed + round_index),
        )

    return _Measured(build, _shutdown_torch_loader)


def _measure_round(
    samples: list[dict[str, Any]], config: BenchConfig, round_index: int
) -> tuple[_LoaderRun, _LoaderRun, list[dict[str, float]]]:
    """One round: both loaders started, then per timed epoch: one epoch of each and the pipeline alone / N at once.

    Alternating epoch by epoch (about a second each) exposes every measurement to the same load from anything
    else running on the machine, which a whole-loader-at-a-time comparison does not.
    """
    ours, theirs = _ours(samples, config, round_index), _torch(samples, config, round_index)
    pair = [ours, theirs] if round_index % 2 == 0 else [theirs, ours]
    shares = [samples[i :: config.nworkers] for i in range(config.nworkers)]  # one epoch split among workers
    epochs = []
    try:
        for measured in pair:
            measured.start()
        for measured in pair:
            measured.sample_memory()
        for epoch in range(config.epochs):
            rates = {}
            for measured in pair if epoch % 2 == 0 else pair[::-1]:
                rates["ours" if measured is ours else "torch"] = measured.timed_epoch()
                measured.sample_memory()
            ((count, wall, cpu),) = _measure_pipeline([samples], config.size, config.seed)
            rates["single"] = count / wall
            rates["single_cpu_ms"] = cpu / count * 1000
            parallel = _measure_pipeline(shares, config.size, config.seed)
            rates["parallel"] = sum(count for count, _, _ in parallel) / max(wall for _, wall, _ in parallel)
            epochs.append(rates)
    finally:
        for measured in pair:
            measured.close()
    return ours.run, theirs.run, epochs


# -- the whole benchmark ---------------------------------------------------------------------------------------


def _slot_bytes(config: BenchConfig) -> int:
    from crumpets_lightning.data.transport.shm import BatchLayout

    return BatchLayout(_make_worker(config.size).buffer_specs, config.batch_size).nbytes


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_benchmark(config: BenchConfig, jpegs: Sequence[bytes], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure both loaders over ``config.rounds`` interleaved rounds.

    Args:
        config: what to measure.
        jpegs: the encoded photos (one epoch).
        log: progress messages.

    Returns:
        ``{"config": ..., "loader": ..., "rows": [Row as dict, ...], "rounds": [...]}``.
    """
    samples = [{"image": data, "label": i % 10, "key": i} for i, data in enumerate(jpegs)]
    _one_thread_opencv()  # the forked workers inherit it; the torch workers also set it
    rounds: list[dict[str, Any]] = []
    loader_name = _our_loader_class().__name__
    usable = min(config.nworkers, _usable_cpus())
    for round_index in range(config.rounds):
        ours_run, torch_run, epochs = _measure_round(samples, config, round_index)
        ours, theirs = ours_run.summary(), torch_run.summary()
        for rates in epochs:
            rates["limit"] = usable * rates["single"]
            rates["ratio_torch"] = rates["ours"] / rates["torch"]
            rates["ratio_limit"] = rates["ours"] / rates["limit"]
            rates["ratio_parallel"] = rates["ours"] / rates["parallel"]
        pipeline_s = 1 / statistics.median(rates["single"] for rates in epochs)
        entry = {
            "round": round_index,
            "ours": ours,
            "torch": theirs,
            "epochs": epochs,
            "startup_overhead_s": ours["startup_s"] - pipeline_s * config.batch_size / config.nworkers,
        }
        rounds.append(entry)
        log(
            f"round {round_index + 1}/{config.rounds}: per epoch {loader_name} "
            + ", ".join(f"{rates['ours']:.0f}" for rates in epochs)
            + " img/s; torch "
            + ", ".join(f"{rates['torch']:.0f}" for rates in epochs)
            + " img/s; limit "
            + ", ".join(f"{rates['limit']:.0f}" for rates in epochs)
            + " img/s"
        )
    rows = _summarise(config, rounds, loader_name)
    return {
        "config": asdict(config),
        "loader": loader_name,
        "cpus": _usable_cpus(),
        "rows": [asdict(row) for row in rows],
        "rounds": rounds,
    }


def _values(rounds: list[dict[str, Any]], *path: str) -> list[float]:
    values = []
    for entry in rounds:
        value: Any = entry
        for part in path:
            value = value[part]
        values.append(float(value))
    return values


def _median(rounds: list[dict[str, Any]], *path: str) -> float:
    return statistics.median(_values(rounds, *path))


def _max(rounds: list[dict[str, Any]], *path: str) -> float:
    return max(_values(rounds, *path))


def _at_least(value: float, target: float) -> bool:
    return value >= target


def _at_most(value: float, target: float) -> bool:
    return value <= target


def _epoch_values(rounds: list[dict[str, Any]], key: str) -> list[float]:
    return [float(rates[key]) for entry in rounds for rates in entry["epochs"]]


def _summarise(config: BenchConfig, rounds: list[dict[str, Any]], loader_name: str) -> list[Row]:
    slots = 2 * config.nworkers + 2
    configured = slots * _slot_bytes(config)
    shm_all = [value for entry in rounds for value in entry["ours"]["shm_per_epoch"]]
    shm_constant = all(len(set(entry["ours"]["shm_per_epoch"])) == 1 for entry in rounds)
    shm_peak = max(shm_all) if shm_all else 0
    best = {key: max(_epoch_values(rounds, key)) for key in ("ours", "torch", "limit", "parallel")}
    median = {
        key: statistics.median(_epoch_values(rounds, key)) for key in ("ratio_torch", "ratio_limit", "ratio_parallel")
    }
    ratio_torch = best["ours"] / best["torch"]
    ratio_limit = best["ours"] / best["limit"]
    pipeline_cpu = statistics.median(_epoch_values(rounds, "single_cpu_ms"))
    worker_cpu = _median(rounds, "ours", "worker_cpu_ms")
    main_cpu = _median(rounds, "ours", "main_cpu_ms")
    overhead = _median(rounds, "startup_overhead_s")
    torch_cpu = _median(rounds, "torch", "worker_cpu_ms") + _median(rounds, "torch", "main_cpu_ms")
    usable = min(config.nworkers, _usable_cpus())
    return [
        Row(f"{loader_name} throughput (best epoch)", best["ours"], "images/s"),
        Row("torch DataLoader throughput (best epoch)", best["torch"], "images/s"),
        Row(f"limit: {usable} x single-process pipeline (best)", best["limit"], "images/s"),
        Row(f"{config.nworkers} pipeline processes at once, no IPC (best)", best["parallel"], "images/s"),
        Row("throughput / torch DataLoader (best / best)", ratio_torch, "x", ">= 1.3", _at_least(ratio_torch, 1.3)),
        Row("throughput / torch DataLoader (median of epochs)", median["ratio_torch"], "x"),
        Row("throughput / limit (best / best)", ratio_limit, "x", ">= 0.95", _at_least(ratio_limit, 0.95)),
        Row("throughput / limit (median of epochs)", median["ratio_limit"], "x"),
        Row(
            f"throughput / {config.nworkers} pipeline processes at once (median of epochs)",
            median["ratio_parallel"],
            "x",
        ),
        Row("main-process CPU per image", main_cpu, "ms", "<= 0.05", _at_most(main_cpu, 0.05)),
        Row("main-process CPU per image, torch", _median(rounds, "torch", "main_cpu_ms"), "ms"),
        Row("single-process pipeline CPU per image", pipeline_cpu, "ms"),
        Row(
            "worker CPU per image (timed epochs)",
            worker_cpu,
            "ms",
            ">= 0.9 x pipeline CPU (no unmeasured work)",
            _at_least(worker_cpu, 0.9 * pipeline_cpu),
        ),
        Row("worker CPU per image, torch", _median(rounds, "torch", "worker_cpu_ms"), "ms"),
        Row("CPU per image (workers + main), torch / ours", torch_cpu / (worker_cpu + main_cpu), "x"),
        Row("construct to first batch", _median(rounds, "ours", "startup_s"), "s"),
        Row("construct to first batch, torch", _median(rounds, "torch", "startup_s"), "s"),
        Row("start-up overhead beyond the first batch's work", overhead, "s", "<= 0.3", _at_most(overhead, 0.3)),
        Row(
            "peak shared memory",
            shm_peak / _MIB,
            "MiB",
            f"<= {configured / _MIB:.3f} ({slots} slots), constant over epochs",
            shm_peak <= configured and shm_constant,
        ),
        Row("main-process peak RSS growth while running", _max(rounds, "ours", "main_rss_growth") / _MIB, "MiB"),
        Row("main-process peak RSS growth, torch", _max(rounds, "torch", "main_rss_growth") / _MIB, "MiB"),
        Row("workers' PSS (sum, after the timed epochs)", _max(rounds, "ours", "workers_pss") / _MIB, "MiB"),
        Row("workers' PSS (sum), torch", _max(rounds, "torch", "workers_pss") / _MIB, "MiB"),
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (metric, value, target, result)."""
    width = max([len("metric"), *(len(row["metric"]) for row in rows)])
    target_width = max([len("target"), *(len(row["target"]) for row in rows)])
    header = f"{'metric':<{width}} {'value':>18}  {'target':<{target_width}}  result"
    lines = [header, "-" * len(header)]
    for row in rows:
        value = row["value"]
        shown = "n/a" if value is None or not math.isfinite(value) else f"{value:.3f} {row['unit']}"
        result = "" if row["passed"] is None else ("pass" if row["passed"] else "FAIL")
        lines.append(f"{row['metric']:<{width}} {shown:>18}  {row['target']:<{target_width}}  {result}".rstrip())
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crumpets-lightning bench",
        description="Loader throughput against the torch DataLoader doing the same decode + AUGMENTATION_TRAIN "
        "work (same workers, same batch size), as a table.",
    )
    defaults = BenchConfig()
    parser.add_argument("--images", type=int, default=None, help=f"photos per epoch (default {defaults.images})")
    parser.add_argument(
        "--nworkers", type=int, default=None, help="worker processes on both sides (default: usable CPUs, at most 2)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size}")
    parser.add_argument("--size", type=int, default=None, help=f"output side length (default {defaults.size})")
    parser.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {defaults.rounds})")
    parser.add_argument("--epochs", type=int, default=None, help=f"timed epochs per round (default {defaults.epochs})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the photos and the augmentation")
    parser.add_argument("--data", type=Path, default=None, help="a folder of JPEGs to use instead of built photos")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test in seconds")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    return parser.parse_args(None if argv is None else list(argv))


def _config(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig(nworkers=min(2, _usable_cpus()), seed=args.seed)
    if args.quick:
        config = BenchConfig(
            images=48, nworkers=min(2, _usable_cpus()), batch_size=16, size=64, rounds=1, epochs=1,
            seed=args.seed, photo_size=(90, 120),
        )  # fmt: skip
    for name in ("images", "nworkers", "batch_size", "size", "rounds", "epochs"):
        value = getattr(args, name)
        if value is not None:
            if value <= 0:
                raise ValueError(f"Expected --{name.replace('_', '-')} to be a positive int but got {value}")
            setattr(config, name, value)
    if args.data is not None:
        config.data = str(args.data)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table (the ``crumpets-lightning bench`` subcommand).

    Args:
        argv: command-line arguments (``None`` reads ``sys.argv[1:]``).

    Returns:
        0, or 1 with ``--check`` when a target is missed; 2 for bad arguments.
    """
    args = _parse(argv)
    try:
        config = _config(args)
        if config.data is not None:
            jpegs = load_jpegs(config.data, config.images if args.images is not None else None)
            config.images = len(jpegs)
        else:
            jpegs = make_photo_jpegs(config.images, config.seed, config.photo_size)
    except (ValueError, FileNotFoundError) as error:
        print(f"crumpets-lightning bench: {error}", file=sys.stderr)
        return 2
    sources = "photos from " + (config.data or "scikit-learn's china.jpg / flower.jpg")
    print(
        f"{config.images} {sources} -> {config.size}x{config.size} with AUGMENTATION_TRAIN, batch "
        f"{config.batch_size}, {config.nworkers} workers each side, {config.rounds} rounds x {config.epochs} timed "
        f"epochs, {_usable_cpus()} usable CPUs",
        flush=True,
    )
    results = run_benchmark(config, jpegs, log=lambda text: print(text, flush=True))
    print()
    print(format_table(results["rows"]))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    missed = [row["metric"] for row in results["rows"] if row["passed"] is False]
    if missed:
        print(f"\nmissed targets: {', '.join(missed)}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
