"""An image folder laid out as ``root/<class name>/<image file>``, listed with one ``os.scandir`` per folder.

A large listing (``LISTING_CACHE_MIN_FILES`` images or more) is kept in the cache folder together with the
modification time of every folder it read; the next open re-uses it when no folder changed (adding, removing
or renaming an entry changes its folder's modification time), so it stats the folders instead of listing
every file again. A listing is not kept while a folder was modified in the last two seconds (file system
timestamps are coarse: a change in the same tick would go unnoticed).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import msgpack

from crumpets_lightning.data.sources.index import cache_folder, cache_name

__all__ = ["IMAGE_EXTENSIONS", "LISTING_CACHE_MIN_FILES", "ImageFolderDataset"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LISTING_CACHE_MIN_FILES = 10_000
_RECENT_NS = 2_000_000_000


def _list_images(
    folder: str, prefix: str, extensions: tuple[str, ...], found: list[str], folders: list[tuple[str, int]]
) -> None:
    """Append the images under ``folder`` (as ``prefix + relative path``): its files by name, then its subfolders.

    Each folder read is appended to ``folders`` with its modification time taken before the read.
    """
    folders.append((prefix, os.stat(folder).st_mtime_ns))
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    subfolders = []
    for entry in entries:
        # DirEntry answers from the directory listing itself: no stat per file
        if entry.is_dir():
            subfolders.append(entry)
        elif entry.name.lower().endswith(extensions):
            found.append(prefix + entry.name)
    for entry in subfolders:
        _list_images(entry.path, f"{prefix}{entry.name}/", extensions, found, folders)


def _listing_path(root: Path, extensions: tuple[str, ...]) -> Path:
    identity = f"{root.resolve()}|{','.join(extensions)}"
    return cache_folder() / "folders" / cache_name(identity, f"{root.resolve().name}.listing")


def _read_listing(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[tuple[str, int]]] | None:
    """The cached ``(classes, files)`` of ``root`` when no folder it read has changed since, else None."""
    try:
        with open(_listing_path(root, extensions), "rb") as f:
            listing = msgpack.unpack(f, raw=False)
        for prefix, mtime in listing["folders"]:
            if os.stat(os.path.join(root, prefix)).st_mtime_ns != mtime:
                return None
        return listing["classes"], list(zip(listing["keys"], listing["labels"]))
    except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException):
        return None


def _write_listing(
    root: Path, extensions: tuple[str, ...], classes: list[str], files: list[tuple[str, int]], folders: list
) -> None:
    """Keep a listing in the cache folder (atomically); a cache that cannot be written is skipped."""
    path = _listing_path(root, extensions)
    listing = {
        "folders": folders,
        "classes": classes,
        "keys": [key for key, _ in files],
        "labels": [label for _, label in files],
    }
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                msgpack.pack(listing, f, use_bin_type=True)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise


class ImageFolderDataset(Sequence[dict[str, Any]]):
    """Samples from an image folder laid out as ``root/<class name>/<image file>``.

    ``dataset[i]`` is ``{"image": encoded bytes, "label": class index, "key": "class/file.jpg"}``; class
    indices follow the sorted class names in :attr:`classes`. Files in subfolders of a class folder count too.
    Listing reads directory entries only (no per-file ``stat``): 100,000 files take a fraction of a second; a
    large listing is cached (see the module docstring) and re-used while no folder changes.

    Args:
        root: the folder holding one folder per class.
        extensions: file name endings (case-insensitive) that are images.
        cache_listing: keep a listing of ``LISTING_CACHE_MIN_FILES`` images or more in the cache folder.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no class folder holds an image with one of ``extensions``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        cache_listing: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolderDataset: {str(self.root)!r} is not a directory")
        self.extensions = tuple(e.lower() for e in extensions)
        cached = _read_listing(self.root, self.extensions) if cache_listing else None
        if cached is not None:
            self.classes, self.files = cached
        else:
            self.classes, self.files = self._list(cache_listing)
        if not self.files:
            raise ValueError(
                f"ImageFolderDataset: found no images ({', '.join(self.extensions)}) in class folders of "
                f"{str(self.root)!r}; expected root/<class name>/<image file>"
            )

    def _list(self, cache_listing: bool) -> tuple[list[str], list[tuple[str, int]]]:
        started = time.time_ns()
        folders = [("", os.stat(self.root).st_mtime_ns)]
        with os.scandir(self.root) as scan:
            classes = sorted(entry.name for entry in scan if entry.is_dir())
        files: list[tuple[str, int]] = []
        for label, name in enumerate(classes):
            found: list[str] = []
            _list_images(os.path.join(self.root, name), f"{name}/", self.extensions, found, folders)
            files.extend((key, label) for key in found)
        # a folder changed within the file system's timestamp granularity of the listing could change again
        # without a new mtime: such a listing is not kept
        settled = max(mtime for _, mtime in folders) < started - _RECENT_NS
        if cache_listing and len(files) >= LISTING_CACHE_MIN_FILES and settled:
            _write_listing(self.root, self.extensions, classes, files, folders)
        return classes, files

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
        with open(os.path.join(self.root, key), "rb") as f:
            image = f.read()
        return {"image": image, "label": label, "key": key}

    def sample_key(self, index: int) -> object:
        """The path of sample ``index`` relative to the root (``"class/file.jpg"``); reads nothing."""
        return self.files[index][0]

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, samples={len(self)}, classes={len(self.classes)})"
