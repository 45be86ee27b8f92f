"""``AugmentationParams``: every per-sample augmentation parameter as one frozen type, defaults in one place.

Crumpets passes augmentation parameters as dicts (``image_params``, the presets, what an ``RNG`` draws);
those are still accepted everywhere and converted once per sample with :meth:`AugmentationParams.from_dict`,
which names any unknown key. Code downstream reads attributes (``params.scale``), never
``params.get("scale", 1)`` with a default repeated at each use.

Example::

    >>> params = AugmentationParams.from_dict({"angle": 10, "gamma_gray": 0.8})
    >>> params.angle, params.scale, params.scale_mode
    (10, 1.0, 'shortest')
    >>> AugmentationParams.from_dict({"angel": 10})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params has unknown key(s) ['angel']; allowed: ['angle', 'aspect', ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import cv2

__all__ = ["AUGMENTATION_PARAM_NAMES", "AugmentationParams", "check_param_dict"]


@dataclasses.dataclass(frozen=True)
class AugmentationParams:
    """The parameters of one sample's augmentation (geometry and pixel ops); neutral by default.

    Attributes:
        background: fill where no image data lands: a scalar (every channel) or one value per channel;
            ``None``: the image buffer's fill value (workers) or 0.
        color: the image is coloured; ``False`` ignores ``gamma_color``.
        angle: rotation in degrees, counter-clockwise.
        scale: zoom; 1 fits the image to the target per ``scale_mode``, 2 doubles its side lengths.
        shift: relative ``(x, y)`` in ``[-1, 1]``; ``None`` centres the image.
        aspect: aspect ratio change (x stretched by ``sqrt(aspect)``, y shrunk by it).
        hmirror: mirror left/right.
        vmirror: mirror up/down.
        interp_method: OpenCV interpolation flag (``cv2.INTER_*``); bilinear by default.
        gamma_gray: gamma for all channels (< 1 brightens); ``None``: 1.
        gamma_color: per-channel gammas ``(r, g, b)``; ``None``: no colour change.
        contrast: contrast in ``[-1, 1]``; ``None``: 0.
        noise: noise strength (std ``noise * 255``); ``None``: no noise.
        blur: Gaussian sigma relative to the image width; ``None``: no blur.
        shear: number (gradient of the horizontal edges) or pair ``(x, y)``; ``None``: no shear.
        is_rgb: camera-sensor noise (less in green) on 3-channel images; else equal noise in every channel.
        scale_mode: ``"shortest"`` (fill the target, crop the excess) or ``"longest"`` (fit, background around).
        supersampling: ``0`` automatic, ``1`` off, ``s > 1``: ``s x s`` samples per output pixel.
        gpu_augmentation: skip the pixel ops on the CPU (the device applies them from the record).
        do_rotate_and_resize: apply the geometric transform; ``False`` keeps the image's geometry.
    """

    background: Any = None
    color: bool = True
    angle: float = 0.0
    scale: float = 1.0
    shift: Any = None
    aspect: float = 1.0
    hmirror: bool = False
    vmirror: bool = False
    interp_method: int = cv2.INTER_LINEAR
    gamma_gray: float | None = None
    gamma_color: Any = None
    contrast: float | None = None
    noise: float | None = None
    blur: float | None = None
    shear: Any = None
    is_rgb: bool = True
    scale_mode: str = "shortest"
    supersampling: int = 0
    gpu_augmentation: bool = False
    do_rotate_and_resize: bool = True

    @classmethod
    def from_dict(
        cls, params: Mapping[str, Any] | AugmentationParams | None, name: str = "params"
    ) -> AugmentationParams:
        """Convert crumpets-style dict params (missing keys take their defaults); an instance is returned as is.

        This runs once per sample in the workers, so it skips ``__init__`` (about 1 microsecond in all).

        Args:
            params: a mapping of parameter names to values, an ``AugmentationParams`` or ``None`` (defaults).
            name: what to call ``params`` in error messages (e.g. ``"image_params"``).

        Raises:
            ValueError: ``params`` has a key that is not a parameter (the message names it).
            TypeError: ``params`` is neither a mapping nor ``AugmentationParams``.
        """
        if isinstance(params, AugmentationParams):
            return params
        if params is None:
            return _DEFAULT
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{name} must be a dict of augmentation parameters or AugmentationParams, got {type(params).__name__}"
            )
        if not _NAMES.issuperset(params):
            check_param_dict(params, name)
        values = dict(_DEFAULTS)
        values.update(params)
        for key in _SEQUENCES:
            if type(values[key]) is list:  # hashable and comparable like the tuples RNGs draw
                values[key] = tuple(values[key])
        out = object.__new__(cls)
        out.__dict__.update(values)
        return out

    def to_dict(self) -> dict[str, Any]:
        """All parameters as a crumpets-style dict."""
        return dict(self.__dict__)

    def replace(self, **changes: Any) -> AugmentationParams:
        """A copy with some parameters changed.

        Raises:
            ValueError: a name is not a parameter.
        """
        check_param_dict(changes, "replace()")
        return AugmentationParams.from_dict({**self.__dict__, **changes})


#: Names of all parameters, in declaration order.
AUGMENTATION_PARAM_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(AugmentationParams))
_NAMES = frozenset(AUGMENTATION_PARAM_NAMES)
_DEFAULT = AugmentationParams()
_DEFAULTS: dict[str, Any] = dict(_DEFAULT.__dict__)
_SEQUENCES = ("shift", "gamma_color", "shear", "background")


def check_param_dict(params: Mapping[str, Any], name: str = "params") -> dict[str, Any]:
    """Check that every key of ``params`` is a parameter name; returns a plain dict copy.

    Args:
        params: crumpets-style dict params.
        name: what to call ``params`` in the error message.

    Raises:
        TypeError: ``params`` is not a mapping.
        ValueError: an unknown key (named, with the allowed ones).
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a dict of augmentation parameters, got {type(params).__name__}")
    unknown = sorted(str(key) for key in params if key not in _NAMES)
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {unknown}; allowed: {sorted(_NAMES)}")
    return dict(params)
