"""Batched pixel augmentation (gamma/colour, contrast, blur, noise) on whatever device the batch lives on.

The functional core of :class:`~crumpets_lightning.modules.randomizer.Randomizer`; it lives in ``data`` so
the loader can apply it without importing ``modules``.

Workers running with ``gpu_augmentation=True`` draw the pixel-op parameters but leave the pixels alone; they
store one row per sample in the ``augmentation`` buffer (columns
:data:`~crumpets_lightning.data.augment.record.AUGMENTATION_FIELDS`). :func:`randomize_batch` applies them
to the whole batch at once, with exactly the semantics of the CPU ops in ``crumpets_lightning.data``:

1. gamma ``y = x ** g_c`` (``x = v / 255``, ``g_c = gamma_gray * gamma_c`` when ``color`` is set, else
   ``gamma_gray``; one-channel images use ``gamma_gray`` only), then contrast ``k``: towards
   ``S(y) = (1 - cos(pi y)) / 2`` for ``k >= 0``, towards ``S^-1`` for ``k < 0``. Both form a 256-entry
   lookup table per sample and channel, built on the device and applied with one gather.
2. Gaussian blur with ``sigma = blur * width`` (skipped below 0.2 pixels), kernel size
   ``2 * ceil(3 sigma) + 1``, reflect-101 borders: separable grouped convolutions with one kernel per
   sample, zero-padded to the largest kernel in the batch.
3. Additive Gaussian noise with std ``noise * 255 * w_c`` (``w = (1, 0.6, 1)`` for camera-like noise on
   3-channel images, 1 otherwise).
4. Round half to even, clip to ``[0, 255]``, ``uint8``.

There is no per-sample Python loop; the only host synchronisations are two small reductions that decide
whether blur and noise are needed and how large the blur kernel must be.

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
import torch.nn.functional as F
from torch import Tensor

from crumpets_lightning.data.augment.record import AUGMENTATION_FIELDS

__all__ = [
    "MIN_BLUR_SIGMA",
    "RGB_NOISE_WEIGHTS",
    "add_noise",
    "apply_luts",
    "gaussian_blur",
    "make_luts",
    "randomize_batch",
]

#: Blur sigmas (in pixels) below this leave the image unchanged.
MIN_BLUR_SIGMA = 0.2
#: Per-channel noise weights of camera-like noise on RGB images (less noise in green).
RGB_NOISE_WEIGHTS = (1.0, 0.6, 1.0)

_COLUMN = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}


def make_luts(augmentation: Tensor, channels: int) -> Tensor:
    """Build the gamma + contrast lookup tables of a batch.

    Args:
        augmentation: float ``[B, len(AUGMENTATION_FIELDS)]`` records.
        channels: 1 (gray) or 3 (RGB).

    Returns:
        float32 ``[B, channels, 256]``: entry ``v`` is the output value (0..255, not rounded) for input ``v``.
    """
    aug = augmentation.to(torch.float32)
    gamma_gray = aug[:, _COLUMN["gamma_gray"]].unsqueeze(1)
    if channels == 3:
        color = aug[:, _COLUMN["color"]].unsqueeze(1) != 0
        per_channel = aug[:, _COLUMN["gamma_r"] : _COLUMN["gamma_b"] + 1]
        gamma = gamma_gray * torch.where(color, per_channel, torch.ones_like(per_channel))
    else:
        gamma = gamma_gray
    x = torch.arange(256, device=aug.device, dtype=torch.float32) / 255.0
    y = x ** gamma.unsqueeze(-1)
    contrast = aug[:, _COLUMN["contrast"]].view(-1, 1, 1)
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


def _reflect101_index(size: int, pad: int, device: torch.device) -> Tensor:
    """Source indices of a reflect-101 padded axis (``dcb|abcd|cba``), valid for any pad width."""
    index = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


def _pad_reflect101(x: Tensor, dim: int, pad: int) -> Tensor:
    """Reflect-101 padding of dimension ``dim`` (2 or 3) of a 4-d tensor, also wider than the axis itself."""
    size = x.shape[dim]
    if pad < size:
        return F.pad(x, (pad, pad, 0, 0) if dim == 3 else (0, 0, pad, pad), mode="reflect")
    return x.index_select(dim, _reflect101_index(size, pad, x.device))


def _gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Per-sample normalised 1-D kernels ``[B, 2 * radius + 1]``; each sample's own support is ``ceil(3 sigma)``.

    Samples with ``sigma < MIN_BLUR_SIGMA`` get the identity kernel.
    """
    sigma = sigma.to(torch.float64).unsqueeze(1)
    distance = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float64).unsqueeze(0)
    support = torch.ceil(3.0 * sigma)
    blurred = sigma >= MIN_BLUR_SIGMA
    safe_sigma = torch.where(blurred, sigma, torch.ones_like(sigma))
    weights = torch.exp(-(distance**2) / (2.0 * safe_sigma**2)) * (distance.abs() <= support)
    weights = weights / weights.sum(dim=1, keepdim=True)
    identity = (distance == 0).to(torch.float64).expand_as(weights)
    return torch.where(blurred, weights, identity).to(torch.float32)


def gaussian_blur(image: Tensor, sigma: Tensor) -> Tensor:
    """Blur each sample with its own Gaussian (sigma in pixels), reflect-101 borders.

    Args:
        image: float ``[B, C, H, W]``.
        sigma: ``[B]`` standard deviations in pixels; below :data:`MIN_BLUR_SIGMA` nothing happens.

    Returns:
        float32 ``[B, C, H, W]`` (the input itself when no sample is blurred).
    """
    batch, channels, height, width = image.shape
    blurred = sigma >= MIN_BLUR_SIGMA
    selected = blurred.nonzero().squeeze(1)
    count = selected.numel()
    if count == 0:
        return image
    largest = float(sigma[selected].max())
    radius = math.ceil(3.0 * largest)
    size = 2 * radius + 1
    kernels = _gaussian_kernels(sigma[selected], radius).repeat_interleave(channels, dim=0)
    subset = image if count == batch else image.index_select(0, selected)
    subset = subset.reshape(1, count * channels, height, width)
    subset = F.conv2d(_pad_reflect101(subset, 3, radius), kernels.view(-1, 1, 1, size), groups=count * channels)
    subset = F.conv2d(_pad_reflect101(subset, 2, radius), kernels.view(-1, 1, size, 1), groups=count * channels)
    if count == batch:
        return subset.view(batch, channels, height, width)
    return image.index_copy(0, selected, subset.view(count, channels, height, width))


def add_noise(
    image: Tensor, strength: Tensor, rgb_noise: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Add zero-mean Gaussian noise with std ``strength * 255 * w_c`` per sample and channel.

    Args:
        image: float ``[B, C, H, W]`` (values 0..255).
        strength: ``[B]`` noise strengths; ``<= 0`` adds nothing.
        rgb_noise: Use camera-like weights :data:`RGB_NOISE_WEIGHTS` on 3-channel images (else 1 for all).
        generator: Optional torch generator on the image's device, for reproducible noise.

    Returns:
        float32 ``[B, C, H, W]`` (the input itself when no sample gets noise).
    """
    channels = image.shape[1]
    if not bool((strength > 0).any()):
        return image
    weights = torch.ones(channels, device=image.device, dtype=torch.float32)
    if rgb_noise and channels == 3:
        weights = torch.tensor(RGB_NOISE_WEIGHTS, device=image.device, dtype=torch.float32)
    std = strength.to(torch.float32).clamp(min=0.0).unsqueeze(1) * 255.0 * weights
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=torch.float32)
    return noise.mul_(std.view(*std.shape, 1, 1)).add_(image)


def randomize_batch(
    image: Tensor, augmentation: Tensor, rgb_noise: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Apply gamma/colour, contrast, blur and noise to a batch (see the module docstring for the semantics).

    Args:
        image: uint8 ``[B, C, H, W]``, RGB (``C == 3``) or gray (``C == 1``).
        augmentation: ``[B, len(AUGMENTATION_FIELDS)]`` records; moved to the image's device.
        rgb_noise: Camera-like noise weights on 3-channel images.
        generator: Optional torch generator for the noise.

    Returns:
        A new uint8 tensor ``[B, C, H, W]`` on the image's device.

    Raises:
        TypeError: If the image is not a uint8 tensor.
        ValueError: If shapes do not fit.
    """
    if not isinstance(image, Tensor) or image.dtype != torch.uint8:
        found = image.dtype if isinstance(image, Tensor) else type(image).__name__
        raise TypeError(f"Randomizer expects a uint8 image tensor [B, C, H, W] but got {found}")
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"Randomizer expects an image of shape [B, C, H, W] with C = 1 or 3 but got {tuple(image.shape)}"
        )
    expected = (image.shape[0], len(AUGMENTATION_FIELDS))
    if not isinstance(augmentation, Tensor) or tuple(augmentation.shape) != expected:
        shape = tuple(augmentation.shape) if isinstance(augmentation, Tensor) else type(augmentation).__name__
        raise ValueError(
            f"Randomizer expects augmentation records of shape {expected} (columns {AUGMENTATION_FIELDS}) "
            f"but got {shape}; run the workers with gpu_augmentation=True so they store them"
        )
    augmentation = augmentation.to(device=image.device, dtype=torch.float32)
    if image.shape[0] == 0:
        return image.clone()
    out = apply_luts(image, make_luts(augmentation, image.shape[1]))
    out = gaussian_blur(out, augmentation[:, _COLUMN["blur"]] * image.shape[3])
    out = add_noise(out, augmentation[:, _COLUMN["noise"]], rgb_noise, generator)
    return out.round_().clamp_(0.0, 255.0).to(torch.uint8)
