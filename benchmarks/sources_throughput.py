"""Opening big sources and reading them locally and over HTTP (SPEC section 6, "Scale"; issue 12).

Three measurements, each printed as a table:

1. ``open``: a synthetic msgpack file of ``--samples`` tiny samples (1,000,000 by default, ~150 MB), opened
   from datadings' ``.offsets`` sidecar (written by ``write_msgpack``), from our own cached index, and with
   no index (a full scan), each warm (file in the page cache) and cold (evicted with ``posix_fadvise``);
   plus the time from constructing a shuffling ``TurboDataLoader`` on the opened file to its first batch.
2. ``read``: the same ``--read-samples`` samples of ``--read-size`` bytes read from the local file and from
   the same file over loopback HTTP (a threaded range server on 127.0.0.1), by a loader with
   ``--nworkers`` workers that only copy the sample bytes (no decoding; each worker fetches its share of a
   batch with one ``read_many``), one process reading in order, and one process reading shuffled chunks of 64
   with ``read_many`` (concurrent range requests); and by the loader from a second server that answers every
   request after ``--latency-ms`` (10 by default), as remote storage does.
3. ``folder``: opening an image folder of ``--folder-files`` empty files in 100 class folders, listed with
   ``os.scandir`` and from the cached listing.

Every file is written under ``--workdir`` (a temporary folder by default) and deleted at the end.
Bars: opening with an index <= 0.2 s whatever the file size; listing 100,000 files <= 1 s.

Run from the repository root: ``python benchmarks/sources_throughput.py`` (``--samples 100000`` for a quick run).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.sources import ImageFolderDataset, MsgpackDataset, write_msgpack
from crumpets_lightning.data.workers.base import BufferWorker
from tests.data.sources.range_server import RangeServer

__all__ = ["main"]


class ByteCountWorker(BufferWorker):
    """Writes the sample's label and the length of its payload: the loader's work without any decoding."""

    def __init__(self) -> None:
        super().__init__()
        self.add_buffer("label", ((1,), np.int64))
        self.add_buffer("nbytes", ((1,), np.int64))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        buffers["label"][0] = sample["label"]
        buffers["nbytes"][0] = len(sample["image"])


def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (clean pages only), so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def first_batch_seconds(dataset: Any, nworkers: int) -> float:
    """Seconds from constructing a shuffling loader on ``dataset`` to holding its first batch."""
    start = time.perf_counter()
    loader = TurboDataLoader(dataset, 64, ByteCountWorker(), nworkers=nworkers, shuffle=True, seed=0)
    try:
        next(iter(loader))
        return time.perf_counter() - start
    finally:
        loader.stop()


def bench_open(workdir: Path, samples: int, nworkers: int) -> list[tuple[str, str, str, str]]:
    path = workdir / "million.msgpack"
    payload = bytes(100)
    seconds, _ = timed(
        lambda: write_msgpack(({"key": f"{i:07d}", "label": i % 1000, "image": payload} for i in range(samples)), path)
    )
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {samples:,} samples, {size_mb:.0f} MB (+ .offsets, .keys) in {seconds:.1f} s")
    sidecars = [Path(f"{path}.offsets"), Path(f"{path}.keys")]
    rows = []

    def measure(label: str, cold: bool) -> MsgpackDataset:
        if cold:
            for file in [path, *sidecars, Path(f"{path}.crumpets-index")]:
                if file.exists():
                    evict(file)
        seconds, dataset = timed(lambda: MsgpackDataset(path))
        batch = first_batch_seconds(dataset, nworkers)
        rows.append((label, "cold" if cold else "warm", f"{seconds * 1e3:,.1f}", f"{batch * 1e3:,.0f}"))
        return dataset

    for cold in (True, False):
        measure("datadings .offsets", cold)
    saved = [file.read_bytes() for file in sidecars]
    for file in sidecars:
        file.unlink()
    for cold in (True, False):
        Path(f"{path}.crumpets-index").unlink(missing_ok=True)
        measure("no index: scan (first open)", cold)
    for cold in (True, False):
        measure("own index (after the scan)", cold)
    for file, data in zip(sidecars, saved):
        file.write_bytes(data)
    path.unlink()
    for file in [*sidecars, Path(f"{path}.crumpets-index")]:
        file.unlink(missing_ok=True)
    return rows


def _serve(folder: Path, port: Any, latency_s: float = 0.0) -> None:
    with RangeServer(folder, latency_s=latency_s) as server:
        port.send(server.url(""))
        port.recv()  # serve until the parent says stop


def bench_read(
    workdir: Path, count: int, size: int, nworkers: int, latency_ms: float = 10.0
) -> list[tuple[str, str, str, str]]:
    folder = workdir / "served"
    folder.mkdir()
    path = folder / "read.msgpack"
    rng = np.random.default_rng(0)
    write_msgpack(({"key": str(i), "label": i, "image": rng.bytes(size)} for i in range(count)), path)
    megabytes = path.stat().st_size / 1e6
    rows = []
    order = np.random.default_rng(1).permutation(count)

    def loader_rows(label: str, dataset: MsgpackDataset) -> None:
        loader = TurboDataLoader(dataset, 64, ByteCountWorker(), nworkers=nworkers, shuffle=True, seed=0)
        try:
            next(iter(loader))  # workers started; then one whole epoch
            start = time.perf_counter()
            seen = sum(int(mini["nbytes"].shape[0]) for _, minis in loader for mini in minis)
            seconds = time.perf_counter() - start
        finally:
            loader.stop()
        assert seen == count
        reader = f"loader, {nworkers} workers, shuffled"
        rows.append((label, reader, f"{count / seconds:,.0f}", f"{megabytes / seconds:,.0f}"))

    # the server runs in its own process, so it does not compete with the readers for this one's GIL
    context = multiprocessing.get_context("fork")
    here, there = context.Pipe()
    server = context.Process(target=_serve, args=(folder, there), daemon=True)
    server.start()
    # the same server answering each request after latency_ms, as remote storage does
    far, far_there = context.Pipe()
    far_server = context.Process(target=_serve, args=(folder, far_there, latency_ms / 1000), daemon=True)
    far_server.start()
    try:
        base, far_base = here.recv(), far.recv()
        # (label, source, whether it has latency: one request after the other would then take count x latency)
        sources = [("local file", str(path), False), ("loopback HTTP", f"{base}read.msgpack", False)]
        sources.append((f"HTTP + {latency_ms:g} ms latency", f"{far_base}read.msgpack", True))
        for label, source, slow in sources:
            dataset = MsgpackDataset(source)
            if slow:  # the loader only
                rows.append((label, "1 process, in order", f"~{1000 / latency_ms:,.0f} at most", ""))
                loader_rows(label, dataset)
                continue
            seconds, _ = timed(lambda dataset=dataset: [dataset[i] for i in range(len(dataset))])
            rows.append((label, "1 process, in order", f"{count / seconds:,.0f}", f"{megabytes / seconds:,.0f}"))
            seconds, _ = timed(
                lambda dataset=dataset: [dataset.read_many(order[i : i + 64].tolist()) for i in range(0, count, 64)]
            )
            reader = "1 process, read_many(64), shuffled"
            rows.append((label, reader, f"{count / seconds:,.0f}", f"{megabytes / seconds:,.0f}"))
            loader_rows(label, dataset)
    finally:
        for pipe, process in ((here, server), (far, far_server)):
            pipe.send("stop")
            process.join(timeout=10)
    shutil.rmtree(folder)
    return rows


def bench_folder(workdir: Path, files: int) -> list[tuple[str, str]]:
    root = workdir / "folder"
    per_class = -(-files // 100)
    for c in range(100):
        (root / f"class{c:03d}").mkdir(parents=True)
        for i in range(min(per_class, files - c * per_class)):
            (root / f"class{c:03d}" / f"{i:06d}.jpg").touch()
    settled = time.time_ns() - 60_000_000_000  # listings of folders modified seconds ago are not kept
    for folder in [root, *root.iterdir()]:
        os.utime(folder, ns=(settled, settled))
    rows = []
    runs = [("scandir, no listing cache", False)] * 2 + [("first open (keeps the listing)", True)]
    runs += [("cached listing (folders unchanged)", True)] * 2
    for label, cache_listing in runs:
        seconds, dataset = timed(
            lambda cache_listing=cache_listing: ImageFolderDataset(root, cache_listing=cache_listing)
        )
        assert len(dataset) == files
        rows.append((label, f"{seconds * 1e3:,.0f}"))
    shutil.rmtree(root)
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the synthetic file to open")
    parser.add_argument("--read-samples", type=int, default=10_000, help="samples of the file read locally/HTTP")
    parser.add_argument("--read-size", type=int, default=16_384, help="payload bytes per read sample")
    parser.add_argument("--folder-files", type=int, default=100_000, help="files of the image folder")
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="round trip of the slow HTTP server")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temp folder)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sources-bench-", dir=args.workdir))
    os.environ.setdefault("CRUMPETS_LIGHTNING_CACHE", str(workdir / "cache"))
    try:
        open_rows = bench_open(workdir, args.samples, args.nworkers)
        print(f"\nOpening a {args.samples:,}-sample msgpack file (first batch: shuffled, batch 64)")
        print(table(("index", "page cache", "open ms", "construct to first batch ms"), open_rows))
        read_rows = bench_read(workdir, args.read_samples, args.read_size, args.nworkers, args.latency_ms)
        print(f"\nReading {args.read_samples:,} samples of {args.read_size:,} bytes (no decoding)")
        print(table(("source", "reader", "samples/s", "MB/s"), read_rows))
        folder_rows = bench_folder(workdir, args.folder_files)
        print(f"\nListing an image folder of {args.folder_files:,} files in 100 classes (warm)")
        print(table(("open", "ms"), folder_rows))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
