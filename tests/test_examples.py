"""The ported crumpets examples run as written (tiny arguments, in a subprocess) and print what they promise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 100


def _run(script: str, *args: str, cwd: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parent), env.get("PYTHONPATH", "")])
    # One compute thread: on a small shared machine OpenMP threads spin against the loader's workers
    # (a 16-image step of the tiny ResNet takes 2 s with 2 threads under load, 20 ms with 1).
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_every_example_has_main_and_is_documented() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["dataloader_datadings.py", "dataloader_simple.py", "pytorch_cifar10.py", "pytorch_resnet.py"]
    for script in scripts:
        source = (EXAMPLES / script).read_text()
        assert "def main(argv" in source and 'if __name__ == "__main__":' in source
        assert script in readme


@pytest.mark.slow
def test_dataloader_simple(tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    out = _run(
        "dataloader_simple.py",
        *("--epochs", "2", "--batch-size", "2", "--nworkers", "1", "--image-size", "32", "--per-class", "3"),
        *("--dsdir", str(tmp_path / "tinyset"), "--grid", str(grid)),
        cwd=tmp_path,
    )
    assert "tinyset: 6 images" in out
    lines = re.findall(r"epoch (\d) iteration (\d+): image \((\d+), 3, 32, 32\) uint8, labels \[([\d, ]+)\]", out)
    # 6 images, batch 2: 3 batches per epoch, iterations counting on across epochs
    assert [(int(e), int(i)) for e, i, _, _ in lines] == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6)]
    for epoch in "01":
        labels = [int(x) for e, _, _, ls in lines if e == epoch for x in ls.split(",")]
        assert sorted(labels) == [0, 0, 0, 1, 1, 1]  # each image once per epoch
    assert sorted(p.name for p in (tmp_path / "tinyset").iterdir()) == ["china", "flower"]
    image = cv2.imread(str(grid))
    assert image is not None and image.shape == (32, 64, 3)


@pytest.mark.slow
def test_dataloader_datadings(tmp_path: Path) -> None:
    out = _run(
        "dataloader_datadings.py",
        *("--epochs", "2", "--batch-size", "8", "--nworkers", "1", "--limit", "50"),
        cwd=tmp_path,
    )
    (count,) = re.findall(r": (\d+) samples\n", out)
    batches = int(re.findall(r"(\d+) batches per epoch", out)[0])
    assert batches == -(-int(count) // 8)
    epochs = re.findall(r"epoch (\d): (\d+) samples, labels \{(.*)\}", out)
    assert [e for e, _, _ in epochs] == ["0", "1"]
    for _, seen, labels in epochs:
        assert int(seen) == int(count)
        counts = dict(item.split(": ") for item in labels.split(", "))
        assert sum(int(c) for c in counts.values()) == int(count)
        assert set(counts) <= {str(d) for d in range(10)}
    assert "image (8, 3, 32, 32) uint8" in out
    assert not list(tmp_path.iterdir())  # the temporary data went away with the example


@pytest.mark.slow
def test_pytorch_cifar10(tmp_path: Path) -> None:
    out = _run(
        "pytorch_cifar10.py",
        *("--epochs", "1", "--batch-size", "16", "--max-steps", "4", "--nworkers", "1", "--limit", "120"),
        *("--output", str(tmp_path / "out")),
        cwd=tmp_path,
    )
    match = re.search(
        r"after \d+ epochs \((\d+) steps\): train loss ([\d.]+), val loss ([\d.]+), val accuracy ([\d.]+)", out
    )
    assert match is not None, out
    assert int(match.group(1)) == 4
    assert 0.0 <= float(match.group(4)) <= 1.0
    assert (tmp_path / "out" / "data" / "digits_train.msgpack").is_file()


@pytest.mark.slow
def test_pytorch_resnet_snapshots_logs_hooks_and_resume(tmp_path: Path) -> None:
    output = tmp_path / "out"
    common = ("--batch-size", "16", "--nworkers", "1", "--limit", "100", "--width", "4", "--print-every", "1")
    out = _run("pytorch_resnet.py", "--epochs", "2", *common, "--output", str(output), cwd=tmp_path)
    # hooks: a loss line per iteration and a validation line per epoch
    assert len(re.findall(r"epoch 0 iteration \d+: loss [\d.]+ lr [\d.]+", out)) >= 2
    assert len(re.findall(r"epoch \d validation: loss [\d.]+, accuracy [\d.]+, top-3 accuracy [\d.]+", out)) == 2
    snapshots = output / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["epoch_00.ckpt", "epoch_01.ckpt"]
    checkpoint = torch.load(snapshots / "epoch_01.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["optimizer_states"]
    log = output / "logs" / "resnet" / "version_0" / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("val/accuracy" in r for r in records) and any("train/loss_step" in r for r in records)

    resumed = _run(
        "pytorch_resnet.py",
        *("--epochs", "3", *common, "--output", str(output), "--resume", str(snapshots / "epoch_01.ckpt")),
        cwd=tmp_path,
    )
    # only the third epoch runs after resuming
    assert re.findall(r"epoch (\d) validation", resumed) == ["2"]
    assert (snapshots / "epoch_02.ckpt").is_file()
    assert (output / "logs" / "resnet" / "version_1" / "metrics.jsonl").is_file()
