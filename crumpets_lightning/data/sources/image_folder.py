"""An image folder laid out as ``root/<class name>/<image file>``, listed with one ``os.scandir`` per folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _list_images(folder: str, prefix: str, extensions: tuple[str, ...], found: list[str]) -> None:
    """Append the images under ``folder`` (as ``prefix + relative path``): its files by name, then its subfolders."""
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
        _list_images(entry.path, f"{prefix}{entry.name}/", extensions, found)


class ImageFolderDataset(Sequence[dict[str, Any]]):
    """Samples from an image folder laid out as ``root/<class name>/<image file>``.

    ``dataset[i]`` is ``{"image": encoded bytes, "label": class index, "key": "class/file.jpg"}``; class
    indices follow the sorted class names in :attr:`classes`. Files in subfolders of a class folder count too.
    Listing reads directory entries only (no per-file ``stat``): 100,000 files take a fraction of a second.

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
        with os.scandir(self.root) as scan:
            self.classes: list[str] = sorted(entry.name for entry in scan if entry.is_dir())
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            found: list[str] = []
            _list_images(os.path.join(self.root, name), f"{name}/", self.extensions, found)
            self.files.extend((key, label) for key in found)
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
        with open(os.path.join(self.root, key), "rb") as f:
            image = f.read()
        return {"image": image, "label": label, "key": key}

    def sample_key(self, index: int) -> object:
        """The path of sample ``index`` relative to the root (``"class/file.jpg"``); reads nothing."""
        return self.files[index][0]

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, samples={len(self)}, classes={len(self.classes)})"
