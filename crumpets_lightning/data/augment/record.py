"""The augmentation-record schema: the per-sample pixel-op parameters that workers write and the GPU side reads.

Image workers draw every augmentation parameter on the CPU. Geometric ones (rotation, scale, shift, ...)
are always applied there. The pixel ops (gamma/colour, contrast, blur, noise) are applied on the CPU too,
unless the worker runs with ``gpu_augmentation=True``: then it leaves the pixels untouched and
:func:`~crumpets_lightning.data.augment.batched.randomize_batch` (the ``Randomizer`` module) applies the
same ops to the whole batch on the device.

Either way each sample's drawn values are stored in the ``augmentation`` buffer, one float32 row per
sample, columns in :data:`AUGMENTATION_FIELDS` order. Neutral values (no change) are in
:data:`NEUTRAL_AUGMENTATION`. A fixed-size numeric row travels through shared memory like the image, so
neither the main process nor the GPU side needs per-sample Python.

This module is the one place that defines the columns (:data:`FIELD_INDEX` is the only name-to-index map)
and the constants of the pixel ops shared by the CPU ops (``pixel_ops``) and the batched device ops
(``batched`` and the Triton kernel): :data:`RGB_NOISE_WEIGHTS`, :data:`MIN_BLUR_SIGMA`,
:data:`BLUR_TRUNCATE`.

Columns:

- ``color``: 1.0 to apply the per-channel ``gamma_*`` values, 0.0 for ``gamma_gray`` only;
- ``gamma_gray``: gamma applied to all channels (brightness); ``gamma_r/g/b``: per-channel gamma (colour),
  in RGB order whatever the image's channel order;
- ``contrast`` in ``[-1, 1]``; ``noise``: noise strength (std ``noise * 255``); ``blur``: Gaussian sigma
  relative to the image width;
- ``seed_lo``, ``seed_hi``: the sample's 48-bit noise seed as two integers in ``[0, 2**24)`` (float32 holds
  integers exactly only up to ``2**24``, so one column could not carry more than 24 bits). Workers derive
  it from the sample's generator, itself seeded from ``(seed, epoch, index)``; device-side noise is a pure
  function of this seed and the pixel index (see :mod:`crumpets_lightning.data.augment.batched`), so a
  sample's augmented pixels do not depend on its batch, rank, device or torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AUGMENTATION_FIELDS",
    "AUGMENTATION_SPEC",
    "BLUR_TRUNCATE",
    "FIELD_INDEX",
    "MIN_BLUR_SIGMA",
    "NEUTRAL_AUGMENTATION",
    "NOISE_SEED_BITS",
    "RGB_NOISE_WEIGHTS",
    "augmentation_from_records",
    "augmentation_row",
    "augmentation_to_records",
    "noise_seed",
    "split_noise_seed",
]

#: Column order of the ``augmentation`` buffer (see the module docstring).
AUGMENTATION_FIELDS: tuple[str, ...] = (
    "color",
    "gamma_gray",
    "gamma_r",
    "gamma_g",
    "gamma_b",
    "contrast",
    "noise",
    "blur",
    "seed_lo",
    "seed_hi",
)

#: Column index of each field: the one name-to-index map of the record.
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}

#: Bits per seed column: float32 represents every integer up to ``2**24`` exactly.
NOISE_SEED_BITS = 24
_SEED_MASK = (1 << NOISE_SEED_BITS) - 1

#: Relative noise std per channel (R, G, B) of camera-sensor noise on RGB images: less noise in green.
RGB_NOISE_WEIGHTS: tuple[float, float, float] = (1.0, 0.6, 1.0)
#: Blur sigmas (in pixels) below this leave the image unchanged.
MIN_BLUR_SIGMA = 0.2
#: The Gaussian blur kernel reaches ``ceil(BLUR_TRUNCATE * sigma)`` pixels to each side.
BLUR_TRUNCATE = 3.0

NEUTRAL_AUGMENTATION: np.ndarray = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
NEUTRAL_AUGMENTATION.setflags(write=False)

#: Buffer spec of the ``augmentation`` buffer, as accepted by ``BufferWorker.add_buffer``.
AUGMENTATION_SPEC: tuple[tuple[int, ...], type, np.ndarray] = (
    (len(AUGMENTATION_FIELDS),),
    np.float32,
    NEUTRAL_AUGMENTATION,
)

_COLOR = FIELD_INDEX["color"]
_GAMMA_GRAY = FIELD_INDEX["gamma_gray"]
_GAMMA_R = FIELD_INDEX["gamma_r"]
_GAMMA_B = FIELD_INDEX["gamma_b"]
_CONTRAST = FIELD_INDEX["contrast"]
_NOISE = FIELD_INDEX["noise"]
_BLUR = FIELD_INDEX["blur"]
_SEED_LO = FIELD_INDEX["seed_lo"]
_SEED_HI = FIELD_INDEX["seed_hi"]


def split_noise_seed(seed: int) -> tuple[int, int]:
    """The ``(seed_lo, seed_hi)`` columns of a noise seed (its low 48 bits, 24 bits each).

    Example::

        >>> split_noise_seed((5 << 24) + 7)
        (7, 5)
    """
    seed = int(seed)
    return seed & _SEED_MASK, (seed >> NOISE_SEED_BITS) & _SEED_MASK


def noise_seed(row: Any) -> int:
    """The 48-bit noise seed stored in a record row (inverse of :func:`split_noise_seed`)."""
    return int(row[_SEED_LO]) | (int(row[_SEED_HI]) << NOISE_SEED_BITS)


def augmentation_row(
    color: bool = True,
    gamma_gray: float | None = None,
    gamma_color: Sequence[float] | None = None,
    contrast: float | None = None,
    noise: float | None = None,
    blur: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The ``augmentation`` record row (columns :data:`AUGMENTATION_FIELDS`) for these pixel-op parameters.

    Args:
        color: the image has colour; ``gamma_color`` is only used when this is true.
        gamma_gray: gamma for all channels (``None``: 1).
        gamma_color: per-channel gammas in RGB order (``None``: no colour change).
        contrast: contrast in ``[-1, 1]`` (``None``: 0).
        noise: noise strength (``None``: 0).
        blur: blur sigma relative to the image width (``None``: 0).
        seed: the sample's noise seed (its low 48 bits are stored).

    Returns:
        float32 array of shape ``(len(AUGMENTATION_FIELDS),)``.

    Raises:
        ValueError: ``gamma_color`` does not have 3 values or ``contrast`` is outside ``[-1, 1]``.
    """
    row = NEUTRAL_AUGMENTATION.copy()
    if gamma_gray is not None:
        row[_GAMMA_GRAY] = gamma_gray
    if gamma_color is not None and color:
        values = [float(v) for v in gamma_color]
        if len(values) != 3:
            raise ValueError(f"gamma_color must have 3 values (r, g, b), got {gamma_color!r}")
        row[_COLOR] = 1.0
        row[_GAMMA_R : _GAMMA_B + 1] = values
    if contrast is not None:
        if not -1.0 <= float(contrast) <= 1.0:
            raise ValueError(f"contrast must be in [-1, 1], got {contrast!r}")
        row[_CONTRAST] = contrast
    if noise is not None:
        row[_NOISE] = max(0.0, float(noise))
    if blur is not None:
        row[_BLUR] = max(0.0, float(blur))
    if seed:
        row[_SEED_LO], row[_SEED_HI] = split_noise_seed(seed)
    return row


def augmentation_to_records(rows: Any) -> list[dict[str, Any]]:
    """Turn ``augmentation`` rows (array or tensor ``[B, len(AUGMENTATION_FIELDS)]``) into crumpets-style dicts.

    The original crumpets returned a list of dicts (``gamma_gray``, ``gamma_color``, ``contrast``, ``noise``,
    ``blur``, ``color``); this gives the same view (plus the integer noise ``seed``) for code that expects it.

    Raises:
        ValueError: the rows do not have the record's shape.
    """
    array = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != len(AUGMENTATION_FIELDS):
        raise ValueError(
            f"Expected augmentation rows of shape [B, {len(AUGMENTATION_FIELDS)}] (columns {AUGMENTATION_FIELDS}) "
            f"but got {tuple(array.shape)}"
        )
    records = []
    for row in array.tolist():
        records.append(
            {
                "color": bool(row[_COLOR]),
                "gamma_gray": row[_GAMMA_GRAY],
                "gamma_color": (row[_GAMMA_R], row[_GAMMA_R + 1], row[_GAMMA_B]),
                "contrast": row[_CONTRAST],
                "noise": row[_NOISE],
                "blur": row[_BLUR],
                "seed": noise_seed(row),
            }
        )
    return records


_RECORD_KEYS = frozenset({"color", "gamma_gray", "gamma_color", "contrast", "noise", "blur", "seed"})


def augmentation_from_records(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Inverse of :func:`augmentation_to_records`: crumpets-style dicts to ``[B, len(AUGMENTATION_FIELDS)]`` rows.

    Missing or ``None`` entries take their neutral value.

    Raises:
        ValueError: a record has a key that is not a record field.
    """
    out = np.repeat(NEUTRAL_AUGMENTATION[None, :], len(records), axis=0)
    for i, record in enumerate(records):
        unknown = set(record) - _RECORD_KEYS
        if unknown:
            raise ValueError(
                f"augmentation record {i} has unknown keys {sorted(unknown)}; allowed: {sorted(_RECORD_KEYS)}"
            )
        for name in ("gamma_gray", "contrast", "noise", "blur"):
            value = record.get(name)
            if value is not None:
                out[i, FIELD_INDEX[name]] = float(value)
        if record.get("color") is not None:
            out[i, _COLOR] = float(bool(record["color"]))
        gamma_color = record.get("gamma_color")
        if gamma_color is not None:
            out[i, _GAMMA_R : _GAMMA_B + 1] = np.asarray(gamma_color, dtype=np.float32)
        if record.get("seed") is not None:
            out[i, _SEED_LO], out[i, _SEED_HI] = split_noise_seed(record["seed"])
    return out
