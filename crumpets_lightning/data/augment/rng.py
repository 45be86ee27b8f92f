"""Random augmentation parameters: ``RNG`` objects draw the keyword arguments of ``randomize_image``.

Drawing is separate from applying (as in kornia): an RNG returns a dict, the worker applies it and records
the pixel-op part in the ``augmentation`` buffer. Every draw comes from the generator passed in (the
worker's per-sample ``rng``), never from global state, so the loader's determinism holds.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ["RNG", "MixtureRNG", "NoRNG", "human2gamma"]


def human2gamma(human: float) -> float:
    """Convert a human-friendly brightness in ``[-1, 1]`` to a gamma: ``2 ** -clip(human, -1, 1)``.

    Positive values brighten (gamma < 1), negative values darken; values outside ``[-1, 1]`` are clipped.

    Args:
        human: brightness change.

    Returns:
        The gamma, in ``[0.5, 2]``.
    """
    return float(2.0 ** (-min(1.0, max(-1.0, float(human)))))


class RNG(abc.ABC):
    """Abstract base of augmentation parameter generators.

    Subclasses implement :meth:`__call__`, returning keyword arguments of
    :func:`~crumpets_lightning.data.augment.augmentation.randomize_image` (``angle``, ``scale``, ``gamma_gray``, ...).
    Keys left out keep their defaults; fixed ``image_params`` of a worker override drawn values.
    """

    @abc.abstractmethod
    def __call__(self, image_size: Sequence[int] | None, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one set of parameters.

        Args:
            image_size: ``(height, width)`` of the target image, or ``None`` when unknown.
            rng: the generator to draw from.

        Returns:
            Keyword arguments for ``randomize_image``.
        """


class NoRNG(RNG):
    """Draws nothing: every parameter keeps its neutral default. Useful for validation."""

    def __call__(self, image_size: Sequence[int] | None, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return "NoRNG()"

    def __eq__(self, other: object) -> bool:
        return type(other) is NoRNG

    def __hash__(self) -> int:
        return hash(NoRNG)


def _check_range(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected argument `{name}` to be two numbers (low, high) but got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"Expected argument `{name}` to be finite numbers with low <= high but got {value!r}")
    return low, high


def _check_probability(name: str, value: Any) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected argument `{name}` to be a probability in [0, 1] but got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Expected argument `{name}` to be a probability in [0, 1] but got {value!r}")
    return p


def _check_sigma(name: str, value: Any) -> float:
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected argument `{name}` to be a non-negative number but got {value!r}") from None
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"Expected argument `{name}` to be a non-negative number but got {value!r}")
    return sigma


class MixtureRNG(RNG):
    """The crumpets RNG: uniform ranges, Gaussian sigmas and per-op probabilities.

    ``*_range`` arguments are two numbers ``(a, b)`` and draw from ``U[a, b]``; ``*_sigma`` arguments are the
    standard deviation of a zero-mean Gaussian. ``None`` / ``0`` leaves the parameter neutral.

    Every call draws all values in a fixed order whatever the probabilities, so the geometric parameters
    for a given generator state do not depend on ``prob``.

    Args:
        prob: probability that each pixel op (noise, brightness, colour, contrast, blur) is applied; each
            rolls separately. Spatial transforms ignore it, so ``prob=0`` disables only the pixel ops.
        scale_range: range of ``scale`` (zoom relative to the fitted size).
        shift_range: range of each of ``shift = (x, y)``, relative units in ``[-1, 1]``.
        noise_range: range of the noise strength ``noise``.
        brightness_range: range of the brightness, turned into ``gamma_gray`` by :func:`human2gamma`.
        color_range: range of each channel's colour change, turned into ``gamma_color`` by
            :func:`human2gamma`.
        contrast_range: range of ``contrast``, within ``[-1, 1]``.
        blur_range: range of ``blur``: the Gaussian sigma is ``blur * image width``.
        rotation_sigma: std of the rotation ``angle`` in degrees.
        aspect_sigma: ``aspect = exp(N(0, aspect_sigma))`` (so stretching and squashing are equally likely).
        interpolations: OpenCV interpolation flags to choose ``interp_method`` from uniformly.
        hmirror: probability of a left/right mirror.
        vmirror: probability of an up/down mirror.
        shear_range: range of the scalar ``shear`` (gradient of the horizontal edges).

    Raises:
        ValueError: a range is not two finite numbers with ``low <= high``, a probability is outside
            ``[0, 1]``, a sigma is negative, or ``contrast_range`` leaves ``[-1, 1]``.

    Example::

        >>> rng = MixtureRNG(prob=1.0, brightness_range=(0.45, 0.45))
        >>> rng(None, np.random.default_rng(0))["gamma_gray"] == human2gamma(0.45)
        True
    """

    def __init__(
        self,
        prob: float = 1,
        scale_range: Sequence[float] | None = None,
        shift_range: Sequence[float] | None = None,
        noise_range: Sequence[float] | None = None,
        brightness_range: Sequence[float] | None = None,
        color_range: Sequence[float] | None = None,
        contrast_range: Sequence[float] | None = None,
        blur_range: Sequence[float] | None = None,
        rotation_sigma: float = 0,
        aspect_sigma: float = 0,
        interpolations: Sequence[int] | None = None,
        hmirror: float = 0,
        vmirror: float = 0,
        shear_range: Sequence[float] | None = None,
    ) -> None:
        self.prob = _check_probability("prob", prob)
        self.scale_range = _check_range("scale_range", scale_range)
        if self.scale_range is not None and self.scale_range[0] <= 0:
            raise ValueError(f"Expected argument `scale_range` to be positive but got {scale_range!r}")
        self.shift_range = _check_range("shift_range", shift_range)
        self.noise_range = _check_range("noise_range", noise_range)
        if self.noise_range is not None and self.noise_range[0] < 0:
            raise ValueError(f"Expected argument `noise_range` to be non-negative but got {noise_range!r}")
        self.brightness_range = _check_range("brightness_range", brightness_range)
        self.color_range = _check_range("color_range", color_range)
        self.contrast_range = _check_range("contrast_range", contrast_range)
        if self.contrast_range is not None and not (self.contrast_range[0] >= -1 and self.contrast_range[1] <= 1):
            raise ValueError(f"Expected argument `contrast_range` to lie within [-1, 1] but got {contrast_range!r}")
        self.blur_range = _check_range("blur_range", blur_range)
        if self.blur_range is not None and self.blur_range[0] < 0:
            raise ValueError(f"Expected argument `blur_range` to be non-negative but got {blur_range!r}")
        self.rotation_sigma = _check_sigma("rotation_sigma", rotation_sigma)
        self.aspect_sigma = _check_sigma("aspect_sigma", aspect_sigma)
        if interpolations is not None:
            known = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4)
            try:
                choices = tuple(int(i) for i in interpolations)
            except (TypeError, ValueError):
                choices = ()
            if not choices or any(choice not in known for choice in choices):
                raise ValueError(
                    f"Expected argument `interpolations` to be a non-empty list of cv2.INTER_* flags {known} "
                    f"but got {interpolations!r}"
                )
            self.interpolations: tuple[int, ...] | None = choices
        else:
            self.interpolations = None
        self.hmirror = _check_probability("hmirror", hmirror)
        self.vmirror = _check_probability("vmirror", vmirror)
        self.shear_range = _check_range("shear_range", shear_range)

    def __call__(self, image_size: Sequence[int] | None, rng: np.random.Generator) -> dict[str, Any]:
        # One block of uniforms in a fixed layout keeps the draws independent of which options are set.
        # plain Python floats: cheaper arithmetic than numpy scalars, and plain values in the result
        u = rng.random(16).tolist()
        gauss = rng.standard_normal(2).tolist()
        params: dict[str, Any] = {}

        def uniform(bounds: tuple[float, float], value: float) -> float:
            return bounds[0] + (bounds[1] - bounds[0]) * value

        prob = self.prob

        def pixel_op(index: int) -> bool:
            return u[index] < prob

        if self.scale_range is not None:
            params["scale"] = uniform(self.scale_range, u[0])
        if self.shift_range is not None:
            params["shift"] = (uniform(self.shift_range, u[1]), uniform(self.shift_range, u[2]))
        if self.rotation_sigma > 0:
            params["angle"] = gauss[0] * self.rotation_sigma
        if self.aspect_sigma > 0:
            params["aspect"] = math.exp(gauss[1] * self.aspect_sigma)
        if self.shear_range is not None:
            params["shear"] = uniform(self.shear_range, u[3])
        if self.hmirror > 0:
            params["hmirror"] = u[4] < self.hmirror
        if self.vmirror > 0:
            params["vmirror"] = u[5] < self.vmirror
        if self.interpolations is not None:
            params["interp_method"] = self.interpolations[
                min(int(u[6] * len(self.interpolations)), len(self.interpolations) - 1)
            ]
        if self.noise_range is not None and pixel_op(7):
            params["noise"] = uniform(self.noise_range, u[8])
        if self.brightness_range is not None and pixel_op(9):
            params["gamma_gray"] = human2gamma(uniform(self.brightness_range, u[10]))
        if self.contrast_range is not None and pixel_op(11):
            params["contrast"] = uniform(self.contrast_range, u[12])
        if self.blur_range is not None and pixel_op(13):
            params["blur"] = uniform(self.blur_range, u[14])
        # colour needs three values: drawn from a second block so the layout above never changes
        color = rng.random(3).tolist()
        if self.color_range is not None and pixel_op(15):
            params["gamma_color"] = tuple(human2gamma(uniform(self.color_range, c)) for c in color)
        return params

    def _settings(self) -> dict[str, Any]:
        return {
            "prob": self.prob,
            "scale_range": self.scale_range,
            "shift_range": self.shift_range,
            "noise_range": self.noise_range,
            "brightness_range": self.brightness_range,
            "color_range": self.color_range,
            "contrast_range": self.contrast_range,
            "blur_range": self.blur_range,
            "rotation_sigma": self.rotation_sigma,
            "aspect_sigma": self.aspect_sigma,
            "interpolations": self.interpolations,
            "hmirror": self.hmirror,
            "vmirror": self.vmirror,
            "shear_range": self.shear_range,
        }

    def __repr__(self) -> str:
        defaults = MixtureRNG()._settings()
        parts = [f"{k}={v!r}" for k, v in self._settings().items() if v != defaults[k] or k == "prob"]
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MixtureRNG) and self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash(tuple(self._settings().items()))
