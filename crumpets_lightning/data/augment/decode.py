"""Decoding encoded images (JPEG, PNG, anything OpenCV reads), with a pixel limit read from the header.

JPEGs are decoded with libjpeg-turbo through ``simplejpeg`` when it is installed (OpenCV otherwise), at
reduced scale in the DCT domain when much larger than needed.

Decompression bombs: before anything is decoded, :func:`image_size` reads the image's size from its header
(JPEG start-of-frame, PNG ``IHDR``, GIF logical screen, BMP ``BITMAPINFOHEADER``, WebP ``VP8``/``VP8L``/
``VP8X``; a few hundred bytes at most) and an image with more than ``max_pixels`` pixels (default
:data:`DEFAULT_MAX_PIXELS`, 100 megapixels, well above real photos) raises a
:class:`~crumpets_lightning.data.errors.SampleError` at once: no memory is allocated for it, and
``skip_bad_samples`` skips it like any bad sample. The limit counts the stored (full-size) pixels. Formats
without a cheap header parse here (TIFF, ...) rely on OpenCV's own limit (environment variable
``CV_IO_MAX_IMAGE_PIXELS``, 2**30 by default).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

try:
    import simplejpeg
except ImportError:  # pragma: no cover - optional fast JPEG decoder
    simplejpeg = None

from crumpets_lightning.data.errors import SampleError

__all__ = ["DEFAULT_MAX_PIXELS", "decode_image", "image_size"]

#: Default limit on the pixels of an image to decode (100 megapixels).
DEFAULT_MAX_PIXELS = 100_000_000

_REDUCED_FLAGS_COLOR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_FLAGS_GRAY = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
# JPEG start-of-frame markers carry the image size (all SOFn except DHT, JPG and DAC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode like :func:`decode_image`, returning the image and the full (undecoded) ``(height, width)``.

    ``mode``: ``"rgba"`` (``H x W x 4``, the fastest input for the warp), ``"rgb"``, ``"gray"`` (``H x W``) or
    ``"unchanged"`` (label maps: OpenCV's ``IMREAD_UNCHANGED``, never reduced, channels as stored).
    ``fast_dct`` uses libjpeg-turbo's fast integer IDCT (about 5 % faster; pixel values differ by about one
    level on average) when ``simplejpeg`` decodes; ``fast_upsample`` its simple chroma upsampling (about 6 %
    faster; about half a level more difference on average after a downscaling warp). ``max_pixels``: see
    :func:`decode_image`.
    """
    buffer = _to_buffer(data)
    is_jpeg = buffer.size > 3 and buffer[0] == 0xFF and buffer[1] == 0xD8
    # the header parse in Python is cheaper than simplejpeg's (which sets up a whole decompressor)
    header = _jpeg_size(data if isinstance(data, bytes) else buffer.data) if is_jpeg else None
    if max_pixels is not None:
        known = header if is_jpeg else image_size(data if isinstance(data, bytes) else buffer.data)
        if known is not None:
            _check_pixels(known, max_pixels)
    jpeg_error = ""
    if is_jpeg and simplejpeg is not None and mode != "unchanged":
        colorspace = {"rgba": "RGBA", "rgb": "RGB", "gray": "GRAY"}[mode]
        known = header
        if known is None:  # our marker walk found no size: ask libjpeg-turbo
            try:
                height, width = simplejpeg.decode_jpeg_header(buffer)[:2]
            except ValueError as error:
                jpeg_error = f"libjpeg-turbo: {error}"
            else:
                known = (int(height), int(width))
                if max_pixels is not None:
                    _check_pixels(known, max_pixels)
        if known is not None:
            try:
                image = simplejpeg.decode_jpeg(
                    buffer,
                    colorspace,
                    fastdct=fast_dct,
                    fastupsample=fast_upsample,
                    min_height=int(min_height),
                    min_width=int(min_width),
                    min_factor=float(min_factor),
                )
                return (image[:, :, 0] if mode == "gray" else image), known
            except ValueError as error:
                # e.g. CMYK JPEGs or recoverable damage: OpenCV may still read it; report both if not
                jpeg_error = f"libjpeg-turbo: {error}"
    reduction = 1
    size = header
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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
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
        max_pixels: refuse images with more pixels than this (read from the header before decoding;
            see the module docstring); ``None``: no limit.

    Returns:
        The decoded image, ``H x W x 3`` RGB or ``H x W`` gray, uint8.

    Raises:
        SampleError: ``data`` is not bytes-like, is empty, cannot be decoded, or has more than ``max_pixels``
            pixels.
        ValueError: ``max_pixels`` is not a positive int or ``None``.
    """
    limit = _check_max_pixels(max_pixels)
    return _decode(data, "rgb" if color else "gray", min_height, min_width, min_factor, max_pixels=limit)[0]


def _png_size(data: Any) -> tuple[int, int] | None:
    # 8-byte signature, then the IHDR chunk: length (4), "IHDR", width (4, big-endian), height (4)
    if len(data) < 24 or bytes(data[:8]) != b"\x89PNG\r\n\x1a\n" or bytes(data[12:16]) != b"IHDR":
        return None
    return int.from_bytes(bytes(data[20:24]), "big"), int.from_bytes(bytes(data[16:20]), "big")


def _gif_size(data: Any) -> tuple[int, int] | None:
    if len(data) < 10 or bytes(data[:6]) not in (b"GIF87a", b"GIF89a"):
        return None
    return int.from_bytes(bytes(data[8:10]), "little"), int.from_bytes(bytes(data[6:8]), "little")


def _bmp_size(data: Any) -> tuple[int, int] | None:
    if len(data) < 26 or bytes(data[:2]) != b"BM":
        return None
    header = int.from_bytes(bytes(data[14:18]), "little")
    if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return int.from_bytes(bytes(data[20:22]), "little"), int.from_bytes(bytes(data[18:20]), "little")
    width = int.from_bytes(bytes(data[18:22]), "little", signed=True)
    height = int.from_bytes(bytes(data[22:26]), "little", signed=True)  # negative: stored top-down
    return abs(height), abs(width)


def _webp_size(data: Any) -> tuple[int, int] | None:
    if len(data) < 30 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WEBP":
        return None
    chunk = bytes(data[12:16])
    if chunk == b"VP8X":  # canvas size minus one, 24 bits each
        width = int.from_bytes(bytes(data[24:27]), "little") + 1
        return int.from_bytes(bytes(data[27:30]), "little") + 1, width
    if chunk == b"VP8L":  # signature byte, then 14 bits of width - 1 and 14 of height - 1
        bits = int.from_bytes(bytes(data[21:25]), "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 ":  # frame tag (3), start code (3), 14-bit width and height
        return (
            int.from_bytes(bytes(data[28:30]), "little") & 0x3FFF,
            int.from_bytes(bytes(data[26:28]), "little") & 0x3FFF,
        )
    return None


def image_size(data: Any) -> tuple[int, int] | None:
    """``(height, width)`` of an encoded JPEG, PNG, GIF, BMP or WebP image, read from its header only.

    Args:
        data: encoded image as ``bytes``, ``bytearray``, ``memoryview`` or a 1-d uint8 array.

    Returns:
        The size, or ``None`` when the format is not one of those or the header is cut short.

    Example::

        >>> import cv2, numpy as np
        >>> image_size(cv2.imencode(".png", np.zeros((3, 5), np.uint8))[1])
        (3, 5)
    """
    view = data.data if isinstance(data, np.ndarray) else data
    if len(view) < 4:
        return None
    first = view[0]
    if first == 0xFF:
        return _jpeg_size(view)
    if first == 0x89:
        return _png_size(view)
    if first == 0x47:  # "G"
        return _gif_size(view)
    if first == 0x42:  # "B"
        return _bmp_size(view)
    if first == 0x52:  # "R"
        return _webp_size(view)
    return None


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise SampleError(
            f"image is {size[1]}x{size[0]} = {size[0] * size[1] / 1e6:.1f} megapixels, above the limit "
            f"max_pixels={max_pixels} ({max_pixels / 1e6:g} megapixels); it was not decoded (a decompression "
            "bomb?). Raise max_pixels (a worker / decode_image argument) if such images are expected, or "
            "skip such samples with skip_bad_samples=True"
        )


def _check_max_pixels(max_pixels: Any) -> int | None:
    """Validate a ``max_pixels`` argument (a positive int or ``None`` for no limit).

    Raises:
        ValueError: anything else (the message names the value).
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int (pixels) or None for no limit, got {max_pixels!r}")
    return int(max_pixels)
