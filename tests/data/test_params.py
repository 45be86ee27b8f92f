"""AugmentationParams: one frozen type with the defaults in one place; dict params still accepted; batch keys."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn.datasets

from crumpets_lightning.data.augment.augmentation import randomize_image
from crumpets_lightning.data.augment.params import AUGMENTATION_PARAM_NAMES, AugmentationParams, check_param_dict
from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN, INPUT_PARAMS_VAL, NO_AUGMENTATION
from crumpets_lightning.data.augment.rng import MixtureRNG
from crumpets_lightning.data.workers.image import (
    ClassificationWorker,
    FCNWorker,
    ImageWorker,
    SaliencyWorker,
    SegmentationWorker,
)

PHOTO = (Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").read_bytes()


def test_defaults_are_neutral_and_the_type_is_frozen() -> None:
    params = AugmentationParams()
    assert (params.angle, params.scale, params.aspect, params.shift, params.scale_mode) == (
        0.0,
        1.0,
        1.0,
        None,
        "shortest",
    )
    assert params.interp_method == cv2.INTER_LINEAR and params.noise is None and params.do_rotate_and_resize
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.angle = 3.0  # type: ignore[misc]
    assert tuple(f.name for f in dataclasses.fields(AugmentationParams)) == AUGMENTATION_PARAM_NAMES
    assert len(AUGMENTATION_PARAM_NAMES) == 20


def test_from_dict_fills_defaults_and_equals_the_constructor() -> None:
    drawn = AUGMENTATION_TRAIN((32, 32), np.random.default_rng(0))
    params = AugmentationParams.from_dict(drawn)
    assert params == AugmentationParams(**drawn)
    assert hash(params) == hash(AugmentationParams(**drawn))
    assert AugmentationParams.from_dict(None) == AugmentationParams()
    assert AugmentationParams.from_dict(params) is params
    listed = AugmentationParams.from_dict({"shift": [0.5, -0.5], "gamma_color": [1.0, 0.9, 1.1]})
    assert listed.shift == (0.5, -0.5) and listed.gamma_color == (1.0, 0.9, 1.1)  # lists become tuples
    assert listed.to_dict()["shift"] == (0.5, -0.5) and set(listed.to_dict()) == set(AUGMENTATION_PARAM_NAMES)
    assert params.replace(angle=5.0).angle == 5.0 and params.angle != 5.0


def test_presets_and_rng_draws_convert() -> None:
    for preset in (NO_AUGMENTATION, INPUT_PARAMS_VAL):
        AugmentationParams.from_dict(preset)
    rng = MixtureRNG(
        prob=1.0, scale_range=(0.9, 1.1), shift_range=(-1, 1), noise_range=(0.01, 0.02), brightness_range=(-1, 1),
        color_range=(-1, 1), contrast_range=(-1, 1), blur_range=(0.001, 0.002), rotation_sigma=3, aspect_sigma=0.1,
        interpolations=(cv2.INTER_LINEAR,), hmirror=0.5, vmirror=0.5, shear_range=(-0.1, 0.1),
    )  # fmt: skip
    drawn = rng((10, 10), np.random.default_rng(1))
    assert AugmentationParams.from_dict(drawn).to_dict() == {**AugmentationParams().to_dict(), **drawn}


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"image_params has unknown key\(s\) \['angel'\]; allowed: \['angle'"):
        AugmentationParams.from_dict({"angel": 3}, "image_params")
    with pytest.raises(TypeError, match=r"params must be a dict of augmentation parameters.*got int"):
        AugmentationParams.from_dict(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"replace\(\) has unknown key\(s\) \['zoom'\]"):
        AugmentationParams().replace(zoom=2)
    assert check_param_dict({"angle": 1}) == {"angle": 1}


def test_randomize_image_takes_params_or_keywords_with_the_same_result() -> None:
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(PHOTO, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    params = AugmentationParams(angle=12.0, scale=1.2, gamma_gray=0.7, contrast=0.3)
    by_type = randomize_image(image, (32, 40), params)
    assert np.array_equal(
        by_type, randomize_image(image, (32, 40), angle=12.0, scale=1.2, gamma_gray=0.7, contrast=0.3)
    )
    assert np.array_equal(by_type, randomize_image(image, (32, 40), params.to_dict()))
    assert np.array_equal(
        randomize_image(image, (32, 40), params, angle=0.0), randomize_image(image, (32, 40), params.replace(angle=0.0))
    )
    with pytest.raises(ValueError, match=r"randomize_image\(\) keyword arguments has unknown key\(s\) \['rotation'\]"):
        randomize_image(image, (32, 40), rotation=3)
    # the defaults live in AugmentationParams only, not in randomize_image's signature
    assert set(inspect.signature(randomize_image).parameters) == {"im", "size", "params", "rng", "kwargs"}


def test_image_params_may_be_an_augmentation_params_fixing_everything() -> None:
    fixed = AugmentationParams(hmirror=True)
    worker = ImageWorker(((3, 16, 16), np.uint8), image_params=fixed, image_rng=MixtureRNG(rotation_sigma=30))
    worker.rng = np.random.default_rng(0)
    assert worker.draw_params() == fixed  # every parameter fixed: the RNG's angle is overridden too


def _run(worker: object, sample: dict, key: object) -> dict[str, list]:
    buffers = {
        k: np.broadcast_to(fill[0], shape).astype(dtype).copy()
        for k, (shape, dtype, fill) in worker.buffer_specs.items()
    }  # type: ignore[attr-defined]
    batch: dict[str, list] = {}
    worker.rng = np.random.default_rng(0)  # type: ignore[attr-defined]
    worker.sample_key = key  # type: ignore[attr-defined]
    worker.prepare(sample, batch, buffers)  # type: ignore[attr-defined]
    return batch


def test_every_image_worker_appends_the_sample_key() -> None:
    label_map = cv2.imencode(".png", np.zeros((20, 20), np.uint8))[1].tobytes()
    image = ((3, 16, 16), np.uint8)
    gaze = [{"fixations": [[5, 5]]}]
    cases = [
        (ImageWorker(image), {"image": PHOTO}),
        (ClassificationWorker(image, ((1,), np.int64)), {"image": PHOTO, "label": 1}),
        (FCNWorker(image, ((3, 8, 8), np.uint8)), {"image": PHOTO, "target_image": PHOTO}),
        (SegmentationWorker(image, ((1, 8, 8), np.uint8)), {"image": PHOTO, "target_image": label_map}),
        (SaliencyWorker(image, ((1, 8, 8), np.float32)), {"image": PHOTO, "experiments": gaze}),
    ]
    for worker, sample in cases:
        batch: dict[str, list] = {}
        for key in ("a/1.jpg", 7):
            for name, values in _run(worker, sample, key).items():
                batch.setdefault(name, []).extend(values)
        assert batch == {"key": ["a/1.jpg", 7]}, type(worker).__name__


def test_record_round_trip_keeps_the_48_bit_seed_and_names_unknown_keys() -> None:
    from crumpets_lightning.data.augment.record import (
        augmentation_from_records,
        augmentation_row,
        augmentation_to_records,
        noise_seed,
    )

    seed = (1 << 48) - 12345
    row = augmentation_row(True, 0.8, (1.0, 0.9, 1.1), 0.25, 0.05, 0.01, seed)
    assert noise_seed(row) == seed
    records = augmentation_to_records(row[None])
    assert records[0]["seed"] == seed and records[0]["gamma_color"] == pytest.approx((1.0, 0.9, 1.1))
    assert np.array_equal(augmentation_from_records(records), row[None])
    with pytest.raises(ValueError, match=r"augmentation record 0 has unknown keys \['brightness'\]"):
        augmentation_from_records([{"brightness": 0.3}])
    with pytest.raises(ValueError, match=r"shape \[B, 10\].*'seed_hi'.*but got \(2, 8\)"):
        augmentation_to_records(np.zeros((2, 8)))
