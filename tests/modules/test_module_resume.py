"""CrumpetsModule with an open-length LR policy: kill mid-epoch and resume gives the same batches, learning rates
and weights as an uninterrupted run (the policy is sized from the Trainer, which must not disturb the loader's
saved state), also with gradient accumulation over mini-batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.module import CrumpetsModule
from crumpets_lightning.modules.policies import PolyPolicy
from tests.data.test_datamodule import SIZE, labels_of, make_datamodule, make_samples, wait_for_no_children

EPOCHS = 2
SAMPLES = 26  # batch 4, drop_last: 6 steps per epoch

pytestmark = [
    pytest.mark.filterwarnings("ignore:Total length of .list. across ranks is zero"),  # no val source here
    pytest.mark.filterwarnings("ignore:The dirpath has changed"),  # each run writes its own folder
]


class _Recorder(Callback):
    """Records (labels, learning rate) of every training batch; raises before batch ``crash_at``."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.steps: list[tuple[list[int], float]] = []
        self.crash_at = crash_at

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.crash_at is not None and len(self.steps) == self.crash_at:
            raise RuntimeError("simulated crash")
        self.steps.append((labels_of(batch), trainer.optimizers[0].param_groups[0]["lr"]))


def _model() -> CrumpetsModule:
    torch.manual_seed(0)
    return CrumpetsModule(
        net=nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, SAMPLES)),
        loss=CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        scheduler=lambda o: PolyPolicy(o, power=1.0),
    )


def _run(tmp: Path, mini_batches: int, crash_at: int | None = None, ckpt_path: str | None = None) -> Any:
    recorder = _Recorder(crash_at)
    checkpoint = ModelCheckpoint(dirpath=tmp, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    model = _model()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, checkpoint],
        accumulate_grad_batches=mini_batches,
    )
    dm = make_datamodule(make_samples(SAMPLES), seed=11, batch_size=4 * mini_batches, num_mini_batches=mini_batches)
    if crash_at is None:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    else:
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer.fit(model, datamodule=dm)
    assert wait_for_no_children() == {}
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    return recorder.steps, model.net[1].weight.detach().clone(), (scheduler.num_epochs, scheduler.steps_per_epoch)


@pytest.mark.parametrize(("crash_at", "mini_batches"), [(4, 1), (9, 1), (4, 2)])
def test_kill_and_resume_gives_the_same_batches_learning_rates_and_weights(
    tmp_path: Path, crash_at: int, mini_batches: int
) -> None:
    steps_per_epoch = (SAMPLES // (4 * mini_batches) * mini_batches) // mini_batches
    full_steps, full_weight, full_length = _run(tmp_path / "full", mini_batches)
    assert full_length == (EPOCHS, steps_per_epoch)
    assert full_steps[-1][1] > 0 and len({lr for _, lr in full_steps}) > 2  # the policy really decays

    _run(tmp_path / "crashed", mini_batches, crash_at=crash_at)
    checkpoint = tmp_path / "crashed" / f"step={crash_at // mini_batches}.ckpt"
    assert checkpoint.exists(), sorted(p.name for p in (tmp_path / "crashed").iterdir())

    resumed_steps, resumed_weight, resumed_length = _run(tmp_path / "resumed", mini_batches, ckpt_path=str(checkpoint))
    assert resumed_length == full_length
    assert [labels for labels, _ in resumed_steps] == [labels for labels, _ in full_steps[crash_at:]]
    assert [lr for _, lr in resumed_steps] == pytest.approx([lr for _, lr in full_steps[crash_at:]])
    torch.testing.assert_close(resumed_weight, full_weight, rtol=0, atol=1e-6)
