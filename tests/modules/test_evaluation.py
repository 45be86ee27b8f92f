"""Exact evaluation (C4) in one process: rows marked ``padding`` are run through the network but dropped from
losses, metrics and predictions, so padded batches give exactly the values of the unpadded data."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.metrics import AccuracyMetric, ConfusionMatrix
from crumpets_lightning.modules.module import CrumpetsModule

SAMPLES = 7
CLASSES = 3


def make_samples(n: int = SAMPLES, seed: int = 0) -> dict[str, Any]:
    """``n`` samples as one batch: uint8 images, labels, keys and source indices."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8),
        "label": torch.randint(0, CLASSES, (n, 1), generator=g),
        "key": [f"s{i}" for i in range(n)],
        "index": torch.arange(n),
    }


def make_batch(samples: Mapping[str, Any], rows: list[int], padding: list[bool] | None = None) -> dict[str, Any]:
    """The batch of ``rows`` of ``samples``; with ``padding``, a ``"padding"`` flag per row."""
    index = torch.tensor(rows, dtype=torch.long)
    batch = {
        "image": samples["image"][index],
        "label": samples["label"][index],
        "key": [samples["key"][i] for i in rows],
        "index": samples["index"][index],
    }
    if padding is not None:
        batch["padding"] = torch.tensor(padding, dtype=torch.bool)
    return batch


def batch_loader(batches: list[dict[str, Any]]) -> DataLoader:
    return DataLoader(batches, batch_size=None)  # type: ignore[arg-type]


def make_model(seed: int = 0) -> CrumpetsModule:
    torch.manual_seed(seed)
    return CrumpetsModule(
        net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)),
        loss=CrossEntropyLoss(),
        metric={"accuracy": AccuracyMetric(), "confusion": ConfusionMatrix(nclasses=CLASSES, target_key="label")},
    )


def make_trainer(**kwargs: Any) -> lightning.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lightning.Trainer(**options)


def evaluate(model: CrumpetsModule, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """val/test loss, accuracy and confusion matrix, and the concatenated predictions."""
    trainer = make_trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = trainer.validate(model, batch_loader(batches), verbose=False)[0]
        test = trainer.test(model, batch_loader(batches), verbose=False)[0]
        predictions = trainer.predict(model, batch_loader(batches))
    assert predictions is not None
    return {
        **val,
        **test,
        "val/confusion": model.epoch_metric_values["val/confusion"],
        "test/confusion": model.epoch_metric_values["test/confusion"],
        "predictions": torch.cat([p for p in predictions if isinstance(p, Tensor)]),
    }


# rows 0..6 once, then repeats marked as padding: a partly padded batch and one that is all padding
PADDED = [([0, 1, 2], None), ([3, 4, 5], None), ([6, 0, 1], [False, True, True]), ([2, 3], [True, True])]
UNPADDED = [[0, 1, 2], [3, 4, 5], [6]]


def test_padded_batches_give_the_values_of_the_unpadded_data() -> None:
    samples = make_samples()
    padded = [make_batch(samples, rows, flags or [False] * len(rows)) for rows, flags in PADDED]
    exact = evaluate(make_model(), [make_batch(samples, rows) for rows in UNPADDED])
    got = evaluate(make_model(), padded)
    assert set(got) == set(exact)
    for name, value in exact.items():
        torch.testing.assert_close(torch.as_tensor(got[name]), torch.as_tensor(value), msg=name)
    assert got["predictions"].shape == (SAMPLES, CLASSES)
    assert int(got["val/confusion"].sum()) == SAMPLES

    # the repeats would change every value if they were counted
    counted = evaluate(make_model(), [make_batch(samples, rows) for rows, _ in PADDED])
    assert int(counted["val/confusion"].sum()) == SAMPLES + 4
    assert counted["predictions"].shape[0] == SAMPLES + 4
    assert counted["val/loss"] != pytest.approx(exact["val/loss"], abs=1e-6)


class _SeenKeys(Metric):
    """Records the keys and image rows each update sees (to check what reaches the metrics)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []
        self.rows: list[int] = []

    def update(self, sample: Mapping[str, Any]) -> None:
        self.keys.extend(sample["key"])
        self.rows.append(int(sample["output"].shape[0]))
        assert sample["label"].shape[0] == sample["image"].shape[0] == len(sample["key"])

    def compute(self) -> Tensor:
        return torch.tensor(float(len(self.keys)))


def test_metrics_see_every_real_row_once_and_lists_are_sliced_by_position() -> None:
    samples = make_samples()
    model = CrumpetsModule(
        net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=CrossEntropyLoss(), metric=_SeenKeys()
    )
    batches = [make_batch(samples, rows, flags or [False] * len(rows)) for rows, flags in PADDED]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer().validate(model, batch_loader(batches), verbose=False)
    seen = model.val_metrics["_seenkeys"]
    assert seen.keys == [f"s{i}" for i in range(SAMPLES)]
    assert seen.rows == [3, 3, 1, 0]  # the all-padding batch still updates, with zero rows


def test_a_step_called_directly_reads_the_padding_of_the_batch() -> None:
    samples = make_samples()
    model = make_model()
    batch = make_batch(samples, [6, 0, 1], [False, True, True])
    predicted = model.predict_step(batch, 0)
    assert predicted.shape == (1, CLASSES)
    torch.testing.assert_close(predicted, model.predict_step(make_batch(samples, [6]), 0))
    assert model.predict_step(make_batch(samples, [2, 3], [True, True]), 0).shape == (0, CLASSES)
    # the batch is not modified
    assert batch["key"] == ["s6", "s0", "s1"] and batch["image"].shape[0] == 3


def test_training_keeps_padding_rows() -> None:
    """Training batches are not cut: repeats padding a rank's training shard are trained on (as torch does)."""
    samples = make_samples()
    seen: list[int] = []

    class _Rows(CrumpetsModule):
        def forward(self, sample: Mapping[str, Any]) -> dict[str, Any]:
            out = super().forward(sample)
            seen.append(int(out["output"].shape[0]))
            return out

    torch.manual_seed(0)
    model = _Rows(net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=CrossEntropyLoss())
    batches = [make_batch(samples, [6, 0, 1], [False, True, True])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer(max_steps=1, limit_val_batches=0).fit(model, batch_loader(batches))
    assert seen == [3]
