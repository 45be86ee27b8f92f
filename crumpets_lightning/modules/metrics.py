"""torchmetrics metrics that read crumpets sample dicts.

Each metric's ``update(sample)`` takes the sample dict (keys configurable), its states are sums declared
with ``dist_reduce_fx="sum"`` (so results under DDP equal the single-process result), and ``compute()``
returns the value. ``metric_key`` is the name the metric is logged under (e.g. ``"accuracy"``,
``"top5_accuracy"``). The functional helpers (:func:`topk_correct`, :func:`confusion_matrix`, ...) can be
used directly.

Example::

    >>> import torch
    >>> metric = AccuracyMetric(top_k=1)
    >>> metric.update({"output": torch.tensor([[0.1, 0.9], [0.8, 0.2]]), "label": torch.tensor([[1], [1]])})
    >>> metric.compute()
    tensor(0.5000)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from crumpets_lightning.modules.losses import _get, class_target, nss_per_sample

__all__ = [
    "AccuracyMetric",
    "AverageMetric",
    "CombinedMetric",
    "ConfusionMatrix",
    "MSELossMetric",
    "MSEMetric",
    "NSSMetric",
    "NoopMetric",
    "confusion_matrix",
    "squared_error_sum",
    "topk_correct",
    "true_false_positives",
]


def _no_value(owner: object) -> NoReturn:
    raise AttributeError(
        f"{type(owner).__name__}.value() is crumpets' API; these are torchmetrics metrics: call compute() "
        f"for the value over everything seen since the last reset()"
    )


def _check_key(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"Expected argument `{name}` to be a non-empty str but got {value!r}")


def topk_correct(output: Tensor, target: Tensor, top_k: int = 1) -> Tensor:
    """Count the samples whose target is among the ``top_k`` highest scores.

    Args:
        output: Scores ``[B, C, *dims]``.
        target: Class indices ``[B, *dims]`` or ``[B, 1, *dims]``.
        top_k: How many of the best classes count as correct.

    Returns:
        The number of correct predictions (int64 scalar). Dense outputs count every position.

    Raises:
        ValueError: If ``top_k`` exceeds the number of classes or the shapes do not fit.
    """
    if top_k > output.shape[1]:
        raise ValueError(
            f"Expected argument `top_k` to be at most the number of classes {output.shape[1]} but got {top_k}"
        )
    target = class_target(output, target, "AccuracyMetric")
    best = output.topk(top_k, dim=1).indices
    return (best == target.unsqueeze(1)).any(dim=1).sum()


def confusion_matrix(output: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix of the arg-max predictions: entry ``[t, p]`` counts target ``t`` predicted as ``p``.

    Args:
        output: Scores ``[B, C, *dims]`` (``C == num_classes``).
        target: Class indices ``[B, *dims]`` or ``[B, 1, *dims]``; values outside ``[0, num_classes)`` are
            ignored.
        num_classes: Number of classes.

    Returns:
        int64 ``[num_classes, num_classes]``.
    """
    target = class_target(output, target, "ConfusionMatrix", check_range=False).reshape(-1)
    predicted = output.argmax(dim=1).reshape(-1)
    valid = (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + predicted[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def true_false_positives(matrix: Tensor) -> Tensor:
    """Per-class true positives, false positives and sample counts of a confusion matrix.

    Args:
        matrix: ``[C, C]`` confusion matrix (rows: target, columns: prediction).

    Returns:
        ``[C, 3]``: true positives, false positives and the number of samples of each class.
    """
    true_positives = matrix.diagonal()
    false_positives = matrix.sum(dim=0) - true_positives
    totals = matrix.sum(dim=1)
    return torch.stack([true_positives, false_positives, totals], dim=1)


def squared_error_sum(output: Tensor, target: Tensor) -> tuple[Tensor, int]:
    """Sum of squared differences and the number of elements compared.

    Raises:
        ValueError: If the shapes differ (beyond a reshape of equal sizes).
    """
    if output.shape != target.shape:
        if output.numel() != target.numel():
            raise ValueError(
                f"MSELossMetric: output of shape {tuple(output.shape)} and target of shape {tuple(target.shape)} differ"
            )
        target = target.reshape(output.shape)
    difference = output.double() - target.double()
    return (difference * difference).sum(), difference.numel()


class _SampleMetric(Metric):
    """Common part of the dict metrics: the keys."""

    full_state_update = False
    #: Whether ``compute()`` returns a scalar that can be logged with ``LightningModule.log``.
    scalar_output = True

    def __init__(self, output_key: str, target_key: str, metric_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_key("output_key", output_key)
        _check_key("target_key", target_key)
        _check_key("metric_key", metric_key)
        self.output_key = output_key
        self.target_key = target_key
        self.metric_key = metric_key

    def _output(self, sample: Mapping[str, Any]) -> Tensor:
        return _get(sample, self.output_key, type(self).__name__).detach()

    def value(self) -> NoReturn:
        """Not available: crumpets' ``value()`` is ``compute()`` here.

        Raises:
            AttributeError: Always, naming ``compute()``.
        """
        _no_value(self)

    def _target(self, sample: Mapping[str, Any]) -> Tensor:
        return _get(sample, self.target_key, type(self).__name__).detach()


class _MeanMetric(_SampleMetric):
    """A dict metric that is the mean of per-element values: sum and count states, reduced by summing."""

    total: Tensor
    count: Tensor

    def __init__(self, output_key: str, target_key: str, metric_key: str, **kwargs: Any) -> None:
        super().__init__(output_key, target_key, metric_key, **kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def compute(self) -> Tensor:
        """Return the mean over everything seen (float32)."""
        return (self.total / self.count.clamp(min=1)).float()


class AccuracyMetric(_SampleMetric):
    """Top-k accuracy: the share of samples whose target is among the ``top_k`` best-scored classes.

    Args:
        top_k: Positive int.
        output_key: Key of the scores ``[B, C]`` (or dense ``[B, C, H, W]``).
        target_key: Key of the class targets ``[B]`` or ``[B, 1]``.
        metric_key: Log name; default ``"accuracy"`` for ``top_k=1``, else ``"top{k}_accuracy"``.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    #: ``output.shape[1]`` is the number of classes of ``target_key`` (CrumpetsModule checks labels against it).
    checks_class_range = True
    ignore_index = None
    correct: Tensor
    total: Tensor

    def __init__(
        self,
        top_k: int = 1,
        output_key: str = "output",
        target_key: str = "label",
        metric_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"Expected argument `top_k` to be a positive int but got {top_k!r}")
        if metric_key is None:
            metric_key = "accuracy" if top_k == 1 else f"top{top_k}_accuracy"
        super().__init__(output_key, target_key, metric_key, **kwargs)
        self.top_k = top_k
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sample: Mapping[str, Any]) -> None:
        """Count the correct predictions of one batch."""
        output = self._output(sample)
        self.correct += topk_correct(output, self._target(sample), self.top_k)
        self.total += output.numel() // output.shape[1]

    def compute(self) -> Tensor:
        """Return the accuracy in ``[0, 1]``."""
        return self.correct.float() / self.total.clamp(min=1)


class AverageMetric(_MeanMetric):
    """Mean of a value over all samples seen (e.g. a per-sample score the network computes itself).

    Args:
        output_key: Key of the values; every element counts once.
        metric_key: Log name.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None

    def __init__(self, output_key: str = "output", metric_key: str = "average_metric", **kwargs: Any) -> None:
        super().__init__(output_key, "unused", metric_key, **kwargs)

    def update(self, sample: Mapping[str, Any]) -> None:
        """Add the values of one batch."""
        values = self._output(sample)
        self.total += values.double().sum()
        self.count += values.numel()


class ConfusionMatrix(_SampleMetric):
    """Confusion matrix of arg-max predictions (rows: target class, columns: predicted class).

    Args:
        nclasses: Number of classes (positive int).
        output_key: Key of the scores ``[B, C, *dims]``.
        target_key: Key of the class targets (e.g. a segmentation map ``[B, 1, H, W]``).
        metric_key: Log name.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None
    #: ``compute()`` is a matrix: CrumpetsModule keeps it in ``epoch_metric_values`` instead of logging it.
    scalar_output = False
    matrix: Tensor

    def __init__(
        self,
        nclasses: int = 10,
        output_key: str = "output",
        target_key: str = "target_image",
        metric_key: str = "confusion_matrix",
        **kwargs: Any,
    ) -> None:
        if not isinstance(nclasses, int) or isinstance(nclasses, bool) or nclasses < 1:
            raise ValueError(f"Expected argument `nclasses` to be a positive int but got {nclasses!r}")
        super().__init__(output_key, target_key, metric_key, **kwargs)
        self.nclasses = nclasses
        self.add_state("matrix", torch.zeros(nclasses, nclasses, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sample: Mapping[str, Any]) -> None:
        """Count the predictions of one batch."""
        output = self._output(sample)
        if output.shape[1] != self.nclasses:
            raise ValueError(
                f"ConfusionMatrix was built for nclasses={self.nclasses} but sample[{self.output_key!r}] has "
                f"{output.shape[1]} classes in dimension 1 (shape {tuple(output.shape)})"
            )
        self.matrix += confusion_matrix(output, self._target(sample), self.nclasses)

    def compute(self) -> Tensor:
        """Return the ``[nclasses, nclasses]`` int64 matrix."""
        return self.matrix.clone()

    def get_true_false_positives(self) -> Tensor:
        """Per class ``[true positives, false positives, samples]``, ``[nclasses, 3]`` (see crumpets)."""
        return true_false_positives(self.compute())


class MSELossMetric(_MeanMetric):
    """Mean squared error between output and target over all elements seen.

    Args:
        output_key: Key of the prediction.
        target_key: Key of the target (same number of elements).
        metric_key: Log name.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False

    def __init__(
        self, output_key: str = "output", target_key: str = "target_image", metric_key: str = "mse", **kwargs: Any
    ) -> None:
        super().__init__(output_key, target_key, metric_key, **kwargs)

    def update(self, sample: Mapping[str, Any]) -> None:
        """Add the squared errors of one batch."""
        total, count = squared_error_sum(self._output(sample), self._target(sample))
        self.total += total
        self.count += count


MSEMetric = MSELossMetric


class NSSMetric(_MeanMetric):
    """Normalized scanpath saliency (Bylinskii et al.), averaged over the samples that have fixations.

    Args:
        output_key: Key of the saliency prediction ``[B, C, H, W]`` (any ``C``).
        target_key: Key of the binary fixation map.
        metric_key: Log name.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = True
    higher_is_better = True

    def __init__(
        self, output_key: str = "output", target_key: str = "target_image", metric_key: str = "nss", **kwargs: Any
    ) -> None:
        super().__init__(output_key, target_key, metric_key, **kwargs)

    def update(self, sample: Mapping[str, Any]) -> None:
        """Add the NSS of each sample of one batch."""
        nss, valid = nss_per_sample(self._output(sample), self._target(sample))
        self.total += nss[valid].double().sum()
        self.count += valid.sum()


class NoopMetric(_SampleMetric):
    """A metric that measures nothing, for places that need a metric object. ``compute()`` returns ``{}``.

    Args:
        output_key: Unused, kept for the crumpets signature.
        target_key: Unused.
        metric_key: Unused.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = None
    scalar_output = False

    def __init__(
        self, output_key: str = "output", target_key: str = "target_image", metric_key: str = "metric", **kwargs: Any
    ) -> None:
        super().__init__(output_key, target_key, metric_key, **kwargs)

    def update(self, sample: Mapping[str, Any]) -> None:
        """Do nothing."""

    def compute(self) -> dict[str, Tensor]:
        """Return an empty dict."""
        return {}


class CombinedMetric(MetricCollection):
    """A collection of dict metrics updated together; ``compute()`` returns ``{metric_key: value}``.

    Args:
        children: Metric instances; each is keyed by its ``metric_key`` (or class name if it has none).

    Raises:
        ValueError: If ``children`` is empty or two children share a key.
    """

    def __init__(self, children: Iterable[Metric]) -> None:
        children = list(children)
        if not children:
            raise ValueError("Expected argument `children` to be a non-empty list of metrics but got []")
        keyed: dict[str, Metric | MetricCollection] = {}
        for child in children:
            if not isinstance(child, Metric):
                raise TypeError(f"CombinedMetric children must be torchmetrics.Metric instances, not {child!r}")
            key = getattr(child, "metric_key", type(child).__name__)
            if key in keyed:
                raise ValueError(f"CombinedMetric has two children with metric_key {key!r}; give them distinct keys")
            keyed[key] = child
        super().__init__(keyed, compute_groups=False)

    def value(self) -> NoReturn:
        """Not available: crumpets' ``value()`` is ``compute()`` here.

        Raises:
            AttributeError: Always, naming ``compute()``.
        """
        _no_value(self)


class _WeightedMean(Metric):
    """Weighted mean of scalars (e.g. a batch's mean loss weighted by its rows): exact sum/count states.

    ``update(value, weight)`` adds ``value * weight`` and ``weight``; a weight of 0 adds nothing (a batch that
    has only padding rows). Both states are summed across processes, so under DDP the result is the mean over
    every rank's rows, not a mean of per-rank means. Nothing reads the value on the host (no device sync).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None
    total: Tensor
    weight: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: int) -> None:
        """Add ``value`` (a scalar tensor) with ``weight`` (rows)."""
        if weight:
            self.total += value.detach().to(self.total.dtype) * weight
            self.weight += weight

    def compute(self) -> Tensor:
        """Return the weighted mean (0 when nothing was added)."""
        return self.total / self.weight.clamp(min=1)
