"""Sample offsets of a msgpack file, found without reading the file: sidecars, our own cached index, one scan.

Where the offsets come from, first match wins:

1. datadings' ``<file>.offsets`` sidecar (written by datadings' ``FileWriter``, :func:`write_msgpack` and
   ``crumpets-lightning pack``): ``n + 1`` unsigned 64-bit big-endian offsets, the first 0, the last the
   file size. It is used when its last offset equals the file's size.
2. Our own index ``<file>.crumpets-index``, next to the file or, where that folder cannot be written, in
   the cache folder (``$CRUMPETS_LIGHTNING_CACHE``, else ``$XDG_CACHE_HOME/crumpets_lightning``, else
   ``~/.cache/crumpets_lightning``) under a name derived from the file's absolute path or URL. It records the
   file's size and modification time; a stale one is rebuilt.
3. A scan of the file (reads every byte once), whose result is stored as 2.

A local index is a read-only ``numpy.memmap``: opening costs the same for ten samples or a million, and
forked workers share its pages instead of copying them.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np

__all__ = [
    "INDEX_SUFFIX",
    "KEYS_SUFFIX",
    "OFFSETS_SUFFIX",
    "SampleIndex",
    "cache_folder",
    "scan_offsets",
    "write_datadings_sidecars",
]

OFFSETS_SUFFIX = ".offsets"
KEYS_SUFFIX = ".keys"
INDEX_SUFFIX = ".crumpets-index"
DATADINGS_OFFSET = np.dtype(">u8")
_INDEX_OFFSET = np.dtype("<u8")
_MAGIC = b"CLINDEX1"
_HEADER = struct.Struct("<8sQQQ")  # magic, file size, file version (mtime in ns), number of samples


def cache_folder() -> Path:
    """The folder for indexes and remote data that cannot live next to their file."""
    explicit = os.environ.get("CRUMPETS_LIGHTNING_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crumpets_lightning"


def cache_name(identity: str, name: str) -> str:
    """A file name in the cache folder for ``identity`` (an absolute path or URL) ending in ``name``."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"{digest}-{os.path.basename(name)[-80:]}"


class SampleIndex:
    """The ``n + 1`` byte offsets of a file's ``n`` samples (``offsets[i]`` to ``offsets[i + 1]`` is sample i).

    Args:
        offsets: the offsets (any unsigned/signed 64-bit array, also a memmap).
        origin: where they came from, for messages (``"datadings .offsets"``, ``"index file ..."``, ``"scan"``).
        memmap: ``(path, byte offset, dtype)`` when ``offsets`` maps a file; pickling then reopens the map
            instead of copying the array.
    """

    def __init__(self, offsets: np.ndarray, origin: str, memmap: tuple[str, int, str] | None = None) -> None:
        self.offsets = offsets
        self.origin = origin
        self._memmap = memmap

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def span(self, i: int) -> tuple[int, int]:
        """Byte range ``[start, stop)`` of sample ``i`` (``0 <= i < len(self)``)."""
        return int(self.offsets[i]), int(self.offsets[i + 1])

    @classmethod
    def map_file(cls, path: str | os.PathLike[str], offset: int, dtype: np.dtype, origin: str) -> SampleIndex:
        """Map the offsets stored in ``path`` from byte ``offset`` on (read-only, shared between processes)."""
        array = np.memmap(path, dtype=dtype, mode="r", offset=offset)
        return cls(array, origin, (os.fspath(path), offset, dtype.str))

    def __reduce__(self) -> tuple[Callable[..., SampleIndex], tuple[Any, ...]]:
        if self._memmap is not None:
            path, offset, dtype = self._memmap
            return SampleIndex.map_file, (path, offset, np.dtype(dtype), self.origin)
        return SampleIndex, (np.asarray(self.offsets), self.origin)

    def __repr__(self) -> str:
        return f"SampleIndex(samples={len(self)}, origin={self.origin!r})"


def check_offsets(offsets: np.ndarray, size: int) -> str | None:
    """Why ``offsets`` cannot index a file of ``size`` bytes, or None when they can (checks only the ends)."""
    if len(offsets) < 1:
        return "it is empty"
    if int(offsets[0]) != 0:
        return f"its first offset is {int(offsets[0])}, not 0"
    if int(offsets[-1]) != size:
        return f"its last offset {int(offsets[-1])} is not the file size {size}"
    return None


def read_own_index(path: Path, size: int, version: int) -> SampleIndex | None:
    """Our index file at ``path`` if it exists and matches the file's ``size`` and ``version``, else None."""
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
    except OSError:
        return None
    if len(header) != _HEADER.size:
        return None
    magic, indexed_size, indexed_version, count = _HEADER.unpack(header)
    if magic != _MAGIC or indexed_size != size or indexed_version != version:
        return None
    try:
        if path.stat().st_size != _HEADER.size + (count + 1) * _INDEX_OFFSET.itemsize:
            return None
        index = SampleIndex.map_file(path, _HEADER.size, _INDEX_OFFSET, f"index file {str(path)!r}")
    except (OSError, ValueError):
        return None
    return index if check_offsets(index.offsets, size) is None else None


def write_own_index(path: Path, offsets: np.ndarray, size: int, version: int) -> None:
    """Write our index file atomically (a temporary file in the same folder, then a rename).

    Raises:
        OSError: the folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, size, version, len(offsets) - 1))
            f.write(np.ascontiguousarray(offsets, dtype=_INDEX_OFFSET).tobytes())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def scan_offsets(stream: IO[bytes], size: int, name: str) -> np.ndarray:
    """Find the sample offsets of a msgpack file by reading it once (skipping values, decoding nothing).

    Args:
        stream: the file, at its start.
        size: its size in bytes.
        name: the file's path or URL, for messages.

    Returns:
        ``n + 1`` offsets (int64), the last equal to ``size``.

    Raises:
        ValueError: the file is corrupt or truncated (names the byte offset and the sample).
    """
    offsets = [0]
    unpacker = msgpack.Unpacker(stream, max_buffer_size=2**31 - 1, read_size=1 << 20)
    while True:
        try:
            unpacker.skip()
        except msgpack.OutOfData:
            break
        except (ValueError, msgpack.UnpackException) as error:
            raise ValueError(
                f"MsgpackDataset: {name!r} is corrupt at byte offset {offsets[-1]} (sample {len(offsets) - 1}): "
                f"{type(error).__name__}: {error}"
            ) from None
        offsets.append(unpacker.tell())
    if offsets[-1] != size:
        raise ValueError(
            f"MsgpackDataset: {name!r} is truncated: sample {len(offsets) - 1} starting at byte offset "
            f"{offsets[-1]} is incomplete (file size {size})"
        )
    return np.asarray(offsets, dtype=np.int64)


def open_local_index(path: Path, size: int, mtime_ns: int) -> SampleIndex:
    """The index of the local msgpack file ``path`` (sidecar, own index, or a scan stored for next time).

    Raises:
        ValueError: the file had to be scanned and is corrupt or truncated.
    """
    sidecar = Path(f"{path}{OFFSETS_SUFFIX}")
    if sidecar.is_file():
        try:
            index = SampleIndex.map_file(sidecar, 0, DATADINGS_OFFSET, f"datadings {str(sidecar)!r}")
            problem = check_offsets(index.offsets, size)
        except ValueError as error:  # not a multiple of 8 bytes, or empty
            problem = str(error)
        if problem is None:
            return index
        warnings.warn(
            f"MsgpackDataset: ignoring the stale index {str(sidecar)!r} ({problem}); using our own index",
            stacklevel=3,
        )
    beside = Path(f"{path}{INDEX_SUFFIX}")
    cached = cache_folder() / "index" / cache_name(str(path.resolve()), f"{path.name}{INDEX_SUFFIX}")
    for candidate in (beside, cached):
        index_or_none = read_own_index(candidate, size, mtime_ns)
        if index_or_none is not None:
            return index_or_none
    with open(path, "rb") as f:
        offsets = scan_offsets(f, size, str(path))
    return store_scanned(offsets, size, mtime_ns, (beside, cached), str(path))


def store_scanned(offsets: np.ndarray, size: int, version: int, places: tuple[Path, ...], name: str) -> SampleIndex:
    """Keep a scan's offsets as our index in the first writable place; in memory if none is."""
    for place in places:
        try:
            write_own_index(place, offsets, size, version)
        except OSError:
            continue
        index = read_own_index(place, size, version)
        if index is not None:
            return index
    warnings.warn(
        f"MsgpackDataset: could not store the index of {name!r} in {' or '.join(map(str, places))}; "
        "it will be scanned again next time (set CRUMPETS_LIGHTNING_CACHE to a writable folder)",
        stacklevel=3,
    )
    return SampleIndex(offsets, "scan")


def write_datadings_sidecars(path: Path, offsets: list[int], keys: list[Any] | None) -> None:
    """Write datadings' ``.offsets`` (and ``.keys`` when every sample has a key) beside ``path``, atomically."""
    contents = {OFFSETS_SUFFIX: np.asarray(offsets, dtype=DATADINGS_OFFSET).tobytes()}
    if keys is not None:
        contents[KEYS_SUFFIX] = msgpack.packb(keys, use_bin_type=True)
    for suffix, data in contents.items():
        target = Path(f"{path}{suffix}")
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            os.unlink(temp)
            raise


def load_keys(data: bytes, count: int) -> list[Any] | None:
    """Decode a datadings ``.keys`` sidecar; None when it is not a msgpack array of ``count`` keys."""
    try:
        keys = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return None
    return keys if isinstance(keys, list) and len(keys) == count else None
