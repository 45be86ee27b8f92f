"""The augmentation gallery PNG."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn.datasets

from crumpets_lightning.gallery import GALLERY_PANELS, main_gallery, make_gallery

CHINA = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
SIZE = 64
LABEL = 16  # label strip height for panels smaller than 160 px
GAP = 4


def _panel(grid: np.ndarray, index: int, columns: int = 5) -> np.ndarray:
    row, column = divmod(index, columns)
    y = GAP + row * (SIZE + LABEL + GAP) + LABEL
    x = GAP + column * (SIZE + GAP)
    return grid[y : y + SIZE, x : x + SIZE]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = make_gallery(CHINA, tmp_path_factory.mktemp("gallery") / "out.png", size=SIZE, seed=3)
    image = cv2.imread(str(path))
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_grid_layout(grid: np.ndarray) -> None:
    rows = math.ceil(len(GALLERY_PANELS) / 5)
    assert grid.shape == (rows * (SIZE + LABEL + GAP) + GAP, 5 * (SIZE + GAP) + GAP, 3)
    labels = [text for text, _, _ in GALLERY_PANELS]
    for expected in ("original (centre crop)", "hmirror", "vmirror", "shift up (1, 1)", "AUGMENTATION_TRAIN #1"):
        assert expected in labels


def test_panels_show_what_their_labels_say(grid: np.ndarray) -> None:
    index = {text: i for i, (text, _, _) in enumerate(GALLERY_PANELS)}
    longest = _panel(grid, index["longest side, gray fill"]).astype(int)
    assert np.abs(_panel(grid, index["hmirror"]) - longest[:, ::-1]).max() <= 1
    assert np.abs(_panel(grid, index["vmirror"]) - longest[::-1]).max() <= 1
    # gray bands above and below the landscape photo; none in the centre crop
    assert np.all(longest[:8] == 128) and np.all(longest[-8:] == 128)
    assert not np.all(_panel(grid, index["original (centre crop)"])[:8] == 128)
    up = _panel(grid, index["shift up (1, 1)"])
    down = _panel(grid, index["shift down (-1, -1)"])
    assert np.all(up[-8:] == 128) and not np.all(up[:4] == 128)
    assert np.all(down[:8] == 128) and not np.all(down[-4:] == 128)
    brighter = _panel(grid, index["brightness +0.45"]).astype(int)
    assert brighter[16:48].mean() > longest[16:48].mean() + 10
    noisy = _panel(grid, index["noise 0.2"]).astype(int)
    assert (noisy[:8] - 128).std() > 20


def test_main_gallery_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "g.png"
    assert main_gallery([str(CHINA), "-o", str(out), "--size", "32"]) == out
    assert out.exists() and cv2.imread(str(out)) is not None
    assert str(out) in capsys.readouterr().out


def test_bad_input_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_gallery(tmp_path / "missing.jpg", tmp_path / "g.png")
    with pytest.raises(ValueError, match="size"):
        make_gallery(CHINA, tmp_path / "g.png", size=0)
