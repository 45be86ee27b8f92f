"""Random-access sample sources: msgpack files (crumpets/datadings layout), image folders, plain sequences.

A msgpack file is a concatenation of msgpack maps, one per sample (``key``, ``image`` as encoded bytes,
``label``, ...), as written by datadings tools and :func:`write_msgpack`. :class:`MsgpackDataset` indexes it
once (without decoding any image) and returns the packed bytes of sample ``i``; workers decode them safely
with :func:`~crumpets_lightning.data.transport.codec.unpack_sample`. Both datasets are cheap to inherit through
``fork``: each process opens its own file handle on first use.

Example::

    write_msgpack(ImageFolderDataset("photos/"), "photos.msgpack")
    dataset = open_source("photos.msgpack")   # MsgpackDataset
    sample = unpack_sample(dataset[0])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, overload

import msgpack
import numpy as np

from crumpets_lightning.data.transport.codec import pack_sample

__all__ = ["ImageFolderDataset", "MsgpackDataset", "open_source", "write_msgpack"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class MsgpackDataset(Sequence[bytes]):
    """Random access to the samples of a msgpack file; ``dataset[i]`` is the packed bytes of sample ``i``.

    Args:
        path: the msgpack file (concatenated sample maps).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a sequence of complete msgpack values (names the byte offset).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MsgpackDataset: no such file {str(self.path)!r}")
        self._offsets = self._scan()
        self._fd: int | None = None
        self._pid = -1

    def _scan(self) -> np.ndarray:
        size = self.path.stat().st_size
        offsets = [0]
        with open(self.path, "rb") as f:
            unpacker = msgpack.Unpacker(f, max_buffer_size=2**31 - 1)
            while True:
                try:
                    unpacker.skip()
                except msgpack.OutOfData:
                    break
                except (ValueError, msgpack.UnpackException) as error:
                    raise ValueError(
                        f"MsgpackDataset: {str(self.path)!r} is corrupt at byte offset {offsets[-1]} "
                        f"(sample {len(offsets) - 1}): {type(error).__name__}: {error}"
                    ) from None
                offsets.append(unpacker.tell())
        if offsets[-1] != size:
            raise ValueError(
                f"MsgpackDataset: {str(self.path)!r} is truncated: sample {len(offsets) - 1} starting at byte offset "
                f"{offsets[-1]} is incomplete (file size {size})"
            )
        return np.asarray(offsets, dtype=np.int64)

    def _handle(self) -> int:
        # one handle per process: a forked worker must not share the parent's
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"MsgpackDataset index {index} out of range for {n} samples")
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        return os.pread(self._handle(), stop - start, start)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"MsgpackDataset({str(self.path)!r}, samples={len(self)})"


class ImageFolderDataset(Sequence[dict[str, Any]]):
    """Samples from an image folder laid out as ``root/<class name>/<image file>``.

    ``dataset[i]`` is ``{"image": encoded bytes, "label": class index, "key": "class/file.jpg"}``; class
    indices follow the sorted class names in :attr:`classes`. Files in subfolders of a class folder count too.

    Args:
        root: the folder holding one folder per class.
        extensions: file name endings (case-insensitive) that are images.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no class folder holds an image with one of ``extensions``.
    """

    def __init__(self, root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolderDataset: {str(self.root)!r} is not a directory")
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes: list[str] = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for directory, subdirs, files in os.walk(self.root / name):
                subdirs.sort()
                for file in sorted(files):
                    if file.lower().endswith(self.extensions):
                        path = Path(directory, file).relative_to(self.root).as_posix()
                        self.files.append((path, label))
        if not self.files:
            raise ValueError(
                f"ImageFolderDataset: found no images ({', '.join(self.extensions)}) in class folders of "
                f"{str(self.root)!r}; expected root/<class name>/<image file>"
            )

    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        key, label = self.files[index]
        return {"image": (self.root / key).read_bytes(), "label": label, "key": key}

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, samples={len(self)}, classes={len(self.classes)})"


def write_msgpack(
    samples: Iterable[dict[str, Any] | bytes],
    path: str | os.PathLike[str],
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write samples to a msgpack file readable by :class:`MsgpackDataset` (and crumpets/datadings).

    The file appears atomically: it is written under a temporary name in the same folder, then renamed.

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
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for sample in samples:
                if isinstance(sample, dict):
                    data = pack_sample(sample)
                elif isinstance(sample, (bytes, bytearray, memoryview)):
                    data = bytes(sample)
                    if not data or data[0] not in _MAP_FIRST_BYTES:
                        raise ValueError(f"write_msgpack: sample {count} is bytes but not a packed msgpack map")
                else:
                    raise TypeError(f"write_msgpack: sample {count} is a {type(sample).__name__}, not a dict or bytes")
                f.write(data)
                count += 1
                if progress is not None:
                    progress(count)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return count


def open_source(source: Any) -> Sequence[Any]:
    """Turn what a user passes as a data source into a random-access sequence of samples.

    Args:
        source: a path to a msgpack file (-> :class:`MsgpackDataset`), a path to an image folder
            (-> :class:`ImageFolderDataset`), or a sequence of samples (returned as is).

    Returns:
        The random-access source.

    Raises:
        FileNotFoundError: the path does not exist.
        TypeError: ``source`` is neither a path nor a sequence.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return ImageFolderDataset(path)
        if path.is_file():
            return MsgpackDataset(path)
        raise FileNotFoundError(
            f"Data source {str(path)!r} does not exist (expected a msgpack file or an image folder)"
        )
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        return source
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        return source
    raise TypeError(
        f"Data source must be a path to a msgpack file or image folder, or a sequence of samples; got "
        f"{type(source).__name__}"
    )
