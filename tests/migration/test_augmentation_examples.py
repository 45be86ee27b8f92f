"""The Augmentation Guide's examples: custom MixtureRNG, no augmentation with a grey background, every update."""

from __future__ import annotations

from itertools import cycle
from typing import Any

import numpy as np
import pytest

from crumpets_lightning.data import TurboDataLoader, pack_sample
from tests.migration._docs import (
    ASPECT_BODY,
    AUGMENTATION_CRUMPETS_IMPORTS,
    CUSTOM_RNG_BODY,
    NO_AUGMENTATION_BODY,
    UPDATES,
    port,
    run,
)
from tests.migration.conftest import photo_jpegs

SAMPLES = [pack_sample({"image": data, "label": i % 2}) for i, data in enumerate(photo_jpegs(4, size=(96, 128)))]


def _first_batch(worker: Any) -> dict[str, np.ndarray]:
    """What a TurboDataLoader (1 worker, batch 4, the docs' use) returns for the 4 landscape photos."""
    with TurboDataLoader(cycle(SAMPLES), 4, worker, 1, length=len(SAMPLES), shuffle=False) as loader:
        for _, mini_batch in loader:
            return {key: np.array(value) for key, value in mini_batch[0].items() if isinstance(value, np.ndarray)}
    raise AssertionError("the loader yielded nothing")


def _no_augmentation() -> np.ndarray:
    scope = run(port(AUGMENTATION_CRUMPETS_IMPORTS, NO_AUGMENTATION_BODY))
    return _first_batch(scope["worker_template"])["image"]


def test_custom_rng_example() -> None:
    scope = run(port(AUGMENTATION_CRUMPETS_IMPORTS, CUSTOM_RNG_BODY), {"sample_size": (3, 64, 64)})
    batch = _first_batch(scope["worker_template"])
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].ravel().tolist() == [0, 1, 0, 1]


def test_no_augmentation_example_fills_the_background_with_its_grey() -> None:
    image = _no_augmentation()
    assert image.shape == (4, 3, 256, 256)
    # 128x96 photos scaled by their longest edge to 256 wide: about 192 rows of photo, grey rows above and below
    assert (image[:, :, :24] == 128).all() and (image[:, :, -24:] == 128).all()
    assert image[:, :, 40:216].std() > 10


def test_aspect_example_as_printed_lacks_the_label_buffer_in_crumpets_and_here() -> None:
    # ClassificationWorker(image, label, ...): the docs' snippet omits `label`, a TypeError in crumpets as well
    with pytest.raises(TypeError, match="label"):
        run(port(AUGMENTATION_CRUMPETS_IMPORTS, ASPECT_BODY))


@pytest.mark.parametrize("name", sorted(UPDATES))
def test_every_update_of_the_guide_changes_the_image(name: str) -> None:
    body = NO_AUGMENTATION_BODY.replace(
        "image_params=dict(scale_mode='longest'),",
        f"image_params=dict(scale_mode='longest'),\n    image_rng=MixtureRNG({UPDATES[name]}),",
    )
    scope = run(port(AUGMENTATION_CRUMPETS_IMPORTS, body))
    image = _first_batch(scope["worker_template"])["image"]
    plain = _no_augmentation()
    assert image.shape == plain.shape
    difference = np.abs(image.astype(np.int16) - plain).mean()
    assert difference > 1.0, f"{name}: the augmented images equal the plain ones"
    if name == "hmirror":  # an exact left-right mirror of the plain image
        assert np.abs(image.astype(np.int16) - plain[..., ::-1]).mean() < 2
    if name == "vmirror":
        assert np.abs(image.astype(np.int16) - plain[..., ::-1, :]).mean() < 2
