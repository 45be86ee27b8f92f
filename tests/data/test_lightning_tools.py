"""Lightning's own tools on a CrumpetsDataModule, each with a real ``Trainer`` on tiny data (issue 10 item 4).

``Tuner.scale_batch_size``, ``Tuner.lr_find``, ``overfit_batches``, ``reload_dataloaders_every_n_epochs`` and
settings changed between two fits must behave as they do with a torch ``DataLoader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.tuner import Tuner

from crumpets_lightning.data.augment.rng import MixtureRNG
from tests.data.test_datamodule import (
    SIZE,
    TinyModel,
    flat,
    labels_of,
    make_datamodule,
    make_samples,
    make_trainer,
    wait_for_no_children,
)


class SizeRecorder(TinyModel):
    """Records the rows and image shape of every batch ``training_step`` sees."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)
        self.train_shapes: list[tuple[int, ...]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.train_shapes.append(tuple(batch["image"].shape))
        x = torch.nn.functional.interpolate(batch["image"].float(), size=(SIZE, SIZE)).flatten(1) / 255.0
        return self.layer(x).pow(2).mean()


class PixelRecorder(Callback):
    """Keeps a copy of the pixels and labels of every training batch, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[tuple[torch.Tensor, list[int]]]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.epochs[-1].append((batch["image"].clone(), labels_of(batch)))


def test_scale_batch_size_trains_every_trial_at_its_size_and_never_suggests_more_than_the_data(
    tmp_path: Path,
) -> None:
    # Lightning builds the first trial's loader before it sets `init_val` (2), for a torch DataLoader too:
    # start at 2 so that the first trial's size is the one Lightning reports.
    dm = make_datamodule(make_samples(40), batch_size=2)
    model = SizeRecorder()
    trainer = make_trainer(max_epochs=1, default_root_dir=tmp_path)
    suggestion = Tuner(trainer).scale_batch_size(model, datamodule=dm, mode="power", steps_per_trial=1)

    tried = [shape[0] for shape in model.train_shapes]
    assert tried == [2, 4, 8, 16, 32, 40]  # each trial at its own size; 64 capped at the 40 samples
    assert suggestion == dm.batch_size == 40
    assert wait_for_no_children() == {}

    model.train_shapes.clear()
    make_trainer(max_epochs=1, default_root_dir=tmp_path).fit(model, datamodule=dm)
    assert [shape[0] for shape in model.train_shapes] == [40]  # the next fit uses the suggestion
    assert wait_for_no_children() == {}


def test_lr_find_runs_and_leaves_no_workers(tmp_path: Path) -> None:
    dm = make_datamodule(make_samples(24), batch_size=4)
    model = SizeRecorder(lr=0.5)
    trainer = make_trainer(max_epochs=3, default_root_dir=tmp_path)
    finder = Tuner(trainer).lr_find(
        model, datamodule=dm, min_lr=1e-4, max_lr=1e-1, num_training=16, early_stop_threshold=None
    )
    assert finder is not None
    assert len(finder.results["lr"]) == 16 and len(model.train_shapes) == 16  # 16 steps over 3 epochs
    assert model.lr == pytest.approx(finder.suggestion())  # the model got the suggestion
    assert wait_for_no_children() == {}

    model.train_shapes.clear()
    make_trainer(max_epochs=1, default_root_dir=tmp_path).fit(model, datamodule=dm)
    assert len(model.train_shapes) == 6  # a full epoch afterwards: the loader was restored, not exhausted
    assert wait_for_no_children() == {}


def test_overfit_batches_trains_on_the_same_unaugmented_pixels_every_epoch() -> None:
    samples = make_samples(24)
    heavy = MixtureRNG(prob=1.0, noise_range=(0.2, 0.2), rotation_sigma=20.0, hmirror=0.5)
    dm = make_datamodule(samples, make_samples(8, seed=1), train_rng=heavy, seed=3)
    recorder = PixelRecorder()
    trainer = make_trainer(max_epochs=2, overfit_batches=2, num_sanity_val_steps=0, callbacks=[recorder])
    trainer.fit(TinyModel(), datamodule=dm)

    assert [len(epoch) for epoch in recorder.epochs] == [2, 2]
    first, second = recorder.epochs
    assert [labels for _, labels in first] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the first batches, in order
    for (pixels_a, labels_a), (pixels_b, labels_b) in zip(first, second):
        assert labels_a == labels_b
        assert torch.equal(pixels_a, pixels_b)
    # no augmentation: the pixels are the evaluation view of the samples (here: the decoded 16x16 images)
    evaluation = make_datamodule(val=samples[:8])
    evaluation.setup("validate")
    try:
        expected = torch.cat([batch["image"] for batch in evaluation.val_dataloader()])
    finally:
        evaluation.teardown("validate")
    assert torch.equal(torch.cat([pixels for pixels, _ in first]), expected)
    assert wait_for_no_children() == {}


class _GrowBatchAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        trainer.datamodule.batch_size = 6  # type: ignore[attr-defined]


def test_reload_dataloaders_every_epoch_gives_full_reshuffled_epochs_and_leaks_nothing() -> None:
    recorder = PixelRecorder()
    dm = make_datamodule(make_samples(12), make_samples(4, seed=1))
    trainer = make_trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1, callbacks=[recorder])
    trainer.fit(TinyModel(), datamodule=dm)
    epochs = [[labels for _, labels in epoch] for epoch in recorder.epochs]
    assert [len(epoch) for epoch in epochs] == [3, 3, 3]
    assert all(sorted(flat(epoch)) == list(range(12)) for epoch in epochs)
    assert len({tuple(flat(epoch)) for epoch in epochs}) == 3  # a new order every epoch
    assert wait_for_no_children() == {}

    # a setting changed between epochs takes effect at the next reload
    recorder = PixelRecorder()
    trainer = make_trainer(
        max_epochs=3, reload_dataloaders_every_n_epochs=1, callbacks=[recorder, _GrowBatchAfterFirstEpoch()]
    )
    trainer.fit(TinyModel(), datamodule=make_datamodule(make_samples(12), batch_size=4))
    assert [[len(labels) for _, labels in epoch] for epoch in recorder.epochs] == [[4, 4, 4], [6, 6], [6, 6]]
    assert wait_for_no_children() == {}


def test_settings_changed_between_two_fits_take_effect() -> None:
    dm = make_datamodule(make_samples(16), batch_size=4, nworkers=1)
    model = SizeRecorder()
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert model.train_shapes == [(4, 3, SIZE, SIZE)] * 4

    model.train_shapes.clear()
    dm.batch_size = 8
    dm.image_size = (8, 12)
    dm.nworkers = 2
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert model.train_shapes == [(8, 3, 8, 12)] * 2
    assert wait_for_no_children() == {}


def test_a_changed_setting_builds_a_new_loader_and_stops_the_old_one() -> None:
    dm = make_datamodule(make_samples(16), batch_size=4)
    dm.setup("fit")
    try:
        old = dm.train_dataloader()
        assert dm.train_dataloader() is old  # unchanged settings: the same loader
        next(iter(old))
        assert old.loader.running
        dm.batch_size = 8
        new = dm.train_dataloader()
        assert new is not old and not old.loader.running
        assert len(new) == 2 and [len(labels_of(batch)) for batch in new] == [8, 8]
        dm.nworkers = 2
        newest = dm.train_dataloader()
        assert newest is not new and newest.loader.nworkers == 2
        dm.train_rng = MixtureRNG(scale_range=(0.9, 1.1))
        rng_loader = dm.train_dataloader()
        assert rng_loader is not newest and dm.train_dataloader() is rng_loader
        dm.train_rng.scale_range = (0.5, 0.6)  # an RNG changed in place is a changed setting too
        assert dm.train_dataloader() is not rng_loader
    finally:
        dm.teardown("fit")
    assert wait_for_no_children() == {}


def test_batch_size_is_capped_at_the_training_samples_per_rank_once_the_source_is_open() -> None:
    dm = make_datamodule(make_samples(10), batch_size=4, num_mini_batches=2)
    dm.batch_size = 64  # before setup nothing is known about the data
    assert dm.batch_size == 64
    dm.batch_size = 4
    dm.setup("fit")
    dm.batch_size = 64
    assert dm.batch_size == 10
    dm.drop_last = False
    dm.batch_size = 12
    assert dm.batch_size == 10
    dm.batch_size = 5  # set after construction (the Tuner's search): rounded down to a multiple of 2
    assert dm.batch_size == 4
    with pytest.raises(ValueError, match=r"`batch_size` \(1\) to be divisible by `num_mini_batches` \(2\)"):
        dm.batch_size = 1  # nothing to round down to
    dm.teardown("fit")
    with pytest.raises(ValueError, match=r"`batch_size` \(5\) to be divisible by `num_mini_batches` \(2\)"):
        make_datamodule(make_samples(10), batch_size=5, num_mini_batches=2)  # the user's own value: an error


@pytest.mark.parametrize("world_size", [1, 2])
def test_batch_size_larger_than_the_training_samples_per_rank_is_an_error_at_setup(world_size: int) -> None:
    from types import SimpleNamespace

    dm = make_datamodule(make_samples(10 * world_size), batch_size=16, drop_last=True)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=world_size, num_devices=world_size)  # type: ignore[assignment]
    with pytest.raises(ValueError) as raised:
        dm.setup("fit")
    message = str(raised.value)
    assert "`batch_size` (16)" in message and "training samples per rank (10" in message
    assert "batch_size <= 10 or drop_last=False" in message


def test_batch_size_larger_than_the_data_trains_one_short_batch_without_drop_last() -> None:
    model = SizeRecorder()
    make_trainer(max_epochs=1).fit(model, datamodule=make_datamodule(make_samples(10), batch_size=16, drop_last=False))
    assert [shape[0] for shape in model.train_shapes] == [10]
    with pytest.raises(ValueError, match=r"`batch_size` \(16\).*\(10: 10 samples\)"):
        make_trainer(max_epochs=1).fit(model, datamodule=make_datamodule(make_samples(10), batch_size=16))
    assert wait_for_no_children() == {}


def test_overfit_batches_with_a_custom_image_worker_turns_its_random_augmentation_off() -> None:
    from crumpets_lightning.data.workers.image import ClassificationWorker

    samples = make_samples(8)
    worker = ClassificationWorker(
        ((3, SIZE, SIZE), np.uint8), ((1,), np.int64), image_rng=MixtureRNG(prob=1.0, noise_range=(0.3, 0.3))
    )
    recorder = PixelRecorder()
    trainer = make_trainer(max_epochs=2, overfit_batches=1, callbacks=[recorder])
    trainer.fit(TinyModel(), datamodule=make_datamodule(samples, worker=worker))
    (first,), (second,) = recorder.epochs
    assert first[1] == second[1] == [0, 1, 2, 3]
    assert torch.equal(first[0], second[0])


def test_scale_batch_size_then_fit_with_a_crumpets_module_and_a_per_step_policy(tmp_path: Path) -> None:
    from functools import partial

    from torch import nn

    from crumpets_lightning.modules import CrossEntropyLoss, CrumpetsModule, PolyPolicy

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 40))
    model = CrumpetsModule(net, loss=CrossEntropyLoss(), scheduler=partial(PolyPolicy, power=1.0))
    dm = make_datamodule(make_samples(40), batch_size=2)
    suggestion = Tuner(make_trainer(max_epochs=2, default_root_dir=tmp_path)).scale_batch_size(
        model, datamodule=dm, mode="power", steps_per_trial=1
    )
    assert suggestion == dm.batch_size == 40
    trainer = make_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)  # the policy is sized from 1 step per epoch, not 0
    assert trainer.global_step == 2
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    assert wait_for_no_children() == {}


class OutOfMemoryAbove(SizeRecorder):
    """Raises CUDA's out-of-memory error (as Lightning recognises it) for steps of more than ``limit`` rows."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if batch["image"].shape[0] > self.limit:
            self.train_shapes.append(tuple(batch["image"].shape))
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB (simulated)")
        return super().training_step(batch, batch_idx)


def test_scale_batch_size_binsearch_with_mini_batches_tries_only_multiples_of_them(tmp_path: Path) -> None:
    # 2 steps per batch: a batch of b samples trains as steps of b / 2 rows; steps of more than 11 rows fail
    dm = make_datamodule(make_samples(64), batch_size=2, num_mini_batches=2)
    model = OutOfMemoryAbove(limit=11)
    trainer = make_trainer(max_epochs=1, default_root_dir=tmp_path, accumulate_grad_batches=2)
    suggestion = Tuner(trainer).scale_batch_size(model, datamodule=dm, mode="binsearch", steps_per_trial=2)

    batches = [2 * shape[0] for shape in model.train_shapes]
    assert all(size % 2 == 0 for size in batches), batches  # the odd sizes of the search were rounded down
    assert 32 in batches and 24 in batches  # doubled until it failed, then searched between
    # Lightning's search ends at 23 (trained as 22) and takes its 5 % margin off: 21, which the DataModule
    # rounds down to a multiple of num_mini_batches
    assert suggestion == 21 and dm.batch_size == 20
    model.train_shapes.clear()
    make_trainer(max_epochs=1, default_root_dir=tmp_path, accumulate_grad_batches=2).fit(model, datamodule=dm)
    assert {shape[0] for shape in model.train_shapes} == {10}  # the next fit: batches of 20 in steps of 10
    assert wait_for_no_children() == {}
