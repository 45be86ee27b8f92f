"""The per-sample record of pixel-augmentation parameters that workers write and ``Randomizer`` reads.

Image workers draw every augmentation parameter on the CPU. Geometric ones (rotation, scale, shift, ...)
are always applied there. The pixel ops (gamma/colour, contrast, noise, blur) are applied on the CPU too,
unless the worker runs with ``gpu_augmentation=True``: then it leaves the pixels untouched and the
``Randomizer`` module applies the same ops to the whole batch on the GPU.

Either way each sample's drawn values are stored in the ``augmentation`` buffer, one float32 row per
sample, columns in :data:`AUGMENTATION_FIELDS` order. Neutral values (no change) are in
:data:`NEUTRAL_AUGMENTATION`. A fixed-size numeric row travels through shared memory like the image, so
neither the main process nor the GPU side needs per-sample Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AUGMENTATION_FIELDS",
    "AUGMENTATION_SPEC",
    "NEUTRAL_AUGMENTATION",
    "augmentation_from_records",
    "augmentation_to_records",
]

#: Column order of the ``augmentation`` buffer.
#: ``color``: 1.0 to apply the per-channel ``gamma_*`` values, 0.0 for ``gamma_gray`` only.
#: ``gamma_gray``: gamma applied to all channels (brightness). ``gamma_r/g/b``: per-channel gamma (colour),
#: in RGB order whatever the image's channel order. ``contrast`` in [-1, 1]. ``noise``: noise strength.
#: ``blur``: Gaussian sigma relative to the image width.
AUGMENTATION_FIELDS: tuple[str, ...] = (
    "color",
    "gamma_gray",
    "gamma_r",
    "gamma_g",
    "gamma_b",
    "contrast",
    "noise",
    "blur",
)

NEUTRAL_AUGMENTATION: np.ndarray = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=np.float32)
NEUTRAL_AUGMENTATION.setflags(write=False)

#: Buffer spec of the ``augmentation`` buffer, as accepted by ``BufferWorker.add_buffer``.
AUGMENTATION_SPEC: tuple[tuple[int, ...], type, np.ndarray] = (
    (len(AUGMENTATION_FIELDS),),
    np.float32,
    NEUTRAL_AUGMENTATION,
)

_INDEX = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}


def augmentation_to_records(rows: Any) -> list[dict[str, float]]:
    """Turn ``augmentation`` rows (array or tensor ``[B, len(AUGMENTATION_FIELDS)]``) into crumpets-style dicts.

    The original crumpets returned a list of dicts (``gamma_gray``, ``gamma_color``, ``contrast``, ``noise``,
    ``blur``, ``color``); this gives the same view for code that expects it.
    """
    array = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != len(AUGMENTATION_FIELDS):
        raise ValueError(
            f"Expected augmentation rows of shape [B, {len(AUGMENTATION_FIELDS)}] but got {tuple(array.shape)}"
        )
    records = []
    for row in array.tolist():
        records.append(
            {
                "color": bool(row[_INDEX["color"]]),
                "gamma_gray": row[_INDEX["gamma_gray"]],
                "gamma_color": (row[_INDEX["gamma_r"]], row[_INDEX["gamma_g"]], row[_INDEX["gamma_b"]]),
                "contrast": row[_INDEX["contrast"]],
                "noise": row[_INDEX["noise"]],
                "blur": row[_INDEX["blur"]],
            }
        )
    return records


def augmentation_from_records(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Inverse of :func:`augmentation_to_records`: crumpets-style dicts to ``[B, 8]`` float32 rows.

    Missing or ``None`` entries take their neutral value.
    """
    out = np.repeat(NEUTRAL_AUGMENTATION[None, :], len(records), axis=0)
    for i, record in enumerate(records):
        for name in ("gamma_gray", "contrast", "noise", "blur"):
            value = record.get(name)
            if value is not None:
                out[i, _INDEX[name]] = float(value)
        if record.get("color") is not None:
            out[i, _INDEX["color"]] = float(bool(record["color"]))
        gamma_color = record.get("gamma_color")
        if gamma_color is not None:
            out[i, _INDEX["gamma_r"] : _INDEX["gamma_b"] + 1] = np.asarray(gamma_color, dtype=np.float32)
    return out
