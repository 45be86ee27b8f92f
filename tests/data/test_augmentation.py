"""Geometry and decoding of crumpets_lightning.data.augment.augmentation, checked against independent references."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn.datasets

from crumpets_lightning.data.augment.augmentation import (
    INTERP_LINEAR,
    INTERP_NEAREST,
    calc_scale_ratio,
    decode_image,
    make_transform,
    randomize_image,
    rotate_and_resize,
)
from crumpets_lightning.data.errors import SampleError

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


@pytest.fixture(scope="module")
def china_bytes() -> bytes:
    return (PHOTOS / "china.jpg").read_bytes()


def _dot_image(height: int, width: int, x: int, y: int) -> np.ndarray:
    im = np.zeros((height, width, 3), np.uint8)
    im[y - 1 : y + 2, x - 1 : x + 2] = 255
    return im


def _centroid(im: np.ndarray) -> tuple[float, float]:
    weights = im.astype(np.float64).sum(axis=2) if im.ndim == 3 else im.astype(np.float64)
    ys, xs = np.indices(weights.shape)
    total = weights.sum()
    assert total > 0, "the dot left the image"
    return float((weights * xs).sum() / total), float((weights * ys).sum() / total)


GEOMETRIES = [
    {},
    {"angle": 30.0},
    {"scale": 1.4, "shift": (0.5, -0.3)},
    {"aspect": 1.5, "hmirror": True},
    {"vmirror": True, "shear": 0.15, "angle": -20.0},
    {"scale": 0.7, "scale_mode": "longest", "shift": (-1.0, 1.0)},
    {"shear": (0.1, -0.2), "aspect": 0.7, "angle": 75.0, "hmirror": True, "vmirror": True},
]


@pytest.mark.parametrize("params", GEOMETRIES)
def test_point_follows_the_matrix(params: dict) -> None:
    source = _dot_image(60, 80, x=35, y=25)
    target = (50, 70)
    matrix = make_transform(source.shape[:2], target, **params)
    out = rotate_and_resize(
        source,
        params.get("angle", 0),
        target,
        params.get("scale", 1),
        params.get("aspect", 1),
        params.get("shift"),
        INTERP_LINEAR,
        0,
        params.get("hmirror", False),
        params.get("vmirror", False),
        params.get("shear"),
        params.get("scale_mode", "shortest"),
    )
    expected = matrix @ np.array([35.0, 25.0, 1.0])
    found = _centroid(out)
    assert found == pytest.approx((expected[0], expected[1]), abs=0.35)


def test_identity_size_maps_every_pixel_to_itself() -> None:
    assert np.allclose(make_transform((30, 40), (30, 40)), np.eye(3))


def test_centre_maps_to_centre_and_rotation_is_counter_clockwise() -> None:
    matrix = make_transform((100, 100), (100, 100), angle=90)
    assert matrix @ [49.5, 49.5, 1] == pytest.approx([49.5, 49.5, 1])
    # a point right of the centre goes above it (y points down on screen)
    x, y, _ = matrix @ [79.5, 49.5, 1]
    assert (x, y) == pytest.approx((49.5, 19.5))


@pytest.mark.parametrize("flag, axis", [("hmirror", 1), ("vmirror", 0)])
def test_mirror_equals_flipping_the_unmirrored_output(flag: str, axis: int) -> None:
    rng = np.random.default_rng(0)
    source = cv2.GaussianBlur(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), (5, 5), 2)
    kwargs = {"hmirror": False, "vmirror": False}
    plain = rotate_and_resize(source, 12.0, (40, 56), 1.2, 1.1, None, INTERP_LINEAR, 0, **kwargs)
    kwargs[flag] = True
    mirrored = rotate_and_resize(source, -12.0, (40, 56), 1.2, 1.1, None, INTERP_LINEAR, 0, **kwargs)
    # mirroring then rotating by -a equals rotating by a then mirroring
    diff = np.abs(mirrored.astype(int) - np.flip(plain, axis=axis).astype(int))
    assert diff.max() <= 2
    assert diff.mean() < 0.2


def test_calc_scale_ratio_modes() -> None:
    assert calc_scale_ratio((100, 200), (50, 50), 1, "shortest") == pytest.approx(0.5)
    assert calc_scale_ratio((100, 200), (50, 50), 1, "longest") == pytest.approx(0.25)
    assert calc_scale_ratio((100, 200), (50, 50), 2, "longest") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="scale_mode"):
        calc_scale_ratio((100, 200), (50, 50), 1, "middle")


@pytest.mark.parametrize("fill, expected", [(77, (77, 77, 77)), ((10, 20, 30), (10, 20, 30))])
def test_longest_mode_leaves_background_bands_with_the_fill(fill: object, expected: tuple) -> None:
    source = np.full((40, 80, 3), 200, np.uint8)  # landscape: bands above and below
    out = randomize_image(source, (64, 64), background=fill, scale_mode="longest")
    # the image is scaled to 64 x 32 and centred: rows 16..47
    assert np.all(out[:15] == expected)
    assert np.all(out[49:] == expected)
    assert np.all(out[17:47] == 200)


def test_shift_up_and_down_match_the_documented_meaning() -> None:
    source = np.full((40, 80, 3), 200, np.uint8)
    up = randomize_image(source, (64, 64), background=0, scale_mode="longest", shift=(1, 1))
    down = randomize_image(source, (64, 64), background=0, scale_mode="longest", shift=(-1, -1))
    rows_up = np.flatnonzero(up[:, 32, 0] > 100)
    rows_down = np.flatnonzero(down[:, 32, 0] > 100)
    # "shift up": the image's top edge reaches the top border; "shift down": the bottom edge the bottom one
    assert rows_up[0] == 0 and rows_up[-1] == 31
    assert rows_down[0] == 32 and rows_down[-1] == 63


def test_positive_x_shift_shows_the_right_edge() -> None:
    gradient = np.tile(np.linspace(0, 255, 160).astype(np.uint8)[None, :, None], (80, 1, 3))
    out = randomize_image(gradient, (80, 80), shift=(1, 0))
    # shortest mode, no scaling: the right 80 columns of the source are visible
    assert np.abs(out[:, :, 0].astype(int) - gradient[:, 80:, 0].astype(int)).max() <= 1


def test_non_square_target_with_supersampling_keeps_circles_round() -> None:
    source = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(source, (100, 100), 80, (255, 255, 255), -1)
    for samples in (1, 2, 3):
        out = randomize_image(source, (40, 90), scale_mode="longest", supersampling=samples)
        mask = out[:, :, 0] > 127
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert abs(height - width) <= 1, f"supersampling={samples}: disc is {height} x {width}"
        assert abs((cols[0] + cols[-1]) / 2 - 44.5) <= 0.5  # centred horizontally


def test_bilinear_is_the_default_and_matches_opencv_resize() -> None:
    source = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = randomize_image(source, (12, 12))
    reference = cv2.resize(source, (12, 12), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1
    nearest = randomize_image(source, (12, 12), interp_method=INTERP_NEAREST)
    assert np.array_equal(nearest, np.repeat(np.repeat(source, 2, axis=0), 2, axis=1))


def test_strong_downscale_is_area_averaged() -> None:
    # a one-pixel checkerboard averages to mid gray; plain bilinear sampling would alias
    board = (np.indices((400, 400)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = randomize_image(np.dstack([board] * 3), (50, 50), color=True)
    assert np.abs(out.astype(int) - 127).max() <= 3


def test_gray_decode_is_a_real_gray_image(china_bytes: bytes) -> None:
    gray = decode_image(china_bytes, color=False)
    rgb = decode_image(china_bytes, color=True)
    assert gray.ndim == 2 and gray.shape == rgb.shape[:2]
    reference = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.abs(gray.astype(int) - reference.astype(int)).mean() < 2
    assert gray.std() > 20


def test_decode_gives_rgb_order() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[:, :, 2] = 255  # BGR for OpenCV's encoder
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, red)[1].tobytes()
        im = decode_image(data)
        assert im[:, :, 0].mean() > 240 and im[:, :, 2].mean() < 15, ext


def test_reduced_decode_never_goes_below_the_minimum(china_bytes: bytes) -> None:
    full = decode_image(china_bytes)
    assert full.shape == (427, 640, 3)
    reduced = decode_image(china_bytes, min_height=100, min_width=100)
    assert 100 <= min(reduced.shape[:2]) < 427
    # not at least min_factor times larger than needed: full size
    assert decode_image(china_bytes, min_height=300, min_width=300).shape == full.shape


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff\xe0garbage", 42, np.zeros((2, 2), np.uint8)])
def test_bad_bytes_raise_sample_error(data: object) -> None:
    with pytest.raises(SampleError):
        decode_image(data)


def test_truncated_jpeg_raises_instead_of_decoding_half_an_image(china_bytes: bytes) -> None:
    with pytest.raises(SampleError, match="cannot decode"):
        decode_image(china_bytes[: len(china_bytes) // 2])


def test_gpu_augmentation_leaves_pixels_untouched() -> None:
    source = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    params = {"gamma_gray": 0.5, "contrast": 0.5, "noise": 0.1, "blur": 0.05}
    plain = randomize_image(source, (32, 32))
    assert np.array_equal(randomize_image(source, (32, 32), gpu_augmentation=True, **params), plain)
    assert not np.array_equal(randomize_image(source, (32, 32), **params), plain)


def test_do_rotate_and_resize_false_keeps_geometry() -> None:
    source = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = randomize_image(source, (5, 5), angle=40, do_rotate_and_resize=False)
    assert np.array_equal(out, source)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_reduced_decode_reports_the_full_size_for_any_bytes_like_input(china_bytes: bytes, wrap) -> None:
    from crumpets_lightning.data.augment.decode import _decode

    full_h, full_w = cv2.imdecode(np.frombuffer(china_bytes, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    image, size = _decode(wrap(china_bytes), "rgb", 100, 100, 2.0, fast_dct=True)
    assert size == (full_h, full_w)
    assert image.shape[0] < full_h and image.shape[2] == 3  # really decoded at reduced scale


def test_fast_decode_options_stay_close_to_the_exact_decode(china_bytes: bytes) -> None:
    from crumpets_lightning.data.augment.decode import _decode

    photo = cv2.imdecode(np.frombuffer(china_bytes, np.uint8), cv2.IMREAD_COLOR)
    # chroma at half resolution (4:2:0, as most photos), so the upsampling method matters
    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    data = cv2.imencode(".jpg", photo, params)[1].tobytes()
    exact = _decode(data, "rgb")[0].astype(np.int64)
    fast_dct = _decode(data, "rgb", fast_dct=True)[0].astype(np.int64)
    fast = _decode(data, "rgb", fast_dct=True, fast_upsample=True)[0].astype(np.int64)
    assert fast.shape == exact.shape
    assert not np.array_equal(fast, fast_dct)  # the upsampling option is passed on
    assert 0 < np.abs(fast_dct - exact).mean() < np.abs(fast - exact).mean() < 2.5  # small changes
