"""CPU pixel augmentations: gamma/colour, contrast, blur and noise on HWC uint8 images.

These are exactly the ops the GPU ``Randomizer`` applies, with the same semantics (values ``v`` in
``0..255``, ``x = v / 255``), in this order:

1. gamma: per channel ``c``, ``y = x ** g_c`` with ``g_c = gamma_gray * (gamma_c if color else 1)``;
   ``gamma_c`` is ``gamma_r/g/b`` (ignored for one-channel images);
2. contrast ``k`` in ``[-1, 1]``: with ``S(y) = (1 - cos(pi y)) / 2`` and ``S^-1(y) = arccos(1 - 2y) / pi``,
   ``y' = y + k (S(y) - y)`` for ``k >= 0`` and ``y' = y - k (S^-1(y) - y)`` for ``k < 0``;
   steps 1-2 form one 256-entry table per channel, entries ``clip(y' * 255, 0, 255)`` (rounded to uint8
   here: the result stays within one level of exact float arithmetic, the CPU/GPU tolerance);
3. blur: ``sigma = blur * W`` (``W`` the width in pixels); nothing below ``MIN_BLUR_SIGMA`` (0.2), else a
   separable Gaussian of size ``2 ceil(3 sigma) + 1`` with reflect-101 borders;
4. noise of strength ``s``: zero-mean Gaussian, per-channel std ``s * 255 * w_c``; ``w = RGB_NOISE_WEIGHTS =
   (1, 0.6, 1)`` for camera-sensor ("rgb") noise on a 3-channel RGB image, ``w_c = 1`` otherwise ("other");
5. round half to even, clip to ``[0, 255]``, uint8.

The noise is read from a pool of standard normals built once per process from a fixed seed, at an offset
drawn from the sample's generator: far cheaper than drawing fresh normals, with the same statistics. (The
device path's noise is a different, counter-based field keyed by the record's seed: CPU and device results
agree in distribution, not pixel for pixel, where noise is on.) The constants come from the record schema,
:mod:`crumpets_lightning.data.augment.record`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.data.augment.record import (
    AUGMENTATION_FIELDS,
    BLUR_TRUNCATE,
    FIELD_INDEX,
    MIN_BLUR_SIGMA,
    RGB_NOISE_WEIGHTS,
)

__all__ = [
    "RGB_NOISE_WEIGHTS",
    "add_blur",
    "add_gamma",
    "add_noise_other",
    "add_noise_rgb",
    "apply_pixel_ops",
    "apply_pixel_ops_chw",
    "gamma_contrast_lut",
    "noise_pool",
]

_POOL_SIZE = 1 << 22  # 4M float32 = 16 MiB
_POOL_SEED = 0x5EED
_pool: np.ndarray | None = None
_BASE = np.arange(256, dtype=np.float64) / 255.0
_FIELD = FIELD_INDEX


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
    y = np.power(_BASE, np.array(gammas, dtype=np.float64)[:, None])
    k = float(contrast)
    # the formulas below are rearranged to need few numpy calls: the tables are tiny, call overhead dominates
    if k > 0:
        # y + k (S(y) - y) = (1 - k) y + k/2 - (k/2) cos(pi y)
        curve = np.cos(y * np.pi)
        curve *= -k / 2
        y *= 1.0 - k
        y += curve
        y += k / 2
    elif k < 0:
        # y - k (S^-1(y) - y) = (1 + k) y - (k / pi) arccos(1 - 2y); 1 - 2y stays in [-1, 1] as y is in [0, 1]
        curve = np.arccos(1.0 - 2.0 * y)
        curve *= -k / np.pi
        y *= 1.0 + k
        y += curve
    y *= 255.0
    # both forms are convex combinations of values in [0, 1]: only rounding can push past 255
    return np.minimum(y, 255.0, out=y)


with np.errstate(divide="ignore"):
    # log(x) of every level in float32, log(0) = -inf so that exp(g * log(0)) = 0 = 0 ** g for g > 0
    _LOG_BASE32 = np.log(_BASE).astype(np.float32)[None, :]
_PI32 = np.float32(np.pi)


def _uint8_tables(gammas: Sequence[float], contrast: float) -> np.ndarray:
    """The tables of :func:`gamma_contrast_lut` rounded to uint8, computed the fast way (workers, per sample).

    Float32 and a handful of vectorised calls instead of float64 and a dozen: about 2.5 times faster. Float32
    rounding moves an entry by one level in a few tables in a thousand (an entry lying within ~1e-4 of a
    rounding boundary), well inside the one-level CPU/GPU tolerance. Channels with equal gammas share one
    computed row, returned once (shape ``[1, 256]``; else ``[channels, 256]``). Gammas that are not positive
    and finite take the exact float64 path.
    """
    first = float(gammas[0])
    same = all(g == first for g in gammas)
    if not all(0.0 < g < math.inf for g in gammas):
        return np.rint(gamma_contrast_lut(gammas, contrast)).astype(np.uint8)
    # x ** g = exp(g * log x), one row per distinct set of gammas
    y = _LOG_BASE32 * (np.float32(first) if same else np.array(gammas, dtype=np.float32)[:, None])
    np.exp(y, out=y)
    k = float(contrast)
    # addWeighted computes a * y + b * curve + c, then rounds half to even and saturates to [0, 255]
    if k > 0:  # 255 (y + k (S(y) - y)) = 255 ((1 - k) y + k/2 - (k/2) cos(pi y))
        curve = np.cos(y * _PI32)
        table = cv2.addWeighted(y, (1.0 - k) * 255.0, curve, -k / 2 * 255.0, k / 2 * 255.0, dtype=cv2.CV_8U)
    elif k < 0:  # 255 (y - k (S^-1(y) - y)) = 255 ((1 + k) y - (k / pi) arccos(1 - 2y))
        curve = np.arccos(1.0 - 2.0 * y)
        table = cv2.addWeighted(y, (1.0 + k) * 255.0, curve, -k / math.pi * 255.0, 0.0, dtype=cv2.CV_8U)
    else:
        table = cv2.convertScaleAbs(y, alpha=255.0)  # y >= 0: scale, round half to even, saturate
    return table  # one row when the channels share it: row ``c`` is ``table[c % len(table)]``


def _channel_gammas(channels: int, color: bool, gamma_gray: float, gamma_color: Sequence[float] | None) -> list[float]:
    if channels == 3 and color and gamma_color is not None:
        return [float(gamma_gray) * float(g) for g in gamma_color]
    return [float(gamma_gray)] * channels


def _gaussian_kernel(sigma: float) -> np.ndarray:
    # a few taps: plain floats are cheaper than numpy calls on tiny arrays
    radius = math.ceil(BLUR_TRUNCATE * sigma)
    scale = -1.0 / (2.0 * sigma * sigma)
    weights = [math.exp(d * d * scale) for d in range(-radius, radius + 1)]
    total = math.fsum(weights)
    return np.array([w / total for w in weights], dtype=np.float32)


def _noise_weights(channels: int, rgb: bool) -> tuple[float, ...]:
    return RGB_NOISE_WEIGHTS if rgb and channels == 3 else (1.0,) * channels


def _unit_noise_planes(channels: int, height: int, width: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``channels`` float32 planes of standard normals: consecutive windows of the pool at a random offset."""
    count = height * width
    if channels * count > _POOL_SIZE:  # larger than the pool: draw fresh values
        return list(rng.standard_normal((channels, height, width), dtype=np.float32))
    pool = noise_pool()
    offset = int(rng.integers(0, _POOL_SIZE - channels * count + 1))
    return [pool[offset + c * count : offset + (c + 1) * count].reshape(height, width) for c in range(channels)]


def _apply_planes(
    planes: Sequence[np.ndarray],
    gammas: Sequence[float],
    contrast: float,
    sigma: float,
    noise: float,
    noise_weights: Sequence[float],
    rng: np.random.Generator,
) -> None:
    """The fused pixel ops on 2-d uint8 planes, each written in place.

    Every step works on the uint8 plane in place (cheap memory traffic); the only float intermediate is a
    blurred plane that noise is added to, so the result is rounded at most twice (table, then output) and
    stays within one level of the exact float pipeline, the documented CPU/GPU tolerance.
    """
    use_lut = contrast != 0.0 or any(g != 1.0 for g in gammas)
    use_blur = sigma >= MIN_BLUR_SIGMA
    use_noise = noise > 0.0
    if not (use_lut or use_blur or use_noise):
        return
    table = _uint8_tables(gammas, contrast) if use_lut else None
    kernel = _gaussian_kernel(sigma) if use_blur else None
    height, width = planes[0].shape
    units = _unit_noise_planes(len(planes), height, width, rng) if use_noise else None
    for c, plane in enumerate(planes):
        if table is not None:
            cv2.LUT(plane, table[c % len(table)], dst=plane)
        work = plane
        if kernel is not None:
            # OpenCV filters in float; to uint8 it rounds half to even
            if units is None:  # straight back into the plane (OpenCV filters in place)
                cv2.sepFilter2D(plane, -1, kernel, kernel, dst=plane, borderType=cv2.BORDER_REFLECT_101)
            else:
                work = cv2.sepFilter2D(plane, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
        if units is not None:
            # saturating conversion: rounds half to even, then clips to [0, 255]
            cv2.addWeighted(work, 1.0, units[c], noise * 255.0 * noise_weights[c], 0.0, dst=plane, dtype=cv2.CV_8U)


def _check_uint8(im: np.ndarray) -> None:
    if im.dtype != np.uint8:
        raise ValueError(f"pixel ops work on uint8 images, got dtype {im.dtype}")
    if im.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {im.shape}")


def _on_hwc(im: np.ndarray, apply: Callable[[list[np.ndarray]], None]) -> np.ndarray:
    """Run a planar op on a copy of an HWC (or HW) image and return the result in ``im``'s layout."""
    _check_uint8(im)
    if im.ndim == 2:
        out = im.copy()
        apply([out])
        return out
    planes = [np.ascontiguousarray(im[:, :, c]) for c in range(im.shape[2])]
    apply(planes)
    return np.stack(planes, axis=2) if len(planes) != 3 else cv2.merge(planes)


def add_gamma(
    im: np.ndarray,
    color: bool,
    gamma_gray: float,
    gamma_color: Sequence[float] | None,
    contrast: float,
) -> np.ndarray:
    """Apply gamma (brightness), per-channel gamma (colour) and contrast through one lookup table.

    Args:
        im: uint8 image ``H x W x C`` (RGB for 3 channels) or ``H x W``.
        color: use ``gamma_color``.
        gamma_gray: gamma for every channel.
        gamma_color: per-channel gammas ``(r, g, b)``.
        contrast: contrast ``k`` in ``[-1, 1]``.

    Returns:
        New uint8 image of the same shape.
    """
    channels = 1 if im.ndim == 2 else im.shape[-1]
    gammas = _channel_gammas(channels, color, gamma_gray, gamma_color)
    return _on_hwc(im, lambda planes: _apply_planes(planes, gammas, contrast, 0.0, 0.0, (), _NO_RNG))


def add_noise_rgb(im: np.ndarray, strength: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add camera-sensor noise: std ``strength * 255`` in red and blue, ``0.6`` times that in green.

    The weights are symmetric in red and blue, so this works on RGB and BGR images alike; images without
    3 channels get equal noise in every channel.

    Args:
        im: uint8 image ``H x W x 3``.
        strength: noise strength ``s``; ``<= 0`` adds nothing.
        rng: generator choosing the noise; a fixed-seed one when ``None``.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    return _add_noise(im, strength, rng, rgb=True)


def add_noise_other(im: np.ndarray, strength: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add Gaussian noise with std ``strength * 255`` in every channel.

    Args:
        im: uint8 image.
        strength: noise strength ``s``; ``<= 0`` adds nothing.
        rng: generator choosing the noise; a fixed-seed one when ``None``.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    return _add_noise(im, strength, rng, rgb=False)


def _add_noise(im: np.ndarray, strength: float, rng: np.random.Generator | None, rgb: bool) -> np.ndarray:
    channels = 1 if im.ndim == 2 else im.shape[-1]
    weights = _noise_weights(channels, rgb)
    generator = rng if rng is not None else np.random.default_rng(0)
    ones = [1.0] * channels
    return _on_hwc(im, lambda planes: _apply_planes(planes, ones, 0.0, 0.0, float(strength), weights, generator))


def add_blur(im: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` in pixels (reflect-101 borders).

    Nothing happens for ``sigma < 0.2``. The kernel has ``2 ceil(3 sigma) + 1`` taps.

    Args:
        im: uint8 image.
        sigma: standard deviation in pixels.

    Returns:
        New uint8 image, rounded half to even and clipped.
    """
    channels = 1 if im.ndim == 2 else im.shape[-1]
    ones = [1.0] * channels
    return _on_hwc(im, lambda planes: _apply_planes(planes, ones, 0.0, float(sigma), 0.0, (), _NO_RNG))


def _record_values(record: Any, channels: int, width: int) -> tuple[list[float], float, float, float]:
    row = np.asarray(record, dtype=np.float64)
    if row.shape != (len(AUGMENTATION_FIELDS),):
        raise ValueError(f"expected an augmentation row of {len(AUGMENTATION_FIELDS)} values, got shape {row.shape}")
    values = row.tolist()
    gammas = _channel_gammas(
        channels,
        bool(values[_FIELD["color"]]),
        values[_FIELD["gamma_gray"]],
        values[_FIELD["gamma_r"] : _FIELD["gamma_b"] + 1],
    )
    return gammas, values[_FIELD["contrast"]], values[_FIELD["blur"]] * width, values[_FIELD["noise"]]


def apply_pixel_ops(im: np.ndarray, record: Any, rng: np.random.Generator, is_rgb: bool = True) -> np.ndarray:
    """Apply every pixel op of one ``augmentation`` record row to an HWC image.

    Args:
        im: uint8 image ``H x W x C`` (RGB for 3 channels) or ``H x W``.
        record: a row with the columns of :data:`AUGMENTATION_FIELDS`.
        rng: the sample's generator (chooses the noise).
        is_rgb: camera-sensor noise on 3-channel images (else equal noise in every channel).

    Returns:
        The augmented uint8 image (a new array).
    """
    _check_uint8(im)
    channels = 1 if im.ndim == 2 else im.shape[-1]
    gammas, contrast, sigma, noise = _record_values(record, channels, im.shape[1])
    weights = _noise_weights(channels, is_rgb)
    return _on_hwc(im, lambda planes: _apply_planes(planes, gammas, contrast, sigma, noise, weights, rng))


def apply_pixel_ops_chw(chw: np.ndarray, record: Any, rng: np.random.Generator, is_rgb: bool = True) -> None:
    """Apply every pixel op of one ``augmentation`` record row in place to a CHW uint8 image.

    This is the workers' fast path: each channel plane of the (shared-memory) buffer is processed by
    single-channel OpenCV calls and written back in place.

    Args:
        chw: uint8 array ``C x H x W`` (RGB for 3 channels), modified in place.
        record: a row with the columns of :data:`AUGMENTATION_FIELDS`.
        rng: the sample's generator (chooses the noise).
        is_rgb: camera-sensor noise on 3-channel images (else equal noise in every channel).

    Raises:
        ValueError: ``chw`` is not a 3-d uint8 array.
    """
    if chw.dtype != np.uint8 or chw.ndim != 3:
        raise ValueError(f"expected a C x H x W uint8 array, got shape {chw.shape} and dtype {chw.dtype}")
    channels = chw.shape[0]
    gammas, contrast, sigma, noise = _record_values(record, channels, chw.shape[2])
    planes = list(chw) if chw.flags.c_contiguous else [np.ascontiguousarray(p) for p in chw]
    _apply_planes(planes, gammas, contrast, sigma, noise, _noise_weights(channels, is_rgb), rng)
    if not chw.flags.c_contiguous:
        chw[...] = np.stack(planes)


# generator for ops that draw nothing (gamma, blur)
_NO_RNG = np.random.default_rng(0)
