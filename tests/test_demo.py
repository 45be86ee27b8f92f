"""The demo: the digits data set it builds, and ``crumpets-lightning demo --quick`` end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

from crumpets_lightning.data.sources import MsgpackDataset
from crumpets_lightning.data.transport.codec import unpack_sample
from crumpets_lightning.tools.demo import build_digits_dataset

SCRIPT = Path(sys.executable).parent / "crumpets-lightning"


def test_digits_dataset_is_a_stratified_split_of_the_real_digits(tmp_path: Path) -> None:
    data = build_digits_dataset(tmp_path, image_size=32, limit=200)
    digits = load_digits()
    train, held_out = MsgpackDataset(data.train), MsgpackDataset(data.held_out)
    assert (len(train), len(held_out)) == (data.num_train, data.num_held_out) == (160, 40)
    keys = []
    for dataset in (train, held_out):
        labels = []
        for i in range(len(dataset)):
            sample = unpack_sample(dataset[i])
            index = int(sample["key"].split("-")[1])
            keys.append(index)
            assert sample["label"] == digits.target[index]
            labels.append(sample["label"])
            image = cv2.imdecode(np.frombuffer(sample["image"], np.uint8), cv2.IMREAD_UNCHANGED)
            assert image.shape == (32, 32)  # gray JPEG
            # the picture is the digit: shrunk back to 8x8 it matches the original (0..16 scaled to 0..255)
            small = cv2.resize(image.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA)
            assert np.abs(small - digits.images[index] * 255 / 16).mean() < 20
        counts = np.bincount(labels, minlength=10)
        assert counts.min() >= 0.5 * counts.max()  # stratified: every class in both parts
    assert sorted(keys) == list(range(200))  # disjoint and complete


def test_demo_quick_runs_end_to_end_and_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(SCRIPT), "demo", "--quick", "--no-progress", "--output", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    match = re.search(r"held-out accuracy: ([0-9.]+) %", result.stdout)
    assert match, output[-4000:]
    assert float(match.group(1)) >= 70.0  # 6 short epochs on 400 training digits; chance is 10 %
    assert list((out / "checkpoints").glob("*.ckpt"))
    (log,) = list((out / "logs").rglob("metrics.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("val/accuracy" in record for record in records)
    gallery = cv2.imread(str(out / "gallery.png"))
    assert gallery is not None and gallery.shape[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing written outside --output
