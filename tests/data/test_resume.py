"""Kill mid-epoch, resume from the checkpoint: the same batches and the same final weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tests.data.test_datamodule import TinyModel, labels_of, make_datamodule, make_samples, wait_for_no_children

EPOCHS = 2

pytestmark = [
    pytest.mark.filterwarnings("ignore:Total length of .list. across ranks is zero"),  # no val source here
    pytest.mark.filterwarnings("ignore:The dirpath has changed"),  # each run writes its own folder
]


class StepRecorder(Callback):
    """Records (global step, labels, image checksum) of every training batch; raises before step ``crash_at``."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.steps: list[tuple[int, list[int], int]] = []
        self.crash_at = crash_at

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.crash_at is not None and len(self.steps) == self.crash_at:
            raise RuntimeError("simulated crash")
        checksum = int(batch["image"].to(torch.int64).sum())
        self.steps.append((trainer.fit_loop.total_batch_idx, labels_of(batch), checksum))


def run(tmp: Path, crash_at: int | None = None, ckpt_path: str | None = None, **dm_kwargs: Any) -> Any:
    samples = make_samples(26)
    recorder = StepRecorder(crash_at)
    checkpoint = ModelCheckpoint(dirpath=tmp, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    model = TinyModel()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, checkpoint],
        accumulate_grad_batches=dm_kwargs.get("num_mini_batches", 1),
    )
    dm = make_datamodule(samples, seed=11, **dm_kwargs)
    if crash_at is None:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    else:
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer.fit(model, datamodule=dm)
    assert wait_for_no_children() == {}
    return recorder.steps, model.layer.weight.detach().clone()


@pytest.mark.parametrize(
    ("crash_at", "dm_kwargs"),
    [
        (4, {}),  # in the first epoch (26 samples, batch 4: 6 steps per epoch)
        (9, {}),  # in the second epoch
        (6, {}),  # exactly at the epoch boundary
        (6, {"batch_size": 8, "num_mini_batches": 2}),  # 3 crumpets batches = 6 steps per epoch
    ],
)
def test_resume_mid_epoch_continues_with_the_same_batches(
    tmp_path: Path, crash_at: int, dm_kwargs: dict[str, Any]
) -> None:
    full_steps, full_weight = run(tmp_path / "full", **dm_kwargs)
    assert len(full_steps) == EPOCHS * 6

    crashed_steps, _ = run(tmp_path / "crashed", crash_at=crash_at, **dm_kwargs)
    assert crashed_steps == full_steps[:crash_at]
    optimizer_steps = crash_at // dm_kwargs.get("num_mini_batches", 1)
    checkpoint = tmp_path / "crashed" / f"step={optimizer_steps}.ckpt"
    assert checkpoint.exists(), sorted(p.name for p in (tmp_path / "crashed").iterdir())

    resumed_steps, resumed_weight = run(tmp_path / "resumed", ckpt_path=str(checkpoint), **dm_kwargs)
    assert [labels for _, labels, _ in resumed_steps] == [labels for _, labels, _ in full_steps[crash_at:]]
    assert [c for _, _, c in resumed_steps] == [c for _, _, c in full_steps[crash_at:]]
    torch.testing.assert_close(resumed_weight, full_weight, rtol=0, atol=1e-6)


def test_state_in_the_middle_of_a_crumpets_batch_resumes_at_the_next_mini_batch() -> None:
    samples = make_samples(24)
    kwargs = {"batch_size": 8, "num_mini_batches": 4, "seed": 2}
    reference = make_datamodule(samples, **kwargs)
    interrupted = make_datamodule(samples, **kwargs)
    resumed = make_datamodule(samples, **kwargs)
    for dm in (reference, interrupted, resumed):
        dm.setup("fit")
    try:
        expected = [labels_of(b) for b in reference.train_dataloader()]
        assert len(expected) == 12
        loader = interrupted.train_dataloader()
        iterator = iter(loader)
        got = [labels_of(next(iterator)) for _ in range(6)]  # one and a half crumpets batches
        state = loader.state_dict()
        resumed_loader = resumed.train_dataloader()
        resumed_loader.load_state_dict(state)
        assert resumed_loader.state_dict() == state  # a checkpoint right after loading keeps the point
        iterator = iter(resumed_loader)
        got.append(labels_of(next(iterator)))  # interrupted again, three quarters into the batch
        state = resumed_loader.state_dict()
        resumed_loader.load_state_dict(state)
        rest = [labels_of(b) for b in resumed_loader]
        assert got + rest == expected
        assert len(list(resumed_loader)) == 12  # the epoch after is a full one again
    finally:
        for dm in (reference, interrupted, resumed):
            dm.teardown("fit")


def test_a_foreign_state_is_rejected_clearly() -> None:
    dm = make_datamodule(make_samples(8), batch_size=4, num_mini_batches=2)
    other = make_datamodule(make_samples(8), batch_size=4, num_mini_batches=4)
    for module in (dm, other):
        module.setup("fit")
    try:
        loader = dm.train_dataloader()
        with pytest.raises(ValueError, match="different data loader"):
            loader.load_state_dict({"epoch": 0})
        with pytest.raises(ValueError, match="num_mini_batches"):
            loader.load_state_dict(other.train_dataloader().state_dict())
    finally:
        dm.teardown("fit")
        other.teardown("fit")
