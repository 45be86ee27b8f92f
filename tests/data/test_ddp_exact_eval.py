"""Exact evaluation under DDP (issue 10 item 5): 2 ranks score a 99-sample set exactly as one process does.

99 samples over 2 ranks are 50 per rank: the plan pads one rank's shard with a repeat, marks it
``batch["padding"]``, and ``CrumpetsModule`` leaves it out of losses, metrics and predictions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.metrics import AccuracyMetric
from crumpets_lightning.modules.module import CrumpetsModule
from tests.data.test_datamodule import SIZE, make_datamodule, make_samples, make_trainer

CLASSES = 5
SAMPLES = 99


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker() -> Iterator[None]:
    """ddp_spawn starts multiprocessing's resource tracker, which lives as long as pytest: start it first."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    yield


def labelled_samples() -> list[dict[str, Any]]:
    return [{**sample, "label": index % CLASSES} for index, sample in enumerate(make_samples(SAMPLES, seed=7))]


def make_model() -> CrumpetsModule:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, CLASSES))
    return CrumpetsModule(net, loss=CrossEntropyLoss(), metric=AccuracyMetric())


class PredictionWriter(Callback):
    """Each rank writes the source index of every predicted row, the output rows and its padded-row count."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.indices: list[int] = []
        self.outputs: list[list[float]] = []
        self.padded = 0

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        padding = batch.get("padding")
        keep = torch.ones(len(batch["index"]), dtype=torch.bool) if padding is None else ~padding.cpu()
        self.padded += int((~keep).sum())
        assert outputs.shape[0] == int(keep.sum()), "predict must return only the rows that are not padding"
        self.indices += batch["index"].cpu()[keep].tolist()
        self.outputs += outputs.detach().cpu().tolist()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        record = {"indices": self.indices, "outputs": self.outputs, "padded": self.padded}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("stage", ["val", "test"])
def test_two_ranks_score_99_samples_exactly_as_one_process(stage: str) -> None:
    samples = labelled_samples()
    model = make_model()
    run = {"val": pl.Trainer.validate, "test": pl.Trainer.test}[stage]
    (single,) = run(make_trainer(), model, datamodule=make_datamodule(**{stage: samples}, batch_size=8), verbose=False)
    ddp_trainer = make_trainer(devices=2, strategy="ddp_spawn")
    (ddp,) = run(ddp_trainer, model, datamodule=make_datamodule(**{stage: samples}, batch_size=8), verbose=False)
    assert ddp[f"{stage}/accuracy"] == single[f"{stage}/accuracy"]  # counts: exactly equal
    assert ddp[f"{stage}/loss"] == pytest.approx(single[f"{stage}/loss"], rel=1e-6, abs=0)  # sums in another order

    # The check is sharp: scoring the repeated sample twice (100 rows) moves the loss far beyond the tolerance.
    with torch.no_grad():
        dm = make_datamodule(val=samples, batch_size=SAMPLES)
        dm.setup("validate")
        try:
            (batch,) = list(dm.val_dataloader())
            logits = model(model.normalize_sample(batch))["output"]
        finally:
            dm.teardown("validate")
        losses = nn.functional.cross_entropy(logits, batch["label"].reshape(-1), reduction="none")
    assert float(losses.mean()) == pytest.approx(single[f"{stage}/loss"], rel=1e-5)
    for repeated in (0, SAMPLES - 1):  # whichever sample the plan repeats
        counted_twice = float((losses.sum() + losses[repeated]) / (SAMPLES + 1))
        assert abs(counted_twice - single[f"{stage}/loss"]) > 1e-4 * abs(single[f"{stage}/loss"])


def test_two_ranks_predict_every_sample_exactly_once(tmp_path: Path) -> None:
    samples = labelled_samples()
    model = make_model()
    single = make_trainer().predict(model, datamodule=make_datamodule(predict=samples, batch_size=8))
    reference = torch.cat(single)
    assert reference.shape == (SAMPLES, CLASSES)

    ddp = make_trainer(devices=2, strategy="ddp_spawn", callbacks=[PredictionWriter(tmp_path)])
    ddp.predict(model, datamodule=make_datamodule(predict=samples, batch_size=8), return_predictions=False)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert sum(r["padded"] for r in ranks) == 1  # 99 over 2 ranks: one padded row, left out
    indices = ranks[0]["indices"] + ranks[1]["indices"]
    assert sorted(indices) == list(range(SAMPLES))  # every sample once
    outputs = torch.tensor(ranks[0]["outputs"] + ranks[1]["outputs"])
    torch.testing.assert_close(outputs, reference[indices], rtol=1e-5, atol=1e-5)
