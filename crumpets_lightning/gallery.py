"""A labelled PNG grid showing each augmentation on a real image (the crumpets Augmentation Guide, live).

Each panel runs an :class:`~crumpets_lightning.data.workers.ImageWorker` exactly as training would, with
the settings of the guide: a 128-gray background and ``scale_mode="longest"`` so that shifts and zooms stay
visible. Use it to check that an RNG does what you think.

Example::

    from crumpets_lightning.gallery import make_gallery
    make_gallery("photo.jpg", "gallery.png")

or from the shell: ``crumpets-lightning gallery photo.jpg -o gallery.png``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN
from crumpets_lightning.data.augment.rng import RNG, MixtureRNG
from crumpets_lightning.data.workers.image import ImageWorker

__all__ = ["GALLERY_PANELS", "main_gallery", "make_gallery"]

_BACKGROUND = 128
_LONGEST = {"scale_mode": "longest"}

#: ``(label, image_rng, image_params)`` of each panel, in order (values from the crumpets guide).
GALLERY_PANELS: tuple[tuple[str, RNG | None, Mapping[str, Any]], ...] = (
    ("original (centre crop)", None, {}),
    ("longest side, gray fill", None, _LONGEST),
    ("aspect sigma 0.3", MixtureRNG(prob=1.0, aspect_sigma=0.3), _LONGEST),
    ("blur 1.5/448", MixtureRNG(prob=1.0, blur_range=(1.5 / 448, 1.5 / 448)), _LONGEST),
    ("brightness +0.45", MixtureRNG(prob=1.0, brightness_range=(0.45, 0.45)), _LONGEST),
    ("colour +-0.3", MixtureRNG(prob=1.0, color_range=(-0.3, 0.3)), _LONGEST),
    ("contrast +0.35", MixtureRNG(prob=1.0, contrast_range=(0.35, 0.35)), _LONGEST),
    ("contrast -0.7", MixtureRNG(prob=1.0, contrast_range=(-0.7, -0.7)), _LONGEST),
    ("hmirror", MixtureRNG(prob=1.0, hmirror=1.0), _LONGEST),
    ("noise 0.2", MixtureRNG(prob=1.0, noise_range=(0.2, 0.2)), _LONGEST),
    ("rotation sigma 24", MixtureRNG(prob=1.0, rotation_sigma=24), _LONGEST),
    ("scale in 1.4", MixtureRNG(prob=1.0, scale_range=(1.4, 1.4)), _LONGEST),
    ("scale out 0.6", MixtureRNG(prob=1.0, scale_range=(0.6, 0.6)), _LONGEST),
    ("shear 0.06", MixtureRNG(prob=1.0, shear_range=(0.06, 0.06)), _LONGEST),
    ("shift up (1, 1)", MixtureRNG(prob=1.0, shift_range=(1, 1)), _LONGEST),
    ("shift down (-1, -1)", MixtureRNG(prob=1.0, shift_range=(-1, -1)), _LONGEST),
    ("vmirror", MixtureRNG(prob=1.0, vmirror=1.0), _LONGEST),
    ("AUGMENTATION_TRAIN #1", AUGMENTATION_TRAIN, {}),
    ("AUGMENTATION_TRAIN #2", AUGMENTATION_TRAIN, {}),
    ("AUGMENTATION_TRAIN #3", AUGMENTATION_TRAIN, {}),
)


def _render(data: bytes, size: int, rng: RNG | None, params: Mapping[str, Any], seed: int) -> np.ndarray:
    """One panel: ``size x size x 3`` RGB uint8, made by an ImageWorker as in training."""
    worker = ImageWorker(((3, size, size), np.uint8, _BACKGROUND), image_params=params, image_rng=rng)
    buffers = {
        key: np.broadcast_to(fill[0], shape).astype(dtype) for key, (shape, dtype, fill) in worker.buffer_specs.items()
    }
    worker.rng = np.random.default_rng(seed)
    worker.sample_key = "gallery"
    worker.prepare({"image": data}, {}, buffers)
    return np.ascontiguousarray(buffers["image"].transpose(1, 2, 0))


def _label(panel: np.ndarray, text: str, height: int) -> np.ndarray:
    """The panel with a white strip of ``height`` pixels above it holding ``text``."""
    strip = np.full((height, panel.shape[1], 3), 255, np.uint8)
    scale = height / 40
    cv2.putText(strip, text, (4, int(height * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, panel])


def make_gallery(
    image_path_or_bytes: str | Path | bytes,
    out_path: str | Path,
    size: int = 224,
    seed: int = 0,
    columns: int = 5,
    panels: Sequence[tuple[str, RNG | None, Mapping[str, Any]]] = GALLERY_PANELS,
) -> Path:
    """Write a labelled PNG grid of augmentations of one image.

    Args:
        image_path_or_bytes: a JPEG/PNG file or its encoded bytes.
        out_path: where to write the PNG (parent directories are created).
        size: side length of each square panel in pixels.
        seed: seed of the draws (panel ``i`` uses ``seed + i``).
        columns: panels per row.
        panels: ``(label, image_rng, image_params)`` of each panel; :data:`GALLERY_PANELS` by default.

    Returns:
        The path of the written PNG.

    Raises:
        FileNotFoundError: the image file does not exist.
        ValueError: ``size`` or ``columns`` is not positive, or the PNG cannot be written.
        SampleError: the image cannot be decoded.
    """
    if size <= 0 or columns <= 0:
        raise ValueError(f"size and columns must be positive, got size={size!r}, columns={columns!r}")
    data = image_path_or_bytes if isinstance(image_path_or_bytes, bytes) else Path(image_path_or_bytes).read_bytes()
    label_height = max(16, size // 10)
    tiles = [
        _label(_render(data, size, rng, params, seed + index), text, label_height)
        for index, (text, rng, params) in enumerate(panels)
    ]
    rows = math.ceil(len(tiles) / columns)
    gap = 4
    tile_h, tile_w = tiles[0].shape[:2]
    grid = np.full((rows * (tile_h + gap) + gap, columns * (tile_w + gap) + gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        y, x = gap + row * (tile_h + gap), gap + column * (tile_w + gap)
        grid[y : y + tile_h, x : x + tile_w] = tile
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write the gallery to {out}; use a .png path in a writable directory")
    return out


def main_gallery(argv: Sequence[str] | None = None) -> Path:
    """``crumpets-lightning gallery IMAGE -o OUT.png [--size N] [--seed S]``.

    Args:
        argv: command-line arguments after ``gallery`` (``sys.argv[2:]`` when ``None``).

    Returns:
        The path of the written PNG.
    """
    parser = argparse.ArgumentParser(
        prog="crumpets-lightning gallery", description="Write an augmentation gallery PNG."
    )
    parser.add_argument("image", help="a JPEG or PNG photo")
    parser.add_argument("-o", "--output", default="gallery.png", help="PNG to write (default: gallery.png)")
    parser.add_argument("--size", type=int, default=224, help="panel side length in pixels (default: 224)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (default: 0)")
    args = parser.parse_args(argv)
    path = make_gallery(args.image, args.output, size=args.size, seed=args.seed)
    print(f"wrote {path}")
    return path
