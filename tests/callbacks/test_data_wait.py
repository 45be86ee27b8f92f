"""DataWaitMonitor: a slow loader shows a clearly higher wait fraction than a fast one; values are logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crumpets_lightning.callbacks.data_wait import DataWaitMonitor, batch_size_of
from tests.callbacks._helpers import DictModule, loaders, make_trainer

BATCH = 2
BATCHES = 4
SAMPLE_SLEEP_S = 0.1  # slow loader: 200 ms per batch, far above a step's compute even on a busy machine
STEP_SLEEP_S = 0.05  # every step computes for at least 50 ms, well above Lightning's own per-step work


def _run(tmp_path: Path, sample_sleep_s: float) -> tuple[DataWaitMonitor, dict[str, float], dict[str, float]]:
    monitor = DataWaitMonitor()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[monitor], limit_val_batches=0)
    train, _ = loaders(batch_size=BATCH, train=BATCH * BATCHES, sleep_s=sample_sleep_s)
    trainer.fit(DictModule(step_sleep_s=STEP_SLEEP_S), train)
    progress = {k: float(v) for k, v in trainer.progress_bar_metrics.items()}
    callback = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return monitor, progress, callback


def test_slow_loader_waits_more(tmp_path: Path) -> None:
    slow, slow_bar, slow_metrics = _run(tmp_path, SAMPLE_SLEEP_S)
    fast, _, _ = _run(tmp_path, 0.0)
    (slow_summary,) = slow.epoch_summaries
    (fast_summary,) = fast.epoch_summaries

    summaries = f"slow {slow_summary}, fast {fast_summary}"
    # the measured wait covers the time the slow dataset slept, on top of what the fast one waited
    slept = BATCH * BATCHES * SAMPLE_SLEEP_S
    assert slow_summary["wait_s"] >= 0.95 * slept, summaries
    assert slow_summary["wait_s"] - fast_summary["wait_s"] >= 0.8 * slept, summaries
    # clearly higher for the slow loader (no absolute bounds: a busy machine stretches the compute)
    assert slow_summary["wait_fraction"] > 2 * fast_summary["wait_fraction"], summaries
    assert slow_summary["wait_fraction"] > fast_summary["wait_fraction"] + 0.2, summaries
    for summary in (slow_summary, fast_summary):
        assert summary["steps"] == BATCHES and summary["images"] == BATCH * BATCHES
        assert summary["images_per_sec"] == pytest.approx(summary["images"] / summary["total_s"])
        # every step computed for STEP_SLEEP_S, so the total is at least that much
        assert summary["total_s"] >= BATCHES * STEP_SLEEP_S
    assert slow_summary["images_per_sec"] < fast_summary["images_per_sec"]

    # per-step values in the progress bar, epoch values in the callback metrics
    assert slow_bar["data/wait_fraction"] == pytest.approx(slow.last_wait_fraction)
    assert slow_bar["data/images_per_sec"] == pytest.approx(slow.last_images_per_sec)
    assert slow_metrics["data/epoch_wait_fraction"] == pytest.approx(slow_summary["wait_fraction"])
    assert slow_metrics["data/epoch_images_per_sec"] == pytest.approx(slow_summary["images_per_sec"])


def test_batch_size_of() -> None:
    image = torch.zeros(5, 3, 2, 2)
    assert batch_size_of({"label": torch.zeros(7), "image": image}) == 5
    assert batch_size_of({"label": torch.zeros(7, 1), "key": ["a"] * 7}) == 7
    assert batch_size_of((torch.zeros(6, 2), torch.zeros(6))) == 6
    assert batch_size_of(torch.zeros(4, 2)) == 4
    assert batch_size_of([1, 2, 3]) == 3
    assert batch_size_of({"key": ["a", "b"]}) == 1  # a dict without tensors: its length
    with pytest.raises(TypeError, match="batch size"):
        batch_size_of(object())


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_log_every_n_steps(value: object) -> None:
    with pytest.raises(ValueError, match="log_every_n_steps"):
        DataWaitMonitor(log_every_n_steps=value)  # type: ignore[arg-type]
