"""The Quick Start Guide's data-processing example (a TurboDataLoader over msgpack samples of a folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.migration._docs import LOADER_BODY, LOADER_CRUMPETS_IMPORTS, port, run


def test_the_quick_start_loader_example_runs_with_only_the_imports_changed(tinyset: Path) -> None:
    scope = run(port(LOADER_CRUMPETS_IMPORTS, LOADER_BODY))
    assert scope["num_samples"] == 8
    # 8 samples in batches of 2: 4 iterations per epoch, counted on over the 3 epochs as in crumpets
    assert scope["iteration"] == 12
    assert len(scope["mini_batch"]) == 1  # num_mini_batches defaults to 1: a list of one batch
    image, label = scope["image"], scope["label"]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (2, 3, 224, 224)
    assert label.shape == (2, 1) and set(label.ravel().tolist()) <= {0, 1}
    assert image.std() > 10  # photos, augmented with AUGMENTATION_TRAIN, not a blank buffer
