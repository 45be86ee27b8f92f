"""The fused Triton kernel behind :func:`~crumpets_lightning.data.augment.batched.randomize_batch` on CUDA.

One program computes a ``BLOCK_H x BLOCK_W`` tile of one sample's channel. It reads the uint8 pixels it
needs (reflect-101 indices, so the halo needs no padding), looks them up in the sample's gamma/contrast
table, blurs, adds the counter-based noise, clips, rounds half to even and stores uint8:

- a sample that is not blurred costs one read and one table lookup per pixel;
- blur radii up to ``HALO`` are separable: the horizontal pass runs over the tile's rows plus ``HALO`` rows
  above and below (``2 * (2 r + 1)`` reads per output pixel), the vertical pass is one small matrix product
  with the banded matrix of the sample's weights (``tl.dot`` in IEEE float32);
- wider radii (sigma above ``HALO / 3`` pixels, rare) read every tap of the 2-d kernel.

The batch is read from memory once (the neighbourhood comes from the cache) and written once; nothing waits
for the host, and no float copy of the batch exists. The per-sample inputs (tables, blur radius and
``1 / (2 sigma^2)``, noise std and key) come from
:func:`~crumpets_lightning.data.augment.batched.sample_params`, the same tensors the torch path uses, and
the arithmetic follows the torch path's formulas, so the two agree to within one level (float rounding of
transcendental functions, summation order, fused multiply-adds), with the same noise.

Triton is optional: :func:`available` says whether it imported. Tests run this kernel on CPU tensors with
``TRITON_INTERPRET=1`` set before Triton is imported.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from crumpets_lightning.data.augment._sample_params import SampleParams

__all__ = ["available", "disable", "fits", "import_error", "noise_triton", "randomize_triton"]

_IMPORT_ERROR: str | None = None
_DISABLED: str | None = None
try:
    import triton
    import triton.language as tl
except Exception as error:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _IMPORT_ERROR = f"{type(error).__name__}: {error}"

#: Tile of one program (rows, columns); powers of two.
BLOCK_H = 16
BLOCK_W = 64
#: Blur radii up to this take the separable path (``BLOCK_H + 2 * HALO`` rows, a power of two, at least 16);
#: wider ones (sigma above 2.67 pixels) read every tap of the 2-d kernel.
HALO = 8


def available() -> bool:
    """Whether the kernel can run: Triton imported (CUDA, or CPU under ``TRITON_INTERPRET=1``), not disabled."""
    return triton is not None and _DISABLED is None


def fits(height: int, width: int) -> bool:
    """Whether an image of this size fits the kernel's grid (CUDA allows 65535 programs on its second axis)."""
    return -(-height // BLOCK_H) * -(-width // BLOCK_W) <= 65535


def disable(error: BaseException) -> None:
    """Stop using the kernel after it failed (warns once, naming the error); ``backend="auto"`` uses torch."""
    global _DISABLED
    if _DISABLED is None:
        _DISABLED = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"the fused Randomizer kernel failed ({_DISABLED}); using the torch path from now on. "
            "Please report this with your GPU and triton version; backend='triton' raises the error itself",
            RuntimeWarning,
            stacklevel=3,
        )


def import_error() -> str | None:
    """Why the kernel is not available (Triton did not import, or it failed and was disabled), or ``None``."""
    return _IMPORT_ERROR or _DISABLED


if triton is not None:
    # No annotations on jitted functions but tl.constexpr: Triton's compiler resolves annotation names as globals.

    @triton.jit
    def _hash32(x):
        # the same hash as batched.hash32, on uint32 (multiplication wraps modulo 2**32)
        x = x ^ (x >> 16)
        x = x * 0x21F0AAAD
        x = x ^ (x >> 15)
        x = x * 0x735A2D97
        return x ^ (x >> 15)

    @triton.jit
    def _reflect101(index, size):
        period = tl.maximum(2 * (size - 1), 1)
        index = tl.abs(index) % period
        return tl.where(index >= size, period - index, index)

    @triton.jit
    def _normal(key, element):
        # counter-based noise: the same function of (key, element index) as batched.noise_field
        counter = element.to(tl.uint32) * 2
        h1 = _hash32(_hash32(counter) ^ key)
        h2 = _hash32(_hash32(counter + 1) ^ key)
        u1 = ((h1 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08
        u2 = (h2 >> 8).to(tl.float32) * 5.9604644775390625e-08
        return tl.sqrt(tl.log(u1) * -2.0) * tl.cos(u2 * 6.2831854820251465)

    @triton.jit
    def _noise_kernel(out_ptr, noise_key_ptr, count, BLOCK: tl.constexpr):
        sample = tl.program_id(0)
        element = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        key = tl.load(noise_key_ptr + sample).to(tl.uint32, bitcast=True)
        tl.store(out_ptr + sample.to(tl.int64) * count + element, _normal(key, element), mask=element < count)

    # sizes and channel count are not specialised: a value of 1 would become a compile-time constant
    @triton.jit(do_not_specialize=["channels", "height", "width"])
    def _randomize_kernel(
        image_ptr,
        out_ptr,
        lut_ptr,
        blur_inv_ptr,
        blur_radius_ptr,
        noise_std_ptr,
        noise_key_ptr,
        channels,
        height,
        width,
        BLOCK_H: tl.constexpr,
        BLOCK_W: tl.constexpr,
        HALO: tl.constexpr,
        BAND: tl.constexpr,
    ):
        plane = tl.program_id(0)  # sample * channels + channel (axis 0: CUDA allows 2**31 - 1 programs there)
        tile = tl.program_id(1)
        sample = plane // channels
        channel = plane % channels
        tiles_w = tl.cdiv(width, BLOCK_W)
        rows = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        cols = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
        inside = (rows < height) & (cols < width)
        plane_offset = plane.to(tl.int64) * height * width
        source = image_ptr + plane_offset
        table = lut_ptr + plane * 256

        radius = tl.load(blur_radius_ptr + sample)
        inv = tl.load(blur_inv_ptr + sample)
        total = inv * 0.0
        for d in range(-radius, radius + 1):
            total += tl.exp(inv * -(d * d))

        # (each branch names its own values: Triton requires names set in two branches to have one type)
        if radius == 0:  # not blurred: one table lookup per pixel
            plain = tl.load(source + rows * width + cols, mask=inside, other=0)
            acc = tl.load(table + plain.to(tl.int32), mask=inside, other=0.0)
        elif radius <= HALO:
            # separable: the horizontal pass over the tile's rows and HALO rows above and below (reflect-101
            # indices stay inside the image, so no mask), then the vertical pass as one small matrix product
            # with the banded matrix of the sample's vertical weights
            band = (tile // tiles_w) * BLOCK_H - HALO + tl.arange(0, BAND)[:, None]
            band_offset = _reflect101(band, height) * width
            line = tl.zeros((BAND, BLOCK_W), dtype=tl.float32)
            for dx in range(-radius, radius + 1):
                band_weight = tl.exp(inv * -(dx * dx)) / total
                band_pixel = tl.load(source + band_offset + _reflect101(cols + dx, width))
                line += band_weight * tl.load(table + band_pixel.to(tl.int32))
            shift = tl.arange(0, BAND)[None, :] - tl.arange(0, BLOCK_H)[:, None] - HALO
            vertical = tl.exp(inv * -(shift * shift).to(tl.float32)) / total
            vertical = tl.where(tl.abs(shift) <= radius, vertical, 0.0)
            acc = tl.dot(vertical, line, input_precision="ieee")
        else:  # wider than the halo: every tap of the 2-d kernel read directly (horizontal sums, then vertical)
            acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
            for dy in range(-radius, radius + 1):
                weight_y = tl.exp(inv * -(dy * dy)) / total
                row_offset = _reflect101(rows + dy, height) * width
                row_sum = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
                for dx in range(-radius, radius + 1):
                    tap_weight = tl.exp(inv * -(dx * dx)) / total
                    tap = tl.load(source + row_offset + _reflect101(cols + dx, width), mask=inside, other=0)
                    row_sum += tap_weight * tl.load(table + tap.to(tl.int32), mask=inside, other=0.0)
                acc += weight_y * row_sum

        key = tl.load(noise_key_ptr + sample).to(tl.uint32, bitcast=True)
        normal = _normal(key, (channel * height + rows) * width + cols)
        value = acc + tl.load(noise_std_ptr + plane) * normal

        value = tl.minimum(tl.maximum(value, 0.0), 255.0)
        value = (value + 12582912.0) - 12582912.0  # round half to even (exact for 0 <= value < 2**22)
        tl.store(out_ptr + plane_offset + rows * width + cols, value.to(tl.uint8), mask=inside)


def _int32_keys(noise_key: Tensor) -> Tensor:
    """The int64 keys (values in ``[0, 2**32)``) as int32 with the same bits; the kernels reinterpret them."""
    return (noise_key - ((noise_key >= 2**31).to(torch.int64) << 32)).to(torch.int32)


def noise_triton(keys: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """The kernel's standard normal noise ``[B, C, H, W]`` (float32) for int64 keys: must equal ``noise_field``.

    Raises:
        RuntimeError: Triton is not installed.
    """
    if triton is None:
        raise RuntimeError(f"the fused Randomizer kernel needs triton (pip install triton): {_IMPORT_ERROR}")
    count = shape[0] * shape[1] * shape[2]
    out = torch.empty((keys.shape[0], *shape), dtype=torch.float32, device=keys.device)
    block = 1024
    _noise_kernel[(keys.shape[0], triton.cdiv(count, block))](out, _int32_keys(keys), count, BLOCK=block)
    return out


def randomize_triton(image: Tensor, params: SampleParams) -> Tensor:
    """Run the fused kernel on a contiguous uint8 ``[B, C, H, W]`` batch; returns a new uint8 tensor.

    Raises:
        RuntimeError: Triton is not installed.
    """
    if triton is None:
        raise RuntimeError(f"the fused Randomizer kernel needs triton (pip install triton): {_IMPORT_ERROR}")
    image = image.contiguous()
    batch, channels, height, width = image.shape
    out = torch.empty_like(image)
    grid = (batch * channels, triton.cdiv(height, BLOCK_H) * triton.cdiv(width, BLOCK_W))
    _randomize_kernel[grid](
        image,
        out,
        params.luts.contiguous(),
        params.blur_inv.contiguous(),
        params.blur_radius.contiguous(),
        params.noise_std.contiguous(),
        _int32_keys(params.noise_key),
        channels,
        height,
        width,
        BLOCK_H=BLOCK_H,
        BLOCK_W=BLOCK_W,
        HALO=HALO,
        BAND=BLOCK_H + 2 * HALO,
    )
    return out
