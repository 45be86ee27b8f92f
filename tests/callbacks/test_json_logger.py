"""JSONLogger: strict JSON lines, versions, rank zero only, and the records of a real Trainer fit."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only

from crumpets_lightning.callbacks.json_logger import JSONLogger
from tests.callbacks._helpers import DictModule, loaders, make_trainer


def _strict_lines(path: Path) -> list[dict[str, Any]]:
    """Parse each line as strict JSON (NaN / Infinity are rejected, as jq or a browser would)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_records(tmp_path: Path) -> None:
    logger = JSONLogger(tmp_path, name="run")
    logger.log_hyperparams({"lr": 0.1, "layers": (2, 3), "net": object(), "weight": torch.tensor(0.5)})
    logger.log_metrics({"loss": torch.tensor(1.25), "epoch": 3, "acc": np.float32(0.5), "bad": float("nan")}, step=7)
    logger.log_metrics({"vector": torch.tensor([1.0, float("inf")])}, step=8)
    path = tmp_path / "run" / "version_0" / "metrics.jsonl"
    assert logger.path == str(path)
    hparams, first, second = _strict_lines(path)
    assert hparams["hyperparameters"]["lr"] == 0.1
    assert hparams["hyperparameters"]["layers"] == [2, 3]
    assert hparams["hyperparameters"]["net"].startswith("<object object")
    assert hparams["hyperparameters"]["weight"] == 0.5
    assert first == {"time": first["time"], "epoch": 3, "step": 7, "loss": 1.25, "acc": 0.5, "bad": None}
    assert second["vector"] == [1.0, None] and second["epoch"] is None and second["step"] == 8
    for record in (hparams, first, second):
        stamp = datetime.fromisoformat(record["time"])
        assert stamp.tzinfo is not None
        assert abs((datetime.now().astimezone() - stamp).total_seconds()) < 60


def test_lines_are_flushed_and_finalize_closes(tmp_path: Path) -> None:
    logger = JSONLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    assert len(_strict_lines(Path(logger.path))) == 1  # readable while the logger is open
    logger.finalize("success")
    assert logger._file is None
    logger.log_metrics({"a": 2.0}, step=1)  # appends after a finalize
    logger.finalize("success")
    assert [r["a"] for r in _strict_lines(Path(logger.path))] == [1.0, 2.0]


def test_versions(tmp_path: Path) -> None:
    first = JSONLogger(tmp_path, name="exp")
    first.log_metrics({"a": 1.0})
    second = JSONLogger(tmp_path, name="exp")
    assert second.version == 1
    assert second.log_dir == str(tmp_path / "exp" / "version_1")
    (tmp_path / "exp" / "version_7").mkdir()
    (tmp_path / "exp" / "version_x").mkdir()
    assert JSONLogger(tmp_path, name="exp").version == 8
    assert JSONLogger(tmp_path, name="exp", version=3).log_dir == str(tmp_path / "exp" / "version_3")
    assert JSONLogger(tmp_path, name="exp", version="final").log_dir == str(tmp_path / "exp" / "final")
    with pytest.raises(ValueError, match="version"):
        JSONLogger(tmp_path, version=-1)
    with pytest.raises(ValueError, match="name"):
        JSONLogger(tmp_path, name="")
    first.finalize("success")


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = JSONLogger(tmp_path)
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    assert not (tmp_path / "lightning_logs").exists()


class _RecordLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.losses.append((trainer.current_epoch, trainer.global_step - 1, float(outputs["loss"])))


def test_under_trainer_fit(tmp_path: Path) -> None:
    logger = JSONLogger(tmp_path / "logs", name="fit")
    recorder = _RecordLosses()
    trainer = make_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1, callbacks=[recorder])
    train, val = loaders(batch_size=4, train=12, val=8)
    module = DictModule()
    module.save_hyperparameters({"lr": 0.1, "name": "dict"})
    trainer.fit(module, train, val)

    records = _strict_lines(tmp_path / "logs" / "fit" / "version_0" / "metrics.jsonl")
    assert records[0]["hyperparameters"] == {"lr": 0.1, "name": "dict"}
    train_records = [(r["epoch"], r["step"], r["train/loss"]) for r in records if "train/loss" in r]
    assert [(e, s) for e, s, _ in train_records] == [(e, s) for e, s, _ in recorder.losses]
    assert [loss for _, _, loss in train_records] == pytest.approx([loss for _, _, loss in recorder.losses])
    val_records = [r for r in records if "val/loss" in r]
    assert [r["epoch"] for r in val_records] == [0, 1]
    assert [r["step"] for r in val_records] == [2, 5]  # the step count after each epoch's three steps
    assert logger._file is None  # Lightning finalizes loggers at the end of fit
