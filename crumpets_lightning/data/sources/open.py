"""What a user passes as a data source, recognised by its content: :func:`check_source` and :func:`open_source`.

A source is one of
- a msgpack file (local path or fsspec URL) -> :class:`~.msgpack_file.MsgpackDataset`;
- an image folder ``root/<class name>/<image file>`` -> :class:`~.image_folder.ImageFolderDataset`;
- shards: a glob (``"shards/train-*.msgpack"``, ``"s3://bucket/train-*.msgpack"``) or a list of msgpack
  file paths/URLs -> :class:`~.shards.ShardedDataset` (:class:`~.shards.WindowShuffledShards` with
  ``shuffle_window``);
- a sequence of samples (dicts or packed bytes), or any object with ``__len__`` and ``__getitem__``,
  returned as it is.

Files are recognised by their first bytes (every sample file starts with a msgpack map), so a text file or a
stray archive is refused when the source is given, not at the first batch.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

from crumpets_lightning.data.sources.image_folder import ImageFolderDataset
from crumpets_lightning.data.sources.msgpack_file import MsgpackDataset, is_msgpack_map_start
from crumpets_lightning.data.sources.remote import is_url, require_fsspec
from crumpets_lightning.data.sources.shards import ShardedDataset, WindowShuffledShards

__all__ = ["check_source", "expand_shards", "open_source"]

_GLOB_CHARACTERS = frozenset("*?[")
_EXPECTED = (
    "expected a msgpack file of samples (written by write_msgpack, `crumpets-lightning pack` or datadings), an "
    "image folder root/<class name>/<image file>, a glob or list of msgpack shards, or an fsspec URL"
)


def _is_glob(path: str) -> bool:
    return not _GLOB_CHARACTERS.isdisjoint(path)


def _is_url_glob(url: str) -> bool:
    """True for a URL with glob characters in its path (an http(s) query string, as in signed URLs, is no glob)."""
    protocol, rest = url.split("://", 1)
    if protocol.split("::")[-1] in ("http", "https"):
        rest = rest.split("?", 1)[0]
    return _is_glob(rest)


def _check_msgpack_file(path: str, role: str = "Data source") -> None:
    """Raise unless the local file ``path`` is empty or starts with a msgpack map."""
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{role} {path!r} does not exist ({_EXPECTED})") from None
    except IsADirectoryError:
        raise ValueError(f"{role} {path!r} is a folder; a shard must be a msgpack file") from None
    if first and not is_msgpack_map_start(first):
        raise ValueError(
            f"{role} {path!r} is not a msgpack file of samples: its first byte 0x{first[0]:02x} ({first!r}) cannot "
            f"start a msgpack map; {_EXPECTED}"
        )


def _check_image_folder(path: str) -> None:
    """Raise unless ``path`` holds at least one class folder (the images are listed when it is opened)."""
    with os.scandir(path) as scan:
        if any(entry.is_dir() for entry in scan):
            return
    raise ValueError(
        f"Data source {path!r} is a folder without class folders: expected an image folder root/<class name>/"
        f"<image file>; for a folder of msgpack shards pass a glob such as {os.path.join(path, '*.msgpack')!r}"
    )


def expand_shards(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The files matching a glob (local or fsspec URL), sorted.

    Raises:
        FileNotFoundError: nothing matches.
    """
    if is_url(pattern):
        fsspec = require_fsspec(pattern)
        fs, path = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
        matches = sorted(fs.unstrip_protocol(match) for match in fs.glob(path))
    else:
        matches = sorted(match for match in glob.glob(pattern) if os.path.isfile(match))
    if not matches:
        raise FileNotFoundError(f"Data source {pattern!r} is a glob that matches no files ({_EXPECTED})")
    return matches


def _is_path_list(source: object) -> bool:
    """True for a non-empty list/tuple of paths (shards); raises for a list that mixes paths with samples."""
    if not isinstance(source, (list, tuple)) or not source:
        return False
    paths = [isinstance(item, (str, os.PathLike)) for item in source]
    if all(paths):
        return True
    if any(paths):
        first = paths.index(False)
        raise TypeError(
            f"Data source is a list that mixes paths with {type(source[first]).__name__} items (item {first}): "
            "expected a list of msgpack shard paths/URLs or a list of samples (dicts or packed bytes)"
        )
    return False


def check_source(source: Any) -> None:
    """Cheap check that ``source`` can be opened, recognising files by their content.

    Reads at most the first byte of each local file and lists no folder beyond its first entries; a URL is
    checked for its syntax and for fsspec knowing its protocol (no network access).

    Args:
        source: a path/glob/URL string or ``os.PathLike``, a list of shard paths, or a sequence of samples.

    Raises:
        FileNotFoundError: a path does not exist, or a glob matches nothing.
        ValueError: a file is not a msgpack file of samples (e.g. a text file), or a folder has no class folders.
        TypeError: ``source`` is none of the accepted kinds.
        ImportError: a URL needs fsspec, which is not installed.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if is_url(path):
            require_fsspec(path)
        elif os.path.isdir(path):
            _check_image_folder(path)
        elif os.path.exists(path) or not _is_glob(path):
            _check_msgpack_file(path)
        else:
            for shard in expand_shards(path):
                _check_msgpack_file(shard, "Shard")
        return
    if _is_path_list(source):
        for shard in source:
            shard = os.fspath(shard)
            if is_url(shard):
                require_fsspec(shard)
            else:
                _check_msgpack_file(shard, "Shard")
        return
    if isinstance(source, (bytes, bytearray)) or not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise TypeError(
            f"Data source must be a path to a msgpack file or image folder, a glob or list of shards, a URL, or a "
            f"sequence of samples; got {type(source).__name__}"
        )


def open_source(
    source: Any,
    *,
    shuffle_window: int | None = None,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Sequence[Any]:
    """Turn what a user passes as a data source into a random-access sequence of samples.

    Args:
        source: a msgpack file path or URL (-> :class:`MsgpackDataset`), an image folder
            (-> :class:`ImageFolderDataset`), a glob or list of msgpack files/URLs (-> :class:`ShardedDataset`),
            or a sequence of samples (returned as is).
        shuffle_window: for msgpack files and shards: shuffled epochs read shard by shard and shuffle within
            windows of this many samples (-> :class:`WindowShuffledShards`); None uses the loader's global
            shuffle.
        storage_options: options for the fsspec filesystem of URLs (credentials, endpoint, ...).
        cache_dir: for URLs, a local folder that keeps fetched samples for the next epochs.

    Returns:
        The random-access source.

    Raises:
        FileNotFoundError: a path does not exist, or a glob matches nothing.
        ValueError: a file is not a msgpack file of samples, or ``shuffle_window`` is invalid or given for an
            image folder or a sequence.
        TypeError: ``source`` is none of the accepted kinds.
    """
    if shuffle_window is not None and (
        isinstance(shuffle_window, bool) or not isinstance(shuffle_window, int) or shuffle_window < 1
    ):
        raise ValueError(f"Expected argument `shuffle_window` to be an int >= 1 or None but got {shuffle_window!r}")
    options: dict[str, Any] = {"storage_options": storage_options, "cache_dir": cache_dir}
    shards: list[str] | None = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if is_url(path):
            shards = expand_shards(path, storage_options) if _is_url_glob(path) else [path]
        elif os.path.isdir(path):
            if shuffle_window is not None:
                raise ValueError(
                    f"Argument `shuffle_window` applies to msgpack files and shards, not to the image folder {path!r}"
                )
            _check_image_folder(path)
            return ImageFolderDataset(path)
        elif os.path.exists(path) or not _is_glob(path):
            _check_msgpack_file(path)
            shards = [path]
        else:
            shards = expand_shards(path)
        if len(shards) == 1 and shuffle_window is None and shards[0] == path:
            return MsgpackDataset(path, **options)
    elif _is_path_list(source):
        shards = [os.fspath(shard) for shard in source]
    if shards is not None:
        for shard in shards:
            if not is_url(shard):
                _check_msgpack_file(shard, "Shard")
        if shuffle_window is None:
            return ShardedDataset(shards, **options)
        return WindowShuffledShards(shards, shuffle_window=shuffle_window, **options)
    check_source(source)
    if shuffle_window is not None:
        raise ValueError(
            f"Argument `shuffle_window` applies to msgpack files and shards, not to a {type(source).__name__} of "
            "samples; pass the source through ShardedDataset/WindowShuffledShards yourself"
        )
    return source
