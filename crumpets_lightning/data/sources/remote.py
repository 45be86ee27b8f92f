"""Files behind fsspec URLs (``s3://``, ``gs://``, ``https://``, ``memory://``, ...), read in byte ranges.

Each process opens its own fsspec filesystem on first use (fsspec's async filesystems must not be used
across ``fork``), so a :class:`RemoteFile` built in the main process can be inherited or pickled by workers.
Samples are fetched one byte range at a time; nothing is downloaded as a whole. A :class:`SampleCache`
optionally keeps the fetched samples on local disk for the next epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from crumpets_lightning.data.sources.index import (
    DATADINGS_OFFSET,
    INDEX_SUFFIX,
    OFFSETS_SUFFIX,
    SampleIndex,
    cache_folder,
    cache_name,
    check_offsets,
    read_own_index,
    scan_offsets,
    store_scanned,
)

__all__ = ["RemoteFile", "SampleCache", "is_url", "open_remote_index", "require_fsspec"]

# a protocol, optionally chained (``simplecache::s3://``), then ``://``
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_VERSION_FIELDS = ("ETag", "etag", "Last-Modified", "LastModified", "last_modified", "mtime", "updated", "created")


def is_url(source: object) -> bool:
    """True when ``source`` is a string with a URL scheme (``s3://bucket/x``, ``https://...``)."""
    return isinstance(source, str) and _URL.match(source) is not None


def require_fsspec(url: str) -> Any:
    """Import fsspec for ``url`` and check that it knows the URL's protocol.

    Raises:
        ImportError: fsspec is not installed (names the ``remote`` extra).
        ValueError: fsspec knows no filesystem for the protocol.
    """
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"Reading the data source {url!r} needs fsspec: pip install 'crumpets-lightning[remote]' "
            "(plus s3fs / gcsfs for s3:// / gs://)"
        ) from None
    for protocol in url.split("://", 1)[0].split("::"):
        if protocol not in fsspec.available_protocols():
            raise ValueError(
                f"Data source {url!r}: fsspec knows no filesystem for the protocol {protocol!r}; expected a local "
                f"path or a URL with one of {', '.join(sorted(fsspec.available_protocols()))}"
            )
    return fsspec


class RemoteFile:
    """A file behind an fsspec URL: its size, version, byte ranges and sidecars.

    Args:
        url: the file's URL.
        storage_options: keyword arguments for the fsspec filesystem (credentials, endpoint, ...).

    Raises:
        ImportError: fsspec is not installed.
        FileNotFoundError: nothing is at ``url``.
        ValueError: the server does not report the file's size.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        fsspec = require_fsspec(url)
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._fs, self._path = fsspec.core.url_to_fs(url, **self.storage_options)
        self._pid = os.getpid()
        try:
            info = self._fs.info(self._path)
        except FileNotFoundError:
            raise FileNotFoundError(f"Data source {url!r} does not exist (expected a msgpack file)") from None
        if info.get("type") == "directory":
            raise ValueError(f"Data source {url!r} is a folder; remote sources are msgpack files or shard lists")
        if info.get("size") is None:
            raise ValueError(f"Data source {url!r}: the server does not report the file's size")
        self.size = int(info["size"])
        token = "|".join(str(info[field]) for field in _VERSION_FIELDS if info.get(field) is not None)
        self.version = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")

    @property
    def name(self) -> str:
        return self.url

    def _filesystem(self) -> Any:
        # a process's own instance: fsspec's async filesystems are not fork-safe
        if self._fs is None or self._pid != os.getpid():
            import fsspec

            self._fs, self._path = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **self.storage_options)
            self._pid = os.getpid()
        return self._fs

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the file, fetched as one range request.

        Raises:
            OSError: the server answered with a different number of bytes (it ignores range requests).
        """
        data = self._filesystem().cat_file(self._path, start=start, end=stop)
        if len(data) != stop - start:
            raise OSError(
                f"{self.url!r}: asked for bytes {start}-{stop} and got {len(data)} bytes; the server must support "
                "HTTP range requests"
            )
        return bytes(data)

    def read_many(self, spans: list[tuple[int, int]]) -> list[bytes]:
        """Several byte ranges ``[start, stop)``, fetched concurrently (one request each, in flight together).

        Raises:
            OSError: a range came back with a different number of bytes (the server ignores range requests).
        """
        if not spans:
            return []
        starts, stops = [start for start, _ in spans], [stop for _, stop in spans]
        parts = self._filesystem().cat_ranges([self._path] * len(spans), starts, stops, on_error="raise")
        for (start, stop), data in zip(spans, parts):
            if len(data) != stop - start:
                raise OSError(
                    f"{self.url!r}: asked for bytes {start}-{stop} and got {len(data)} bytes; the server must "
                    "support HTTP range requests"
                )
        return [bytes(data) for data in parts]

    def read_sidecar(self, suffix: str) -> bytes | None:
        """The whole file ``<url><suffix>`` (an index beside the data), or None when there is none.

        An http(s) query string stays at the end (``x.msgpack?v=2`` -> ``x.msgpack.offsets?v=2``).
        """
        path, query = self._path, ""
        if self.url.split("://", 1)[0].split("::")[-1] in ("http", "https") and "?" in path:
            path, query = path.split("?", 1)
            query = "?" + query
        try:
            return bytes(self._filesystem().cat_file(path + suffix + query))
        except (FileNotFoundError, OSError):
            return None

    def open_stream(self) -> IO[bytes]:
        """The file as a sequential stream (read ahead in large blocks), for a one-time scan."""
        return self._filesystem().open(self._path, "rb", block_size=8 << 20, cache_type="readahead")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"], state["_pid"] = None, -1
        return state

    def __repr__(self) -> str:
        return f"RemoteFile({self.url!r}, size={self.size})"


def open_remote_index(file: RemoteFile) -> SampleIndex:
    """The index of a remote msgpack file: its ``.offsets`` sidecar, our cached index, or one streamed scan.

    Raises:
        ValueError: the file had to be scanned and is corrupt or truncated.
    """
    data = file.read_sidecar(OFFSETS_SUFFIX)
    if data is not None and len(data) % DATADINGS_OFFSET.itemsize == 0:
        offsets = np.frombuffer(data, dtype=DATADINGS_OFFSET)
        if check_offsets(offsets, file.size) is None:
            return SampleIndex(offsets, f"datadings {file.url + OFFSETS_SUFFIX!r}")
    cached = cache_folder() / "index" / cache_name(file.url, f"{os.path.basename(file.url)}{INDEX_SUFFIX}")
    index = read_own_index(cached, file.size, file.version)
    if index is not None:
        return index
    with file.open_stream() as stream:
        offsets = scan_offsets(stream, file.size, file.url)
    return store_scanned(offsets, file.size, file.version, (cached,), file.url)


class SampleCache:
    """Samples of one remote file kept on local disk once fetched, shared by every process on the machine.

    The cache is a sparse local file as large as the remote one (only fetched samples take space) and one
    byte per sample that is set after the sample's bytes are written. A cache belongs to one version of
    the remote file (its size and ETag/modification time are part of the name).

    Args:
        folder: where the cache files live.
        file: the remote file.
        count: its number of samples.
    """

    def __init__(self, folder: str | os.PathLike[str], file: RemoteFile, count: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = cache_name(f"{file.url}|{file.size}|{file.version}", os.path.basename(file.url))
        self.data_path = self.folder / f"{stem}.data"
        self.present_path = self.folder / f"{stem}.present"
        self.sizes = (file.size, count)
        self._fds: tuple[int, int] | None = None
        self._pid = -1

    def _open(self) -> tuple[int, int]:
        if self._fds is None or self._pid != os.getpid():
            fds = []
            for path, size in zip((self.data_path, self.present_path), self.sizes):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(fd).st_size < size:  # never shrink: another process may have written already
                    os.ftruncate(fd, size)
                fds.append(fd)
            self._fds, self._pid = (fds[0], fds[1]), os.getpid()
        return self._fds

    def get(self, i: int, start: int, stop: int) -> bytes | None:
        """Sample ``i`` (bytes ``[start, stop)``) when it is cached, else None."""
        data_fd, present_fd = self._open()
        if os.pread(present_fd, 1, i) != b"\x01":
            return None
        return os.pread(data_fd, stop - start, start)

    def put(self, i: int, start: int, data: bytes) -> None:
        """Store sample ``i`` (its bytes start at ``start``)."""
        data_fd, present_fd = self._open()
        os.pwrite(data_fd, data, start)
        os.pwrite(present_fd, b"\x01", i)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        fds = getattr(self, "_fds", None)
        if fds is not None and self._pid == os.getpid():
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
