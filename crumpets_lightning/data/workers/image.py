"""Ready-made workers for images: classification, dense prediction (FCN), segmentation and saliency.

Every image worker, per sample:

1. draws augmentation parameters from its ``image_rng`` with the sample's generator ``self.rng``, then lets
   the fixed ``image_params`` override them;
2. decodes the encoded image (at reduced scale when it is much larger than needed; JPEGs with
   libjpeg-turbo's fast integer IDCT), in colour for a 3-channel ``image`` buffer and in gray for a
   1-channel one;
3. applies the whole geometric transform with one affine warp (see
   :mod:`crumpets_lightning.data.augment.augmentation`);
4. writes the drawn pixel-op values to the ``augmentation`` buffer and applies those ops on the CPU, unless
   ``gpu_augmentation`` is set (then a ``Randomizer`` applies them on the GPU from that buffer);
5. writes the image as CHW RGB into the ``image`` buffer.

Buffer specs are ``(shape, dtype[, fill_value])``; images are ``(channels, height, width)``. The image
buffer's fill value is the background where no image data lands (a scalar colours every channel).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.data.augment.augmentation import (
    _INTERPOLATIONS,
    INTERP_NEAREST,
    _background_tuple,
    _pixel_grid,
    _warp,
    make_transform,
    rotate_and_resize,
)
from crumpets_lightning.data.augment.decode import DEFAULT_MAX_PIXELS, _check_max_pixels, _decode
from crumpets_lightning.data.augment.params import AugmentationParams, check_param_dict
from crumpets_lightning.data.augment.pixel_ops import apply_pixel_ops, apply_pixel_ops_chw, noise_pool
from crumpets_lightning.data.augment.record import AUGMENTATION_SPEC, augmentation_row
from crumpets_lightning.data.augment.rng import RNG, MixtureRNG, NoRNG
from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.workers.base import BufferSpec, BufferWorker

__all__ = ["ClassificationWorker", "FCNWorker", "ImageWorker", "SaliencyWorker", "SegmentationWorker"]

_GEOMETRY_KEYS = frozenset({"angle", "scale", "shift", "aspect", "hmirror", "vmirror", "shear", "scale_mode"})
_PIXEL_KEYS = frozenset({"gamma_gray", "gamma_color", "contrast", "noise", "blur"})
# Decode at reduced scale only when at least this many times larger than needed.
_REDUCE_MIN_FACTOR = 2.0
# libjpeg-turbo's fast integer IDCT: ~5 % faster decoding, about one gray level of difference on average,
# far below the augmentation's own changes.
_FAST_DCT = True
# libjpeg-turbo's simple chroma upsampling (pixel replication instead of a triangle filter): ~6 % faster
# decoding; the chroma planes are at half resolution anyway and the warp usually shrinks the image. After a
# 500x375 -> 224x224 warp the mean difference to an exact decode grows from ~0.95 (fast IDCT) to ~1.4 levels.
_FAST_UPSAMPLE = True
# Warp through reusable per-thread arrays (the result is written to the buffers at once): ~3 % faster.
_SCRATCH = True


# what an RNG's draw is called in the error when it has a key that is no parameter
_DRAW_NAME = "the dict drawn by image_rng (merged with image_params)"


def _check_params(name: str, params: Mapping[str, Any] | AugmentationParams | None) -> dict[str, Any]:
    """Fixed parameters as a checked dict; an ``AugmentationParams`` fixes every parameter."""
    if params is None:
        return {}
    if isinstance(params, AugmentationParams):
        return params.to_dict()
    return check_param_dict(params, f"`{name}`")


def _check_image_spec(name: str, spec: BufferSpec) -> tuple[int, int, int]:
    shape = spec[0]
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"`{name}` buffer shape must be (channels, height, width) with 1 or 3 channels, got {shape}")
    return shape[0], shape[1], shape[2]


def _fill_values(spec: BufferSpec) -> list[float]:
    """The spec's fill value as a scalar list or one value per channel (RGB order)."""
    return [float(v) for v in np.asarray(spec[2]).ravel()]


def _spec_border(spec: BufferSpec) -> tuple[float, float, float, float]:
    """OpenCV border value of the spec's fill value (cached on the fill array, which specs share)."""
    fill = spec[2]
    known = _BORDERS_BY_ID.get(id(fill))  # per sample: the same fill array as last time, skip the key
    if known is not None and known[0] is fill and known[1] == spec[0][0]:
        return known[2]
    key = (fill.tobytes(), fill.dtype.str, spec[0][0])
    border = _BORDERS.get(key)
    if border is None:
        border = _BORDERS[key] = _background_tuple(_fill_values(spec), spec[0][0])
    _BORDERS_BY_ID[id(fill)] = (fill, spec[0][0], border)  # holds ``fill``, so its id stays unique
    return border


_BORDERS: dict[tuple[bytes, str, int], tuple[float, float, float, float]] = {}
_BORDERS_BY_ID: dict[int, tuple[np.ndarray, int, tuple[float, float, float, float]]] = {}


def _needed_source(params: AugmentationParams, height: int, width: int) -> tuple[int, int]:
    """Smallest decoded size that keeps the warp from upsampling beyond the source's own resolution."""
    scale = float(params.scale or 1)
    aspect = float(params.aspect or 1)
    shear = params.shear or 0
    shear_amount = max(abs(float(v)) for v in shear) if isinstance(shear, (tuple, list)) else abs(float(shear))
    stretch = max(math.sqrt(aspect), 1 / math.sqrt(aspect)) * (1 + shear_amount)
    samples = int(params.supersampling or 1)
    factor = scale * stretch * samples
    return math.ceil(height * factor), math.ceil(width * factor)


def _field(sample: Mapping[str, Any], key: str, sample_key: object) -> Any:
    if not isinstance(sample, Mapping):
        raise SampleError(f"expected the sample to be a dict, got {type(sample).__name__}", sample_key)
    if key not in sample:
        raise SampleError(f"missing field {key!r}; the sample has fields {sorted(map(str, sample))}", sample_key)
    return sample[key]


def _decoded_extent(decoded: Sequence[int], full: Sequence[int]) -> tuple[float, float]:
    """The extent, in decoded pixels, that the full image covers.

    JPEG decoding at reduced scale uses factors of ``n / 8`` and rounds the size up, so a 427-row image
    decoded at 1/8 has 54 rows of which only 53.375 are image. Geometry must use the exact extent, or
    targets and gaze points drift by up to a pixel against the image.
    """
    height, width = float(full[0]), float(full[1])
    if (int(decoded[0]), int(decoded[1])) == (int(height), int(width)) or width <= 0:
        return float(decoded[0]), float(decoded[1])
    factor = round(8 * decoded[1] / width) / 8
    return height * factor, width * factor


def _from_unit(size: Sequence[float]) -> np.ndarray:
    """3x3 map from unit coordinates ``(x + 0.5) / W`` of an ``H x W`` image to its pixel coordinates."""
    height, width = float(size[0]), float(size[1])
    return np.array([[width, 0.0, -0.5], [0.0, height, -0.5], [0.0, 0.0, 1.0]])


def _write_chw(buffer: np.ndarray, im: np.ndarray) -> None:
    """Write an HWC (or HW) image into a CHW buffer; extra channels of ``im`` (alpha) are dropped.

    OpenCV splits straight into the buffer's planes when they are contiguous and of the same dtype.
    """
    channels = buffer.shape[0]
    if im.ndim == 2 or im.shape[2] == 1:
        buffer[0] = im.reshape(im.shape[:2])
    elif buffer.dtype == im.dtype and buffer.flags.c_contiguous:
        planes = list(buffer)
        planes.extend(np.empty(im.shape[:2], im.dtype) for _ in range(im.shape[2] - channels))
        cv2.split(im, planes)
    else:
        buffer[...] = im[:, :, :channels].transpose(2, 0, 1)


class ImageWorker(BufferWorker):
    """Worker for images of any kind: decodes ``sample["image"]`` and writes the ``image`` buffer.

    Also writes the ``augmentation`` buffer (the drawn pixel-op values and the sample's noise seed, see
    :mod:`crumpets_lightning.data.augment.record`) and appends the sample's key (``self.sample_key``: its
    ``key`` field or its index) to ``batch["key"]``, so batches can name their samples.

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``; 3 channels decode in
            colour (RGB), 1 channel in gray. The fill value is the background colour.
        image_params: fixed augmentation parameters that override random ones (e.g.
            ``{"scale_mode": "longest"}``; names and defaults:
            :class:`~crumpets_lightning.data.augment.AugmentationParams`, an instance of which fixes every
            parameter).
        image_rng: :class:`~crumpets_lightning.data.augment.rng.RNG` drawing the augmentation; none by default.
        gpu_augmentation: leave the pixel ops to a GPU ``Randomizer`` (their values are still recorded).
        max_pixels: refuse (as a bad sample) images with more pixels than this, read from the image header
            before decoding; ``None``: no limit. See :mod:`crumpets_lightning.data.augment.decode`.
        **kwargs: further buffers, ``key=(shape, dtype[, fill_value])``.

    Raises:
        ValueError: the image spec is not CHW with 1 or 3 channels, ``image_params`` has unknown keys, or
            ``max_pixels`` is not a positive int or ``None``.
        TypeError: ``image_rng`` is not an RNG.

    Example::

        >>> worker = ImageWorker(((3, 32, 32), np.uint8), image_params={"scale_mode": "longest"})
        >>> sorted(worker.buffer_specs)
        ['augmentation', 'image']
    """

    def __init__(
        self,
        image: Any,
        image_params: Mapping[str, Any] | None = None,
        image_rng: RNG | None = None,
        gpu_augmentation: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(gpu_augmentation=gpu_augmentation, **kwargs)
        self.max_pixels = _check_max_pixels(max_pixels)
        self.add_buffer("image", image)
        self.add_buffer("augmentation", AUGMENTATION_SPEC)
        _check_image_spec("image", self._buffer_specs["image"])
        self.add_params("image", _check_params("image_params", image_params))
        if image_rng is None:
            image_rng = NoRNG()
        if not isinstance(image_rng, RNG) and not callable(image_rng):
            raise TypeError(f"`image_rng` must be an RNG (e.g. MixtureRNG), got {type(image_rng).__name__}")
        self.image_rng = image_rng

    def prepare_shared(self) -> None:
        """Build the noise pool in the main process, so forked workers share it instead of each building it.

        Skipped when no noise can be added on the CPU: pixel ops left to the GPU, or neither the fixed
        ``image_params`` nor the ``image_rng`` (a :class:`~crumpets_lightning.data.augment.rng.NoRNG`, or a
        :class:`~crumpets_lightning.data.MixtureRNG` without noise) add any.
        """
        if self._may_add_noise_on_cpu():
            noise_pool()

    def _may_add_noise_on_cpu(self) -> bool:
        fixed = self.params.get("image", {})
        if self.gpu_augmentation or fixed.get("gpu_augmentation", False):
            return False
        if "noise" in fixed:
            return bool(fixed["noise"])
        rng = self.image_rng
        if isinstance(rng, NoRNG):
            return False
        if isinstance(rng, MixtureRNG):
            return rng.noise_range is not None and rng.noise_range[1] > 0 and rng.prob > 0
        return True  # any other RNG may draw noise

    def draw_params(self, key: str = "image") -> AugmentationParams:
        """Draw random parameters for buffer ``key`` from ``self.rng``; fixed params of ``key`` override them.

        Raises:
            ValueError: the RNG drew a key that is not a parameter (named in the message).
        """
        _, height, width = _check_image_spec(key, self._buffer_specs[key])
        params = dict(self.image_rng((height, width), self.rng))
        params.update(self.params.get(key, {}))
        return AugmentationParams.from_dict(params, _DRAW_NAME)

    def add_key(self, batch: dict[str, list]) -> None:
        """Append the current sample's key to ``batch["key"]`` (the ImageWorker family does it per sample)."""
        keys = batch.get("key")
        if keys is None:
            keys = batch["key"] = []
        keys.append(self.sample_key)

    def prepare_image(
        self,
        data: Any,
        buffers: dict[str, np.ndarray],
        params: AugmentationParams | Mapping[str, Any],
        key: str = "image",
    ) -> np.ndarray:
        """Decode ``data``, transform it with ``params`` and write buffer ``key`` (and ``augmentation``).

        Args:
            data: encoded image bytes.
            buffers: the sample's buffers.
            params: augmentation parameters (an ``AugmentationParams`` or a crumpets-style dict).
            key: the image buffer to write.

        Returns:
            The 3x3 matrix from *unit* source coordinates to buffer pixels: a source pixel ``(x, y)`` of an
            image of size ``W x H`` has unit coordinates ``((x + 0.5) / W, (y + 0.5) / H)``. Any other image
            of the same scene (a target map at another resolution) can be aligned with it.

        Raises:
            SampleError: the image cannot be decoded or a parameter is invalid.
        """
        params = AugmentationParams.from_dict(params)
        im, full = self._decode_for(key, data, params)
        extent = _decoded_extent(im.shape[:2], full)
        matrix = self._write_decoded(im, buffers, params, key, extent)
        return matrix @ _from_unit(extent)

    def _decode_for(self, key: str, data: Any, params: AugmentationParams) -> tuple[np.ndarray, tuple[int, int]]:
        """Decode ``data`` for buffer ``key`` (reduced when much larger than needed); also its full size."""
        channels, height, width = _check_image_spec(key, self._buffer_specs[key])
        need_h, need_w = _needed_source(params, height, width)
        try:
            # colour straight to RGBA: the warp takes 4 channels (faster SIMD) and the alpha plane is dropped
            # when the result is written, so no full-size RGB -> RGBA conversion per sample
            mode = "rgba" if channels == 3 else "gray"
            return _decode(data, mode, need_h, need_w, _REDUCE_MIN_FACTOR, _FAST_DCT, _FAST_UPSAMPLE, self.max_pixels)
        except SampleError as error:
            raise SampleError(f"field {key!r}: {error.message}", self.sample_key) from None

    def _write_decoded(
        self,
        im: np.ndarray,
        buffers: dict[str, np.ndarray],
        params: AugmentationParams,
        key: str,
        extent: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Warp a decoded (RGB, RGBA or gray) image into buffer ``key``; returns the pixel-coordinate matrix."""
        spec = self._buffer_specs[key]
        color = spec[0][0] == 3
        # the sample's noise seed (48 bits) for device-side noise, from its (seed, epoch, index) generator
        seed = self.rng.bit_generator.random_raw() >> 16
        try:
            matrix, out = self._warp(im, params, spec, extent)
            row = augmentation_row(
                bool(params.color) and color, params.gamma_gray, params.gamma_color, params.contrast, params.noise,
                params.blur, seed,
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            raise SampleError(f"bad augmentation parameters for {key!r}: {error}", self.sample_key) from None
        if key == "image" and "augmentation" in buffers:
            buffers["augmentation"][...] = row
        buffer = buffers[key]
        pixel_ops = not (self.gpu_augmentation or params.gpu_augmentation)
        is_rgb = bool(params.is_rgb)
        if pixel_ops and buffer.dtype != np.uint8:
            out = apply_pixel_ops(np.ascontiguousarray(out[..., : buffer.shape[0]]), row, self.rng, is_rgb=is_rgb)
        _write_chw(buffer, out)
        if pixel_ops and buffer.dtype == np.uint8:
            apply_pixel_ops_chw(buffer, row, self.rng, is_rgb=is_rgb)  # in place, one plane at a time
        return matrix

    def _warp(
        self, im: np.ndarray, params: AugmentationParams, spec: BufferSpec, extent: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One warp of ``im`` to the spec's size; returns the matrix and the HWC result (RGBA for colour)."""
        _, height, width = spec[0]
        matrix = make_transform(
            extent if extent is not None else im.shape[:2],
            (height, width),
            params.angle,
            params.scale,
            params.aspect,
            params.shift,
            bool(params.hmirror),
            bool(params.vmirror),
            params.shear,
            params.scale_mode,
        )
        background = params.background
        if not params.do_rotate_and_resize:
            if im.shape[:2] != (height, width):
                raise ValueError(
                    f"do_rotate_and_resize=False needs the image at the buffer size {(height, width)}, "
                    f"got {im.shape[:2]}"
                )
            return np.eye(3), im
        method = params.interp_method
        if method not in _INTERPOLATIONS:
            raise ValueError(f"interp_method must be one of the cv2.INTER_* flags {_INTERPOLATIONS}, got {method!r}")
        supersampling = params.supersampling
        if int(supersampling) != supersampling or supersampling < 0:
            raise ValueError(f"supersampling must be a non-negative int, got {supersampling!r}")
        border = _spec_border(spec) if background is None else _background_tuple(background, spec[0][0])
        return matrix, _warp(im, matrix, (height, width), int(method), border, int(supersampling), scratch=_SCRATCH)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Decode and augment ``sample["image"]`` into the ``image`` and ``augmentation`` buffers."""
        data = _field(sample, "image", self.sample_key)
        self.prepare_image(data, buffers, self.draw_params("image"), "image")
        self.add_key(batch)


@functools.lru_cache(maxsize=16)
def _int_bounds(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _label_array(label: Any, spec: BufferSpec, sample_key: object) -> Any:
    shape, dtype, _ = spec
    if type(label) is int and dtype.kind in "iu":  # the common case, checked without numpy overhead
        low, high = _int_bounds(dtype)
        if low <= label <= high:
            return label
    if label is None or isinstance(label, (str, bytes, dict)):
        raise SampleError(f"field 'label' must be a number or numeric array, got {label!r}", sample_key)
    try:
        value = np.asarray(label)
    except Exception:
        raise SampleError(f"field 'label' must be a number or numeric array, got {label!r}", sample_key) from None
    if value.dtype.kind not in "biuf":
        raise SampleError(f"field 'label' must be numeric, got {label!r} of dtype {value.dtype}", sample_key)
    if value.size not in (1, int(np.prod(shape))):
        raise SampleError(
            f"field 'label' has {value.size} values (shape {value.shape}) but the label buffer has shape {shape}",
            sample_key,
        )
    if dtype.kind in "iub":
        if value.dtype.kind == "f" and not np.all(np.isfinite(value) & (value == np.round(value))):
            raise SampleError(f"field 'label' must be integral for a {dtype} buffer, got {label!r}", sample_key)
        if dtype.kind != "b":
            low, high = _int_bounds(dtype)
            if np.any(value < low) or np.any(value > high):
                raise SampleError(
                    f"field 'label' value {label!r} does not fit the label buffer dtype {dtype}", sample_key
                )
    return value.reshape(shape) if value.size > 1 else value.reshape(())


class ClassificationWorker(ImageWorker):
    """Worker for ``(image, label)`` pairs: writes the ``image``, ``label`` and ``augmentation`` buffers.

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``.
        label: label buffer spec, e.g. ``((1,), np.int64)``; the label keeps this shape in batches.
        image_params: fixed ``randomize_image`` parameters that override random ones.
        image_rng: RNG drawing the augmentation; none by default.
        gpu_augmentation: leave the pixel ops to a GPU ``Randomizer``.
        **kwargs: further buffers.

    Example::

        >>> worker = ClassificationWorker(((3, 224, 224), np.uint8), ((1,), np.int64))
        >>> sorted(worker.buffer_specs)
        ['augmentation', 'image', 'label']
    """

    def __init__(
        self,
        image: Any,
        label: Any,
        image_params: Mapping[str, Any] | None = None,
        image_rng: RNG | None = None,
        gpu_augmentation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, image_params, image_rng, gpu_augmentation, **kwargs)
        self.add_buffer("label", label)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Write the augmented image and the label (a bad label raises; it is never replaced)."""
        data = _field(sample, "image", self.sample_key)
        label = _label_array(_field(sample, "label", self.sample_key), self._buffer_specs["label"], self.sample_key)
        self.prepare_image(data, buffers, self.draw_params("image"), "image")
        buffers["label"][...] = label
        self.add_key(batch)


class FCNWorker(ImageWorker):
    """Worker for dense prediction: ``image`` and ``target_image`` transformed with the same geometry.

    ``sample["target_image"]`` is an encoded image (or an ``H x W`` / ``H x W x C`` array, e.g. a label map
    or depth map). The target is warped with the *same* geometric parameters as the image (mapped to the
    target buffer's size, which may differ), so every target pixel stays aligned with the image. Pixel ops
    (gamma, noise, ...) are applied to the target only if ``target_image_params`` sets them.

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``.
        target_image: target buffer spec ``((channels, height, width), dtype[, fill_value])``; the fill
            value is the target's background.
        image_params: fixed parameters for the image (override random ones).
        target_image_params: parameters for the target only: ``interp_method``, ``supersampling``,
            ``background`` and pixel ops.
        image_rng: RNG drawing the augmentation.
        gpu_augmentation: leave the image's pixel ops to a GPU ``Randomizer``.
        **kwargs: further buffers.
    """

    #: Target parameters used when ``target_image_params`` does not set them.
    target_defaults: dict[str, Any] = {}

    def __init__(
        self,
        image: Any,
        target_image: Any,
        image_params: Mapping[str, Any] | None = None,
        target_image_params: Mapping[str, Any] | None = None,
        image_rng: RNG | None = None,
        gpu_augmentation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, image_params, image_rng, gpu_augmentation, **kwargs)
        self.add_buffer("target_image", target_image)
        self._check_target_spec()
        params = dict(self.target_defaults)
        params.update(_check_params("target_image_params", target_image_params))
        self.add_params("target_image", params)

    def _check_target_spec(self) -> None:
        _check_image_spec("target_image", self._buffer_specs["target_image"])

    def _target_params(self, image_params: AugmentationParams) -> AugmentationParams:
        params = {k: getattr(image_params, k) for k in _GEOMETRY_KEYS}
        params.update(self.params["target_image"])
        return AugmentationParams.from_dict(params, "`target_image_params`")

    def _decode_target(self, data: Any, spec: BufferSpec) -> np.ndarray:
        channels = spec[0][0]
        if isinstance(data, np.ndarray) and data.ndim in (2, 3) and data.dtype.kind in "biuf":
            im = data
        else:
            try:
                im, _ = _decode(data, "rgb" if channels == 3 else "gray", max_pixels=self.max_pixels)
            except SampleError as error:
                raise SampleError(f"field 'target_image': {error.message}", self.sample_key) from None
        return im

    def _write_target(
        self,
        target: np.ndarray,
        buffers: dict[str, np.ndarray],
        params: AugmentationParams,
        unit_matrix: np.ndarray,
    ) -> None:
        spec = self._buffer_specs["target_image"]
        matrix = self._target_matrix(unit_matrix, target.shape)
        channels, height, width = spec[0]
        background = params.background
        if background is None:
            background = _fill_values(spec)
        out = rotate_and_resize(
            target, 0, (height, width), 1, 1, None, int(params.interp_method), background,
            False, False, supersampling=int(params.supersampling), transform=matrix,
        )  # fmt: skip
        if out.ndim == 3 and out.shape[2] != channels:
            if channels == 1:
                out = out[:, :, :1]
            else:
                raise SampleError(
                    f"field 'target_image' has {out.shape[2]} channels but the target buffer has {channels}",
                    self.sample_key,
                )
        if any(getattr(params, k) is not None for k in _PIXEL_KEYS) and out.dtype == np.uint8:
            row = augmentation_row(
                channels == 3, params.gamma_gray, params.gamma_color, params.contrast, params.noise, params.blur
            )
            out = apply_pixel_ops(out, row, self.rng)
        _write_chw(buffers["target_image"], out)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Write the augmented image and the identically transformed target image."""
        data = _field(sample, "image", self.sample_key)
        target_data = _field(sample, "target_image", self.sample_key)
        params = self.draw_params("image")
        target = self._decode_target(target_data, self._buffer_specs["target_image"])
        unit_matrix = self.prepare_image(data, buffers, params, "image")
        self._write_target(target, buffers, self._target_params(params), unit_matrix)
        self.add_key(batch)

    def _target_matrix(self, unit_matrix: np.ndarray, target_source: tuple[int, ...]) -> np.ndarray:
        """Target-source pixels -> target-buffer pixels through the image's unit-coordinate transform."""
        image_h, image_w = self._buffer_specs["image"][0][1:]
        target_h, target_w = self._buffer_specs["target_image"][0][1:]
        to_target = _pixel_grid(target_w / image_w, target_h / image_h)
        return to_target @ unit_matrix @ np.linalg.inv(_from_unit(target_source[:2]))


class SegmentationWorker(FCNWorker):
    """Worker for segmentation: ``image`` and a label map ``target_image`` with the same geometry.

    The label map (``sample["target_image"]``: encoded PNG bytes read unchanged, or an ``H x W`` integer
    array) is warped with nearest-neighbour interpolation and no supersampling, and gets no pixel ops, so
    only label values present in the source appear in the target. Areas outside the image get the target
    spec's fill value (e.g. an ignore label such as 255). The target buffer may be uint8 or int64, shape
    ``(1, height, width)``.

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``.
        target_image: label-map buffer spec ``((1, height, width), dtype[, fill_value])``.
        image_params: fixed parameters for the image (override random ones).
        target_image_params: overrides of the target defaults ``interp_method=INTERP_NEAREST``,
            ``supersampling=1``.
        image_rng: RNG drawing the augmentation.
        gpu_augmentation: leave the image's pixel ops to a GPU ``Randomizer``.
        **kwargs: further buffers.
    """

    target_defaults: dict[str, Any] = {"interp_method": INTERP_NEAREST, "supersampling": 1}

    def _check_target_spec(self) -> None:
        shape = self._buffer_specs["target_image"][0]
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"`target_image` buffer shape must be (1, height, width) for a label map, got {shape}")

    def _decode_target(self, data: Any, spec: BufferSpec) -> np.ndarray:
        if isinstance(data, np.ndarray) and data.ndim == 2:
            if data.dtype.kind not in "biu":
                raise SampleError(
                    f"field 'target_image' must be an integer label map, got dtype {data.dtype}", self.sample_key
                )
            # OpenCV cannot warp 64-bit integers; float64 holds every label exactly
            return data.astype(np.float64) if data.dtype.itemsize > 2 else data
        if isinstance(data, np.ndarray) and data.ndim != 1:
            raise SampleError(
                f"field 'target_image' must be encoded bytes or an H x W label array, got shape {data.shape}",
                self.sample_key,
            )
        try:
            im, _ = _decode(data, "unchanged", max_pixels=self.max_pixels)
        except SampleError as error:
            raise SampleError(f"field 'target_image': {error.message}", self.sample_key) from None
        if im.ndim == 3:
            if not all(np.array_equal(im[:, :, 0], im[:, :, c]) for c in range(1, im.shape[2])):
                raise SampleError(
                    f"field 'target_image' decodes to {im.shape[2]} different channels; store label maps as "
                    "single-channel (gray) PNG",
                    self.sample_key,
                )
            im = np.ascontiguousarray(im[:, :, 0])
        return im

    def _write_target(
        self,
        target: np.ndarray,
        buffers: dict[str, np.ndarray],
        params: AugmentationParams,
        unit_matrix: np.ndarray,
    ) -> None:
        spec = self._buffer_specs["target_image"]
        _, height, width = spec[0]
        matrix = self._target_matrix(unit_matrix, target.shape)
        background = params.background
        if background is None:
            background = _fill_values(spec)
        out = rotate_and_resize(
            target, 0, (height, width), 1, 1, None, int(params.interp_method), background,
            False, False, supersampling=int(params.supersampling), transform=matrix,
        )  # fmt: skip
        buffers["target_image"][...] = out.reshape(height, width)[None]


_SALIENCY_DEFAULTS: dict[str, Any] = {
    "sample_ratio": 1.0,
    "jitter": 0.0,
    "interpolate": False,
    "blur": 0.0,
    "maxnorm": False,
}


def _experiment_points(experiment: Any, index: int, sample_key: object) -> np.ndarray:
    """``[N, 2]`` float array of ``(y, x)`` gaze points from one experiment dict."""
    if not isinstance(experiment, Mapping):
        raise SampleError(
            f"field 'experiments'[{index}] must be a dict with 'fixations' or 'locations', "
            f"got {type(experiment).__name__}",
            sample_key,
        )
    points = experiment.get("fixations")
    if points is None or len(points) == 0:
        points = experiment.get("locations")
    if points is None:
        raise SampleError(
            f"field 'experiments'[{index}] has neither 'fixations' nor 'locations' (keys: {sorted(experiment)})",
            sample_key,
        )
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise SampleError(f"field 'experiments'[{index}] points must be numbers [[y, x], ...]", sample_key) from None
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] < 2:
        raise SampleError(
            f"field 'experiments'[{index}] points must have shape [N, 2] as [[y, x], ...], got {array.shape}",
            sample_key,
        )
    return array[:, :2]


class SaliencyWorker(ImageWorker):
    """Worker for saliency prediction: an image and a saliency map built from raw gaze points.

    Samples look like ``{"image": <encoded bytes>, "experiments": [{"fixations": [[y, x], ...]}, ...]}``;
    an experiment without fixations falls back to its ``"locations"`` (raw gaze data). Points are in pixel
    coordinates of the full-size source image. They are transformed with the *same* affine matrix as the
    image (rotation, mirror, shift, ...), so they stay on the image content, then accumulated in the
    ``target_image`` buffer (its size may differ from the image's).

    ``target_image_params`` (all optional):

    - ``sample_ratio`` (1): fraction in ``(0, 1]`` of the experiments used, drawn without replacement;
    - ``jitter`` (0): Gaussian noise added to each point, std ``jitter * target size`` per axis;
    - ``interpolate`` (False): spread each point bilinearly over its 4 neighbouring pixels instead of
      adding 1 to the nearest one;
    - ``blur`` (0): Gaussian blur of the map with sigma ``blur * target width`` (zero outside the map);
    - ``maxnorm`` (False): divide the map by its maximum.

    Use a float target buffer (e.g. ``((1, 56, 56), np.float32)``); integer buffers get the map rounded
    and clipped.

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``.
        target_image: saliency map buffer spec ``((1, height, width), dtype)``.
        image_params: fixed parameters for the image (override random ones).
        target_image_params: the map parameters above.
        image_rng: RNG drawing the augmentation.
        gpu_augmentation: leave the image's pixel ops to a GPU ``Randomizer``.
        **kwargs: further buffers.

    Raises:
        ValueError: the target spec is not ``(1, height, width)`` or a map parameter is out of range.
    """

    def __init__(
        self,
        image: Any,
        target_image: Any,
        image_params: Mapping[str, Any] | None = None,
        target_image_params: Mapping[str, Any] | None = None,
        image_rng: RNG | None = None,
        gpu_augmentation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, image_params, image_rng, gpu_augmentation, **kwargs)
        self.add_buffer("target_image", target_image)
        shape = self._buffer_specs["target_image"][0]
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"`target_image` buffer shape must be (1, height, width) for a saliency map, got {shape}")
        params = dict(_SALIENCY_DEFAULTS)
        if target_image_params is not None:
            unknown = set(target_image_params) - set(_SALIENCY_DEFAULTS)
            if unknown:
                raise ValueError(
                    f"`target_image_params` has unknown keys {sorted(unknown)}; allowed: {sorted(_SALIENCY_DEFAULTS)}"
                )
            params.update(target_image_params)
        if not 0.0 < float(params["sample_ratio"]) <= 1.0:
            raise ValueError(f"`sample_ratio` must be in (0, 1], got {params['sample_ratio']!r}")
        for name in ("jitter", "blur"):
            if not float(params[name]) >= 0.0:
                raise ValueError(f"`{name}` must be non-negative, got {params[name]!r}")
        self.add_params("target_image", params)

    def _points(self, sample: Mapping[str, Any]) -> np.ndarray:
        experiments = _field(sample, "experiments", self.sample_key)
        if not isinstance(experiments, (list, tuple)):
            raise SampleError(
                f"field 'experiments' must be a list of experiment dicts, got {type(experiments).__name__}",
                self.sample_key,
            )
        ratio = float(self.params["target_image"]["sample_ratio"])
        chosen: Sequence[int] = range(len(experiments))
        if ratio < 1.0 and experiments:
            count = max(1, round(ratio * len(experiments)))
            chosen = sorted(self.rng.choice(len(experiments), size=count, replace=False).tolist())
        parts = [_experiment_points(experiments[i], i, self.sample_key) for i in chosen]
        return np.concatenate(parts) if parts else np.zeros((0, 2))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Write the augmented image and the saliency map of its transformed gaze points."""
        data = _field(sample, "image", self.sample_key)
        points = self._points(sample)
        params = self.draw_params("image")
        im, source = self._decode_for("image", data, params)
        extent = _decoded_extent(im.shape[:2], source)
        matrix = self._write_decoded(im, buffers, params, "image", extent)
        image_h, image_w = self._buffer_specs["image"][0][1:]
        _, target_h, target_w = self._buffer_specs["target_image"][0]
        # full-size source pixels -> decoded pixels -> image buffer -> target map
        to_decoded = _from_unit(extent) @ np.linalg.inv(_from_unit(source))
        full = _pixel_grid(target_w / image_w, target_h / image_h) @ matrix @ to_decoded
        xy = points[:, ::-1]
        mapped = xy @ full[:2, :2].T + full[:2, 2]
        buffers["target_image"][...] = self._render(mapped, target_h, target_w)
        self.add_key(batch)

    def _render(self, xy: np.ndarray, height: int, width: int) -> np.ndarray:
        params = self.params["target_image"]
        jitter = float(params["jitter"])
        if jitter > 0 and len(xy):
            xy = xy + self.rng.standard_normal(xy.shape) * (jitter * np.array([width, height]))
        out: np.ndarray = np.zeros((height, width), dtype=np.float64)
        if params["interpolate"]:
            base = np.floor(xy).astype(np.int64)
            frac = xy - base
            for dx in (0, 1):
                for dy in (0, 1):
                    x = base[:, 0] + dx
                    y = base[:, 1] + dy
                    weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
                    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
                    np.add.at(out, (y[keep], x[keep]), weight[keep])
        else:
            cells = np.rint(xy).astype(np.int64) if len(xy) else np.zeros((0, 2), dtype=np.int64)
            keep = (cells[:, 0] >= 0) & (cells[:, 0] < width) & (cells[:, 1] >= 0) & (cells[:, 1] < height)
            np.add.at(out, (cells[keep, 1], cells[keep, 0]), 1.0)
        sigma = float(params["blur"]) * width
        if sigma > 0:
            radius = max(1, math.ceil(3 * sigma))
            out = cv2.GaussianBlur(out, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
        if params["maxnorm"]:
            peak = out.max()
            if peak > 0:
                out /= peak
        dtype = self._buffer_specs["target_image"][1]
        if dtype.kind in "iub":
            info = np.iinfo(dtype) if dtype.kind != "b" else None
            out = np.rint(out) if info is None else np.clip(np.rint(out), info.min, info.max)
        return out[None].astype(dtype)
