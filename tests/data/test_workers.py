"""Image workers, driven directly through ``prepare`` with hand-made buffers (no loader)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sklearn.datasets

from crumpets_lightning.data.augment import pixel_ops
from crumpets_lightning.data.augment.decode import decode_image
from crumpets_lightning.data.augment.record import (
    AUGMENTATION_FIELDS,
    NEUTRAL_AUGMENTATION,
    augmentation_row,
    noise_seed,
)
from crumpets_lightning.data.augment.rng import MixtureRNG, NoRNG
from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.workers.image import (
    ClassificationWorker,
    FCNWorker,
    ImageWorker,
    SaliencyWorker,
    SegmentationWorker,
)

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"
GEOMETRY = MixtureRNG(
    prob=0.0, scale_range=(0.8, 1.4), shift_range=(-1, 1), rotation_sigma=20, aspect_sigma=0.2, hmirror=0.5
)
PIXELS = {"noise_range": (0.02, 0.05), "brightness_range": (-0.4, 0.4), "contrast_range": (-0.5, 0.5)}


@pytest.fixture(scope="module")
def china() -> bytes:
    return (PHOTOS / "china.jpg").read_bytes()


@pytest.fixture(scope="module")
def flower() -> bytes:
    return (PHOTOS / "flower.jpg").read_bytes()


def make_buffers(worker: Any) -> dict[str, np.ndarray]:
    """One sample's buffers, reset to their fill values as the loader does."""
    return {
        key: np.broadcast_to(fill[0], shape).astype(dtype).copy()
        for key, (shape, dtype, fill) in worker.buffer_specs.items()
    }


def run(worker: Any, sample: dict, seed: int = 0, key: object = "k") -> dict[str, np.ndarray]:
    buffers = make_buffers(worker)
    worker.rng = np.random.default_rng(seed)
    worker.sample_key = key
    worker.prepare(sample, {}, buffers)
    return buffers


def test_classification_worker_center_crop_matches_a_plain_resize(china: bytes) -> None:
    worker = ClassificationWorker(((3, 64, 64), np.uint8), ((1,), np.int64))
    out = run(worker, {"image": china, "label": 7})
    assert out["label"].tolist() == [7] and out["label"].dtype == np.int64
    # 427 x 640 -> shortest side 64: 64 x 96 (rounded), centre crop of 64 columns
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(china, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    reference = cv2.resize(rgb, (96, 64), interpolation=cv2.INTER_AREA)[:, 16:80]
    diff = np.abs(out["image"].transpose(1, 2, 0).astype(int) - reference.astype(int))
    assert diff.mean() < 4
    pixel_ops = slice(0, AUGMENTATION_FIELDS.index("seed_lo"))  # the seed columns hold the sample's noise seed
    assert np.array_equal(out["augmentation"][pixel_ops], NEUTRAL_AUGMENTATION[pixel_ops])


def test_image_buffer_is_rgb() -> None:
    red = np.zeros((32, 32, 3), np.uint8)
    red[:, :, 2] = 255  # BGR
    for ext in (".jpg", ".png"):
        out = run(ImageWorker(((3, 16, 16), np.uint8)), {"image": cv2.imencode(ext, red)[1].tobytes()})
        assert out["image"][0].mean() > 240 and out["image"][2].mean() < 15, ext


def test_gray_worker_gives_a_real_gray_image(china: bytes) -> None:
    out = run(ImageWorker(((1, 32, 32), np.uint8)), {"image": china})["image"]
    color = run(ImageWorker(((3, 32, 32), np.uint8)), {"image": china})["image"].transpose(1, 2, 0)
    reference = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)
    assert out.shape == (1, 32, 32) and out.std() > 20
    assert np.abs(out[0].astype(int) - reference.astype(int)).mean() < 3


def test_record_holds_the_drawn_values_and_pixels_follow_it(china: bytes) -> None:
    rng = MixtureRNG(prob=1.0, blur_range=(0.01, 0.02), color_range=(-0.3, 0.3), **PIXELS)
    worker = ClassificationWorker(((3, 48, 48), np.uint8), ((1,), np.int64), image_rng=rng)
    out = run(worker, {"image": china, "label": 1}, seed=5)
    generator = np.random.default_rng(5)
    drawn = rng((48, 48), generator)  # the worker draws first from its generator, then the noise seed
    seed = generator.bit_generator.random_raw() >> 16
    expected = augmentation_row(
        True, drawn["gamma_gray"], drawn["gamma_color"], drawn["contrast"], drawn["noise"], drawn["blur"], seed
    )
    assert np.array_equal(out["augmentation"], expected) and seed >= 1 << 24  # both seed columns used
    assert noise_seed(out["augmentation"]) == seed
    plain = run(ClassificationWorker(((3, 48, 48), np.uint8), ((1,), np.int64)), {"image": china, "label": 1})
    assert np.abs(out["image"].astype(int) - plain["image"].astype(int)).mean() > 3


def test_gpu_augmentation_records_but_leaves_pixels(china: bytes) -> None:
    rng = MixtureRNG(prob=1.0, **PIXELS)
    gpu = ImageWorker(((3, 40, 40), np.uint8), image_rng=rng, gpu_augmentation=True)
    out = run(gpu, {"image": china}, seed=3)
    plain = run(ImageWorker(((3, 40, 40), np.uint8)), {"image": china})
    assert np.array_equal(out["image"], plain["image"])
    noise_column = AUGMENTATION_FIELDS.index("noise")
    assert out["augmentation"][noise_column] > 0
    cpu = run(ImageWorker(((3, 40, 40), np.uint8), image_rng=rng), {"image": china}, seed=3)
    assert np.array_equal(cpu["augmentation"], out["augmentation"])
    assert not np.array_equal(cpu["image"], out["image"])


def test_fixed_params_override_random_ones(china: bytes) -> None:
    rng = MixtureRNG(hmirror=1.0, rotation_sigma=30)
    worker = ImageWorker(((3, 32, 32), np.uint8), image_params={"hmirror": False, "angle": 0.0}, image_rng=rng)
    plain = run(ImageWorker(((3, 32, 32), np.uint8)), {"image": china})
    assert np.array_equal(run(worker, {"image": china}, seed=1)["image"], plain["image"])
    with pytest.raises(ValueError, match=r"`image_params` has unknown key\(s\) \['rotation'\]"):
        ImageWorker(((3, 32, 32), np.uint8), image_params={"rotation": 3})


def test_scalar_fill_colours_every_channel(flower: bytes) -> None:
    worker = ImageWorker(((3, 48, 48), np.uint8, 77), image_params={"scale_mode": "longest"})
    image = run(worker, {"image": flower})["image"]
    # 427 x 640 fitted into 48 x 48: 32 rows of image, 8 rows of background above and below
    assert np.all(image[:, :7, :] == 77) and np.all(image[:, 41:, :] == 77)
    per_channel = ImageWorker(((3, 48, 48), np.uint8, (1, 2, 3)), image_params={"scale_mode": "longest"})
    image = run(per_channel, {"image": flower})["image"]
    assert image[:, 0, 0].tolist() == [1, 2, 3]


def test_non_square_buffer_keeps_circles_round() -> None:
    canvas = np.zeros((300, 300, 3), np.uint8)
    cv2.circle(canvas, (150, 150), 120, (255, 255, 255), -1)
    data = cv2.imencode(".png", canvas)[1].tobytes()
    for samples in (1, 2):
        worker = ImageWorker(((3, 32, 80), np.uint8), image_params={"scale_mode": "longest", "supersampling": samples})
        mask = run(worker, {"image": data})["image"][0] > 127
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1


def test_same_seed_same_output_different_seed_different(china: bytes) -> None:
    worker = ClassificationWorker(((3, 32, 32), np.uint8), ((1,), np.int64), image_rng=MixtureRNG(prob=0.5, **PIXELS))
    a = run(worker, {"image": china, "label": 0}, seed=9)
    b = run(worker, {"image": china, "label": 0}, seed=9)
    c = run(worker, {"image": china, "label": 0}, seed=10)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize(
    "sample, match",
    [
        ({"label": 1}, "'image'"),
        ({"image": b"garbage", "label": 1}, "cannot decode"),
        ({"image": b"", "label": 1}, "empty"),
        ({"image": "a string", "label": 1}, "bytes"),
        ({"image": None, "label": 1}, "bytes"),
        ({"image": "CHINA"}, "'label'"),
        ({"image": "CHINA", "label": "cat"}, "label"),
        ({"image": "CHINA", "label": None}, "label"),
        ({"image": "CHINA", "label": 3.5}, "integral"),
        ({"image": "CHINA", "label": 10**12}, "does not fit"),
        ({"image": "CHINA", "label": [1, 2]}, "shape"),
    ],
)
def test_bad_samples_raise_sample_error_with_the_key(china: bytes, sample: dict, match: str) -> None:
    sample = {k: (china if v == "CHINA" else v) for k, v in sample.items()}
    worker = ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int32))
    with pytest.raises(SampleError, match=match) as info:
        run(worker, sample, key="sample-42")
    assert info.value.key == "sample-42" and "sample-42" in str(info.value)


def test_labels_of_any_spec_shape(china: bytes) -> None:
    worker = ClassificationWorker(((3, 16, 16), np.uint8), ((3,), np.float32))
    assert run(worker, {"image": china, "label": [0.5, 1.5, 2.5]})["label"].tolist() == [0.5, 1.5, 2.5]
    numpy_label = ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int64))
    assert run(numpy_label, {"image": china, "label": np.int64(4)})["label"].tolist() == [4]


def test_worker_is_picklable_and_copyable(china: bytes) -> None:
    worker = ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int64), image_rng=GEOMETRY)
    clone = pickle.loads(pickle.dumps(worker))
    assert np.array_equal(
        run(clone, {"image": china, "label": 1})["image"], run(worker, {"image": china, "label": 1})["image"]
    )
    assert worker.copy().buffer_specs.keys() == worker.buffer_specs.keys()


def test_bad_specs_raise() -> None:
    with pytest.raises(ValueError, match="channels"):
        ImageWorker(((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="label map"):
        SegmentationWorker(((3, 16, 16), np.uint8), ((3, 16, 16), np.uint8))


def _label_map_png(height: int, width: int) -> tuple[bytes, np.ndarray]:
    labels = (np.add.outer(np.arange(height) // 40, np.arange(width) // 50) % 4 + 1).astype(np.uint8)
    return cv2.imencode(".png", labels)[1].tobytes(), labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_segmentation_defaults_keep_only_label_values(china: bytes, dtype: type) -> None:
    png, labels = _label_map_png(427, 640)
    worker = SegmentationWorker(((3, 40, 40), np.uint8), ((1, 40, 40), dtype, 255), image_rng=GEOMETRY)
    for seed in range(5):
        target = run(worker, {"image": china, "target_image": png}, seed=seed)["target_image"]
        assert target.dtype == dtype
        assert set(np.unique(target).tolist()) <= {1, 2, 3, 4, 255}
    array_worker = SegmentationWorker(((3, 40, 40), np.uint8), ((1, 40, 40), dtype, 255))
    from_array = run(array_worker, {"image": china, "target_image": labels.astype(np.int64)})["target_image"]
    from_png = run(array_worker, {"image": china, "target_image": png})["target_image"]
    assert np.array_equal(from_array, from_png)


def test_segmentation_target_moves_with_the_image() -> None:
    # the label map is the thresholded image itself, so it must stay aligned through any geometry
    rng = np.random.default_rng(0)
    blobs = cv2.GaussianBlur(rng.integers(0, 256, (120, 160), dtype=np.uint8), (0, 0), 6)
    mask = (blobs > np.median(blobs)).astype(np.uint8)
    image = np.dstack([mask * 255] * 3)
    worker = SegmentationWorker(((3, 60, 60), np.uint8), ((1, 60, 60), np.uint8, 9), image_rng=GEOMETRY)
    sample = {
        "image": cv2.imencode(".png", image)[1].tobytes(),
        "target_image": cv2.imencode(".png", mask)[1].tobytes(),
    }
    for seed in range(5):
        out = run(worker, sample, seed=seed)
        inside = out["target_image"][0] != 9
        agree = (out["image"][0][inside] > 127) == (out["target_image"][0][inside] == 1)
        assert agree.mean() > 0.95


def _centroid(plane: np.ndarray) -> tuple[float, float]:
    weights = plane.astype(np.float64)
    ys, xs = np.indices(weights.shape)
    return (weights * ys).sum() / weights.sum(), (weights * xs).sum() / weights.sum()


def test_fcn_target_is_transformed_identically() -> None:
    # a large JPEG: the image is decoded at reduced scale, the target at full size; both must line up
    big = np.zeros((800, 1200, 3), np.uint8)
    cv2.circle(big, (700, 300), 40, (255, 255, 255), -1)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    worker = FCNWorker(((3, 64, 64), np.uint8), ((3, 32, 32), np.uint8), image_rng=GEOMETRY)
    checked = 0
    for seed in range(8):
        out = run(worker, {"image": data, "target_image": data}, seed=seed)
        if out["target_image"][0].sum() < 255 * 3:
            continue  # the disc is (mostly) outside the crop
        image_y, image_x = _centroid(out["image"][0])
        target_y, target_x = _centroid(out["target_image"][0])
        # image pixel centre c maps to target pixel (c + 0.5) / 2 - 0.5
        assert (image_y + 0.5) / 2 - 0.5 == pytest.approx(target_y, abs=0.1), seed
        assert (image_x + 0.5) / 2 - 0.5 == pytest.approx(target_x, abs=0.1), seed
        checked += 1
    assert checked >= 4


def test_fcn_target_gets_no_pixel_ops_by_default(china: bytes) -> None:
    sample = {"image": china, "target_image": china}
    with_ops = run(
        FCNWorker(((3, 32, 32), np.uint8), ((3, 32, 32), np.uint8), image_rng=MixtureRNG(prob=1.0, **PIXELS)), sample
    )
    without = run(FCNWorker(((3, 32, 32), np.uint8), ((3, 32, 32), np.uint8)), sample)
    assert np.array_equal(with_ops["target_image"], without["target_image"])
    assert not np.array_equal(with_ops["image"], without["image"])


def _dot_jpeg(height: int, width: int, y: int, x: int) -> bytes:
    canvas = np.zeros((height, width, 3), np.uint8)
    cv2.circle(canvas, (x, y), 3, (255, 255, 255), -1)
    return cv2.imencode(".png", canvas)[1].tobytes()


def test_saliency_points_move_with_the_image() -> None:
    height, width, y, x = 120, 200, 50, 115
    data = _dot_jpeg(height, width, y, x)
    rng = MixtureRNG(scale_range=(0.9, 1.3), shift_range=(-1, 1), rotation_sigma=25, hmirror=0.5, vmirror=0.5)
    worker = SaliencyWorker(((3, 60, 60), np.uint8), ((1, 60, 60), np.float32), image_rng=rng)
    checked = 0
    for seed in range(12):
        out = run(worker, {"image": data, "experiments": [{"fixations": [[y, x]]}]}, seed=seed)
        if out["target_image"].max() == 0:
            continue  # the point left the crop
        peak = np.unravel_index(out["target_image"][0].argmax(), (60, 60))
        centre = _centroid(out["image"][0])
        assert abs(peak[0] - centre[0]) <= 1.0 and abs(peak[1] - centre[1]) <= 1.0, seed
        checked += 1
    assert checked >= 6


def test_saliency_hmirror_moves_the_peak_to_the_mirrored_position() -> None:
    data = _dot_jpeg(100, 100, 30, 20)
    sample = {"image": data, "experiments": [{"locations": [[30, 20]]}]}
    plain = SaliencyWorker(((3, 50, 50), np.uint8), ((1, 50, 50), np.float32))
    mirrored = SaliencyWorker(((3, 50, 50), np.uint8), ((1, 50, 50), np.float32), image_params={"hmirror": True})
    a = np.argwhere(run(plain, sample)["target_image"][0] > 0).tolist()
    b = np.argwhere(run(mirrored, sample)["target_image"][0] > 0).tolist()
    assert a == [[15, 10]] and b == [[15, 49 - 10]]


def test_saliency_parameters(china: bytes) -> None:
    experiments = [{"fixations": [[100 + 10 * i, 200 + 10 * i]]} for i in range(4)]
    sample = {"image": china, "experiments": experiments}
    spec = ((1, 40, 40), np.float32)
    counts = run(SaliencyWorker(((3, 40, 40), np.uint8), spec), sample)["target_image"]
    assert counts.sum() == 4
    half = SaliencyWorker(((3, 40, 40), np.uint8), spec, target_image_params={"sample_ratio": 0.5})
    assert run(half, sample)["target_image"].sum() == 2
    smooth = SaliencyWorker(((3, 40, 40), np.uint8), spec, target_image_params={"blur": 0.05, "maxnorm": True})
    blurred = run(smooth, sample)["target_image"]
    assert blurred.max() == pytest.approx(1.0) and (blurred > 0.01).sum() > 20
    spread = SaliencyWorker(((3, 40, 40), np.uint8), spec, target_image_params={"interpolate": True})
    assert run(spread, sample)["target_image"].sum() == pytest.approx(4.0)
    jitter = SaliencyWorker(((3, 40, 40), np.uint8), spec, target_image_params={"jitter": 0.05})
    assert not np.array_equal(run(jitter, sample, seed=1)["target_image"], counts)


def test_saliency_falls_back_to_locations_and_validates() -> None:
    data = _dot_jpeg(100, 100, 50, 50)
    worker = SaliencyWorker(((3, 20, 20), np.uint8), ((1, 20, 20), np.float32))
    out = run(worker, {"image": data, "experiments": [{"fixations": [], "locations": [[50, 50]]}]})
    assert out["target_image"].sum() == 1
    with pytest.raises(SampleError, match="experiments"):
        run(worker, {"image": data})
    with pytest.raises(SampleError, match="fixations"):
        run(worker, {"image": data, "experiments": [{"gaze": []}]})
    with pytest.raises(ValueError, match="sample_ratio"):
        SaliencyWorker(((3, 20, 20), np.uint8), ((1, 20, 20), np.float32), target_image_params={"sample_ratio": 0})


def test_reduced_decode_keeps_saliency_aligned() -> None:
    # a large image is decoded at reduced scale; points are in full-size coordinates
    big = np.zeros((800, 1200, 3), np.uint8)
    cv2.circle(big, (900, 200), 12, (255, 255, 255), -1)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert decode_image(data, min_height=60, min_width=60).shape[0] < 800
    worker = SaliencyWorker(((3, 60, 60), np.uint8), ((1, 60, 60), np.float32), image_params={"scale_mode": "longest"})
    out = run(worker, {"image": data, "experiments": [{"fixations": [[200, 900]]}]})
    peak = np.unravel_index(out["target_image"][0].argmax(), (60, 60))
    centre = _centroid(out["image"][0])
    assert abs(peak[0] - centre[0]) <= 1 and abs(peak[1] - centre[1]) <= 1


@pytest.mark.parametrize(
    ("kwargs", "builds"),
    [
        ({"image_rng": MixtureRNG(prob=0.5, noise_range=(0.03, 0.1))}, True),
        ({"image_params": {"noise": 0.05}}, True),
        ({"image_rng": MixtureRNG(prob=0.5, noise_range=(0.03, 0.1)), "gpu_augmentation": True}, False),
        ({"image_rng": MixtureRNG(prob=0.0, noise_range=(0.03, 0.1))}, False),
        ({"image_rng": MixtureRNG(prob=1.0, brightness_range=(-0.5, 0.5))}, False),
        ({"image_rng": NoRNG()}, False),
        ({}, False),
    ],
)
def test_prepare_shared_builds_the_noise_pool_only_when_cpu_noise_is_possible(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict, builds: bool
) -> None:
    monkeypatch.setattr(pixel_ops, "_pool", None)
    ImageWorker(((3, 8, 8), np.uint8), **kwargs).prepare_shared()
    assert (pixel_ops._pool is not None) is builds
    if builds:  # the pool the pixel ops then use, not a private copy
        assert pixel_ops.noise_pool() is pixel_ops._pool


class PoolProbeWorker(ClassificationWorker):
    """Reports in a buffer whether the noise pool already existed when its worker process started."""

    def __init__(self) -> None:
        super().__init__(
            ((3, 8, 8), np.uint8), ((1,), np.int64), image_rng=MixtureRNG(prob=1.0, noise_range=(0.05, 0.05))
        )
        self.add_buffer("pool_at_start", ((1,), np.int64))
        self.pool_at_start = -1

    def setup(self) -> None:
        self.pool_at_start = int(pixel_ops._pool is not None)

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        super().prepare(sample, batch, buffers)
        buffers["pool_at_start"][0] = self.pool_at_start


def test_loader_workers_inherit_the_noise_pool_built_before_the_fork(
    monkeypatch: pytest.MonkeyPatch, china: bytes
) -> None:
    from crumpets_lightning.data.loader.loader import TurboDataLoader

    monkeypatch.setattr(pixel_ops, "_pool", None)
    samples = [{"image": china, "label": i} for i in range(4)]
    with TurboDataLoader(samples, 2, PoolProbeWorker(), nworkers=2, seed=0) as loader:
        flags = [int(v) for _, mini_batches in loader for m in mini_batches for v in m["pool_at_start"].ravel()]
    assert flags == [1, 1, 1, 1]


def test_reusable_warp_arrays_give_the_same_images_as_fresh_ones(
    monkeypatch: pytest.MonkeyPatch, china: bytes, flower: bytes
) -> None:
    from crumpets_lightning.data.workers import image as workers_module

    photo = cv2.imdecode(np.frombuffer(flower, np.uint8), cv2.IMREAD_COLOR)
    small = cv2.imencode(".png", cv2.resize(photo, (64, 48)))[1].tobytes()  # another size: new scratch arrays
    samples = [china, small, flower, china]
    rng = MixtureRNG(prob=1.0, scale_range=(0.8, 1.3), rotation_sigma=20, **PIXELS)

    def images(scratch: bool) -> list[np.ndarray]:
        monkeypatch.setattr(workers_module, "_SCRATCH", scratch)
        worker = ClassificationWorker(((3, 40, 56), np.uint8), ((1,), np.int64), image_rng=rng)
        return [run(worker, {"image": data, "label": 0}, seed=i)["image"] for i, data in enumerate(samples)]

    for reused, fresh in zip(images(True), images(False)):
        assert np.array_equal(reused, fresh)
