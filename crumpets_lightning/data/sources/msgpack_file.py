"""One msgpack file of samples (crumpets/datadings layout), local or behind an fsspec URL, and its writer.

A msgpack file is a concatenation of msgpack maps, one per sample (``key``, ``image`` as encoded bytes,
``label``, ...), as written by datadings' ``FileWriter`` and :func:`write_msgpack`. :class:`MsgpackDataset`
finds each sample's byte range in an index (see :mod:`~crumpets_lightning.data.sources.index`) and returns
the packed bytes of sample ``i``; workers decode them safely with
:func:`~crumpets_lightning.data.transport.codec.unpack_sample`. It is cheap to inherit through ``fork`` or to
pickle: each process opens its own file handle (or fsspec filesystem) on first use.

Example::

    write_msgpack(ImageFolderDataset("photos/"), "photos.msgpack")   # also writes photos.msgpack.offsets
    dataset = MsgpackDataset("photos.msgpack")
    sample = unpack_sample(dataset[0])
    remote = MsgpackDataset("https://example.org/photos.msgpack")    # byte-range reads, needs fsspec
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast, overload

import msgpack

from crumpets_lightning.data.sources.index import (
    INDEX_SUFFIX,
    KEYS_SUFFIX,
    OFFSETS_SUFFIX,
    load_keys,
    open_local_index,
    write_datadings_sidecars,
)
from crumpets_lightning.data.sources.remote import RemoteFile, SampleCache, is_url, open_remote_index
from crumpets_lightning.data.transport.codec import pack_sample

__all__ = ["MSGPACK_MAP_FIRST_BYTES", "MsgpackDataset", "is_msgpack_map_start", "write_msgpack"]

MSGPACK_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class _LocalFile:
    """A local file read with ``pread`` through one descriptor per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        stat = path.stat()
        self.size, self.version = stat.st_size, stat.st_mtime_ns
        self._fd: int | None = None
        self._pid = -1

    @property
    def name(self) -> str:
        return str(self.path)

    def read(self, start: int, stop: int) -> bytes:
        # one descriptor per process: a forked worker must not share the parent's
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return os.pread(self._fd, stop - start, start)

    def read_many(self, spans: list[tuple[int, int]]) -> list[bytes]:
        return [self.read(start, stop) for start, stop in spans]

    def read_sidecar(self, suffix: str) -> bytes | None:
        try:
            return Path(f"{self.path}{suffix}").read_bytes()
        except OSError:
            return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)


class MsgpackDataset(Sequence[bytes]):
    """Random access to the samples of a msgpack file; ``dataset[i]`` is the packed bytes of sample ``i``.

    Opening reads only the index: datadings' ``<file>.offsets`` when it is there, else our own index kept
    from an earlier scan (checked against the file's size and modification time), else one scan whose
    result is kept for next time.

    Args:
        path: the msgpack file: a local path or an fsspec URL (``s3://``, ``gs://``, ``https://``, ...).
        storage_options: options for the fsspec filesystem of a URL (credentials, endpoint, ...).
        cache_dir: for a URL, a local folder that keeps fetched samples for the next epochs (shared by the
            processes of one machine); None fetches every sample from the remote file each time.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file had to be scanned and is not a sequence of complete msgpack values (names the
            byte offset).
        ImportError: ``path`` is a URL and fsspec is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._file: _LocalFile | RemoteFile
        self._cache: SampleCache | None = None
        if is_url(path):
            url = str(path)
            self.path: str | Path = url
            self._file = RemoteFile(url, storage_options)
            self.sample_index = open_remote_index(self._file)
            if cache_dir is not None:
                self._cache = SampleCache(cache_dir, self._file, len(self.sample_index))
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise FileNotFoundError(f"MsgpackDataset: no such file {str(self.path)!r}")
            self._file = _LocalFile(self.path)
            self.sample_index = open_local_index(self.path, self._file.size, self._file.version)
        self._keys: list[Any] | None = None
        self._keys_loaded = False

    def __len__(self) -> int:
        return len(self.sample_index)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = self._check_index(index)
        start, stop = self.sample_index.span(i)
        if self._cache is None:
            return self._file.read(start, stop)
        data = self._cache.get(i, start, stop)
        if data is None:
            data = self._file.read(start, stop)
            self._cache.put(i, start, data)
        return data

    def read_many(self, indices: Sequence[int]) -> list[bytes]:
        """The packed bytes of several samples; a remote file fetches them concurrently (one round trip).

        Equal to ``[self[i] for i in indices]``; over a network it is many times faster, since the requests
        are in flight together instead of one after the other.

        Raises:
            IndexError: an index is out of range.
        """
        positions = [self._check_index(index) for index in indices]
        spans = [self.sample_index.span(i) for i in positions]
        cache = self._cache
        out = [None if cache is None else cache.get(i, *span) for i, span in zip(positions, spans)]
        missing = [k for k, data in enumerate(out) if data is None]
        for k, data in zip(missing, self._file.read_many([spans[k] for k in missing])):
            out[k] = data
            if cache is not None:
                cache.put(positions[k], spans[k][0], data)
        return cast(list[bytes], out)

    def sample_key(self, index: int) -> object:
        """The key of sample ``index`` from datadings' ``.keys`` sidecar when there is one, else ``index``.

        Reads no sample; the sidecar is loaded on the first call.
        """
        key = self.sidecar_key(index)
        return self._check_index(index) if key is None else key

    def sidecar_key(self, index: int) -> object | None:
        """The key of sample ``index`` from the ``.keys`` sidecar, or None when there is no usable sidecar."""
        i = self._check_index(index)
        if not self._keys_loaded:
            data = self._file.read_sidecar(KEYS_SUFFIX)
            self._keys = None if data is None else load_keys(data, len(self))
            self._keys_loaded = True
        return None if self._keys is None else self._keys[i]

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"MsgpackDataset index {index} out of range for {n} samples")
        return i

    def __repr__(self) -> str:
        return f"MsgpackDataset({str(self.path)!r}, samples={len(self)})"


def _sample_key(sample: dict[str, Any] | bytes) -> Any:
    """The ``key`` of a sample dict or packed sample (None when it has none)."""
    if isinstance(sample, dict):
        return sample.get("key")
    try:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(sample)
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            if name == "key":
                return unpacker.unpack()
            unpacker.skip()
    except (ValueError, msgpack.UnpackException):
        return None
    return None


def write_msgpack(
    samples: Iterable[dict[str, Any] | bytes],
    path: str | os.PathLike[str],
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write samples to a msgpack file readable by :class:`MsgpackDataset` (and crumpets/datadings), with its index.

    Beside the file it writes datadings' ``<file>.offsets`` (so the file opens without a scan, here and in
    datadings) and, when every sample has a ``key``, ``<file>.keys``. Each file appears atomically: it is
    written under a temporary name in the same folder, then renamed.

    Args:
        samples: sample dicts (packed with :func:`~crumpets_lightning.data.transport.codec.pack_sample`) or already
            packed bytes.
        path: the output file.
        progress: called with the number of samples written so far after each sample.

    Returns:
        The number of samples written.

    Raises:
        TypeError: a sample is neither a dict nor bytes, or holds a value msgpack cannot store.
        ValueError: packed bytes do not hold a msgpack map.
    """
    path = Path(path)
    for suffix in (OFFSETS_SUFFIX, KEYS_SUFFIX, INDEX_SUFFIX):  # an old index must never describe the new file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    offsets = [0]
    keys: list[Any] | None = []
    try:
        with os.fdopen(fd, "wb") as f:
            for sample in samples:
                count = len(offsets) - 1
                if isinstance(sample, dict):
                    data = pack_sample(sample)
                elif isinstance(sample, (bytes, bytearray, memoryview)):
                    data = bytes(sample)
                    if not data or data[0] not in MSGPACK_MAP_FIRST_BYTES:
                        raise ValueError(f"write_msgpack: sample {count} is bytes but not a packed msgpack map")
                else:
                    raise TypeError(f"write_msgpack: sample {count} is a {type(sample).__name__}, not a dict or bytes")
                f.write(data)
                offsets.append(offsets[-1] + len(data))
                if keys is not None:
                    key = _sample_key(sample)
                    if key is None:
                        keys = None
                    else:
                        keys.append(key)
                if progress is not None:
                    progress(count + 1)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    write_datadings_sidecars(path, offsets, keys)
    return len(offsets) - 1


def is_msgpack_map_start(first: bytes) -> bool:
    """True when ``first`` (the first bytes of a file) can start a msgpack map, as every sample file does."""
    return bool(first) and first[0] in MSGPACK_MAP_FIRST_BYTES
