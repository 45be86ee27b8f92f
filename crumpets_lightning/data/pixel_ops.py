"""CPU pixel augmentations: gamma/colour, contrast, blur and noise on HWC uint8 images.

These are exactly the ops the GPU ``Randomizer`` applies, with the same semantics (values ``v`` in
``0..255``, ``x = v / 255``), in this order:

1. gamma: per channel ``c``, ``y = x ** g_c`` with ``g_c = gamma_gray * (gamma_c if color else 1)``;
   ``gamma_c`` is ``gamma_r/g/b`` (ignored for one-channel images);
2. contrast ``k`` in ``[-1, 1]``: with ``S(y) = (1 - cos(pi y)) / 2`` and ``S^-1(y) = arccos(1 - 2y) / pi``,
   ``y' = y + k (S(y) - y)`` for ``k >= 0`` and ``y' = y - k (S^-1(y) - y)`` for ``k < 0``;
   steps 1-2 form one 256-entry table per channel, entries ``clip(y' * 255, 0, 255)``;
3. blur: ``sigma = blur * W`` (``W`` the width in pixels); nothing below 0.2, else a separable Gaussian of
   size ``2 ceil(3 sigma) + 1`` with reflect-101 borders;
4. noise of strength ``s``: zero-mean Gaussian, per-channel std ``s * 255 * w_c``; ``w = (1, 0.6, 1)``
   for camera-sensor ("rgb") noise on a 3-channel RGB image, ``w_c = 1`` otherwise ("other" noise);
5. round half to even, clip to ``[0, 255]``, uint8.

The noise is read from a pool of standard normals built once per process from a fixed seed, at an offset
drawn from the sample's generator: far cheaper than drawing fresh normals, with the same statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.data.augmentation_record import AUGMENTATION_FIELDS

__all__ = [
    "RGB_NOISE_WEIGHTS",
    "add_blur",
    "add_gamma",
    "add_noise_other",
    "add_noise_rgb",
    "apply_pixel_ops",
    "gamma_contrast_lut",
    "noise_pool",
]

#: Relative noise std per channel (R, G, B) of camera-sensor noise: less noise in green.
RGB_NOISE_WEIGHTS: tuple[float, float, float] = (1.0, 0.6, 1.0)

_POOL_SIZE = 1 << 22  # 4M float32 = 16 MiB
_POOL_SEED = 0x5EED
_pool: np.ndarray | None = None
_BASE = np.arange(256, dtype=np.float64) / 255.0
_BLUR_MIN_SIGMA = 0.2
_FIELD = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}


def noise_pool() -> np.ndarray:
    """The per-process pool of standard normal float32 values (created on first use, read-only)."""
    global _pool
    if _pool is None:
        pool = np.random.default_rng(_POOL_SEED).standard_normal(_POOL_SIZE, dtype=np.float32)
        pool.setflags(write=False)
        _pool = pool
    return _pool


def gamma_contrast_lut(gammas: Sequence[float], contrast: float) -> np.ndarray:
    """Float lookup tables for gamma then contrast, one row of 256 entries per channel.

    Args:
        gammas: the effective gamma ``g_c`` of each channel.
        contrast: contrast ``k`` in ``[-1, 1]``.

    Returns:
        float64 array ``[len(gammas), 256]`` with entries in ``[0, 255]``.
    """
    g = np.asarray(gammas, dtype=np.float64).reshape(-1, 1)
    y = _BASE[None, :] ** g
    k = float(contrast)
    if k > 0:
        y = y + k * ((1.0 - np.cos(np.pi * y)) / 2.0 - y)
    elif k < 0:
        y = y - k * (np.arccos(np.clip(1.0 - 2.0 * y, -1.0, 1.0)) / np.pi - y)
    return np.clip(y * 255.0, 0.0, 255.0)


def _channel_gammas(channels: int, color: bool, gamma_gray: float, gamma_color: Sequence[float] | None) -> list[float]:
    if channels == 3 and color and gamma_color is not None:
        return [float(gamma_gray) * float(g) for g in gamma_color]
    return [float(gamma_gray)] * channels


def _cv_lut(table: np.ndarray, channels: int) -> np.ndarray:
    """``[C, 256]`` table to the ``1 x 256 x C`` layout ``cv2.LUT`` wants (a single row for one channel)."""
    if channels == 1:
        return np.ascontiguousarray(table[0].reshape(1, 256))
    return np.ascontiguousarray(table.T.reshape(1, 256, channels))


def _as_hwc(im: np.ndarray) -> tuple[np.ndarray, int]:
    if im.ndim == 2:
        return im, 1
    if im.ndim == 3:
        return im, im.shape[2]
    raise ValueError(f"expected an H x W or H x W x C image, got shape {im.shape}")


def _restore_shape(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    return out.reshape(like.shape) if out.shape != like.shape else out


def _check_uint8(im: np.ndarray) -> None:
    if im.dtype != np.uint8:
        raise ValueError(f"pixel ops work on uint8 images, got dtype {im.dtype}")


def add_gamma(
    im: np.ndarray,
    color: bool,
    gamma_gray: float,
    gamma_color: Sequence[float] | None,
    contrast: float,
    *,
    bgr: bool = False,
) -> np.ndarray:
    """Apply gamma (brightness), per-channel gamma (colour) and contrast through one lookup table.

    Args:
        im: uint8 image ``H x W x C`` (RGB for 3 channels) or ``H x W``.
        color: use ``gamma_color``.
        gamma_gray: gamma for every channel.
        gamma_color: per-channel gammas ``(r, g, b)``.
        contrast: contrast ``k`` in ``[-1, 1]``.
        bgr: ``im`` is in BGR order (``gamma_color`` stays in RGB order).

    Returns:
        New uint8 image of the same shape.
    """
    _check_uint8(im)
    _, channels = _as_hwc(im)
    gammas = _channel_gammas(channels, color, gamma_gray, gamma_color)
    if bgr and channels == 3:
        gammas = gammas[::-1]
    table = np.rint(gamma_contrast_lut(gammas, contrast)).astype(np.uint8)
    return _restore_shape(cv2.LUT(im, _cv_lut(table, channels)), im)


def _noise_scaled(shape: tuple[int, ...], stds: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """float32 zero-mean noise of ``shape`` (HWC) with per-channel ``stds``, taken from the pool."""
    pool = noise_pool()
    count = int(np.prod(shape))
    if count > pool.size:
        return (rng.standard_normal(shape, dtype=np.float32) * np.asarray(stds, dtype=np.float32)).astype(np.float32)
    offset = int(rng.integers(0, pool.size - count + 1))
    unit = pool[offset : offset + count].reshape(shape)
    if len(set(stds)) == 1:
        return unit * np.float32(stds[0])
    return unit * np.asarray(stds, dtype=np.float32)


def _noise_stds(channels: int, strength: float, rgb: bool) -> list[float]:
    base = float(strength) * 255.0
    if rgb and channels == 3:
        return [base * w for w in RGB_NOISE_WEIGHTS]
    return [base] * channels


def _add_noise(im: np.ndarray, strength: float, rng: np.random.Generator, rgb: bool) -> np.ndarray:
    _check_uint8(im)
    if strength <= 0:
        return im.copy()
    _, channels = _as_hwc(im)
    noise = _noise_scaled(im.shape, _noise_stds(channels, strength, rgb), rng)
    return _restore_shape(cv2.add(im, noise, dtype=cv2.CV_8U), im)


def add_noise_rgb(im: np.ndarray, strength: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add camera-sensor noise: std ``strength * 255`` in red and blue, ``0.6`` times that in green.

    The weights are symmetric in red and blue, so this works on RGB and BGR images alike.

    Args:
        im: uint8 image ``H x W x 3`` (other channel counts get equal noise in every channel).
        strength: noise strength ``s``; ``<= 0`` adds nothing.
        rng: generator choosing the noise; a fixed-seed one when ``None``.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    return _add_noise(im, strength, rng if rng is not None else np.random.default_rng(0), rgb=True)


def add_noise_other(im: np.ndarray, strength: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add Gaussian noise with std ``strength * 255`` in every channel.

    Args:
        im: uint8 image.
        strength: noise strength ``s``; ``<= 0`` adds nothing.
        rng: generator choosing the noise; a fixed-seed one when ``None``.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    return _add_noise(im, strength, rng if rng is not None else np.random.default_rng(0), rgb=False)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = math.ceil(3 * sigma)
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(d**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


def _blur_float(im: np.ndarray, sigma: float) -> np.ndarray:
    kernel = _gaussian_kernel(sigma)
    return cv2.sepFilter2D(im, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)


def add_blur(im: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` in pixels (reflect-101 borders).

    Nothing happens for ``sigma < 0.2``. The kernel has ``2 ceil(3 sigma) + 1`` taps.

    Args:
        im: uint8 image.
        sigma: standard deviation in pixels.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    _check_uint8(im)
    if not sigma >= _BLUR_MIN_SIGMA:
        return im.copy()
    out = _blur_float(im, float(sigma))
    return _restore_shape(_to_uint8(out), im)


def _to_uint8(im: np.ndarray) -> np.ndarray:
    # OpenCV's saturating conversion rounds half to even, like numpy.rint, then clips
    return cv2.convertScaleAbs(im) if im.min() >= 0 else np.clip(np.rint(im), 0, 255).astype(np.uint8)


def apply_pixel_ops(
    im: np.ndarray,
    record: Any,
    rng: np.random.Generator,
    is_rgb: bool = True,
    *,
    bgr: bool = False,
) -> np.ndarray:
    """Apply every pixel op of one ``augmentation`` record row, fused (one float pass when needed).

    Args:
        im: uint8 image ``H x W x C`` or ``H x W``; RGB order unless ``bgr``.
        record: a row with the columns of :data:`AUGMENTATION_FIELDS`.
        rng: the sample's generator (chooses the noise).
        is_rgb: camera-sensor noise on 3-channel images (else equal noise in every channel).
        bgr: ``im`` is in BGR order; per-channel gammas are swapped to match.

    Returns:
        The augmented uint8 image (``im`` itself when the record is neutral).
    """
    _check_uint8(im)
    row = np.asarray(record, dtype=np.float64)
    _, channels = _as_hwc(im)
    color = bool(row[_FIELD["color"]])
    gamma_gray = float(row[_FIELD["gamma_gray"]])
    gamma_color = row[_FIELD["gamma_r"] : _FIELD["gamma_b"] + 1].tolist()
    contrast = float(row[_FIELD["contrast"]])
    noise = float(row[_FIELD["noise"]])
    sigma = float(row[_FIELD["blur"]]) * im.shape[1]
    gammas = _channel_gammas(channels, color, gamma_gray, gamma_color)
    if bgr and channels == 3:
        gammas = gammas[::-1]
    use_lut = contrast != 0.0 or any(g != 1.0 for g in gammas)
    use_blur = sigma >= _BLUR_MIN_SIGMA
    use_noise = noise > 0.0
    if not (use_lut or use_blur or use_noise):
        return im
    if use_lut and not (use_blur or use_noise):
        table = np.rint(gamma_contrast_lut(gammas, contrast)).astype(np.uint8)
        return _restore_shape(cv2.LUT(im, _cv_lut(table, channels)), im)
    if use_lut:
        table = gamma_contrast_lut(gammas, contrast).astype(np.float32)
        work = cv2.LUT(im, _cv_lut(table, channels))
    else:
        work = im
    if use_blur:
        work = _blur_float(work, sigma)
    if use_noise:
        stds = _noise_stds(channels, noise, is_rgb)
        noise_values = _noise_scaled(work.shape if work.ndim == im.ndim else im.shape, stds, rng)
        out = cv2.add(work, noise_values.reshape(work.shape), dtype=cv2.CV_8U)
    else:
        out = cv2.convertScaleAbs(work)  # blurred values are in [0, 255]: round half to even
    return _restore_shape(out, im)
