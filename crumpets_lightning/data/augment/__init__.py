"""Augmentation: decoding (with a pixel limit), the geometric warp, CPU pixel ops, random parameters
(``AugmentationParams``), presets, the augmentation-record schema and the batched device ops
(``randomize_batch``)."""

from typing import TYPE_CHECKING, Any

from crumpets_lightning.data.augment.augmentation import (
    calc_scale_ratio,
    make_transform,
    randomize_image,
    rotate_and_resize,
)
from crumpets_lightning.data.augment.decode import DEFAULT_MAX_PIXELS, decode_image, image_size
from crumpets_lightning.data.augment.params import AugmentationParams
from crumpets_lightning.data.augment.pixel_ops import (
    add_blur,
    add_gamma,
    add_noise_other,
    add_noise_rgb,
    apply_pixel_ops,
)
from crumpets_lightning.data.augment.presets import (
    AUGMENTATION_TRAIN,
    INPUT_PARAMS_VAL,
    NO_AUGMENTATION,
    no_augmentation,
)
from crumpets_lightning.data.augment.record import (
    AUGMENTATION_FIELDS,
    MIN_BLUR_SIGMA,
    NEUTRAL_AUGMENTATION,
    RGB_NOISE_WEIGHTS,
    augmentation_from_records,
    augmentation_to_records,
)
from crumpets_lightning.data.augment.rng import RNG, MixtureRNG, NoRNG, human2gamma

__all__ = [
    "AUGMENTATION_FIELDS",
    "AUGMENTATION_TRAIN",
    "DEFAULT_MAX_PIXELS",
    "INPUT_PARAMS_VAL",
    "MIN_BLUR_SIGMA",
    "NEUTRAL_AUGMENTATION",
    "NO_AUGMENTATION",
    "RGB_NOISE_WEIGHTS",
    "RNG",
    "AugmentationParams",
    "MixtureRNG",
    "NoRNG",
    "add_blur",
    "add_gamma",
    "add_noise_other",
    "add_noise_rgb",
    "apply_pixel_ops",
    "augmentation_from_records",
    "augmentation_to_records",
    "calc_scale_ratio",
    "decode_image",
    "human2gamma",
    "image_size",
    "make_transform",
    "no_augmentation",
    "randomize_batch",
    "randomize_image",
    "rotate_and_resize",
]

if TYPE_CHECKING:
    from crumpets_lightning.data.augment.batched import randomize_batch


def __getattr__(name: str) -> Any:
    # the batched device ops need torch: imported on first use, so CPU-only users of this package skip it
    if name == "randomize_batch":
        from crumpets_lightning.data.augment.batched import randomize_batch

        return randomize_batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
