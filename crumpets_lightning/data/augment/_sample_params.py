"""The per-sample values both ``randomize_batch`` implementations read (the torch path and the Triton kernel).

Its own module so that :mod:`.batched` and :mod:`._triton_kernel` both import it and not each other.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["SampleParams"]


class SampleParams(NamedTuple):
    """The per-sample (and per-channel) values both implementations read, derived from the records on device."""

    #: float32 ``[B, C, 256]`` gamma + contrast tables.
    luts: Tensor
    #: float32 ``[B]``: ``1 / (2 sigma^2)`` of blurred samples, 0 for the others.
    blur_inv: Tensor
    #: int32 ``[B]``: blur radius ``ceil(3 sigma)`` of blurred samples, 0 for the others.
    blur_radius: Tensor
    #: float32 ``[B, C]``: noise std per sample and channel (0: no noise).
    noise_std: Tensor
    #: int64 ``[B]``: 32-bit noise keys.
    noise_key: Tensor
