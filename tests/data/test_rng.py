"""MixtureRNG, NoRNG, human2gamma and the presets."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from crumpets_lightning.data.augment.augmentation import randomize_image
from crumpets_lightning.data.augment.presets import (
    AUGMENTATION_TRAIN,
    INPUT_PARAMS_VAL,
    NO_AUGMENTATION,
    no_augmentation,
)
from crumpets_lightning.data.augment.rng import RNG, MixtureRNG, NoRNG, human2gamma

PIXEL_KEYS = {"gamma_gray", "gamma_color", "contrast", "noise", "blur"}
GEOMETRY_KEYS = {"scale", "shift", "angle", "aspect", "shear", "hmirror", "vmirror"}

FULL = {
    "scale_range": (0.8, 1.3),
    "shift_range": (-1, 1),
    "noise_range": (0.01, 0.1),
    "brightness_range": (-0.5, 0.5),
    "color_range": (-0.3, 0.3),
    "contrast_range": (-0.6, 0.6),
    "blur_range": (0.001, 0.01),
    "rotation_sigma": 10,
    "aspect_sigma": 0.2,
    "hmirror": 0.5,
    "vmirror": 0.5,
    "shear_range": (-0.1, 0.1),
}


def test_human2gamma() -> None:
    assert human2gamma(0) == 1.0
    assert human2gamma(1) == pytest.approx(0.5)
    assert human2gamma(-0.5) == pytest.approx(2**0.5)
    assert human2gamma(5) == human2gamma(1)
    assert human2gamma(-5) == human2gamma(-1)


def test_no_rng_draws_nothing() -> None:
    assert NoRNG()(None, np.random.default_rng(0)) == {}
    assert isinstance(NoRNG(), RNG)


def test_same_generator_state_gives_the_same_draws() -> None:
    rng = MixtureRNG(prob=0.5, **FULL)
    first = rng((32, 32), np.random.default_rng(123))
    assert rng((32, 32), np.random.default_rng(123)) == first
    assert rng((32, 32), np.random.default_rng(124)) != first


def test_prob_zero_disables_only_pixel_ops() -> None:
    on = MixtureRNG(prob=1.0, **FULL)
    off = MixtureRNG(prob=0.0, **FULL)
    angles = set()
    for seed in range(20):
        drawn_off = off(None, np.random.default_rng(seed))
        drawn_on = on(None, np.random.default_rng(seed))
        assert not PIXEL_KEYS & drawn_off.keys()
        assert drawn_on.keys() >= PIXEL_KEYS
        # the geometry does not depend on prob
        assert {k: drawn_off[k] for k in GEOMETRY_KEYS} == {k: drawn_on[k] for k in GEOMETRY_KEYS}
        angles.add(drawn_off["angle"])
    assert len(angles) == 20  # still random


def test_each_pixel_op_rolls_prob_separately() -> None:
    rng = MixtureRNG(prob=0.5, noise_range=(0.1, 0.1), contrast_range=(0.2, 0.2))
    draws = [rng(None, np.random.default_rng(s)) for s in range(400)]
    noise = np.array(["noise" in d for d in draws])
    contrast = np.array(["contrast" in d for d in draws])
    assert 0.4 < noise.mean() < 0.6 and 0.4 < contrast.mean() < 0.6
    assert 0.15 < (noise & contrast).mean() < 0.35  # independent rolls: about a quarter


def test_values_follow_their_distributions() -> None:
    rng = MixtureRNG(prob=1.0, **FULL)
    draws = [rng(None, np.random.default_rng(s)) for s in range(2000)]
    scale = np.array([d["scale"] for d in draws])
    assert scale.min() >= 0.8 and scale.max() <= 1.3 and scale.mean() == pytest.approx(1.05, abs=0.02)
    shifts = np.array([d["shift"] for d in draws])
    assert shifts.min() >= -1 and shifts.max() <= 1
    angle = np.array([d["angle"] for d in draws])
    assert angle.std() == pytest.approx(10, rel=0.08)
    log_aspect = np.log([d["aspect"] for d in draws])
    assert log_aspect.std() == pytest.approx(0.2, rel=0.08) and abs(log_aspect.mean()) < 0.02
    gamma = np.array([d["gamma_gray"] for d in draws])
    assert gamma.min() >= human2gamma(0.5) - 1e-12 and gamma.max() <= human2gamma(-0.5) + 1e-12
    colors = np.array([d["gamma_color"] for d in draws])
    assert colors.shape == (2000, 3)
    assert np.corrcoef(colors.T)[0, 1] == pytest.approx(0, abs=0.1)  # channels drawn independently
    mirrors = np.array([d["hmirror"] for d in draws])
    assert 0.45 < mirrors.mean() < 0.55
    blur = np.array([d["blur"] for d in draws])
    assert blur.min() >= 0.001 and blur.max() <= 0.01


def test_only_the_passed_generator_is_used() -> None:
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    MixtureRNG(prob=1.0, **FULL)(None, np.random.default_rng(0))
    assert np.random.random() == expected


def test_interpolations_are_chosen_from_the_list() -> None:
    rng = MixtureRNG(interpolations=[0, 1, 2])
    chosen = {rng(None, np.random.default_rng(s))["interp_method"] for s in range(100)}
    assert chosen == {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prob": 1.5}, "prob"),
        ({"hmirror": -0.1}, "hmirror"),
        ({"scale_range": (1, 2, 3)}, "scale_range"),
        ({"scale_range": (2, 1)}, "scale_range"),
        ({"noise_range": "ab"}, "noise_range"),
        ({"contrast_range": (-2, 0.5)}, "contrast_range"),
        ({"rotation_sigma": -1}, "rotation_sigma"),
        ({"scale_range": (0, 1)}, "scale_range"),
        ({"interpolations": []}, "interpolations"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixtureRNG(**kwargs)


def test_picklable_comparable_and_readable() -> None:
    rng = MixtureRNG(prob=0.3, scale_range=(0.9, 1.1), rotation_sigma=5)
    clone = pickle.loads(pickle.dumps(rng))
    assert clone == rng
    assert clone(None, np.random.default_rng(1)) == rng(None, np.random.default_rng(1))
    text = repr(rng)
    assert text.startswith("MixtureRNG(") and "scale_range=(0.9, 1.1)" in text and "rotation_sigma=5" in text
    assert "noise_range" not in text  # defaults are left out
    assert pickle.loads(pickle.dumps(NoRNG())) == NoRNG()


def test_augmentation_train_draws_work_with_randomize_image() -> None:
    assert isinstance(AUGMENTATION_TRAIN, MixtureRNG)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for seed in range(10):
        generator = np.random.default_rng(seed)
        params = AUGMENTATION_TRAIN((32, 32), generator)
        out = randomize_image(image, (32, 32), rng=generator, **params)
        assert out.shape == (32, 32, 3)


def test_neutral_presets_are_neutral() -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    plain = randomize_image(image, (20, 20))
    assert np.array_equal(randomize_image(image, (20, 20), **NO_AUGMENTATION), plain)
    assert np.array_equal(randomize_image(image, (20, 20), **INPUT_PARAMS_VAL), plain)
    copy = no_augmentation()
    copy["angle"] = 10
    assert NO_AUGMENTATION["angle"] == 0.0


def test_aspect_sigma_zero_means_no_aspect_key() -> None:
    drawn = MixtureRNG(aspect_sigma=0)(None, np.random.default_rng(0))
    assert "aspect" not in drawn and not math.isnan(human2gamma(0))


def test_bad_interpolations_are_named() -> None:
    for bad in ([], ["x"], [99]):
        with pytest.raises(ValueError, match=r"`interpolations` to be a non-empty list of cv2.INTER_\* flags"):
            MixtureRNG(interpolations=bad)
