"""``Randomizer``: the nn.Module that applies the workers' drawn pixel augmentations on the batch's device.

The batched functional code lives in :mod:`crumpets_lightning.data.augment.batched`
(:func:`~crumpets_lightning.data.augment.batched.randomize_batch`); this module wraps it for models
(crumpets' wrapping style) and re-exports its names.

Example::

    >>> import torch
    >>> from crumpets_lightning.data.augment.record import NEUTRAL_AUGMENTATION
    >>> image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> augmentation = torch.tensor(NEUTRAL_AUGMENTATION).repeat(2, 1)
    >>> out = Randomizer()({"image": image, "augmentation": augmentation})
    >>> bool((out["image"] == image).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from crumpets_lightning.data.augment.batched import (
    BACKENDS,
    MIN_BLUR_SIGMA,
    RGB_NOISE_WEIGHTS,
    add_noise,
    apply_luts,
    gaussian_blur,
    make_luts,
    randomize_batch,
)

__all__ = [
    "BACKENDS",
    "MIN_BLUR_SIGMA",
    "RGB_NOISE_WEIGHTS",
    "Randomizer",
    "add_noise",
    "apply_luts",
    "gaussian_blur",
    "make_luts",
    "randomize_batch",
]


class Randomizer(nn.Module):
    """Apply the workers' drawn pixel augmentations to ``sample["image"]`` on the batch's device.

    ``forward`` returns a new dict (the input is not modified) whose image is augmented, then passes it
    through ``net`` if one is given (crumpets' wrapping style).

    Args:
        net: Optional module called with the augmented sample dict; its result is returned.
        image_key: Key of the uint8 ``[B, C, H, W]`` image.
        augmentation_key: Key of the ``[B, len(AUGMENTATION_FIELDS)]`` augmentation records.
        rgb_noise: Camera-like noise (less in green) on 3-channel images.
        backend: ``"auto"`` (the fused Triton kernel on CUDA when Triton is installed, else torch),
            ``"torch"`` or ``"triton"``; see :func:`~crumpets_lightning.data.augment.batched.randomize_batch`.

    Raises:
        ValueError: ``backend`` is not one of ``BACKENDS``.
    """

    def __init__(
        self,
        net: nn.Module | Callable[[dict[str, Any]], Any] | None = None,
        image_key: str = "image",
        augmentation_key: str = "augmentation",
        rgb_noise: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"Randomizer: backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.net = net
        self.image_key = image_key
        self.augmentation_key = augmentation_key
        self.rgb_noise = rgb_noise

    def forward(self, sample: Mapping[str, Any]) -> Any:
        """Return a copy of ``sample`` with the augmented image (passed through ``net`` if given).

        Raises:
            KeyError: If the image or augmentation key is missing.
        """
        for key in (self.image_key, self.augmentation_key):
            if key not in sample:
                raise KeyError(
                    f"Randomizer needs sample[{key!r}] but the sample has only {sorted(sample)}; "
                    f"the workers must run with gpu_augmentation=True to store the augmentation records"
                )
        out = dict(sample)
        out[self.image_key] = randomize_batch(
            sample[self.image_key], sample[self.augmentation_key], self.rgb_noise, self.backend
        )
        if self.net is not None:
            return self.net(out)
        return out

    def extra_repr(self) -> str:
        return (
            f"image_key={self.image_key!r}, augmentation_key={self.augmentation_key!r}, "
            f"rgb_noise={self.rgb_noise}, backend={self.backend!r}"
        )
