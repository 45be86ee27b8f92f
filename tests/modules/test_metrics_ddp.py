"""Metrics under real 2-process DDP (gloo on CPU): the synced result equals the single-process result.

The ranks are plain subprocesses (not ``torch.multiprocessing.spawn``, whose multiprocessing resource
tracker would outlive the test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from crumpets_lightning.modules.metrics import (
    AccuracyMetric,
    AverageMetric,
    ConfusionMatrix,
    MSELossMetric,
    NSSMetric,
    _WeightedMean,
)

WORLD_SIZE = 2


def _metrics() -> dict[str, Any]:
    return {
        "accuracy": AccuracyMetric(),
        "top3_accuracy": AccuracyMetric(top_k=3),
        "confusion_matrix": ConfusionMatrix(nclasses=5, target_key="label"),
        "mse": MSELossMetric(target_key="regression"),
        "nss": NSSMetric(output_key="saliency"),
        "average": AverageMetric(output_key="score"),
        "loss_mean": _WeightedMean(),  # CrumpetsModule's logged losses: batch means weighted by rows
    }


def _rank_batches(rank: int) -> list[dict[str, torch.Tensor]]:
    """Different data on each rank, different batch sizes too."""
    rng = np.random.default_rng(100 + rank)
    batches = []
    # rank 1 ends with a batch of zero rows (under DDP: a batch that is all padding)
    for batch in (3 + rank, 5, 2 + 2 * rank) + ((0,) if rank else ()):
        saliency_target = (rng.random((batch, 1, 4, 4)) > 0.7).astype(np.float32)
        batches.append(
            {
                "output": torch.from_numpy(rng.normal(size=(batch, 5)).astype(np.float32)),
                "label": torch.from_numpy(rng.integers(0, 5, size=(batch, 1))),
                "regression": torch.from_numpy(rng.normal(size=(batch, 3)).astype(np.float32)),
                "saliency": torch.from_numpy(rng.normal(size=(batch, 1, 4, 4)).astype(np.float32)),
                "target_image": torch.from_numpy(saliency_target),
                "score": torch.from_numpy(rng.normal(size=(batch,)).astype(np.float32)),
            }
        )
    for sample in batches:
        sample["output_regression"] = sample["output"][:, :3]
    return batches


def _update(metrics: dict[str, Any], batch: dict[str, torch.Tensor]) -> None:
    for name, metric in metrics.items():
        if name == "mse":
            metric.update({"output": batch["output_regression"], "regression": batch["regression"]})
        elif name == "loss_mean":
            metric.update(batch["score"].mean() if len(batch["score"]) else torch.zeros(()), len(batch["score"]))
        else:
            metric.update(batch)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=30)
    )
    try:
        metrics = _metrics()
        for batch in _rank_batches(rank):
            _update(metrics, batch)
        values = {name: metric.compute() for name, metric in metrics.items()}
        if rank == 0:
            torch.save(values, os.path.join(out_dir, "ddp.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(60)
def test_ddp_result_equals_single_process(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys; from tests.modules.test_metrics_ddp import _worker; "
        "_worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])"
    )
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rank), str(tmp_path / "init"), str(tmp_path)], cwd=tmp_path, env=env
        )
        for rank in range(WORLD_SIZE)
    ]
    try:
        codes = [process.wait(timeout=45) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert codes == [0] * WORLD_SIZE
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    single = _metrics()
    for rank in range(WORLD_SIZE):
        for batch in _rank_batches(rank):
            _update(single, batch)
    for name, metric in single.items():
        torch.testing.assert_close(ddp[name], metric.compute(), msg=f"metric {name} differs under DDP")
    # the reference is not trivially equal to one rank's own result
    rank0 = _metrics()
    for batch in _rank_batches(0):
        _update(rank0, batch)
    assert not torch.equal(rank0["confusion_matrix"].compute(), ddp["confusion_matrix"])
