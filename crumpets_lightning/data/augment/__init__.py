"""CPU augmentation: decoding, the geometric warp, pixel ops, random parameters, presets, the record schema."""

from crumpets_lightning.data.augment.augmentation import (
    calc_scale_ratio,
    decode_image,
    make_transform,
    randomize_image,
    rotate_and_resize,
)
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
    NEUTRAL_AUGMENTATION,
    augmentation_from_records,
    augmentation_to_records,
)
from crumpets_lightning.data.augment.rng import RNG, MixtureRNG, NoRNG, human2gamma

__all__ = [
    "AUGMENTATION_FIELDS",
    "AUGMENTATION_TRAIN",
    "INPUT_PARAMS_VAL",
    "NEUTRAL_AUGMENTATION",
    "NO_AUGMENTATION",
    "RNG",
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
    "make_transform",
    "no_augmentation",
    "randomize_image",
    "rotate_and_resize",
]
