"""CPU image augmentation: decoding, the geometric transform (one affine warp) and ``randomize_image``.

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
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

try:
    import simplejpeg
except ImportError:  # pragma: no cover - optional fast JPEG decoder
    simplejpeg = None

from crumpets_lightning.data.augment.pixel_ops import apply_pixel_ops
from crumpets_lightning.data.augment.record import AUGMENTATION_FIELDS, NEUTRAL_AUGMENTATION
from crumpets_lightning.data.errors import SampleError

__all__ = [
    "INTERP_AREA",
    "INTERP_CUBIC",
    "INTERP_LANCZOS4",
    "INTERP_LINEAR",
    "INTERP_NEAREST",
    "SCALE_MODES",
    "augmentation_row",
    "calc_scale_ratio",
    "decode_image",
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

_FIELD_INDEX = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}

#: Allowed values of ``scale_mode``.
SCALE_MODES = ("shortest", "longest")

_REDUCED_FLAGS_COLOR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_FLAGS_GRAY = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
# JPEG start-of-frame markers carry the image size (all SOFn except DHT, JPG and DAC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Below this effective scale the warp would alias: shrink with area averaging first.
_PRESHRINK_BELOW = 0.5


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG header without decoding, or ``None`` if ``data`` is not a JPEG."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return (height, width) if height > 0 and width > 0 else None
        pos += 2 + length
    return None


def _to_buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise SampleError(
                f"encoded image must be bytes or a 1-d uint8 array, got an array of shape {data.shape} and dtype "
                f"{data.dtype}; store images as encoded JPEG/PNG bytes"
            )
        buffer = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        buffer = np.frombuffer(data, dtype=np.uint8)
    else:
        raise SampleError(f"encoded image must be bytes, got {type(data).__name__}; store images as JPEG/PNG bytes")
    if buffer.size == 0:
        raise SampleError("encoded image is empty (0 bytes)")
    return buffer


def _corrupt(buffer: np.ndarray, detail: str = "") -> SampleError:
    head = bytes(buffer[:8]).hex()
    reason = f": {detail}" if detail else ""
    return SampleError(
        f"cannot decode image ({buffer.size} bytes starting with {head}){reason}; the data is corrupt or not "
        "an image format OpenCV reads"
    )


def _decode(
    data: Any,
    mode: str,
    min_height: int = 0,
    min_width: int = 0,
    min_factor: float = 2,
    fast_dct: bool = False,
    fast_upsample: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode like :func:`decode_image`, returning the image and the full (undecoded) ``(height, width)``.

    ``mode``: ``"rgba"`` (``H x W x 4``, the fastest input for the warp), ``"rgb"``, ``"gray"`` (``H x W``) or
    ``"unchanged"`` (label maps: OpenCV's ``IMREAD_UNCHANGED``, never reduced, channels as stored).
    ``fast_dct`` uses libjpeg-turbo's fast integer IDCT (about 5 % faster; pixel values differ by about one
    level on average) when ``simplejpeg`` decodes; ``fast_upsample`` its simple chroma upsampling (about 6 %
    faster; about half a level more difference on average after a downscaling warp).
    """
    buffer = _to_buffer(data)
    is_jpeg = buffer.size > 3 and buffer[0] == 0xFF and buffer[1] == 0xD8
    jpeg_error = ""
    if is_jpeg and simplejpeg is not None and mode != "unchanged":
        colorspace = {"rgba": "RGBA", "rgb": "RGB", "gray": "GRAY"}[mode]
        try:
            # the header parse in Python is cheaper than simplejpeg's (which sets up a whole decompressor)
            size = _jpeg_size(data if isinstance(data, bytes) else buffer.data)
            height, width = size if size is not None else simplejpeg.decode_jpeg_header(buffer)[:2]
            image = simplejpeg.decode_jpeg(
                buffer,
                colorspace,
                fastdct=fast_dct,
                fastupsample=fast_upsample,
                min_height=int(min_height),
                min_width=int(min_width),
                min_factor=float(min_factor),
            )
            return (image[:, :, 0] if mode == "gray" else image), (int(height), int(width))
        except ValueError as error:
            # e.g. CMYK JPEGs or recoverable damage: OpenCV may still read it; report both if not
            jpeg_error = f"libjpeg-turbo: {error}"
    reduction = 1
    size = _jpeg_size(buffer.data) if is_jpeg else None
    if size is not None and mode != "unchanged" and (min_height > 0 or min_width > 0):
        need = max(min_height, min_width, 1)
        factor = min(size) / need  # orientation-proof: compare the short side with the larger need
        if factor >= min_factor:
            reduction = max(r for r in (1, 2, 4, 8) if r <= factor)
    if mode == "unchanged":
        flags = cv2.IMREAD_UNCHANGED
    elif reduction > 1:
        flags = (_REDUCED_FLAGS_GRAY if mode == "gray" else _REDUCED_FLAGS_COLOR)[reduction]
    else:
        flags = cv2.IMREAD_GRAYSCALE if mode == "gray" else cv2.IMREAD_COLOR
    image = cv2.imdecode(buffer, flags)
    if image is None or image.size == 0:
        raise _corrupt(buffer, jpeg_error)
    full = size if size is not None else (image.shape[0] * reduction, image.shape[1] * reduction)
    if mode == "rgba":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    elif mode == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image, full


def decode_image(
    data: Any,
    color: bool = True,
    min_height: int = 0,
    min_width: int = 0,
    min_factor: float = 2,
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, anything OpenCV reads) to a uint8 array.

    JPEGs are decoded with libjpeg-turbo through ``simplejpeg`` when it is installed (OpenCV otherwise).
    When the image is at least ``min_factor`` times larger than ``min_height`` x ``min_width`` it is decoded
    at reduced scale in the DCT domain (both faster and a proper low-pass filter), never below
    ``min_height`` / ``min_width``. With the defaults ``min_height = min_width = 0`` the image is decoded at
    full size. EXIF orientation is not applied to JPEGs decoded by ``simplejpeg``.

    Args:
        data: encoded image as ``bytes``, ``bytearray``, ``memoryview`` or a 1-d uint8 array.
        color: decode to 3 channels (``H x W x 3``, **RGB** order); ``False`` decodes to a single gray
            channel (``H x W``).
        min_height: smallest acceptable decoded height in pixels.
        min_width: smallest acceptable decoded width in pixels.
        min_factor: decode at reduced scale only when the image is at least this many times larger than
            needed.

    Returns:
        The decoded image, ``H x W x 3`` RGB or ``H x W`` gray, uint8.

    Raises:
        SampleError: ``data`` is not bytes-like, is empty, or cannot be decoded.
    """
    return _decode(data, "rgb" if color else "gray", min_height, min_width, min_factor)[0]


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
    sh, sw = im.shape[:2]
    channels = 1 if im.ndim == 2 else im.shape[2]
    samples = supersampling if supersampling else 1
    if method == INTERP_AREA:
        # warpAffine has no area mode; the pre-shrink below provides the area averaging
        method = INTERP_LINEAR
    if samples > 1:
        matrix = _pixel_grid(samples, samples) @ matrix
    effective, largest = _singular_values(matrix)
    if method != INTERP_NEAREST and effective < _PRESHRINK_BELOW:
        new_w = max(1, round(sw * effective))
        new_h = max(1, round(sh * effective))
        im = cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.linalg.inv(_pixel_grid(new_w / sw, new_h / sh))
        largest = _singular_values(matrix)[1]
    if channels == 3 and im.dtype == np.uint8:
        padded = _scratch("rgba", (im.shape[0], im.shape[1], 4), im.dtype) if scratch else None
        im = cv2.cvtColor(im, cv2.COLOR_RGB2RGBA, dst=padded)
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


def augmentation_row(
    color: bool = True,
    gamma_gray: float | None = None,
    gamma_color: Sequence[float] | None = None,
    contrast: float | None = None,
    noise: float | None = None,
    blur: float | None = None,
) -> np.ndarray:
    """The ``augmentation`` record row (columns :data:`AUGMENTATION_FIELDS`) for these pixel-op parameters.

    Args:
        color: the image has colour; ``gamma_color`` is only used when this is true.
        gamma_gray: gamma for all channels (``None``: 1).
        gamma_color: per-channel gammas in RGB order (``None``: no colour change).
        contrast: contrast in ``[-1, 1]`` (``None``: 0).
        noise: noise strength (``None``: 0).
        blur: blur sigma relative to the image width (``None``: 0).

    Returns:
        float32 array of shape ``(len(AUGMENTATION_FIELDS),)``.

    Raises:
        ValueError: ``gamma_color`` does not have 3 values or ``contrast`` is outside ``[-1, 1]``.
    """
    row = NEUTRAL_AUGMENTATION.copy()
    index = _FIELD_INDEX
    if gamma_gray is not None:
        row[index["gamma_gray"]] = gamma_gray
    if gamma_color is not None and color:
        values = [float(v) for v in gamma_color]
        if len(values) != 3:
            raise ValueError(f"gamma_color must have 3 values (r, g, b), got {gamma_color!r}")
        row[index["color"]] = 1.0
        row[index["gamma_r"] : index["gamma_b"] + 1] = values
    if contrast is not None:
        if not -1.0 <= float(contrast) <= 1.0:
            raise ValueError(f"contrast must be in [-1, 1], got {contrast!r}")
        row[index["contrast"]] = contrast
    if noise is not None:
        row[index["noise"]] = max(0.0, float(noise))
    if blur is not None:
        row[index["blur"]] = max(0.0, float(blur))
    return row


def randomize_image(
    im: np.ndarray,
    size: Sequence[int],
    background: Any = None,
    color: bool = True,
    angle: float = 0,
    scale: float = 1,
    shift: Sequence[float] | None = None,
    aspect: float = 1,
    hmirror: bool = False,
    vmirror: bool = False,
    interp_method: int = INTERP_LINEAR,
    gamma_gray: float | None = None,
    gamma_color: Sequence[float] | None = None,
    contrast: float | None = None,
    noise: float | None = None,
    blur: float | None = None,
    shear: float | Sequence[float] | None = None,
    is_rgb: bool = True,
    scale_mode: str = "shortest",
    supersampling: int = 0,
    gpu_augmentation: bool = False,
    do_rotate_and_resize: bool = True,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Transform ``im`` geometrically to ``size`` and apply the pixel augmentations.

    The pixel ops (gamma/colour, contrast, blur, noise) follow the shared semantics documented in
    :mod:`crumpets_lightning.data.augment.pixel_ops`.

    Args:
        im: uint8 image, ``H x W x 3`` in **RGB** order, or ``H x W`` / ``H x W x 1`` gray.
        size: ``(height, width)`` of the result.
        background: fill where no image data lands: a scalar (every channel) or one value per channel.
        color: the image is coloured; ``False`` ignores ``gamma_color``.
        angle: rotation in degrees, counter-clockwise.
        scale: zoom; 1 fits the image to ``size`` per ``scale_mode``, 2 doubles its side lengths.
        shift: relative ``(x, y)`` in ``[-1, 1]``; see :mod:`crumpets_lightning.data.augment.augmentation`.
        aspect: aspect ratio change (x stretched by ``sqrt(aspect)``, y shrunk by it).
        hmirror: mirror left/right.
        vmirror: mirror up/down.
        interp_method: OpenCV interpolation flag; bilinear by default.
        gamma_gray: gamma for all channels (< 1 brightens).
        gamma_color: per-channel gammas ``(r, g, b)``.
        contrast: contrast in ``[-1, 1]``.
        noise: noise strength (std ``noise * 255``).
        blur: Gaussian sigma relative to the image width.
        shear: number (gradient of the horizontal edges) or pair ``(x, y)``.
        is_rgb: ``True`` adds camera-sensor noise (less in green) to 3-channel images; else equal noise.
        scale_mode: ``"shortest"`` (fill, crop the excess) or ``"longest"`` (fit, background around).
        supersampling: see :func:`rotate_and_resize`.
        gpu_augmentation: skip the pixel ops (a GPU ``Randomizer`` applies them).
        do_rotate_and_resize: apply the geometric transform; ``False`` keeps ``im``'s geometry.
        rng: generator for the noise; a fixed-seed one when ``None``.

    Returns:
        The randomized uint8 image, same channel layout as ``im``.
    """
    if do_rotate_and_resize:
        out = rotate_and_resize(
            im, angle, size, scale, aspect, shift, interp_method, background, hmirror, vmirror, shear, scale_mode,
            supersampling,
        )  # fmt: skip
    else:
        out = im.copy()
    if gpu_augmentation:
        return out
    row = augmentation_row(color, gamma_gray, gamma_color, contrast, noise, blur)
    generator = rng if rng is not None else np.random.default_rng(0)
    return apply_pixel_ops(out, row, generator, is_rgb=is_rgb)
