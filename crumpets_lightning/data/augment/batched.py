"""Batched pixel augmentation (gamma/colour, contrast, blur, noise) on whatever device the batch lives on.

The functional core of :class:`~crumpets_lightning.modules.randomizer.Randomizer`; it lives in ``data`` so
the loader can apply it without importing ``modules``. Workers running with ``gpu_augmentation=True`` draw
the pixel-op parameters but leave the pixels alone; they store one row per sample in the ``augmentation``
buffer (the schema in :mod:`crumpets_lightning.data.augment.record`). :func:`randomize_batch` applies them
to the whole batch at once, with the semantics of the CPU ops in
:mod:`crumpets_lightning.data.augment.pixel_ops`:

1. gamma ``y = x ** g_c`` (``x = v / 255``, ``g_c = gamma_gray * gamma_c`` when ``color`` is set, else
   ``gamma_gray``; one-channel images use ``gamma_gray`` only), then contrast ``k``: towards
   ``S(y) = (1 - cos(pi y)) / 2`` for ``k >= 0``, towards ``S^-1`` for ``k < 0``. Both form a 256-entry
   lookup table per sample and channel (:func:`make_luts`).
2. Gaussian blur with ``sigma = blur * width`` (none below ``MIN_BLUR_SIGMA`` pixels), weights
   ``exp(-d^2 / (2 sigma^2))`` for ``|d| <= ceil(3 sigma)``, normalised, separable, reflect-101 borders.
3. Additive Gaussian noise with std ``noise * 255 * w_c`` (``w = RGB_NOISE_WEIGHTS`` for camera-like noise
   on 3-channel images, 1 otherwise).
4. Clip to ``[0, 255]``, round half to even, ``uint8``.

Noise is counter-based: the standard normal at element ``p = (c * H + y) * W + x`` of a sample is a pure
function of ``p`` and the sample's 48-bit noise seed in its record (:func:`noise_field`): a 32-bit integer
hash of the counter, keyed by a hash of the seed, gives two uniforms, and Box-Muller turns them into a
normal. So a sample's augmented pixels are the same whatever batch, rank or device it lands on and
whatever torch's global RNG state is; nothing here draws from torch's RNG.

Two implementations of the same math:

- on CUDA with Triton installed, one fused kernel (:mod:`crumpets_lightning.data.augment._triton_kernel`)
  reads every uint8 pixel (with its blur neighbourhood) and writes the uint8 result once, with no host
  synchronisation and no float copy of the batch;
- everywhere else this module's torch code (also the reference the kernel is tested against: at most one
  level apart, the same noise). It needs the largest blur radius of the batch to size its loops: free
  when the records are on the CPU, one host synchronisation when they are on an accelerator.

Every sample's result depends only on its own pixels and record: samples that are not blurred contribute
exact zeros from the batch's wider taps, so results are bitwise-equal whatever the other samples are.

Example::

    >>> import torch
    >>> from crumpets_lightning.data.augment.record import NEUTRAL_AUGMENTATION
    >>> image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> augmentation = torch.tensor(NEUTRAL_AUGMENTATION).repeat(2, 1)
    >>> bool((randomize_batch(image, augmentation) == image).all())
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from crumpets_lightning.data.augment._sample_params import SampleParams
from crumpets_lightning.data.augment.record import (
    AUGMENTATION_FIELDS,
    BLUR_TRUNCATE,
    FIELD_INDEX,
    MIN_BLUR_SIGMA,
    RGB_NOISE_WEIGHTS,
)

__all__ = [
    "BACKENDS",
    "MIN_BLUR_SIGMA",
    "RGB_NOISE_WEIGHTS",
    "SampleParams",
    "add_noise",
    "apply_luts",
    "gaussian_blur",
    "hash32",
    "make_luts",
    "noise_field",
    "noise_keys",
    "randomize_batch",
    "sample_params",
]

#: Accepted values of ``randomize_batch(..., backend=)``.
BACKENDS = ("auto", "torch", "triton")

_MASK32 = 0xFFFFFFFF
# Multipliers of the integer hash (a low-bias 32-bit hash with two multiply-xorshift rounds). Both are below
# 2**31, so ``x * m`` of a 32-bit ``x`` fits in int64 and torch needs no unsigned type.
HASH_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
# Mixed into the seed before hashing (the golden ratio), so seed 0 does not give key 0.
_SEED_SALT = 0x9E3779B9
# 2**-24 and 2 pi in float32
_UNIT = 2.0**-24
_TWO_PI = 6.2831854820251465


def hash32(x: Tensor) -> Tensor:
    """The 32-bit integer hash behind the noise, on int64 tensors holding values in ``[0, 2**32)``.

    ``x ^= x >> 16; x *= 0x21F0AAAD; x ^= x >> 15; x *= 0x735A2D97; x ^= x >> 15`` modulo ``2**32``; the
    Triton kernel computes the same on uint32.
    """
    x = x ^ (x >> 16)
    x = (x * HASH_MULTIPLIERS[0]) & _MASK32
    x = x ^ (x >> 15)
    x = (x * HASH_MULTIPLIERS[1]) & _MASK32
    return x ^ (x >> 15)


def noise_keys(augmentation: Tensor) -> Tensor:
    """Per-sample 32-bit noise keys (int64 ``[B]``) from the records' ``seed_lo`` / ``seed_hi`` columns."""
    lo = augmentation[:, FIELD_INDEX["seed_lo"]].to(torch.int64)
    hi = augmentation[:, FIELD_INDEX["seed_hi"]].to(torch.int64)
    return hash32(hash32(hi ^ _SEED_SALT) ^ lo)


def noise_field(keys: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Standard normal noise ``[B, C, H, W]`` (float32): element ``p`` of sample ``b`` depends on ``keys[b]``, ``p``.

    ``h_i = hash32(hash32(2 p + i) ^ key)`` for ``i = 0, 1`` give ``u1 = ((h_0 >> 8) + 1) / 2**24`` in ``(0, 1]``
    and ``u2 = (h_1 >> 8) / 2**24``; the value is ``sqrt(-2 log u1) * cos(2 pi u2)`` (Box-Muller).

    Args:
        keys: int64 ``[B]`` from :func:`noise_keys`.
        shape: ``(C, H, W)`` of one sample.
    """
    count = shape[0] * shape[1] * shape[2]
    counter = torch.arange(count, device=keys.device, dtype=torch.int64) * 2
    key = keys.view(-1, 1)
    h1 = hash32(hash32(counter).unsqueeze(0) ^ key)
    h2 = hash32(hash32(counter + 1).unsqueeze(0) ^ key)
    u1 = ((h1 >> 8) + 1).to(torch.float32) * _UNIT
    u2 = (h2 >> 8).to(torch.float32) * _UNIT
    radius = torch.sqrt(torch.log(u1) * -2.0)
    return (radius * torch.cos(u2 * _TWO_PI)).view(keys.shape[0], *shape)


def make_luts(augmentation: Tensor, channels: int) -> Tensor:
    """Build the gamma + contrast lookup tables of a batch.

    Args:
        augmentation: float ``[B, len(AUGMENTATION_FIELDS)]`` records.
        channels: 1 (gray) or 3 (RGB).

    Returns:
        float32 ``[B, channels, 256]``: entry ``v`` is the output value (0..255, not rounded) for input ``v``.
    """
    aug = augmentation.to(torch.float32)
    gamma_gray = aug[:, FIELD_INDEX["gamma_gray"]].unsqueeze(1)
    if channels == 3:
        color = aug[:, FIELD_INDEX["color"]].unsqueeze(1) != 0
        per_channel = aug[:, FIELD_INDEX["gamma_r"] : FIELD_INDEX["gamma_b"] + 1]
        gamma = gamma_gray * torch.where(color, per_channel, torch.ones_like(per_channel))
    else:
        gamma = gamma_gray
    x = torch.arange(256, device=aug.device, dtype=torch.float32) / 255.0
    y = x ** gamma.unsqueeze(-1)
    contrast = aug[:, FIELD_INDEX["contrast"]].view(-1, 1, 1)
    steeper = (1.0 - torch.cos(math.pi * y)) / 2.0
    flatter = torch.arccos((1.0 - 2.0 * y).clamp(-1.0, 1.0)) / math.pi
    towards = torch.where(contrast >= 0, steeper, flatter)
    y = y + contrast.abs() * (towards - y)
    return (y * 255.0).clamp(0.0, 255.0)


def apply_luts(image: Tensor, luts: Tensor) -> Tensor:
    """Look every pixel up in its sample's and channel's table.

    Args:
        image: uint8 ``[B, C, H, W]``.
        luts: float ``[B, C, 256]``.

    Returns:
        float32 ``[B, C, H, W]``.
    """
    batch, channels, height, width = image.shape
    offsets = torch.arange(batch * channels, device=image.device, dtype=torch.int32).mul_(256).view(-1, 1)
    index = image.reshape(batch * channels, height * width).to(torch.int32) + offsets
    return luts.reshape(-1).index_select(0, index.reshape(-1)).view(batch, channels, height, width)


def sample_params(augmentation: Tensor, channels: int, width: int, rgb_noise: bool = True) -> SampleParams:
    """Turn float32 records (on the image's device) into the per-sample values of the ops; no host sync."""
    sigma = augmentation[:, FIELD_INDEX["blur"]].to(torch.float32) * float(width)
    blurred = sigma >= MIN_BLUR_SIGMA
    safe = torch.where(blurred, sigma, torch.ones_like(sigma))
    blur_inv = torch.where(blurred, 0.5 / (safe * safe), torch.zeros_like(sigma))
    blur_radius = torch.where(blurred, torch.ceil(BLUR_TRUNCATE * safe), torch.zeros_like(sigma)).to(torch.int32)
    strength = augmentation[:, FIELD_INDEX["noise"]].to(torch.float32).clamp(min=0.0)
    noise_std = (strength * 255.0).unsqueeze(1).repeat(1, channels)
    if rgb_noise and channels == 3:
        # scalar fills, not torch.tensor(weights, device=...): a host-to-device copy would wait for the device
        for channel, weight in enumerate(RGB_NOISE_WEIGHTS):
            if weight != 1.0:
                noise_std[:, channel] *= weight
    return SampleParams(make_luts(augmentation, channels), blur_inv, blur_radius, noise_std, noise_keys(augmentation))


def _reflect101_index(index: Tensor, size: int) -> Tensor:
    """Map any integer index onto ``[0, size)`` by reflect-101 (``dcb|abcd|cba``), also far outside the axis."""
    period = max(2 * (size - 1), 1)
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


def _blur_weights(blur_inv: Tensor, blur_radius: Tensor, radius: int) -> Tensor:
    """float32 ``[B, 2 radius + 1]``: each sample's normalised taps, exact zeros beyond its own radius."""
    offsets = torch.arange(-radius, radius + 1, device=blur_inv.device)
    distance = (offsets * offsets).to(torch.float32)
    weights = torch.exp(-distance.unsqueeze(0) * blur_inv.unsqueeze(1))
    weights = torch.where(offsets.abs().unsqueeze(0) <= blur_radius.unsqueeze(1), weights, torch.zeros_like(weights))
    return weights / weights.sum(dim=1, keepdim=True)


def _blur_axis(image: Tensor, weights: Tensor, dim: int) -> Tensor:
    """Sum of ``weights[:, k]`` times the image shifted by ``k - radius`` along ``dim``, reflect-101 borders."""
    size = image.shape[dim]
    radius = (weights.shape[1] - 1) // 2
    padded = image.index_select(dim, _reflect101_index(torch.arange(-radius, size + radius, device=image.device), size))
    out = torch.zeros_like(image)
    for k in range(weights.shape[1]):
        # taps beyond a sample's radius have weight 0 and add exact zeros: the sum does not depend on the batch
        out += weights[:, k].view(-1, 1, 1, 1) * padded.narrow(dim, k, size)
    return out


def gaussian_blur(image: Tensor, blur_inv: Tensor, blur_radius: Tensor, max_radius: int | None = None) -> Tensor:
    """Blur each sample with its own Gaussian: horizontal pass, then vertical, reflect-101 borders.

    Args:
        image: float32 ``[B, C, H, W]``.
        blur_inv: float32 ``[B]`` ``1 / (2 sigma^2)`` (see :func:`sample_params`).
        blur_radius: int32 ``[B]`` radius of each sample (0: not blurred).
        max_radius: the largest radius of the batch when known (else read from ``blur_radius``: a host
            synchronisation when it lives on an accelerator).

    Returns:
        float32 ``[B, C, H, W]`` (the input itself when no sample is blurred).
    """
    radius = int(blur_radius.max()) if max_radius is None else int(max_radius)
    if radius == 0 or image.shape[0] == 0:
        return image
    weights = _blur_weights(blur_inv, blur_radius, radius)
    return _blur_axis(_blur_axis(image, weights, 3), weights, 2)


def add_noise(image: Tensor, noise_std: Tensor, noise_key: Tensor) -> Tensor:
    """Add ``noise_std[b, c]`` times :func:`noise_field` of the sample's key to ``image`` (float32 ``[B, C, H, W]``)."""
    noise = noise_field(noise_key, (image.shape[1], image.shape[2], image.shape[3]))
    return image + noise_std.view(*noise_std.shape, 1, 1) * noise


def _check(image: Tensor, augmentation: Tensor, backend: str) -> None:
    if not isinstance(image, Tensor) or image.dtype != torch.uint8:
        found = image.dtype if isinstance(image, Tensor) else type(image).__name__
        raise TypeError(f"randomize_batch expects a uint8 image tensor [B, C, H, W] but got {found}")
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"randomize_batch expects an image of shape [B, C, H, W] with C = 1 or 3 but got {tuple(image.shape)}"
        )
    expected = (image.shape[0], len(AUGMENTATION_FIELDS))
    if not isinstance(augmentation, Tensor) or tuple(augmentation.shape) != expected:
        shape = tuple(augmentation.shape) if isinstance(augmentation, Tensor) else type(augmentation).__name__
        raise ValueError(
            f"randomize_batch expects augmentation records of shape {expected} (columns {AUGMENTATION_FIELDS}) "
            f"but got {shape}; run the workers with gpu_augmentation=True so they store them"
        )
    if backend not in BACKENDS:
        raise ValueError(f"randomize_batch: backend must be one of {BACKENDS}, got {backend!r}")


def _use_triton(image: Tensor, backend: str) -> bool:
    # "auto" on CPU tensors never imports triton (whose kernels are compiled or interpreted by how the
    # environment variable TRITON_INTERPRET was set when the kernel module was first imported)
    if backend == "torch" or (backend == "auto" and not image.is_cuda):
        return False
    from crumpets_lightning.data.augment import _triton_kernel

    if backend == "triton":
        if not _triton_kernel.available():
            raise RuntimeError(
                "randomize_batch(backend='triton'): the fused kernel is not available "
                f"({_triton_kernel.import_error()}); install triton (pip install triton) or use backend='torch'"
            )
        return True
    # images above ~67 megapixels have more tiles than CUDA's grid axis holds: the torch path takes them
    return image.is_cuda and _triton_kernel.available() and _triton_kernel.fits(image.shape[2], image.shape[3])


def randomize_batch(image: Tensor, augmentation: Tensor, rgb_noise: bool = True, backend: str = "auto") -> Tensor:
    """Apply gamma/colour, contrast, blur and noise to a batch (see the module docstring for the semantics).

    Args:
        image: uint8 ``[B, C, H, W]``, RGB (``C == 3``) or gray (``C == 1``), on any device.
        augmentation: ``[B, len(AUGMENTATION_FIELDS)]`` records; moved to the image's device.
        rgb_noise: Camera-like noise weights on 3-channel images.
        backend: ``"auto"`` (the fused Triton kernel for CUDA tensors when Triton is installed, else torch;
            if the kernel fails to compile or launch, a ``RuntimeWarning`` says so once and the torch path
            is used from then on), ``"torch"`` or ``"triton"`` (also on CPU tensors under
            ``TRITON_INTERPRET=1``, for tests; errors are raised).

    Returns:
        A new uint8 tensor ``[B, C, H, W]`` on the image's device.

    Raises:
        TypeError: If the image is not a uint8 tensor.
        ValueError: If shapes do not fit or the backend is unknown.
        RuntimeError: If ``backend="triton"`` but Triton cannot be imported.
    """
    _check(image, augmentation, backend)
    if image.shape[0] == 0:
        return image.clone()
    channels, width = image.shape[1], image.shape[3]
    max_radius, any_noise = None, True
    if augmentation.device.type == "cpu":  # known without a device synchronisation
        sigma = augmentation[:, FIELD_INDEX["blur"]].to(torch.float32) * float(width)
        blurred = sigma >= MIN_BLUR_SIGMA
        max_radius = int(torch.where(blurred, torch.ceil(BLUR_TRUNCATE * sigma), torch.zeros_like(sigma)).max())
        any_noise = bool((augmentation[:, FIELD_INDEX["noise"]] > 0).any())
    params = sample_params(augmentation.to(device=image.device, dtype=torch.float32), channels, width, rgb_noise)
    if _use_triton(image, backend):
        from crumpets_lightning.data.augment import _triton_kernel

        try:
            return _triton_kernel.randomize_triton(image, params)
        except Exception as error:  # e.g. a Triton that cannot compile for this GPU: the torch path still works
            if backend == "triton":
                raise
            _triton_kernel.disable(error)
    out = apply_luts(image, params.luts)
    out = gaussian_blur(out, params.blur_inv, params.blur_radius, max_radius)
    if any_noise:  # std 0 adds exact zeros: skipping it changes nothing
        out = add_noise(out, params.noise_std, params.noise_key)
    return out.clamp_(0.0, 255.0).round_().to(torch.uint8)
