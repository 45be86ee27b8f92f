"""CrumpetsModule in a real Lightning Trainer on in-memory dict batches."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crumpets_lightning.data.augment.record import NEUTRAL_AUGMENTATION
from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.metrics import AccuracyMetric, ConfusionMatrix
from crumpets_lightning.modules.module import CrumpetsModule, default_optimizer
from crumpets_lightning.modules.policies import PolyPolicy
from crumpets_lightning.modules.randomizer import Randomizer


class _Bright(Dataset):
    """Class 1 images are brighter than class 0 images: trivially learnable."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n, 1), generator=g)
        base = torch.randint(0, 100, (n, 3, 8, 8), generator=g)
        self.images = (base + 120 * self.labels.view(n, 1, 1, 1)).to(torch.uint8)
        self.augmentation = torch.from_numpy(NEUTRAL_AUGMENTATION.copy()).repeat(n, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "augmentation": self.augmentation[i]}


def _loader(n: int = 64, batch_size: int = 16, seed: int = 0) -> DataLoader:
    return DataLoader(_Bright(n, seed), batch_size=batch_size, shuffle=False, num_workers=0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def _trainer(**kwargs: Any) -> lightning.Trainer:
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


class _Recorder(lightning.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_loss_falls_and_names_are_logged() -> None:
    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        metric=AccuracyMetric(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
    )
    recorder = _Recorder()
    trainer = _trainer(max_epochs=6, callbacks=[recorder], limit_val_batches=2)
    trainer.fit(model, _loader(), _loader(32, seed=1))
    first, last = sum(recorder.losses[:4]) / 4, sum(recorder.losses[-4:]) / 4
    assert last < 0.5 * first
    logged = set(trainer.callback_metrics)
    assert {"train/loss_step", "train/loss_epoch", "train/accuracy", "val/loss", "val/accuracy"} <= logged
    assert float(trainer.callback_metrics["val/accuracy"]) > 0.9
    # train, val and test have separate metric objects
    metrics = [getattr(model, f"{stage}_metrics")["accuracy"] for stage in ("train", "val", "test")]
    assert len({id(m) for m in metrics}) == 3


def test_batch_is_not_mutated_and_predict_returns_output() -> None:
    model = CrumpetsModule(net=_net(), loss=CrossEntropyLoss())
    batch = next(iter(_loader()))
    image = batch["image"].clone()
    keys = set(batch)
    output = model.predict_step(batch, 0)
    assert torch.equal(batch["image"], image) and set(batch) == keys
    expected = model.net(
        (image.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(output, expected)


class _CountingRandomizer(Randomizer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, sample: Any) -> Any:
        trainer = self.trainer_ref
        self.calls.append((trainer.training, trainer.sanity_checking))
        return super().forward(sample)


def test_randomizer_runs_in_training_only() -> None:
    randomizer = _CountingRandomizer()
    model = CrumpetsModule(net=_net(), loss=CrossEntropyLoss(), randomizer=randomizer)
    trainer = _trainer(max_steps=3, limit_val_batches=2, num_sanity_val_steps=2, val_check_interval=2)
    randomizer.trainer_ref = trainer
    trainer.fit(model, _loader(), _loader(32, seed=1))
    trainer.validate(model, _loader(32, seed=1), verbose=False)
    trainer.predict(model, _loader(32, seed=1))
    assert len(randomizer.calls) == 3
    assert all(training and not sanity for training, sanity in randomizer.calls)


def test_randomizer_changes_training_batches() -> None:
    class _Probe(CrumpetsModule):
        seen: list[torch.Tensor] = []

        def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
            self.seen.append(sample["image"].detach().clone())
            return super().forward({**sample, "image": sample["image"].float()})

    model = _Probe(net=_net(), loss=CrossEntropyLoss(), randomizer=Randomizer(), normalize=False)
    dataset = _Bright(16)
    dataset.augmentation[:, 1] = 0.5  # gamma_gray 0.5: brighter
    loader = DataLoader(dataset, batch_size=16)
    _trainer(max_steps=1, limit_val_batches=0).fit(model, loader)
    brightened = ((dataset.images.float() / 255) ** 0.5 * 255).round()
    assert (model.seen[0].float() - brightened).abs().max() <= 1


def test_training_without_loss_raises_clear_error() -> None:
    model = CrumpetsModule(net=_net())
    with pytest.raises(RuntimeError, match="needs a loss"):
        _trainer(max_steps=1, limit_val_batches=0).fit(model, _loader())


def test_forward_without_net_raises() -> None:
    with pytest.raises(RuntimeError, match="override forward"):
        CrumpetsModule()({"image": torch.zeros(1, 3, 2, 2)})


def test_policy_length_filled_from_trainer() -> None:
    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda o: PolyPolicy(o, power=1.0),
    )
    recorder = _Recorder()
    _trainer(max_epochs=2, callbacks=[recorder], limit_val_batches=0).fit(model, _loader(64, 16))
    # 4 steps per epoch, 2 epochs: after n + 1 optimizer steps the lr is 0.1 * (1 - (n + 1) / 8)
    expected = [0.1 * (1 - (n + 1) / 8) for n in range(8)]
    assert recorder.lrs == pytest.approx(expected)


class _MiniBatchData(lightning.LightningDataModule):
    """A DataModule with crumpets mini-batches: the module must read nothing of it."""

    num_mini_batches = 2

    def train_dataloader(self) -> DataLoader:
        return _loader(64, 8)

    def train_steps_per_epoch(self) -> int:
        raise AssertionError("CrumpetsModule must not read the DataModule")


@pytest.mark.parametrize(("accumulate", "optimizer_steps"), [(2, 4), (1, 8)])
def test_gradient_accumulation_is_the_trainers_and_sizes_the_policy(accumulate: int, optimizer_steps: int) -> None:
    # C3: the user passes accumulate_grad_batches (= num_mini_batches); the module never rewrites it
    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda o: PolyPolicy(o),
    )
    trainer = _trainer(max_epochs=1, limit_val_batches=0, accumulate_grad_batches=accumulate)
    trainer.fit(model, datamodule=_MiniBatchData())
    assert trainer.accumulate_grad_batches == accumulate
    assert trainer.global_step == optimizer_steps  # 8 steps of 8 rows
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.steps_per_epoch == optimizer_steps and scheduler.num_epochs == 1
    assert scheduler.last_epoch == optimizer_steps and math.isclose(scheduler.get_last_lr()[0], 0.0, abs_tol=1e-12)


def _policy_lrs(**trainer_kwargs: Any) -> tuple[Any, list[float]]:
    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda o: PolyPolicy(o, power=1.0),
    )
    recorder = _Recorder()
    trainer = _trainer(callbacks=[recorder], limit_val_batches=0, **trainer_kwargs)
    trainer.fit(model, _loader(64, 16))  # 4 batches per epoch
    return trainer.lr_scheduler_configs[0].scheduler, recorder.lrs


@pytest.mark.parametrize(
    ("trainer_kwargs", "steps_per_epoch", "num_epochs", "batches"),
    [
        ({"max_epochs": 2, "limit_train_batches": 3}, 3, 2.0, 6),
        ({"max_epochs": 2, "limit_train_batches": 0.5}, 2, 2.0, 4),
        ({"max_epochs": 3, "max_steps": 5}, 4, 5 / 4, 5),
        ({"max_steps": 6}, 4, 6 / 4, 6),
        # 3 batches, accumulating 2: optimizer steps after batches 2 and 3 (the epoch's last)
        ({"max_epochs": 2, "limit_train_batches": 3, "accumulate_grad_batches": 2}, 2, 2.0, 6),
    ],
)
def test_policy_is_sized_by_the_trainers_limits(
    trainer_kwargs: dict[str, Any], steps_per_epoch: int, num_epochs: float, batches: int
) -> None:
    scheduler, lrs = _policy_lrs(**trainer_kwargs)
    assert scheduler.steps_per_epoch == steps_per_epoch and scheduler.num_epochs == pytest.approx(num_epochs)
    assert len(lrs) == batches
    assert scheduler.last_epoch == round(steps_per_epoch * num_epochs)
    # the schedule ends at lr 0 exactly when training ends
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_policy_without_a_loader_length_says_what_to_do() -> None:
    class _Endless(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            dataset = _Bright(16)
            while True:
                yield from (dataset[i] for i in range(len(dataset)))

    model = CrumpetsModule(net=_net(), loss=CrossEntropyLoss(), scheduler=lambda o: PolyPolicy(o))
    with pytest.raises(RuntimeError, match=r"Cannot size the LR policy.*num_epochs and steps_per_epoch"):
        _trainer(max_epochs=1, limit_val_batches=0).fit(model, DataLoader(_Endless(), batch_size=4))


def test_confusion_matrix_is_kept_not_logged() -> None:
    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        metric={"acc": AccuracyMetric(), "cm": ConfusionMatrix(nclasses=2, target_key="label")},
    )
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, _loader(), _loader(32, seed=1))
    assert "val/acc" in trainer.callback_metrics and "val/cm" not in trainer.callback_metrics
    assert int(model.epoch_metric_values["val/cm"].sum()) == 32


def test_default_optimizer_and_hparams() -> None:
    model = CrumpetsModule(net=_net(), loss=CrossEntropyLoss())
    optimizer = default_optimizer(model.parameters())
    assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["momentum"] == 0.9
    assert "net" not in model.hparams and model.hparams["scheduler_interval"] == "step"
    with pytest.raises(ValueError, match="scheduler_interval"):
        CrumpetsModule(scheduler_interval="batch")


_CONFIG = """
model:
  class_path: crumpets_lightning.modules.module.CrumpetsModule
  init_args:
    net:
      class_path: torch.nn.Flatten
    loss:
      class_path: crumpets_lightning.modules.CrossEntropyLoss
    metric:
      class_path: crumpets_lightning.modules.metrics.AccuracyMetric
      init_args:
        top_k: 1
    optimizer:
      class_path: torch.optim.Adam
      init_args:
        lr: 0.003
    scheduler:
      class_path: crumpets_lightning.modules.PolyPolicy
      init_args:
        power: 0.9
    scheduler_interval: step
"""


def test_lightning_cli_builds_module_from_yaml(tmp_path: Any) -> None:
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(_CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LightningCLI(
            CrumpetsModule,
            subclass_mode_model=True,
            run=False,
            save_config_callback=None,
            args=["--config", str(config), "--trainer.logger=false", "--trainer.accelerator=cpu"],
        )
    model = cli.model
    assert isinstance(model, CrumpetsModule)
    assert isinstance(model.net, nn.Flatten) and isinstance(model.loss, CrossEntropyLoss)
    param = nn.Parameter(torch.zeros(2))
    optimizer = model.optimizer_factory([param])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.003
    scheduler = model.scheduler_factory(optimizer)
    assert isinstance(scheduler, PolyPolicy) and scheduler.power == 0.9 and scheduler.num_epochs is None


def test_metric_arguments_are_flattened_and_copied() -> None:
    from crumpets_lightning.modules.metrics import CombinedMetric

    combined = CombinedMetric([AccuracyMetric(), AccuracyMetric(top_k=2)])
    model = CrumpetsModule(net=_net(), metric=combined, val_metric={"acc": AccuracyMetric()})
    assert set(model.train_metrics) == {"accuracy", "top2_accuracy"}
    assert set(model.val_metrics) == {"acc"} and set(model.test_metrics) == {"acc"}
    assert model.val_metrics["acc"] is not model.test_metrics["acc"]
    with pytest.raises(TypeError, match="torchmetrics Metric"):
        CrumpetsModule(metric={"acc": "accuracy"})  # type: ignore[dict-item]


def test_reduce_on_plateau_is_stepped_per_epoch_on_the_monitor() -> None:
    from crumpets_lightning.modules.policies import ReduceLROnPlateau

    model = CrumpetsModule(
        net=_net(),
        loss=CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),  # nothing improves: the plateau is reached
        scheduler=lambda o: ReduceLROnPlateau(o, patience=0, factor=0.5),
    )
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, _loader(32), _loader(32, seed=1))
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "epoch" and config.monitor == "val/loss"
    assert config.scheduler.last_epoch == 3


class _Batches:
    """A training loader that yields the given batches."""

    def __init__(self, *batches: dict[str, torch.Tensor]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        return iter(self.batches)


class _Gradients(lightning.Callback):
    """The largest absolute gradient of every optimizer step."""

    def __init__(self) -> None:
        self.largest: list[float] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        grads = [p.grad.abs().max() for p in pl_module.parameters() if p.grad is not None]
        self.largest.append(float(torch.stack(grads).max()))


def test_a_training_step_without_rows_is_a_zero_gradient_step() -> None:
    # skip_bad_samples=True: a step whose samples were all bad reaches training_step with zero rows
    full = next(iter(_loader(16, 16)))
    empty = {key: value[:0] for key, value in full.items()}
    model = CrumpetsModule(_net(), loss=CrossEntropyLoss(), metric=AccuracyMetric())
    gradients = _Gradients()
    trainer = _trainer(max_epochs=1, callbacks=[gradients])
    trainer.fit(model, train_dataloaders=_Batches(empty, empty))
    assert trainer.global_step == 2  # both steps ran (no crash on zero rows), as steps of zero gradients
    assert gradients.largest == [0.0, 0.0]
    assert "train/loss_epoch" not in trainer.callback_metrics  # nothing was logged for them
    recorder = _Recorder()
    trainer = _trainer(max_epochs=1, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=_Batches(full, empty, full))
    assert len(recorder.losses) == 3 and recorder.losses[0] > 0 and recorder.losses[1] == 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
