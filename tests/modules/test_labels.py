"""A label outside the network's classes: an error naming the batch's samples, from the host copy of the batch."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.metrics import AccuracyMetric
from crumpets_lightning.modules.module import CrumpetsModule, _select_rows
from tests.modules.test_evaluation import CLASSES, batch_loader, make_batch, make_model, make_samples, make_trainer


def _bad_batch(drop: tuple[str, ...] = ()) -> dict[str, Any]:
    batch = make_batch(make_samples(), [0, 1, 2, 3])
    batch["label"] = batch["label"].clone()
    batch["label"][1, 0] = CLASSES + 9
    batch["label"][3, 0] = -1
    for key in drop:
        del batch[key]
    return batch


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ((), r"12 \(sample key 's1', row 1\); -1 \(sample key 's3', row 3\)"),
        (("key",), r"12 \(sample index 1, row 1\); -1 \(sample index 3, row 3\)"),
        (("key", "index"), r"12 \(row 1\); -1 \(row 3\)"),
    ],
)
@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_an_out_of_range_label_names_the_samples(drop: tuple[str, ...], named: str, stage: str) -> None:
    model = make_model()
    loader = batch_loader([make_batch(make_samples(), [4, 5]), _bad_batch(drop)])
    trainer = make_trainer(max_steps=4, limit_val_batches=0) if stage == "fit" else make_trainer()
    with warnings.catch_warnings(), pytest.raises(ValueError, match=named) as error:
        warnings.simplefilter("ignore")
        if stage == "fit":
            trainer.fit(model, loader)
        else:
            trainer.validate(model, loader, verbose=False)
    message = str(error.value)
    assert "CrossEntropyLoss" in message and f"{CLASSES} classes" in message and f"[0, {CLASSES})" in message
    assert "Fix these samples' labels" in message


def test_the_check_reads_only_the_host_copy_of_the_labels() -> None:
    """The labels the step receives are on the 'meta' device (a copy nothing can read, like one on a GPU that
    must not be waited for): the error still names the samples, so it came from the host copy."""

    class _DeviceLabels(CrumpetsModule):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return {**batch, "label": torch.empty(batch["label"].shape, dtype=torch.long, device="meta")}

    torch.manual_seed(0)
    model = _DeviceLabels(net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=CrossEntropyLoss())
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"sample key 's1'"):
        warnings.simplefilter("ignore")
        make_trainer().validate(model, batch_loader([_bad_batch()]), verbose=False)


def test_ignore_index_and_metric_only_checks() -> None:
    samples = make_samples()
    batch = make_batch(samples, [0, 1, 2])
    batch["label"] = torch.tensor([[0], [-100], [2]])
    model = make_model()  # CrossEntropyLoss(ignore_index=-100) but AccuracyMetric has no ignore index
    with pytest.raises(ValueError, match=r"AccuracyMetric.*-100 \(sample key 's1', row 1\)"):
        model.validation_step(batch, 0)
    torch.manual_seed(0)
    loss_only = CrumpetsModule(net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=CrossEntropyLoss())
    assert torch.isfinite(loss_only.validation_step(batch, 0))  # -100 is the loss's ignore_index


def test_a_nested_class_loss_is_found() -> None:
    class _Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.ModuleList([CrossEntropyLoss(), CrossEntropyLoss(output_key="aux")])

        def forward(self, sample: Mapping[str, Any]) -> Tensor:
            return sum(part(sample) for part in self.parts)  # type: ignore[return-value]

    class _TwoHeads(CrumpetsModule):
        def forward(self, sample: Mapping[str, Any]) -> dict[str, Any]:
            out = super().forward(sample)
            return {**out, "aux": out["output"][:, :2]}  # a head with fewer classes

    torch.manual_seed(0)
    model = _TwoHeads(net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=_Sum(), metric=None)
    batch = make_batch(make_samples(), [0, 1, 2])
    batch["label"] = torch.tensor([[0], [2], [1]])
    with pytest.raises(ValueError, match=r"sample\['aux'\] has 2 classes.*2 \(sample key 's1', row 1\)"):
        model.validation_step(batch, 0)


@pytest.mark.gpu
def test_on_a_gpu_the_error_names_the_samples_and_the_normal_path_never_syncs() -> None:
    model = CrumpetsModule(
        net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, CLASSES)), loss=CrossEntropyLoss(), metric=AccuracyMetric()
    )
    trainer = make_trainer(accelerator="gpu", devices=1, max_steps=2, limit_val_batches=0)
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"sample key 's1'"):
        warnings.simplefilter("ignore")
        trainer.fit(model, batch_loader([_bad_batch()]))

    model = make_model().cuda()
    batch = make_batch(make_samples(), [0, 1, 2], [False, True, False])
    model.on_before_batch_transfer(batch, 0)
    on_device = {k: v.cuda() if isinstance(v, Tensor) else v for k, v in batch.items()}
    output = model(model.normalize_sample(on_device))
    record = model._host_record(on_device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model._check_labels(output, record, "val")
        assert record.keep is not None
        kept = _select_rows(output, record.keep, record.rows)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert kept["output"].shape == (2, CLASSES) and kept["key"] == ["s0", "s2"]
