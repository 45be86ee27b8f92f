"""CrumpetsDataModule under real CPU DDP (``ddp_spawn``, 2 ranks): disjoint equal shards, metrics as one process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import Callback

from tests.data.test_datamodule import TinyModel, flat, labels_of, make_datamodule, make_samples, make_trainer


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker() -> Iterator[None]:
    """ddp_spawn starts multiprocessing's resource tracker, which lives as long as pytest: start it first."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    yield


class RankRecorder(Callback):
    """Each rank writes the labels it trained and validated on, and the synced val_loss, to a JSON file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.record: dict[str, Any] = {"train": [], "val": [], "val_loss": None}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.record["train"].append(labels_of(batch))

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.record["val"].append(labels_of(batch))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.record["val_loss"] = float(trainer.callback_metrics["val_loss"])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        path = self.out_dir / f"rank{trainer.global_rank}-of-{trainer.world_size}.json"
        path.write_text(json.dumps(self.record))


def test_ddp_spawn_ranks_get_disjoint_equal_shards_and_the_same_metrics(tmp_path: Path) -> None:
    train, val = make_samples(21), make_samples(12, seed=1)
    trainer = make_trainer(
        devices=2, strategy="ddp_spawn", max_epochs=1, num_sanity_val_steps=1, callbacks=[RankRecorder(tmp_path)]
    )
    trainer.fit(TinyModel(lr=0.0), datamodule=make_datamodule(train, val, seed=4))
    ranks = [json.loads((tmp_path / f"rank{r}-of-2.json").read_text()) for r in range(2)]

    # training: 21 samples -> 10 per rank (drop_last), 2 full batches of 4 each, disjoint
    shards = [flat(r["train"]) for r in ranks]
    assert [len(r["train"]) for r in ranks] == [2, 2]
    assert not set(shards[0]) & set(shards[1])
    # validation: 12 samples -> 6 per rank (4 + 2), every sample exactly once
    assert [len(r["val"]) for r in ranks] == [2, 2]
    assert sorted(flat(ranks[0]["val"]) + flat(ranks[1]["val"])) == list(range(12))

    # lr=0: the weights never change, so the synced DDP metric equals a single-process validation
    (single,) = make_trainer().validate(TinyModel(), datamodule=make_datamodule(val=val), verbose=False)
    assert ranks[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert ranks[1]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
