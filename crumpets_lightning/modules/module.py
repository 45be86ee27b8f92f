"""``CrumpetsModule``: the crumpets ``Trainer`` workflow as a ``LightningModule``.

Batches are crumpets sample dicts (``image``, ``label``, ...). Each training/validation/test step
normalises the image (into a new dict: the batch is not modified), runs :meth:`CrumpetsModule.forward`
(dict in, dict out), applies the dict loss and updates the dict metrics, and logs
``"{stage}/loss"`` and ``"{stage}/{metric name}"`` with explicit batch sizes. An optional
:class:`~crumpets_lightning.modules.randomizer.Randomizer` augments training batches on the device in
``on_after_batch_transfer``.

Example::

    >>> from torch import nn
    >>> from crumpets_lightning.modules.losses import CrossEntropyLoss
    >>> from crumpets_lightning.modules.metrics import AccuracyMetric
    >>> model = CrumpetsModule(
    ...     net=nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)),
    ...     loss=CrossEntropyLoss(),
    ...     metric=AccuracyMetric(),
    ... )
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric, MetricCollection

from crumpets_lightning.modules.policies import CrumpetsPolicy
from crumpets_lightning.modules.randomizer import Randomizer
from crumpets_lightning.modules.utils import Normalize

__all__ = ["CrumpetsModule", "default_optimizer"]

_INTERVALS = ("step", "epoch")

# Lightning warns whenever a module overrides ``on_after_batch_transfer`` and a DataModule is passed. Running
# the Randomizer there, in the module, is this class's design (the DataModule has no such hook), so the
# warning only says what is intended.
warnings.filterwarnings(
    "ignore",
    message=r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a",
)


def default_optimizer(params: Iterable[Any]) -> Optimizer:
    """SGD with ``lr=0.1``, ``momentum=0.9``, ``weight_decay=1e-4`` (the crumpets examples' choice)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _metric_name(metric: Metric) -> str:
    name = getattr(metric, "metric_key", None)
    return name if isinstance(name, str) and name else type(metric).__name__.lower()


def _named_metrics(metric: Metric | MetricCollection | Mapping[str, Metric] | None) -> dict[str, Metric]:
    """Flatten the ``metric`` argument into ``{log name: metric}``."""
    if metric is None:
        return {}
    if isinstance(metric, MetricCollection):
        return dict(metric.items(keep_base=True, copy_state=False))
    if isinstance(metric, Metric):
        return {_metric_name(metric): metric}
    if isinstance(metric, Mapping):
        named: dict[str, Metric] = {}
        for name, value in metric.items():
            if isinstance(value, MetricCollection):
                named.update({f"{name}/{child}": m for child, m in value.items(keep_base=True, copy_state=False)})
            elif isinstance(value, Metric):
                named[name] = value
            else:
                raise TypeError(f"metric[{name!r}] must be a torchmetrics Metric but is {type(value).__name__}")
        for name in named:
            if not name or "." in name:
                raise ValueError(f"Metric names must be non-empty and contain no '.', got {name!r}")
        return named
    raise TypeError(
        "Expected argument `metric` to be a torchmetrics Metric, a dict of them or None but got "
        f"{type(metric).__name__}"
    )


def _logs_scalar(metric: Metric) -> bool:
    """Whether ``self.log`` can take the metric (its ``compute()`` is a scalar)."""
    return bool(getattr(metric, "scalar_output", True))


class CrumpetsModule(LightningModule):
    """LightningModule base for crumpets-style dict models.

    Subclass it and override :meth:`forward` (dict in, dict out), or pass a tensor network as ``net``.

    Args:
        net: Network called as ``net(sample[input_key])`` by the default :meth:`forward`.
        loss: Dict loss (e.g. :class:`~crumpets_lightning.modules.losses.CrossEntropyLoss`); needed to train.
        metric: Dict metric, a :class:`~crumpets_lightning.modules.metrics.CombinedMetric`, or a dict
            ``{log name: metric}``; train, val and test each get their own copy.
        optimizer: Callable building the optimizer from the parameters (YAML: ``class_path`` of an optimizer).
        scheduler: Callable building an LR scheduler from the optimizer (YAML: ``class_path``, e.g.
            ``crumpets_lightning.modules.PolyPolicy``). crumpets policies whose length was left open get it
            from ``trainer.max_epochs``/``max_steps`` and the DataModule's steps per epoch.
        scheduler_interval: ``"step"`` (crumpets policies are per iteration) or ``"epoch"``.
        scheduler_monitor: Logged value a ``ReduceLROnPlateau`` watches (stepped per epoch).
        randomizer: Pixel augmentation applied to training batches on the device.
        normalize: ``True`` for ImageNet normalisation of uint8 images, ``False`` for none, or a
            :class:`~crumpets_lightning.modules.utils.Normalize`.
        val_loss: Loss for validation/test (default: ``loss``).
        val_metric: Metric for validation/test (default: a copy of ``metric``).
        input_key: Key of the network input (the normalised image).
        output_key: Key the default :meth:`forward` stores the network output under.

    Raises:
        ValueError: For an unknown ``scheduler_interval`` or a bad ``metric``.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        loss: nn.Module | None = None,
        metric: Metric | dict[str, Metric] | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str = "val/loss",
        randomizer: Randomizer | None = None,
        normalize: bool | Normalize = True,
        val_loss: nn.Module | None = None,
        val_metric: Metric | dict[str, Metric] | None = None,
        input_key: str = "image",
        output_key: str = "output",
    ) -> None:
        super().__init__()
        if scheduler_interval not in _INTERVALS:
            raise ValueError(
                f"Expected argument `scheduler_interval` to be one of {_INTERVALS} but got {scheduler_interval!r}"
            )
        ignore = ["net", "loss", "metric", "optimizer", "scheduler", "randomizer", "val_loss", "val_metric"]
        if not isinstance(normalize, bool):
            ignore.append("normalize")
        self.save_hyperparameters(ignore=ignore)
        self.net = net
        self.loss = loss
        self.val_loss = val_loss
        self.randomizer = randomizer
        self.normalizer: Normalize | None = Normalize() if normalize is True else (normalize or None)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.input_key = input_key
        self.output_key = output_key
        train_metrics = _named_metrics(metric)
        eval_source = val_metric if val_metric is not None else metric
        self.train_metrics = nn.ModuleDict(train_metrics)
        self.val_metrics = nn.ModuleDict(copy.deepcopy(_named_metrics(eval_source)))
        self.test_metrics = nn.ModuleDict(copy.deepcopy(_named_metrics(eval_source)))
        #: ``{"{stage}/{name}": value}`` of metrics that cannot be logged as scalars (e.g. a confusion
        #: matrix), computed at the end of each epoch.
        self.epoch_metric_values: dict[str, Any] = {}

    # -- model --------------------------------------------------------------------------------------------

    def forward(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``net`` on ``sample[input_key]``; return a new dict with ``sample[output_key]`` added.

        Raises:
            RuntimeError: If no ``net`` was given (then override this method).
            KeyError: If the input key is missing.
        """
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} has no net: pass net=... or override forward(sample)")
        if self.input_key not in sample:
            raise KeyError(f"forward needs sample[{self.input_key!r}] but the sample has only {sorted(sample)}")
        out = dict(sample)
        out[self.output_key] = self.net(sample[self.input_key])
        return out

    def normalize_sample(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Return a new dict whose ``input_key`` entry is normalised (the batch itself is not modified)."""
        out = dict(sample)
        if self.normalizer is not None and isinstance(out.get(self.input_key), Tensor):
            out[self.input_key] = self.normalizer(out[self.input_key])
        return out

    # -- steps --------------------------------------------------------------------------------------------

    def _batch_size(self, batch: Mapping[str, Any]) -> int:
        value = batch.get(self.input_key)
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
        for value in batch.values():
            if isinstance(value, Tensor) and value.dim() > 0:
                return int(value.shape[0])
        return 1

    def _stage_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = getattr(self, f"{stage}_metrics")
        assert isinstance(metrics, nn.ModuleDict)
        return {name: cast(Metric, metric) for name, metric in metrics.items()}

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor | None:
        if not isinstance(batch, Mapping):
            raise TypeError(f"{type(self).__name__} expects dict batches but got {type(batch).__name__}")
        output = self(self.normalize_sample(batch))
        batch_size = self._batch_size(batch)
        loss_fn = self.loss if stage == "train" or self.val_loss is None else self.val_loss
        loss = None
        if loss_fn is not None:
            loss = loss_fn(output)
            self.log(
                f"{stage}/loss",
                loss,
                on_step=stage == "train",
                on_epoch=True,
                prog_bar=True,
                batch_size=batch_size,
                sync_dist=stage != "train",
            )
        for name, metric in self._stage_metrics(stage).items():
            metric.update(output)
            if _logs_scalar(metric):
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Forward, loss and metrics of one training batch; returns the loss.

        Raises:
            RuntimeError: If no loss was given.
        """
        loss = self._step(batch, "train")
        if loss is None:
            raise RuntimeError(f"{type(self).__name__} needs a loss to train: pass loss=... (e.g. CrossEntropyLoss())")
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor | None:
        """Forward, loss and metrics of one validation batch."""
        return self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor | None:
        """Forward, loss and metrics of one test batch."""
        return self._step(batch, "test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Return the network output (``output_key``) of a normalised batch."""
        return self(self.normalize_sample(batch))[self.output_key]

    def _finish_epoch(self, stage: str) -> None:
        for name, metric in self._stage_metrics(stage).items():
            if not _logs_scalar(metric) and metric.update_called:
                self.epoch_metric_values[f"{stage}/{name}"] = metric.compute()
                metric.reset()

    def on_train_epoch_end(self) -> None:
        """Store the values of non-scalar training metrics in :attr:`epoch_metric_values`."""
        self._finish_epoch("train")

    def on_validation_epoch_end(self) -> None:
        """Store the values of non-scalar validation metrics in :attr:`epoch_metric_values`."""
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Store the values of non-scalar test metrics in :attr:`epoch_metric_values`."""
        self._finish_epoch("test")

    # -- hooks --------------------------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the randomizer to training batches (never in validation, test, predict or sanity check)."""
        if self.randomizer is not None and self._trainer is not None and self.trainer.training:
            batch = self.randomizer(batch)
        return batch

    def setup(self, stage: str) -> None:
        """Turn a DataModule's ``num_mini_batches`` into gradient accumulation (one optimizer step per batch)."""
        if stage != "fit" or self._trainer is None:
            return
        trainer = self.trainer
        mini_batches = getattr(getattr(trainer, "datamodule", None), "num_mini_batches", 1)
        if isinstance(mini_batches, int) and mini_batches > 1 and trainer.accumulate_grad_batches == 1:
            trainer.accumulate_grad_batches = mini_batches
            rank_zero_info(
                f"CrumpetsModule: accumulating gradients over num_mini_batches={mini_batches} steps "
                f"(one optimizer step per crumpets batch)"
            )

    # -- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Build the optimizer and, if given, the scheduler (with its interval and, for plateaus, monitor)."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": self.scheduler_monitor}
            return {"optimizer": optimizer, "lr_scheduler": config}
        if isinstance(scheduler, CrumpetsPolicy) and (not scheduler.length_known or scheduler.steps_per_epoch is None):
            steps_per_epoch = self._optimizer_steps_per_epoch()
            scheduler.configure_length(self._training_epochs(steps_per_epoch), steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def _optimizer_steps_per_epoch(self) -> int:
        """Scheduler steps per epoch: optimizer steps for ``"step"`` intervals, 1 for ``"epoch"``."""
        if self.scheduler_interval == "epoch":
            return 1
        trainer = self.trainer
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        steps_method = getattr(getattr(trainer, "datamodule", None), "train_steps_per_epoch", None)
        if callable(steps_method):
            batches = int(steps_method())
            limit = trainer.limit_train_batches
            if isinstance(limit, int):
                batches = min(batches, limit)
            elif limit is not None and limit < 1.0:
                batches = int(batches * limit)
        else:
            # builds the train loader now; DataModules with train_steps_per_epoch() avoid that
            _ = trainer.estimated_stepping_batches
            batches = int(trainer.num_training_batches)
        if batches <= 0 or batches == math.inf:
            raise RuntimeError(f"Cannot size the LR policy: the training loader has {batches} batches per epoch")
        return max(1, math.ceil(batches / accumulate))

    def _training_epochs(self, steps_per_epoch: int) -> float:
        """Length of training in (fractional) epochs from ``max_epochs`` and ``max_steps``."""
        trainer = self.trainer
        candidates: list[float] = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            candidates.append(float(trainer.max_epochs))
        if trainer.max_steps is not None and trainer.max_steps > 0 and self.scheduler_interval == "step":
            candidates.append(trainer.max_steps / steps_per_epoch)
        if not candidates:
            raise RuntimeError(
                "Cannot size the LR policy: the Trainer has neither max_epochs nor max_steps; "
                "pass num_epochs to the policy"
            )
        return min(candidates)
