"""Fixtures of the migration tests: a tiny ImageNet-style folder as in the crumpets Quick Start Guide."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn.datasets

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def photo_jpegs(count: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[bytes]:
    """``count`` JPEGs (``size`` = height, width) cut from scikit-learn's sample photos."""
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(str(PHOTOS / name)) for name in ("china.jpg", "flower.jpg")]
    out = []
    for i in range(count):
        photo = photos[i % 2]
        y, x = int(rng.integers(0, 100)), int(rng.integers(0, 200))
        crop = cv2.resize(photo[y : y + 300, x : x + 400], (size[1], size[0]), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(data.tobytes())
    return out


@pytest.fixture
def tinyset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tinyset/{cat,elephant}/{1..4}.jpg`` in a temporary working directory (the docs' folder structure)."""
    jpegs = photo_jpegs(8)
    for c, name in enumerate(("cat", "elephant")):
        folder = tmp_path / "tinyset" / name
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i + 1}.jpg").write_bytes(jpegs[4 * c + i])
    monkeypatch.chdir(tmp_path)
    return tmp_path / "tinyset"
