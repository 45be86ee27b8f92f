"""A BoringModel-style LightningModule on dict batches and a tiny dict dataset for the callback tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

FEATURES = 4
CLASSES = 3


class DictDataset(Dataset):
    """``n`` samples ``{"image": float[FEATURES], "label": int}``; optionally sleeps per sample (slow data)."""

    def __init__(self, n: int = 12, seed: int = 0, sleep_s: float = 0.0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, FEATURES, generator=generator)
        self.labels = torch.randint(0, CLASSES, (n,), generator=generator)
        self.sleep_s = sleep_s

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return {"image": self.images[index], "label": self.labels[index]}


class StatefulDataLoader(DataLoader):
    """A DataLoader with ``state_dict``/``load_state_dict``, so Lightning stores its state in checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs_started = 0
        self.loaded_state: dict[str, Any] | None = None

    def __iter__(self) -> Any:
        self.epochs_started += 1
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_started": self.epochs_started, "name": "stateful"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded_state = dict(state)


class DictModule(pl.LightningModule):
    """Linear classifier; ``forward(sample) -> dict`` like a CrumpetsModule; logs ``train/loss`` and ``val/loss``."""

    def __init__(self, step_sleep_s: float = 0.0, lr: float = 0.1) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)
        self.step_sleep_s = step_sleep_s
        self.lr = lr

    def forward(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**sample, "output": self.net(sample["image"])}

    def _loss(self, sample: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(sample["output"], sample["label"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        if self.step_sleep_s:
            time.sleep(self.step_sleep_s)
        sample = self(batch)
        loss = self._loss(sample)
        self.log("train/loss", loss, batch_size=len(batch["label"]))
        return {"loss": loss, "output": sample["output"]}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        sample = self(batch)
        loss = self._loss(sample)
        self.log("val/loss", loss, batch_size=len(batch["label"]))
        self.log("val/step_loss", loss, batch_size=len(batch["label"]), on_step=True, on_epoch=False)
        return {"loss": loss, "output": sample["output"]}

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def loaders(batch_size: int = 4, train: int = 12, val: int = 8, sleep_s: float = 0.0) -> tuple[DataLoader, DataLoader]:
    """A training and a validation DataLoader of dict batches (no shuffling, no worker processes)."""
    return (
        DataLoader(DictDataset(train, seed=0, sleep_s=sleep_s), batch_size=batch_size),
        DataLoader(DictDataset(val, seed=1), batch_size=batch_size),
    )


def make_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer writing nothing outside ``root`` unless told to."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        # a Snapshot (a ModelCheckpoint) in the callbacks needs checkpointing on; no default checkpoint otherwise
        "enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in kwargs.get("callbacks", [])),
    }
    options.update(kwargs)
    return pl.Trainer(**options)
