"""``crumpets-lightning bench``: the table and JSON structure of a quick run, the photos, argument errors.

Speed itself is never asserted here (SPEC section 5: benchmarks measure, tests check behaviour).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from crumpets_lightning.cli import main as cli_main
from crumpets_lightning.tools.bench import format_table, load_jpegs, main, make_photo_jpegs

EXPECTED_TARGETS = {
    "throughput / torch DataLoader (best / best)": ">= 1.3",  # SPEC section 5
    "throughput / limit (best / best)": ">= 0.95",
    "main-process CPU per image": "<= 0.05",
    "start-up overhead beyond the first batch's work": "<= 0.3",
}


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_photos_are_distinct_decodable_jpegs_of_about_the_requested_size() -> None:
    jpegs = make_photo_jpegs(10, seed=3, size=(75, 100))
    assert len(jpegs) == 10 and len(set(jpegs)) == 10
    for data in jpegs:
        assert data[:2] == b"\xff\xd8"  # a JPEG, not a PNG
        height, width = _decode(data).shape[:2]
        assert 67 <= min(height, width) <= 83 and 90 <= max(height, width) <= 110
        # real photo content, not a flat image
        assert _decode(data).std() > 10
    assert make_photo_jpegs(3, seed=3, size=(75, 100)) == jpegs[:3]
    assert make_photo_jpegs(3, seed=4, size=(75, 100)) != jpegs[:3]
    with pytest.raises(ValueError, match="count=0"):
        make_photo_jpegs(0)


def test_load_jpegs_reads_a_folder_recursively_and_names_a_bad_one(tmp_path: Path) -> None:
    jpegs = make_photo_jpegs(3, size=(30, 40))
    (tmp_path / "a").mkdir()
    for i, data in enumerate(jpegs):
        (tmp_path / ("a" if i else "") / f"{i}.jpg").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    assert sorted(load_jpegs(tmp_path)) == sorted(jpegs)
    assert len(load_jpegs(tmp_path, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match=r"no \.jpg"):
        load_jpegs(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_jpegs(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_format_table_shows_pass_fail_and_missing_values() -> None:
    rows = [
        {"metric": "ratio", "value": 1.2, "unit": "x", "target": ">= 1.05", "passed": True},
        {"metric": "cpu", "value": 0.2, "unit": "ms", "target": "<= 0.05", "passed": False},
        {"metric": "info", "value": None, "unit": "s", "target": "", "passed": None},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["metric", "value", "target", "result"]
    assert lines[2].split()[-1] == "pass" and "1.200 x" in lines[2]
    assert lines[3].split()[-1] == "FAIL"
    assert lines[4].split()[-1] == "n/a"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--images", "0"], "--images to be a positive int but got 0"), (["--data", "/nonexistent/x"], "not a directory")],
)
def test_bad_arguments_exit_with_status_2_and_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    # the console script dispatches to the same function
    assert cli_main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--images", "32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())

    config = results["config"]
    assert (config["images"], config["batch_size"], config["rounds"], config["epochs"]) == (32, 16, 1, 1)
    assert len(results["rounds"]) == 1
    rows = {row["metric"]: row for row in results["rows"]}
    for row in results["rows"]:
        assert set(row) == {"metric", "value", "unit", "target", "passed"}
        assert row["value"] is not None and math.isfinite(row["value"]) and row["value"] >= 0, row
        # a row has a verdict exactly when it has a target
        assert (row["passed"] is None) == (row["target"] == ""), row
        assert row["metric"] in printed
    for metric, target in EXPECTED_TARGETS.items():
        assert rows[metric]["target"] == target
        assert isinstance(rows[metric]["passed"], bool)

    # the verdicts agree with the values
    ratio = rows["throughput / torch DataLoader (best / best)"]
    assert ratio["passed"] == (ratio["value"] >= 1.3)
    assert rows["main-process CPU per image"]["passed"] == (rows["main-process CPU per image"]["value"] <= 0.05)
    # the ratios are what the per-epoch rates say
    entry = results["rounds"][0]
    (epoch,) = entry["epochs"]
    assert ratio["value"] == pytest.approx(epoch["ours"] / epoch["torch"])
    assert rows["throughput / torch DataLoader (median of epochs)"]["value"] == pytest.approx(ratio["value"])
    parallel = next(v["value"] for k, v in rows.items() if k.startswith("throughput / ") and "at once" in k)
    assert parallel == pytest.approx(epoch["ours"] / epoch["parallel"])
    assert epoch["limit"] == pytest.approx(epoch["single"] * min(2, len(os.sched_getaffinity(0))))
    ours = next(v for k, v in rows.items() if k.endswith("throughput (best epoch)") and not k.startswith("torch"))
    assert ours["value"] == pytest.approx(epoch["ours"])
    # the CPU rows are what the per-loader CPU figures say
    torch_cpu = entry["torch"]["worker_cpu_ms"] + entry["torch"]["main_cpu_ms"]
    ours_cpu = entry["ours"]["worker_cpu_ms"] + entry["ours"]["main_cpu_ms"]
    assert rows["CPU per image (workers + main), torch / ours"]["value"] == pytest.approx(torch_cpu / ours_cpu)
    # both loaders processed images and the workers did the pipeline's work
    assert entry["ours"]["worker_cpu_ms"] > 0 and entry["torch"]["worker_cpu_ms"] > 0
    # our shared memory was measured (batch slots exist while the loader runs) and is constant
    assert rows["peak shared memory"]["value"] > 0
    assert len(set(entry["ours"]["shm_per_epoch"])) == 1
    # the table's header and the per-round progress line are printed
    assert "round 1/1" in printed and "metric" in printed
