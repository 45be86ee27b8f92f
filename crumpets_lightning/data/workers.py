"""Ready-made workers for images: classification, dense prediction (FCN), segmentation and saliency.

Every image worker, per sample:

1. draws augmentation parameters from its ``image_rng`` with the sample's generator ``self.rng``, then lets
   the fixed ``image_params`` override them;
2. decodes the encoded image (at reduced scale when it is much larger than needed), in colour for a
   3-channel ``image`` buffer and in gray for a 1-channel one;
3. applies the whole geometric transform with one affine warp (see
   :mod:`crumpets_lightning.data.augmentation`);
4. writes the drawn pixel-op values to the ``augmentation`` buffer and applies those ops on the CPU, unless
   ``gpu_augmentation`` is set (then a ``Randomizer`` applies them on the GPU from that buffer);
5. writes the image as CHW RGB into the ``image`` buffer.

Buffer specs are ``(shape, dtype[, fill_value])``; images are ``(channels, height, width)``. The image
buffer's fill value is the background where no image data lands (a scalar colours every channel).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crumpets_lightning.data.augmentation import (
    INTERP_LINEAR,
    INTERP_NEAREST,
    _decode,
    _pixel_grid,
    augmentation_row,
    make_transform,
    randomize_image,
    rotate_and_resize,
)
from crumpets_lightning.data.augmentation_record import AUGMENTATION_SPEC
from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.pixel_ops import apply_pixel_ops
from crumpets_lightning.data.rng import RNG, NoRNG
from crumpets_lightning.data.worker import BufferSpec, BufferWorker

__all__ = ["ClassificationWorker", "FCNWorker", "ImageWorker", "SegmentationWorker"]

_RANDOMIZE_KEYS = frozenset(inspect.signature(randomize_image).parameters) - {"im", "size", "rng"}
_GEOMETRY_KEYS = frozenset({"angle", "scale", "shift", "aspect", "hmirror", "vmirror", "shear", "scale_mode"})
_PIXEL_KEYS = frozenset({"gamma_gray", "gamma_color", "contrast", "noise", "blur"})
# Decode at reduced scale only when at least this many times larger than needed.
_REDUCE_MIN_FACTOR = 2.0


def _check_params(name: str, params: Mapping[str, Any] | None, extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"`{name}` must be a dict of randomize_image parameters, got {type(params).__name__}")
    unknown = set(params) - _RANDOMIZE_KEYS - extra
    if unknown:
        raise ValueError(f"`{name}` has unknown keys {sorted(unknown)}; allowed: {sorted(_RANDOMIZE_KEYS | extra)}")
    return dict(params)


def _check_image_spec(name: str, spec: BufferSpec) -> tuple[int, int, int]:
    shape = spec[0]
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"`{name}` buffer shape must be (channels, height, width) with 1 or 3 channels, got {shape}")
    return shape[0], shape[1], shape[2]


def _fill_values(spec: BufferSpec) -> list[float]:
    """The spec's fill value as a scalar list or one value per channel (RGB order)."""
    return [float(v) for v in np.asarray(spec[2]).ravel()]


def _needed_source(params: Mapping[str, Any], height: int, width: int) -> tuple[int, int]:
    """Smallest decoded size that keeps the warp from upsampling beyond the source's own resolution."""
    scale = float(params.get("scale", 1) or 1)
    aspect = float(params.get("aspect", 1) or 1)
    shear = params.get("shear") or 0
    shear_amount = float(np.max(np.abs(shear))) if np.ndim(shear) else abs(float(shear))
    stretch = max(math.sqrt(aspect), 1 / math.sqrt(aspect)) * (1 + shear_amount)
    samples = int(params.get("supersampling", 0) or 1)
    factor = scale * stretch * samples
    return math.ceil(height * factor), math.ceil(width * factor)


def _field(sample: Mapping[str, Any], key: str, sample_key: object) -> Any:
    if not isinstance(sample, Mapping):
        raise SampleError(f"expected the sample to be a dict, got {type(sample).__name__}", sample_key)
    if key not in sample:
        raise SampleError(f"missing field {key!r}; the sample has fields {sorted(map(str, sample))}", sample_key)
    return sample[key]


def _from_unit(size: Sequence[int]) -> np.ndarray:
    """3x3 map from unit coordinates ``(x + 0.5) / W`` of an ``H x W`` image to its pixel coordinates."""
    height, width = float(size[0]), float(size[1])
    return np.array([[width, 0.0, -0.5], [0.0, height, -0.5], [0.0, 0.0, 1.0]])


def _to_chw(im: np.ndarray, bgr: bool) -> np.ndarray:
    """HWC (or HW) to a CHW view, BGR channels reversed to RGB."""
    if im.ndim == 2:
        return im[None]
    chw = im.transpose(2, 0, 1)
    return chw[::-1] if bgr and chw.shape[0] == 3 else chw


class ImageWorker(BufferWorker):
    """Worker for images of any kind: decodes ``sample["image"]`` and writes the ``image`` buffer.

    Also writes the ``augmentation`` buffer (the drawn pixel-op values, see
    :mod:`crumpets_lightning.data.augmentation_record`).

    Args:
        image: image buffer spec ``((channels, height, width), dtype[, fill_value])``; 3 channels decode in
            colour (RGB), 1 channel in gray. The fill value is the background colour.
        image_params: fixed ``randomize_image`` parameters that override random ones (e.g.
            ``{"scale_mode": "longest"}``).
        image_rng: :class:`~crumpets_lightning.data.rng.RNG` drawing the augmentation; none by default.
        gpu_augmentation: leave the pixel ops to a GPU ``Randomizer`` (their values are still recorded).
        **kwargs: further buffers, ``key=(shape, dtype[, fill_value])``.

    Raises:
        ValueError: the image spec is not CHW with 1 or 3 channels, or ``image_params`` has unknown keys.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(gpu_augmentation=gpu_augmentation, **kwargs)
        self.add_buffer("image", image)
        self.add_buffer("augmentation", AUGMENTATION_SPEC)
        _check_image_spec("image", self._buffer_specs["image"])
        self.add_params("image", _check_params("image_params", image_params))
        if image_rng is None:
            image_rng = NoRNG()
        if not isinstance(image_rng, RNG) and not callable(image_rng):
            raise TypeError(f"`image_rng` must be an RNG (e.g. MixtureRNG), got {type(image_rng).__name__}")
        self.image_rng = image_rng

    def draw_params(self, key: str = "image") -> dict[str, Any]:
        """Draw random parameters for buffer ``key`` from ``self.rng``; fixed params of ``key`` override them."""
        _, height, width = _check_image_spec(key, self._buffer_specs[key])
        params = dict(self.image_rng((height, width), self.rng))
        params.update(self.params.get(key, {}))
        return params

    def prepare_image(
        self,
        data: Any,
        buffers: dict[str, np.ndarray],
        params: Mapping[str, Any],
        key: str = "image",
    ) -> np.ndarray:
        """Decode ``data``, transform it with ``params`` and write buffer ``key`` (and ``augmentation``).

        Args:
            data: encoded image bytes.
            buffers: the sample's buffers.
            params: ``randomize_image`` parameters.
            key: the image buffer to write.

        Returns:
            The 3x3 matrix from *unit* source coordinates to buffer pixels: a source pixel ``(x, y)`` of an
            image of size ``W x H`` has unit coordinates ``((x + 0.5) / W, (y + 0.5) / H)``. Any other image
            of the same scene (a target map at another resolution) can be aligned with it.

        Raises:
            SampleError: the image cannot be decoded or a parameter is invalid.
        """
        channels, height, width = _check_image_spec(key, self._buffer_specs[key])
        need_h, need_w = _needed_source(params, height, width)
        try:
            im, _ = _decode(data, "color" if channels == 3 else "gray", need_h, need_w, _REDUCE_MIN_FACTOR)
        except SampleError as error:
            raise SampleError(f"field {key!r}: {error.message}", self.sample_key) from None
        matrix = self._write_decoded(im, buffers, params, key)
        return matrix @ _from_unit(im.shape[:2])

    def _write_decoded(
        self, im: np.ndarray, buffers: dict[str, np.ndarray], params: Mapping[str, Any], key: str
    ) -> np.ndarray:
        """Warp a decoded (BGR or gray) image into buffer ``key``; returns the pixel-coordinate matrix."""
        spec = self._buffer_specs[key]
        color = spec[0][0] == 3
        try:
            matrix, out = self._warp(im, params, spec, bgr=color)
            row = augmentation_row(
                bool(params.get("color", True)) and color, params.get("gamma_gray"), params.get("gamma_color"),
                params.get("contrast"), params.get("noise"), params.get("blur"),
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            raise SampleError(f"bad augmentation parameters for {key!r}: {error}", self.sample_key) from None
        if key == "image" and "augmentation" in buffers:
            buffers["augmentation"][...] = row
        if not (self.gpu_augmentation or params.get("gpu_augmentation", False)):
            out = apply_pixel_ops(out, row, self.rng, is_rgb=bool(params.get("is_rgb", True)), bgr=color)
        buffers[key][...] = _to_chw(out, bgr=color)
        return matrix

    def _warp(
        self, im: np.ndarray, params: Mapping[str, Any], spec: BufferSpec, bgr: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One warp of ``im`` to the spec's size; returns the matrix and the HWC result."""
        _, height, width = spec[0]
        matrix = make_transform(
            im.shape[:2],
            (height, width),
            params.get("angle", 0),
            params.get("scale", 1),
            params.get("aspect", 1),
            params.get("shift"),
            bool(params.get("hmirror", False)),
            bool(params.get("vmirror", False)),
            params.get("shear"),
            params.get("scale_mode", "shortest"),
        )
        background = params.get("background")
        if background is None:
            background = _fill_values(spec)
        if not params.get("do_rotate_and_resize", True):
            if im.shape[:2] != (height, width):
                raise ValueError(
                    f"do_rotate_and_resize=False needs the image at the buffer size {(height, width)}, "
                    f"got {im.shape[:2]}"
                )
            return np.eye(3), im
        out = rotate_and_resize(
            im,
            0,
            (height, width),
            1,
            1,
            None,
            int(params.get("interp_method", INTERP_LINEAR)),
            background,
            False,
            False,
            scale_mode="shortest",
            supersampling=int(params.get("supersampling", 0)),
            bgr=bgr,
            transform=matrix,
        )
        return matrix, out

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Decode and augment ``sample["image"]`` into the ``image`` and ``augmentation`` buffers."""
        data = _field(sample, "image", self.sample_key)
        self.prepare_image(data, buffers, self.draw_params("image"), "image")


def _label_array(label: Any, spec: BufferSpec, sample_key: object) -> np.ndarray:
    shape, dtype, _ = spec
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
            info = np.iinfo(dtype)
            if np.any(value < info.min) or np.any(value > info.max):
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
        params.update(_check_params("target_image_params", target_image_params, self._extra_target_keys()))
        self.add_params("target_image", params)

    def _check_target_spec(self) -> None:
        _check_image_spec("target_image", self._buffer_specs["target_image"])

    def _extra_target_keys(self) -> frozenset[str]:
        return frozenset()

    def _target_params(self, image_params: Mapping[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in image_params.items() if k in _GEOMETRY_KEYS}
        params.update(self.params["target_image"])
        return params

    def _decode_target(self, data: Any, spec: BufferSpec) -> np.ndarray:
        channels = spec[0][0]
        if isinstance(data, np.ndarray) and data.ndim in (2, 3) and data.dtype.kind in "biuf":
            im = data
        else:
            try:
                im, _ = _decode(data, "color" if channels == 3 else "gray")
            except SampleError as error:
                raise SampleError(f"field 'target_image': {error.message}", self.sample_key) from None
        return im

    def _write_target(
        self,
        target: np.ndarray,
        buffers: dict[str, np.ndarray],
        params: Mapping[str, Any],
        unit_matrix: np.ndarray,
        target_data: Any,
    ) -> None:
        spec = self._buffer_specs["target_image"]
        matrix = self._target_matrix(unit_matrix, target.shape)
        bgr = spec[0][0] == 3 and not isinstance(target_data, np.ndarray)
        channels, height, width = spec[0]
        background = params.get("background")
        if background is None:
            background = _fill_values(spec)
        out = rotate_and_resize(
            target, 0, (height, width), 1, 1, None, int(params.get("interp_method", INTERP_LINEAR)), background,
            False, False, supersampling=int(params.get("supersampling", 0)), bgr=bgr, transform=matrix,
        )  # fmt: skip
        if out.ndim == 3 and out.shape[2] != channels:
            if channels == 1:
                out = out[:, :, :1]
            else:
                raise SampleError(
                    f"field 'target_image' has {out.shape[2]} channels but the target buffer has {channels}",
                    self.sample_key,
                )
        if any(k in params for k in _PIXEL_KEYS) and out.dtype == np.uint8:
            row = augmentation_row(
                channels == 3, params.get("gamma_gray"), params.get("gamma_color"), params.get("contrast"),
                params.get("noise"), params.get("blur"),
            )  # fmt: skip
            out = apply_pixel_ops(out, row, self.rng, bgr=bgr)
        buffers["target_image"][...] = _to_chw(out, bgr=bgr)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        """Write the augmented image and the identically transformed target image."""
        data = _field(sample, "image", self.sample_key)
        target_data = _field(sample, "target_image", self.sample_key)
        params = self.draw_params("image")
        target = self._decode_target(target_data, self._buffer_specs["target_image"])
        unit_matrix = self.prepare_image(data, buffers, params, "image")
        self._write_target(target, buffers, self._target_params(params), unit_matrix, target_data)

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
            im, _ = _decode(data, "unchanged")
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
        params: Mapping[str, Any],
        unit_matrix: np.ndarray,
        target_data: Any,
    ) -> None:
        spec = self._buffer_specs["target_image"]
        _, height, width = spec[0]
        matrix = self._target_matrix(unit_matrix, target.shape)
        background = params.get("background")
        if background is None:
            background = _fill_values(spec)
        out = rotate_and_resize(
            target, 0, (height, width), 1, 1, None, int(params.get("interp_method", INTERP_NEAREST)), background,
            False, False, supersampling=int(params.get("supersampling", 1)), transform=matrix,
        )  # fmt: skip
        buffers["target_image"][...] = out.reshape(height, width)[None]
