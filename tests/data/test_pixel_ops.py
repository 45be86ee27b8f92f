"""CPU pixel ops against direct float formulas of the shared semantics (COMMON pixel-op definition)."""

from __future__ import annotations

import numpy as np
import pytest

from crumpets_lightning.data.augment.pixel_ops import _uint8_tables as uint8_tables
from crumpets_lightning.data.augment.pixel_ops import (
    add_blur,
    add_gamma,
    add_noise_other,
    add_noise_rgb,
    apply_pixel_ops,
    apply_pixel_ops_chw,
    gamma_contrast_lut,
)
from crumpets_lightning.data.augment.record import augmentation_row


def _random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _reference_lut(gamma: float, contrast: float) -> np.ndarray:
    """The documented formula, written out independently, in float64 for values 0..255."""
    x = np.arange(256) / 255.0
    y = x**gamma
    if contrast >= 0:
        y = y + contrast * ((1 - np.cos(np.pi * y)) / 2 - y)
    else:
        y = y + (-contrast) * (np.arccos(1 - 2 * y) / np.pi - y)
    return np.clip(y * 255.0, 0, 255)


def _reference_blur(im: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    d = np.arange(-radius, radius + 1)
    kernel = np.exp(-(d**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = im.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")  # numpy 'reflect' is reflect-101
        out = sum(w * np.take(padded, np.arange(i, i + im.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return out


def test_gamma_matches_the_direct_formula_per_channel() -> None:
    im = _random_image((40, 50, 3))
    out = add_gamma(im, True, 0.7, (0.8, 1.0, 1.3), 0.0)
    for c, gamma_c in enumerate((0.8, 1.0, 1.3)):
        expected = np.rint(255.0 * (im[:, :, c] / 255.0) ** (0.7 * gamma_c))
        assert np.abs(out[:, :, c] - expected).max() <= 1
        assert np.mean(out[:, :, c] == expected) > 0.99


def test_gamma_color_is_ignored_without_color_and_on_gray_images() -> None:
    im = _random_image((20, 20, 3))
    without = add_gamma(im, False, 0.6, (0.5, 1.0, 2.0), 0.0)
    expected = np.rint(255.0 * (im / 255.0) ** 0.6)
    assert np.abs(without - expected).max() <= 1
    gray = _random_image((20, 20))
    out = add_gamma(gray, True, 0.6, (0.5, 1.0, 2.0), 0.0)
    assert out.shape == gray.shape
    assert np.abs(out - np.rint(255.0 * (gray / 255.0) ** 0.6)).max() <= 1


@pytest.mark.parametrize("contrast", [-1.0, -0.6, -0.2, 0.3, 0.6, 1.0])
def test_contrast_lut_matches_formula_keeps_endpoints_and_is_monotone(contrast: float) -> None:
    table = gamma_contrast_lut([1.2], contrast)[0]
    reference = _reference_lut(1.2, contrast)
    assert np.allclose(table, reference, atol=1e-6)
    assert table[0] == 0 and table[255] == pytest.approx(255)
    assert np.all(np.diff(table) >= -1e-9)
    values = np.arange(256)
    low, high = values < 100, values > 160
    if contrast > 0:  # S-curve: darker darks, brighter brights than gamma alone
        assert np.all(table[low] <= _reference_lut(1.2, 0)[low] + 1e-9)
        assert np.all(table[high] >= _reference_lut(1.2, 0)[high] - 1e-9)
    else:
        assert np.all(table[low] >= _reference_lut(1.2, 0)[low] - 1e-9)


def test_add_gamma_with_contrast_on_an_image() -> None:
    im = _random_image((30, 30, 3), seed=4)
    out = add_gamma(im, False, 1.0, None, -0.5)
    expected = np.rint(_reference_lut(1.0, -0.5))[im]
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("strength", [0.02, 0.08])
def test_rgb_noise_statistics(strength: float) -> None:
    im = np.full((256, 256, 3), 128, np.uint8)
    out = add_noise_rgb(im, strength, np.random.default_rng(0))
    diff = out.astype(np.float64) - 128
    for c, weight in enumerate((1.0, 0.6, 1.0)):
        assert diff[:, :, c].std() == pytest.approx(strength * 255 * weight, rel=0.04)
        assert abs(diff[:, :, c].mean()) < 0.1 * strength * 255


def test_other_noise_is_equal_in_every_channel_and_on_gray() -> None:
    im = np.full((200, 200, 3), 128, np.uint8)
    out = add_noise_other(im, 0.05, np.random.default_rng(1)).astype(np.float64) - 128
    for c in range(3):
        assert out[:, :, c].std() == pytest.approx(0.05 * 255, rel=0.04)
    gray = np.full((200, 200), 128, np.uint8)
    noisy = add_noise_rgb(gray, 0.05, np.random.default_rng(2)).astype(np.float64) - 128
    assert noisy.shape == gray.shape
    assert noisy.std() == pytest.approx(0.05 * 255, rel=0.04)


def test_noise_is_clipped_and_reproducible() -> None:
    im = np.full((64, 64, 3), 250, np.uint8)
    a = add_noise_rgb(im, 0.2, np.random.default_rng(5))
    b = add_noise_rgb(im, 0.2, np.random.default_rng(5))
    c = add_noise_rgb(im, 0.2, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.max() == 255  # saturates instead of wrapping around
    assert np.array_equal(add_noise_rgb(im, 0.0, np.random.default_rng(5)), im)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 3.0])
def test_blur_matches_a_direct_separable_convolution(sigma: float) -> None:
    im = _random_image((40, 50, 3), seed=3)
    out = add_blur(im, sigma)
    expected = _reference_blur(im, sigma)
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-3


def test_blur_below_threshold_does_nothing() -> None:
    im = _random_image((20, 20, 3))
    assert np.array_equal(add_blur(im, 0.19), im)


def test_fused_ops_follow_the_order_lut_then_blur() -> None:
    im = _random_image((32, 48, 3), seed=7)
    sigma_rel = 1.5 / 48
    row = augmentation_row(True, 0.8, (1.1, 1.0, 0.9), 0.4, None, sigma_rel)
    out = apply_pixel_ops(im, row, np.random.default_rng(0))
    expected = np.empty(im.shape)
    for c, gamma_c in enumerate((1.1, 1.0, 0.9)):
        mapped = _reference_lut(0.8 * gamma_c, 0.4)[im[:, :, c]]
        expected[:, :, c] = _reference_blur(mapped, 1.5)
    assert np.abs(out - np.rint(expected)).max() <= 1


def test_fused_noise_after_lut_has_the_right_statistics() -> None:
    im = np.full((200, 200, 3), 100, np.uint8)
    row = augmentation_row(True, 0.7, None, 0.0, 0.04, None)
    out = apply_pixel_ops(im, row, np.random.default_rng(0)).astype(np.float64)
    base = _reference_lut(0.7, 0.0)[100]
    for c, weight in enumerate((1.0, 0.6, 1.0)):
        assert abs(out[:, :, c].mean() - base) <= 0.5 + 0.2  # the table may be rounded first (one-level tolerance)
        assert out[:, :, c].std() == pytest.approx(0.04 * 255 * weight, rel=0.05)


def test_neutral_record_changes_nothing() -> None:
    im = _random_image((16, 16, 3))
    assert np.array_equal(apply_pixel_ops(im, augmentation_row(), np.random.default_rng(0)), im)


def test_chw_in_place_equals_hwc() -> None:
    im = _random_image((24, 40, 3), seed=9)
    row = augmentation_row(True, 0.9, (0.8, 1.2, 1.0), -0.3, 0.05, 1.0 / 40)
    hwc = apply_pixel_ops(im, row, np.random.default_rng(11))
    chw = np.ascontiguousarray(im.transpose(2, 0, 1))
    apply_pixel_ops_chw(chw, row, np.random.default_rng(11))
    assert np.array_equal(chw.transpose(1, 2, 0), hwc)


def test_non_uint8_is_rejected() -> None:
    with pytest.raises(ValueError, match="uint8"):
        add_blur(np.zeros((4, 4, 3), np.float32), 1.0)


def test_fast_uint8_tables_stay_within_one_level_of_the_rounded_formula() -> None:
    rng = np.random.default_rng(7)
    exact_tables = 0
    for trial in range(300):
        gammas = (2.0 ** rng.uniform(-1.5, 1.5, 3)).tolist()
        if trial % 2:
            gammas = [gammas[0]] * 3
        contrast = [0.0, -1.0, 1.0][trial] if trial < 3 else float(rng.uniform(-1, 1))
        table = np.broadcast_to(uint8_tables(gammas, contrast), (3, 256))  # one shared row or one per channel
        assert table.shape == (3, 256) and table.dtype == np.uint8
        reference = np.stack([np.rint(_reference_lut(g, contrast)) for g in gammas])
        diff = np.abs(table.astype(np.int64) - reference)
        assert diff.max() <= 1, (gammas, contrast)
        assert table[:, 0].tolist() == [0, 0, 0] and table[:, 255].tolist() == [255, 255, 255]
        exact_tables += int(diff.max() == 0)
    assert exact_tables >= 290  # float32 moves an entry only when it lies right at a rounding boundary


@pytest.mark.parametrize("gammas", [[0.0, 1.0, 1.0], [2.0, 0.0, 0.5]])
def test_fast_uint8_tables_fall_back_to_float64_for_odd_gammas(gammas: list[float]) -> None:
    expected = np.rint(gamma_contrast_lut(gammas, 0.3)).astype(np.uint8)
    assert np.array_equal(np.broadcast_to(uint8_tables(gammas, 0.3), expected.shape), expected)
