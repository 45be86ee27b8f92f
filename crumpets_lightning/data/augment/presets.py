"""Ready-made augmentation settings.

- :data:`AUGMENTATION_TRAIN`: a :class:`~crumpets_lightning.data.MixtureRNG` with sensible training
  augmentation (pass it as ``image_rng``).
- :data:`INPUT_PARAMS_VAL`: fixed ``image_params`` for evaluation (centre crop of the shortest side).
- :data:`NO_AUGMENTATION`: the neutral value of every ``randomize_image`` parameter; start from a copy of
  it (or :func:`no_augmentation`) to set one augmentation to an exact value.
"""

from __future__ import annotations

from typing import Any

from crumpets_lightning.data.augment.augmentation import INTERP_LINEAR
from crumpets_lightning.data.augment.rng import MixtureRNG, NoRNG

__all__ = ["AUGMENTATION_TRAIN", "INPUT_PARAMS_VAL", "NO_AUGMENTATION", "NO_RNG", "no_augmentation"]

#: Training augmentation. Pixel ops each apply with probability 0.5: noise strength U[0.03, 0.1];
#: brightness U[-0.5, 0.5] and colour U[-0.25, 0.25] per channel (as gammas via ``human2gamma``);
#: contrast U[-1, 1]; blur sigma U[0.01, 0.75] pixels at 224 wide (relative to the width, so below the
#: 0.2-pixel threshold about a quarter of the time). Geometry always: zoom U[0.875, 1.25], shift U[-1, 1] on
#: each axis, rotation N(0, 15 deg), aspect exp(N(0, 0.1)), shear U[-0.1, 0.1], left/right mirror with
#: probability 0.5, no up/down mirror.
AUGMENTATION_TRAIN = MixtureRNG(
    prob=0.5,
    scale_range=(0.875, 1.25),
    shift_range=(-1.0, 1.0),
    noise_range=(0.03, 0.1),
    brightness_range=(-0.5, 0.5),
    color_range=(-0.25, 0.25),
    contrast_range=(-1.0, 1.0),
    blur_range=(0.01 / 224, 0.75 / 224),
    rotation_sigma=15.0,
    aspect_sigma=0.1,
    hmirror=0.5,
    vmirror=0.0,
    shear_range=(-0.1, 0.1),
)

#: Fixed ``image_params`` for validation/test: fill the target with the shortest side, centre crop.
INPUT_PARAMS_VAL: dict[str, Any] = {"scale_mode": "shortest", "scale": 1.0, "shift": (0.0, 0.0)}

#: Neutral value of every ``randomize_image`` parameter (no change beyond the fit to the target size).
NO_AUGMENTATION: dict[str, Any] = {
    "angle": 0.0,
    "scale": 1.0,
    "shift": (0.0, 0.0),
    "aspect": 1.0,
    "hmirror": False,
    "vmirror": False,
    "shear": None,
    "interp_method": INTERP_LINEAR,
    "gamma_gray": None,
    "gamma_color": None,
    "contrast": None,
    "noise": None,
    "blur": None,
    "scale_mode": "shortest",
}

#: An RNG that draws nothing (validation).
NO_RNG = NoRNG()


def no_augmentation() -> dict[str, Any]:
    """A fresh copy of :data:`NO_AUGMENTATION` to modify."""
    return dict(NO_AUGMENTATION)
