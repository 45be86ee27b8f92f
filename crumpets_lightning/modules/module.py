"""``CrumpetsModule``: the crumpets ``Trainer`` workflow as a ``LightningModule``.

Batches are crumpets sample dicts (``image``, ``label``, ...). Each training/validation/test step
normalises the image (into a new dict: the batch is not modified), runs :meth:`CrumpetsModule.forward`
(dict in, dict out), applies the dict loss and updates the dict metrics, and logs
``"{stage}/loss"`` and ``"{stage}/{metric name}"``. An optional
:class:`~crumpets_lightning.modules.randomizer.Randomizer` augments training batches on the device in
``on_after_batch_transfer``.

Exact evaluation: rows marked ``batch["padding"]`` (repeats that pad a rank's shard under DDP) are run
through the network with the rest of the batch, then dropped from the loss, the metrics and the predictions
of validation, test and predict. Losses are logged through sum/count metrics (one per stage), so the epoch
value is the mean over every rank's real rows; every rank logs every step, also when a batch is all padding.

Label check: for class losses and metrics (``checks_class_range``) the labels are compared with the number
of classes, ``output.shape[1]``, on the host copy of the batch kept in ``on_before_batch_transfer`` (no device
sync); a label outside ``[0, C)`` raises a ``ValueError`` naming the samples (``batch["key"]``, else
``batch["index"]``, else the row). (A DataModule that overrides ``on_before_batch_transfer`` replaces this
module's hook in Lightning; then only labels still on the CPU in the step are checked, and padding is read
from the batch on the device.)

Gradient accumulation is the Trainer's: pass ``Trainer(accumulate_grad_batches=N)`` (for a DataModule with
``num_mini_batches=N``, N). crumpets LR policies whose length was left open are sized in
:meth:`CrumpetsModule.on_train_start` from the Trainer's own numbers (batches per epoch after
``limit_train_batches``, ``accumulate_grad_batches``, ``max_epochs``/``max_steps``).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric, MetricCollection

from crumpets_lightning.modules.losses import _describe_bad_labels, out_of_range_labels
from crumpets_lightning.modules.metrics import _WeightedMean
from crumpets_lightning.modules.policies import CrumpetsPolicy
from crumpets_lightning.modules.randomizer import Randomizer
from crumpets_lightning.modules.utils import Normalize

__all__ = ["CrumpetsModule", "default_optimizer"]

_INTERVALS = ("step", "epoch")

# Lightning warns whenever a module overrides ``on_before_batch_transfer``/``on_after_batch_transfer`` and a
# DataModule is passed. Keeping the host copy of labels and padding there and running the Randomizer there,
# in the module, is this class's design (the DataModule has no such hooks), so the warning only says what is
# intended.
warnings.filterwarnings(
    "ignore",
    message=r"You have overridden `on_(before|after)_batch_transfer` in `LightningModule` but have passed in a",
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


@dataclass
class _ClassCheck:
    """A class loss or metric: ``sample[target_key]`` holds labels in ``[0, sample[output_key].shape[1])``."""

    owner: str
    output_key: str
    target_key: str
    ignore_index: int | None


def _class_checks(modules: Iterable[nn.Module | None]) -> list[_ClassCheck]:
    """The class-range checks of the losses and metrics among ``modules`` (also nested ones)."""
    checks: dict[tuple[str, str, int | None], _ClassCheck] = {}
    for module in modules:
        if module is None:
            continue
        for child in module.modules():
            if getattr(child, "checks_class_range", False):
                output_key, target_key = getattr(child, "output_key", None), getattr(child, "target_key", None)
                if isinstance(output_key, str) and isinstance(target_key, str):
                    ignore_index = getattr(child, "ignore_index", None)
                    check = _ClassCheck(type(child).__name__, output_key, target_key, ignore_index)
                    checks.setdefault((output_key, target_key, ignore_index), check)
    return list(checks.values())


def _rows(batch: Mapping[str, Any], key: str) -> int:
    """Rows of a batch: the first dimension of ``batch[key]`` or of its first tensor (1 if none)."""
    value = batch.get(key)
    if isinstance(value, Tensor) and value.dim() > 0:
        return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


@dataclass
class _HostBatch:
    """What the module keeps of a batch from the host side: its row count, padding, sample names and labels."""

    rows: int
    #: Indices (CPU int64) of the rows that are not padding; ``None`` when no row is padding.
    keep: Tensor | None = None
    #: ``batch["key"]`` (a list) or else ``batch["index"]`` (a tensor), to name samples in errors.
    names: Sequence[Any] | Tensor | None = None
    #: ``"key"`` or ``"index"``: which of the two ``names`` is.
    names_kind: str = "key"
    #: Class labels by key, on the host.
    labels: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, batch: Mapping[str, Any], rows: int, label_keys: Iterable[str]) -> _HostBatch:
        """Record ``batch``; only CPU tensors are read (a ``padding`` on a device is read with a sync)."""
        record = cls(rows)
        padding = batch.get("padding")
        if isinstance(padding, Tensor) and padding.dim() == 1 and len(padding) == rows and bool(padding.any()):
            record.keep = (~padding.bool()).nonzero().flatten().cpu()
        for kind in ("key", "index"):
            names = batch.get(kind)
            if isinstance(names, Tensor) and names.dim() == 1 and len(names) == rows:
                record.names, record.names_kind = names, kind
                break
            if isinstance(names, Sequence) and not isinstance(names, (str, bytes)) and len(names) == rows:
                record.names, record.names_kind = names, kind
                break
        for key in label_keys:
            label = batch.get(key)
            if isinstance(label, Tensor) and label.device.type == "cpu" and label.dim() > 0:
                record.labels[key] = label
        return record

    def name(self, row: int) -> str:
        """How an error names the sample in ``row``."""
        if self.names is None:
            return f"row {row}"
        name = self.names[row].item() if isinstance(self.names, Tensor) else self.names[row]
        return f"sample {self.names_kind} {name!r}, row {row}"

    @property
    def kept_rows(self) -> int:
        """Rows that are not padding."""
        return self.rows if self.keep is None else len(self.keep)


def _select_rows(sample: Mapping[str, Any], keep: Tensor, rows: int) -> dict[str, Any]:
    """A new dict with only the ``keep`` rows of every per-row entry (tensors by dim 0, lists by position)."""
    positions: list[int] | None = None
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows:
            out[key] = value.index_select(0, keep.to(value.device, non_blocking=True))
        elif isinstance(value, (list, tuple)) and len(value) == rows:
            positions = keep.tolist() if positions is None else positions
            selected = [value[i] for i in positions]
            out[key] = tuple(selected) if isinstance(value, tuple) else selected
        else:
            out[key] = value
    return out


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
            at ``on_train_start`` from ``trainer.max_epochs``/``max_steps`` and the Trainer's batches per
            epoch (after ``limit_train_batches``) divided by ``accumulate_grad_batches``.
        scheduler_interval: ``"step"`` (crumpets policies are per iteration) or ``"epoch"``.
        scheduler_monitor: Logged value a ``ReduceLROnPlateau`` watches (stepped per epoch).
        randomizer: Pixel augmentation applied to training batches on the device.
        normalize: ``True`` for ImageNet normalisation of uint8 images, ``False`` for none, or a
            :class:`~crumpets_lightning.modules.utils.Normalize`.
        val_loss: Loss for validation/test (default: ``loss``).
        val_metric: Metric for validation/test (default: a copy of ``metric``). Metrics must accept a
            batch of zero rows (a rank's batch may be all padding under DDP); the package's metrics do.
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
        # the logged losses: exact sums over rows, reduced across ranks when computed
        self.train_loss_mean = _WeightedMean()
        self.val_loss_mean = _WeightedMean()
        self.test_loss_mean = _WeightedMean()
        #: ``{"{stage}/{name}": value}`` of metrics that cannot be logged as scalars (e.g. a confusion
        #: matrix), computed at the end of each epoch.
        self.epoch_metric_values: dict[str, Any] = {}
        self._host_batch: _HostBatch | None = None

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

    def _stage_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = getattr(self, f"{stage}_metrics")
        assert isinstance(metrics, nn.ModuleDict)
        return {name: cast(Metric, metric) for name, metric in metrics.items()}

    def _stage_loss(self, stage: str) -> nn.Module | None:
        return self.loss if stage == "train" or self.val_loss is None else self.val_loss

    def _class_checks(self, stage: str | None = None) -> list[_ClassCheck]:
        """Class-range checks of the loss and metrics of ``stage`` (all stages for ``None``)."""
        stages = ("train", "val", "test") if stage is None else (stage,)
        modules: list[nn.Module | None] = []
        for name in stages:
            modules.append(self._stage_loss(name))
            modules.extend(self._stage_metrics(name).values())
        return _class_checks(modules)

    def _host_record(self, batch: Mapping[str, Any]) -> _HostBatch:
        """The record ``on_before_batch_transfer`` kept of this batch, or one made from the batch itself."""
        rows = _rows(batch, self.input_key)
        record, self._host_batch = self._host_batch, None
        if record is None or record.rows != rows:
            record = _HostBatch.of(batch, rows, {check.target_key for check in self._class_checks()})
        return record

    def _check_labels(self, output: Mapping[str, Any], record: _HostBatch, stage: str) -> None:
        """Raise if a host-side label is outside the classes of the output it is scored against.

        Raises:
            ValueError: Naming the loss/metric, the number of classes, the bad labels and their samples.
        """
        for check in self._class_checks(stage):
            scores = output.get(check.output_key)
            labels = record.labels.get(check.target_key)
            if not isinstance(scores, Tensor) or scores.dim() < 2 or labels is None:
                continue
            if labels.is_floating_point() or labels.is_complex() or labels.shape[0] != record.rows:
                continue  # not class labels: the loss itself says what is wrong
            num_classes = int(scores.shape[1])
            bad = out_of_range_labels(labels, num_classes, check.ignore_index)
            if bool(bad.any()):
                ignore = "" if check.ignore_index is None else f" (or the ignore_index {check.ignore_index})"
                raise ValueError(
                    f"{check.owner}: label(s) out of range in this {stage} batch: the network output "
                    f"sample[{check.output_key!r}] has {num_classes} classes (shape {tuple(scores.shape)}), so "
                    f"sample[{check.target_key!r}] must be in [0, {num_classes}){ignore}, but got "
                    f"{_describe_bad_labels(labels, bad, record.name)}. Fix these samples' labels, or give the "
                    f"network as many outputs as the data set has classes (its largest label + 1)"
                )

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor | None:
        if not isinstance(batch, Mapping):
            raise TypeError(f"{type(self).__name__} expects dict batches but got {type(batch).__name__}")
        record = self._host_record(batch)
        if stage == "train" and record.rows == 0:
            return self._empty_step_loss()
        output = self(self.normalize_sample(batch))
        self._check_labels(output, record, stage)
        rows = record.rows
        if stage != "train" and record.keep is not None:
            output = _select_rows(output, record.keep, rows)
            rows = record.kept_rows
        loss_fn = self._stage_loss(stage)
        loss = None
        if loss_fn is not None:
            loss_mean = cast(_WeightedMean, getattr(self, f"{stage}_loss_mean"))
            if rows:
                loss = loss_fn(output)
            if stage == "train":
                assert loss is not None
                loss_mean(loss, rows)  # forward: also this step's value (Lightning logs it as train/loss_step)
            else:
                loss_mean.update(loss if loss is not None else torch.zeros(()), rows)
            # logged every step on every rank (a batch of padding only adds nothing): ranks compute together
            self.log(
                f"{stage}/loss", loss_mean, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=rows
            )
        for name, metric in self._stage_metrics(stage).items():
            metric.update(output)
            if _logs_scalar(metric):
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=rows)
        return loss

    def _empty_step_loss(self) -> Tensor:
        """The loss of a training step without rows (all its samples were skipped as bad).

        No forward (a network may fail on zero rows, batch norm would record nothing useful), nothing logged:
        a zero loss on every trainable parameter, so that backward, gradient accumulation and DDP's
        gradient all-reduce run as on every other step, with zero gradients.
        """
        trainable = [parameter.sum() * 0 for parameter in self.parameters() if parameter.requires_grad]
        if not trainable:
            raise RuntimeError(f"{type(self).__name__} has no trainable parameters")
        return torch.stack(trainable).sum()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Forward, loss and metrics of one training batch; returns the loss.

        A batch without rows (every sample of the step was skipped as bad, ``skip_bad_samples=True``) runs no
        forward and logs nothing; its loss is zero, with zero gradients.

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
        """Return the network output (``output_key``) of a normalised batch, without its padding rows."""
        record = self._host_record(batch)
        output = self(self.normalize_sample(batch))
        if record.keep is not None:
            output = _select_rows(output, record.keep, record.rows)
        return output[self.output_key]

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

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keep the host side of the batch: its padding rows, sample keys and class labels (no copies)."""
        if isinstance(batch, Mapping):
            labels = {check.target_key for check in self._class_checks()}
            self._host_batch = _HostBatch.of(batch, _rows(batch, self.input_key), labels)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the randomizer to training batches (never in validation, test, predict or sanity check)."""
        if self.randomizer is not None and self._trainer is not None and self.trainer.training:
            batch = self.randomizer(batch)
        return batch

    def on_train_start(self) -> None:
        """Size crumpets LR policies whose length was left open (call ``super()`` when overriding this).

        The Trainer's train loader is set up (and, on resume, its saved state loaded) by now, so its length is
        read without building anything. A policy restored from a checkpoint keeps its saved length.
        """
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, CrumpetsPolicy) and (
                not scheduler.length_known or scheduler.steps_per_epoch is None
            ):
                steps_per_epoch = self._scheduler_steps_per_epoch(config.interval)
                scheduler.configure_length(self._training_epochs(steps_per_epoch, config.interval), steps_per_epoch)

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
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def _scheduler_steps_per_epoch(self, interval: str) -> int:
        """Scheduler steps per epoch: optimizer steps for ``"step"`` intervals, 1 for ``"epoch"``.

        Raises:
            RuntimeError: If the train loader has no length.
        """
        if interval == "epoch":
            return 1
        trainer = self.trainer
        batches = trainer.num_training_batches  # after limit_train_batches / overfit_batches
        if not batches or batches == math.inf:
            raise RuntimeError(
                f"Cannot size the LR policy: the training loader has {batches} batches per epoch; give the "
                f"policy num_epochs and steps_per_epoch, or use a loader with a length"
            )
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        return max(1, math.ceil(int(batches) / accumulate))

    def _training_epochs(self, steps_per_epoch: int, interval: str) -> float:
        """Length of training in (fractional) epochs from ``max_epochs`` and ``max_steps``.

        Raises:
            RuntimeError: If the Trainer has neither.
        """
        trainer = self.trainer
        candidates: list[float] = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            candidates.append(float(trainer.max_epochs))
        if trainer.max_steps is not None and trainer.max_steps > 0 and interval == "step":
            candidates.append(trainer.max_steps / steps_per_epoch)
        if not candidates:
            raise RuntimeError(
                "Cannot size the LR policy: the Trainer has neither max_epochs nor max_steps; "
                "pass num_epochs to the policy"
            )
        return min(candidates)
