"""CPU image augmentation: the geometric transform (one affine warp) and ``randomize_image``.

Decoding lives in :mod:`crumpets_lightning.data.augment.decode` (re-exported here).

Coordinates and conventions
---------------------------
Images are ``numpy`` arrays in HWC layout (``H x W`` for one channel). Sizes are ``(height, width)``.
Pixel ``(x, y)`` is the *centre* of the pixel in column ``x`` and row ``y`` (OpenCV's convention), so an
image of width ``W`` spans ``[-0.5, W - 0.5]``.

The geometric transform maps source pixels to target pixels in this order (see :func:`make_transform`):

1. move the source centre to the origin;
2. mirror (``hmirror`` flips left/right, ``vmirror`` flips up/down);
3. scale by :func:`calc_scale_ratio` (``scale_mode`` and ``scale``);
4. change the aspect ratio: x is multiplied by ``sqrt(aspect)``, y divided by it (area is kept);
5. shear: ``x += shear_x * y``, ``y += shear_y * x`` (a scalar ``shear`` is ``(0, shear)``: it gives the
   horizontal edges the gradient ``shear``);
6. rotate by ``angle`` degrees counter-clockwise as seen on screen;
7. move the origin to the target centre, then shift (below).

``shift = (x, y)`` is relative, in ``[-1, 1]``: the image is moved by ``shift * slack`` target pixels, where
``slack`` per axis is half the difference between the scaled image extent and the target extent (steps 3
and 4). ``shift = (0, 1)`` moves the image *up* until its top edge lies on the target's top border if it is
larger than the target (the bottom part shows), or until its top edge touches the top border if it is
smaller (background below); ``(0, -1)`` moves it down the same way. Positive x moves the image left, so
``(1, 0)`` shows the right edge. ``shift = (0, 0)`` centres the image. An axis on which image and target
have the same extent cannot shift.

Colour images are RGB throughout (JPEGs are decoded straight to RGB). OpenCV's bilinear warp is about three
times faster on 4 channels than on 3, so 3-channel images are padded to RGBA just before the warp (the
freshly decoded image is still in cache; that beats decoding to RGBA) and workers drop the alpha channel
when they write their CHW buffers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.data.augment.decode import DEFAULT_MAX_PIXELS, decode_image, image_size
from crumpets_lightning.data.augment.params import AugmentationParams, check_param_dict
from crumpets_lightning.data.augment.pixel_ops import apply_pixel_ops
from crumpets_lightning.data.augment.record import augmentation_row

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "INTERP_AREA",
    "INTERP_CUBIC",
    "INTERP_LANCZOS4",
    "INTERP_LINEAR",
    "INTERP_NEAREST",
    "SCALE_MODES",
    "augmentation_row",
    "calc_scale_ratio",
    "decode_image",
    "image_size",
    "make_transform",
    "randomize_image",
    "rotate_and_resize",
]

INTERP_NEAREST = cv2.INTER_NEAREST
INTERP_LINEAR = cv2.INTER_LINEAR
INTERP_CUBIC = cv2.INTER_CUBIC
INTERP_AREA = cv2.INTER_AREA
INTERP_LANCZOS4 = cv2.INTER_LANCZOS4
_INTERPOLATIONS = (INTERP_NEAREST, INTERP_LINEAR, INTERP_CUBIC, INTERP_AREA, INTERP_LANCZOS4)

#: Allowed values of ``scale_mode``.
SCALE_MODES = ("shortest", "longest")

# Below this effective scale the warp would alias: shrink with area averaging first.
_PRESHRINK_BELOW = 0.5


def calc_scale_ratio(
    source_size: Sequence[int],
    target_size: Sequence[int],
    scale: float,
    scale_mode: str,
) -> float:
    """Factor that maps source pixels to target pixels before aspect/rotation.

    Args:
        source_size: ``(height, width)`` of the source image.
        target_size: ``(height, width)`` of the output.
        scale: extra zoom; 1 fits the image to the target per ``scale_mode``, 2 doubles its side lengths.
        scale_mode: ``"shortest"`` fills the target (the image's excess is cropped), ``"longest"`` fits the
            whole image inside the target (background around it).

    Returns:
        Target pixels per source pixel.

    Raises:
        ValueError: unknown ``scale_mode`` or non-positive sizes/scale.
    """
    sh, sw = float(source_size[0]), float(source_size[1])
    th, tw = float(target_size[0]), float(target_size[1])
    if min(sh, sw, th, tw) <= 0:
        raise ValueError(f"sizes must be positive, got source {tuple(source_size)} and target {tuple(target_size)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    if scale_mode == "shortest":
        return max(th / sh, tw / sw) * float(scale)
    if scale_mode == "longest":
        return min(th / sh, tw / sw) * float(scale)
    raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")


def _shear_pair(shear: Any) -> tuple[float, float]:
    if shear is None:
        return 0.0, 0.0
    if isinstance(shear, (int, float)):
        return 0.0, float(shear)
    values = [float(v) for v in np.ravel(shear)]
    if len(values) == 1:
        return 0.0, values[0]
    if len(values) != 2:
        raise ValueError(f"shear must be a number or a pair (x, y), got {shear!r}")
    return values[0], values[1]


def _shift_pair(shift: Any) -> tuple[float, float]:
    if shift is None:
        return 0.0, 0.0
    if isinstance(shift, (int, float)):
        return float(shift), float(shift)
    values = [float(v) for v in (shift if isinstance(shift, (tuple, list)) else np.ravel(shift))]
    if len(values) != 2:
        raise ValueError(f"shift must be a pair (x, y), got {shift!r}")
    return values[0], values[1]


def make_transform(
    source_size: Sequence[int],
    target_size: Sequence[int],
    angle: float = 0,
    scale: float = 1,
    aspect: float = 1,
    shift: Sequence[float] | None = None,
    hmirror: bool = False,
    vmirror: bool = False,
    shear: float | Sequence[float] | None = None,
    scale_mode: str = "shortest",
) -> np.ndarray:
    """The affine map from source pixel coordinates to target pixel coordinates, all steps in one matrix.

    See the module docstring for the order of the steps and the exact meaning of ``shift`` and ``shear``.

    Args:
        source_size: ``(height, width)`` of the source image.
        target_size: ``(height, width)`` of the output.
        angle: rotation in degrees, counter-clockwise on screen.
        scale: zoom relative to the ``scale_mode`` fit (see :func:`calc_scale_ratio`).
        aspect: aspect ratio change; x is stretched by ``sqrt(aspect)``, y by ``1 / sqrt(aspect)``.
        shift: relative ``(x, y)`` shift in ``[-1, 1]``; ``None`` centres the image.
        hmirror: mirror left/right.
        vmirror: mirror up/down.
        shear: number (gradient of the horizontal edges) or pair ``(x, y)``.
        scale_mode: ``"shortest"`` or ``"longest"``.

    Returns:
        A 3x3 float64 matrix ``M`` with ``[x_t, y_t, 1] = M @ [x_s, y_s, 1]``; ``M[:2]`` is what
        ``cv2.warpAffine`` takes.

    Raises:
        ValueError: a parameter is out of its domain (non-positive ``aspect`` or ``scale``, bad mode).

    Example::

        >>> m = make_transform((100, 200), (50, 50))  # shortest side 100 -> 50
        >>> (m @ [99.5, 49.5, 1]).round(3).tolist()  # source centre -> target centre
        [24.5, 24.5, 1.0]
    """
    if not aspect > 0:
        raise ValueError(f"aspect must be positive, got {aspect!r}")
    ratio = calc_scale_ratio(source_size, target_size, scale, scale_mode)
    sh, sw = float(source_size[0]), float(source_size[1])
    th, tw = float(target_size[0]), float(target_size[1])
    stretch = math.sqrt(float(aspect))
    fx, fy = ratio * stretch, ratio / stretch
    shear_x, shear_y = _shear_pair(shear)
    shift_x, shift_y = _shift_pair(shift)

    # counter-clockwise on screen, where y points down
    rad = math.radians(float(angle))
    cos, sin = math.cos(rad), math.sin(rad)
    # linear part: rotation @ shear @ scaling @ mirror, multiplied out (plain floats are much faster here
    # than six small numpy products, and this runs once per sample)
    a = -fx if hmirror else fx
    d = -fy if vmirror else fy
    m00, m01 = a, shear_x * d
    m10, m11 = shear_y * a, d
    l00, l01 = cos * m00 + sin * m10, cos * m01 + sin * m11
    l10, l11 = -sin * m00 + cos * m10, -sin * m01 + cos * m11
    slack_x = abs(sw * fx - tw) / 2
    slack_y = abs(sh * fy - th) / 2
    # source centre -> target centre, then the shift
    cx, cy = sw / 2 - 0.5, sh / 2 - 0.5
    tx = tw / 2 - 0.5 - shift_x * slack_x - (l00 * cx + l01 * cy)
    ty = th / 2 - 0.5 - shift_y * slack_y - (l10 * cx + l11 * cy)
    return np.array([[l00, l01, tx], [l10, l11, ty], [0.0, 0.0, 1.0]])


def _singular_values(matrix: np.ndarray) -> tuple[float, float]:
    """Smallest and largest singular value of the 2x2 linear part (strongest down- and upscale)."""
    p, q, r, t = float(matrix[0, 0]), float(matrix[0, 1]), float(matrix[1, 0]), float(matrix[1, 1])
    frobenius = p * p + q * q + r * r + t * t
    det = p * t - q * r
    root = math.sqrt(max(0.0, frobenius * frobenius - 4 * det * det))
    return math.sqrt(max(0.0, (frobenius - root) / 2)), math.sqrt((frobenius + root) / 2)


def _background_tuple(background: Any, channels: int) -> tuple[float, float, float, float]:
    """OpenCV border value from a scalar (every channel) or a per-channel sequence."""
    if background is None:
        return (0.0, 0.0, 0.0, 0.0)
    values = np.asarray(background, dtype=np.float64).ravel()
    if values.size == 1:
        return (float(values[0]),) * 4
    if values.size != channels:
        raise ValueError(
            f"background {background!r} has {values.size} values but the image has {channels} channels; "
            "give a scalar or one value per channel"
        )
    padded = [*values.tolist(), 0.0, 0.0, 0.0, 0.0][:4]
    return (padded[0], padded[1], padded[2], padded[3])


def _pixel_grid(factor_x: float, factor_y: float) -> np.ndarray:
    """3x3 map from pixel coordinates of an image to those of the same image resized by these factors."""
    return np.array(
        [
            [factor_x, 0.0, (factor_x - 1) / 2],
            [0.0, factor_y, (factor_y - 1) / 2],
            [0.0, 0.0, 1.0],
        ]
    )


def rotate_and_resize(
    im: np.ndarray,
    angle: float,
    target_size: Sequence[int],
    scale: float,
    aspect: float,
    shift: Sequence[float] | None,
    method: int,
    background: Any,
    hmirror: bool,
    vmirror: bool,
    shear: float | Sequence[float] | None = None,
    scale_mode: str = "shortest",
    supersampling: int = 0,
    *,
    transform: np.ndarray | None = None,
) -> np.ndarray:
    """Apply the whole geometric transform with one ``cv2.warpAffine`` from ``im``.

    Three-channel uint8 images are warped as four channels (OpenCV's bilinear warp is about three times
    faster on 4 channels than on 3). Strong downscaling (effective scale below 0.5) first shrinks the source
    with area averaging (``cv2.INTER_AREA``) so the warp does not alias; nearest-neighbour interpolation
    skips that step so label maps keep only their label values. ``supersampling = s > 1`` warps to ``s``
    times the target height *and* width and averages ``s x s`` blocks down, so non-square targets keep their
    geometry.

    Args:
        im: source image, ``H x W`` or ``H x W x C``.
        angle: see :func:`make_transform`.
        target_size: ``(height, width)`` of the output.
        scale: see :func:`make_transform`.
        aspect: see :func:`make_transform`.
        shift: see :func:`make_transform`.
        method: OpenCV interpolation flag (``INTERP_LINEAR`` etc.).
        background: fill for areas outside the image: a scalar (every channel) or one value per channel.
        hmirror: see :func:`make_transform`.
        vmirror: see :func:`make_transform`.
        shear: see :func:`make_transform`.
        scale_mode: see :func:`make_transform`.
        supersampling: ``0`` chooses automatically (1: the area pre-shrink already removes aliasing),
            ``1`` disables it, ``s > 1`` samples ``s x s`` points per output pixel.
        transform: use this 3x3 source-to-target matrix instead of building one from the parameters.

    Returns:
        The warped image with the same number of channels and dtype as ``im``.

    Raises:
        ValueError: bad interpolation method, supersampling or background.
    """
    if method not in _INTERPOLATIONS:
        raise ValueError(f"interpolation method must be one of the cv2.INTER_* flags {_INTERPOLATIONS}, got {method!r}")
    if int(supersampling) != supersampling or supersampling < 0:
        raise ValueError(f"supersampling must be a non-negative int, got {supersampling!r}")
    th, tw = int(target_size[0]), int(target_size[1])
    matrix = (
        transform
        if transform is not None
        else make_transform(im.shape[:2], (th, tw), angle, scale, aspect, shift, hmirror, vmirror, shear, scale_mode)
    )
    channels = 1 if im.ndim == 2 else im.shape[2]
    out = _warp(im, matrix, (th, tw), method, _background_tuple(background, channels), int(supersampling))
    if out.ndim == 3 and out.shape[2] == 4 and channels == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)
    elif out.ndim == 2 and im.ndim == 3:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return out


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """This thread's reusable array ``name``, replaced when a different shape or dtype is asked for."""
    arrays = _SCRATCH.__dict__
    array = arrays.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = arrays[name] = np.empty(shape, dtype)
    return array


def _warp(
    im: np.ndarray,
    matrix: np.ndarray,
    target_size: tuple[int, int],
    method: int,
    border: tuple[float, float, float, float],
    supersampling: int,
    scratch: bool = False,
) -> np.ndarray:
    """The warp behind :func:`rotate_and_resize`; 3-channel uint8 images come back with a 4th channel.

    ``scratch``: the RGBA copy and the result live in this thread's reusable arrays (the workers' path: warm
    memory instead of fresh allocations per sample), so the result is only valid until the next such call.
    """
    th, tw = target_size
    channels = 1 if im.ndim == 2 else im.shape[2]
    samples = supersampling if supersampling else 1
    if method == INTERP_AREA:
        # warpAffine has no area mode; the halving below provides the area averaging
        method = INTERP_LINEAR
    if samples > 1:
        matrix = _pixel_grid(samples, samples) @ matrix
    effective, largest = _singular_values(matrix)
    if channels == 3 and im.dtype == np.uint8:
        # 4 channels: the fastest layout for the halving and the warp below
        padded = _scratch("rgba", (im.shape[0], im.shape[1], 4), im.dtype) if scratch else None
        im = cv2.cvtColor(im, cv2.COLOR_RGB2RGBA, dst=padded)
    while method != INTERP_NEAREST and effective < _PRESHRINK_BELOW and min(im.shape[:2]) >= 2:
        # Halve with 2x2 area averaging (OpenCV's fast integer-factor path: ~40x faster than an arbitrary
        # area resize) until the warp is left a scale of at least 0.5, which bilinear sampling handles.
        im = cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.linalg.inv(_pixel_grid(0.5, 0.5))
        effective, largest = _singular_values(matrix)
    if largest > 1.0 and method != INTERP_NEAREST:
        # Upscaling: output pixels near the image's edge sample up to half a source pixel outside it and
        # would blend in the background (a dark fringe). One replicated source pixel around the image avoids
        # that; samples further out still get the background.
        im = cv2.copyMakeBorder(im, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        matrix = matrix @ np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    out_shape = (th * samples, tw * samples) + (() if im.ndim == 2 else (im.shape[2],))
    out = cv2.warpAffine(
        im,
        matrix[:2],
        (tw * samples, th * samples),
        dst=_scratch("warp", out_shape, im.dtype) if scratch and samples == 1 else None,
        flags=method,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )
    if samples > 1:
        out = cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)
    return out


def randomize_image(
    im: np.ndarray,
    size: Sequence[int],
    params: AugmentationParams | Mapping[str, Any] | None = None,
    *,
    rng: np.random.Generator | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Transform ``im`` geometrically to ``size`` and apply the pixel augmentations.

    The parameters and their defaults are those of
    :class:`~crumpets_lightning.data.augment.params.AugmentationParams` (``angle``, ``scale``, ``shift``,
    ``gamma_gray``, ``noise``, ``blur``, ...), given as ``params`` (an instance or a crumpets-style dict) and/or
    as keyword arguments (which override ``params``), as in crumpets:
    ``randomize_image(im, (224, 224), angle=10, gamma_gray=0.8)``. The pixel ops (gamma/colour, contrast,
    blur, noise) follow the shared semantics documented in :mod:`crumpets_lightning.data.augment.pixel_ops`.

    Args:
        im: uint8 image, ``H x W x 3`` in **RGB** order, or ``H x W`` / ``H x W x 1`` gray.
        size: ``(height, width)`` of the result.
        params: the augmentation parameters (``None``: all neutral).
        rng: generator for the noise; a fixed-seed one when ``None``.
        **kwargs: further parameters by name, overriding ``params``.

    Returns:
        The randomized uint8 image, same channel layout as ``im``.

    Raises:
        ValueError: an unknown parameter name or a parameter out of its domain.
    """
    if kwargs:
        base = params.to_dict() if isinstance(params, AugmentationParams) else check_param_dict(params or {})
        base.update(check_param_dict(kwargs, "randomize_image() keyword arguments"))
        params = base
    p = AugmentationParams.from_dict(params)
    if p.do_rotate_and_resize:
        out = rotate_and_resize(
            im, p.angle, size, p.scale, p.aspect, p.shift, p.interp_method, p.background, p.hmirror, p.vmirror,
            p.shear, p.scale_mode, p.supersampling,
        )  # fmt: skip
    else:
        out = im.copy()
    if p.gpu_augmentation:
        return out
    row = augmentation_row(p.color, p.gamma_gray, p.gamma_color, p.contrast, p.noise, p.blur)
    generator = rng if rng is not None else np.random.default_rng(0)
    return apply_pixel_ops(out, row, generator, is_rgb=p.is_rgb)
