"""Dict-in, scalar-out losses: the crumpets sample-dict wrappers of the usual torch losses, plus NSS.

Every loss reads ``sample[output_key]`` (default ``"output"``) and ``sample[target_key]`` and returns a
tensor (a scalar unless ``reduction="none"``). Class targets may be ``[B]`` or ``[B, 1]`` (crumpets labels
are ``[B, 1]``; dense targets ``[B, 1, H, W]``) and any integer dtype; they are squeezed and cast to
``int64``. A batch of one keeps its batch dimension.

The class losses know the number of classes from the output (``output.shape[1]``): a CPU target with a label
outside ``[0, C)`` raises a ``ValueError`` that names the bad labels and ``C`` (torch would say only "Target
12 is out of bounds", and on a GPU raise an opaque device-side assert). Such losses set
``checks_class_range = True``; :class:`~crumpets_lightning.modules.module.CrumpetsModule` uses that to check
every batch's labels on the host, before the device copy, and to name the offending samples' keys.

Example::

    >>> import torch
    >>> loss = CrossEntropyLoss()
    >>> sample = {"output": torch.randn(4, 10), "label": torch.tensor([[1], [2], [3], [4]])}
    >>> loss(sample).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CrossEntropyLoss",
    "L1Loss",
    "LabelSmoothing",
    "MSELoss",
    "NLLLoss",
    "NSSLoss",
    "class_target",
    "nss_per_sample",
    "out_of_range_labels",
]

_REDUCTIONS = ("none", "mean", "sum")


def _get(sample: Mapping[str, Any], key: str, owner: str) -> Tensor:
    """``sample[key]`` as a tensor, or a KeyError naming the key and the keys present."""
    if not isinstance(sample, Mapping):
        raise TypeError(f"{owner} expects a sample dict but got {type(sample).__name__}")
    try:
        value = sample[key]
    except KeyError:
        raise KeyError(
            f"{owner} needs the key {key!r} in the sample but it has only {sorted(sample)}; "
            f"set output_key/target_key to the keys your model and worker use"
        ) from None
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner}: sample[{key!r}] must be a torch.Tensor but is {type(value).__name__}")
    return value


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Expected argument `reduction` to be one of {_REDUCTIONS} but got {reduction!r}")


def out_of_range_labels(target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Bool mask of the class labels outside ``[0, num_classes)`` (entries equal to ``ignore_index`` are valid).

    One pass over the target (its minimum and maximum) decides the usual case, all labels valid.

    Args:
        target: Integer class labels of any shape.
        num_classes: Number of classes ``C``.
        ignore_index: A label value the loss skips (e.g. ``-100`` or a segmentation "void" label), or ``None``.

    Returns:
        A bool tensor shaped like ``target``, on its device.
    """
    if target.numel() == 0:
        return torch.zeros_like(target, dtype=torch.bool)
    if target.dtype == torch.bool:
        target = target.to(torch.uint8)
    if target.device.type == "cpu":
        low, high = torch.aminmax(target)
        if int(low) >= 0 and int(high) < num_classes:
            return torch.zeros_like(target, dtype=torch.bool)
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    return bad


def _describe_bad_labels(target: Tensor, bad: Tensor, row_name: Callable[[int], str] = "row {}".format) -> str:
    """``"12 (row 2); -1 (row 5)"``: the bad labels of a CPU target per batch row (at most 8 rows)."""
    rows = bad.reshape(bad.shape[0], -1) if bad.dim() > 0 else bad.reshape(1, 1)
    values = target.reshape(rows.shape)
    parts = []
    for row in rows.any(dim=1).nonzero().flatten().tolist()[:8]:
        labels = sorted(set(values[row][rows[row]].tolist()))
        parts.append(f"{', '.join(map(str, labels[:8]))} ({row_name(row)})")
    return "; ".join(parts)


def class_target(
    output: Tensor, target: Tensor, owner: str = "loss", check_range: bool = True, ignore_index: int | None = None
) -> Tensor:
    """Turn a class target into the ``int64`` shape torch's class losses want for ``output``.

    ``output`` is ``[B, C, *dims]``; the target may be ``[B, *dims]`` or ``[B, 1, *dims]`` of any integer
    dtype. The singleton class dimension is removed (never the batch dimension, so ``B == 1`` works).

    Args:
        output: Scores ``[B, C, *dims]``.
        target: Class indices.
        owner: Name used in error messages.
        check_range: Whether labels outside ``[0, C)`` raise (checked only for CPU targets: on another device
            the check would wait for the device).
        ignore_index: A label value that is allowed outside the range (the loss skips it).

    Returns:
        The target as ``int64`` with shape ``[B, *dims]``.

    Raises:
        ValueError: If the shapes cannot be matched, the target is not integral, or (CPU, ``check_range``) a
            label is outside ``[0, C)``.
    """
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"{owner}: class targets must be integers but got dtype {target.dtype}")
    expected = (output.shape[0], *output.shape[2:])
    if target.dim() == output.dim() and target.shape[1] == 1:
        target = target.squeeze(1)
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{owner}: target of shape {tuple(target.shape)} does not fit output of shape {tuple(output.shape)}; "
            f"expected a target of shape {expected} or {(expected[0], 1, *expected[1:])}"
        )
    if check_range and target.device.type == "cpu":
        num_classes = output.shape[1]
        bad = out_of_range_labels(target, num_classes, ignore_index)
        if bool(bad.any()):
            allowed = f"[0, {num_classes})" + (
                f" or the ignore_index {ignore_index}" if ignore_index is not None else ""
            )
            raise ValueError(
                f"{owner}: label(s) out of range for an output with {num_classes} classes (shape "
                f"{tuple(output.shape)}): {_describe_bad_labels(target, bad)}; labels must be in {allowed}. Fix "
                f"the labels, or give the network as many outputs as there are classes (largest label + 1)"
            )
    return target.long()


def _check_same_shape(output: Tensor, target: Tensor, owner: str) -> Tensor:
    if output.shape != target.shape:
        if output.numel() == target.numel() and output.shape[:1] == target.shape[:1]:
            return target.reshape(output.shape)
        raise ValueError(
            f"{owner}: output of shape {tuple(output.shape)} and target of shape {tuple(target.shape)} differ"
        )
    return target


class _DictLoss(nn.Module):
    """Common part: keys and the lookup of output and target."""

    #: Whether ``output.shape[1]`` is the number of classes of ``target_key`` (class losses; see module doc).
    checks_class_range: bool = False
    #: A label value the loss skips (allowed outside the class range).
    ignore_index: int | None = None

    def __init__(self, output_key: str, target_key: str) -> None:
        super().__init__()
        self.output_key = output_key
        self.target_key = target_key

    def _pair(self, sample: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        name = type(self).__name__
        return _get(sample, self.output_key, name), _get(sample, self.target_key, name)

    def extra_repr(self) -> str:
        return f"output_key={self.output_key!r}, target_key={self.target_key!r}"


class CrossEntropyLoss(_DictLoss):
    """:class:`torch.nn.CrossEntropyLoss` on a sample dict (output: logits ``[B, C, *dims]``).

    Args:
        weight: Per-class weight of size ``C``.
        ignore_index: Target value that does not contribute.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        label_smoothing: Amount of smoothing in ``[0, 1]``.
        output_key: Key of the logits in the sample.
        target_key: Key of the class targets (``[B]`` or ``[B, 1]``, any integer dtype).
    """

    checks_class_range = True

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        output_key: str = "output",
        target_key: str = "label",
    ) -> None:
        super().__init__(output_key, target_key)
        _check_reduction(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"Expected argument `label_smoothing` to be in [0, 1] but got {label_smoothing}")
        self.ignore_index = ignore_index
        self.loss = nn.CrossEntropyLoss(
            weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
        )

    def forward(self, sample: Mapping[str, Any]) -> Tensor:
        """Return the loss of ``sample[output_key]`` against ``sample[target_key]``."""
        output, target = self._pair(sample)
        return self.loss(output, class_target(output, target, type(self).__name__, ignore_index=self.ignore_index))


class NLLLoss(_DictLoss):
    """:class:`torch.nn.NLLLoss` on a sample dict (output: log-probabilities ``[B, C, *dims]``).

    Args:
        weight: Per-class weight of size ``C``.
        ignore_index: Target value that does not contribute.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        output_key: Key of the log-probabilities in the sample.
        target_key: Key of the class targets (``[B]`` or ``[B, 1]``, any integer dtype).
    """

    checks_class_range = True

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        output_key: str = "output",
        target_key: str = "label",
    ) -> None:
        super().__init__(output_key, target_key)
        _check_reduction(reduction)
        self.ignore_index = ignore_index
        self.loss = nn.NLLLoss(weight=weight, ignore_index=ignore_index, reduction=reduction)

    def forward(self, sample: Mapping[str, Any]) -> Tensor:
        """Return the loss of ``sample[output_key]`` against ``sample[target_key]``."""
        output, target = self._pair(sample)
        return self.loss(output, class_target(output, target, type(self).__name__, ignore_index=self.ignore_index))


class _SameShapeLoss(_DictLoss):
    """A torch loss between an output and a target of the same shape (the target is cast to the output's dtype)."""

    _torch_loss: type[nn.Module]

    def __init__(self, reduction: str = "mean", output_key: str = "output", target_key: str = "label") -> None:
        super().__init__(output_key, target_key)
        _check_reduction(reduction)
        self.loss = self._torch_loss(reduction=reduction)

    def forward(self, sample: Mapping[str, Any]) -> Tensor:
        """Return the loss of ``sample[output_key]`` against ``sample[target_key]``."""
        output, target = self._pair(sample)
        target = _check_same_shape(output, target, type(self).__name__)
        return self.loss(output, target.to(output.dtype))


class L1Loss(_SameShapeLoss):
    """:class:`torch.nn.L1Loss` on a sample dict; output and target have the same shape.

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        output_key: Key of the prediction in the sample.
        target_key: Key of the target in the sample.
    """

    _torch_loss = nn.L1Loss


class MSELoss(_SameShapeLoss):
    """:class:`torch.nn.MSELoss` on a sample dict; output and target have the same shape.

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        output_key: Key of the prediction in the sample.
        target_key: Key of the target in the sample.
    """

    _torch_loss = nn.MSELoss


class LabelSmoothing(_DictLoss):
    """Label-smoothing loss built on the negative log-likelihood.

    ``loss = (1 - smoothing) * NLL(logp, target) + smoothing * mean_c(-logp_c)``, averaged over samples
    (and positions for dense outputs). With ``from_logits=True`` (default) the output holds logits and
    ``log_softmax`` is applied over dimension 1, which makes the loss equal to
    ``torch.nn.CrossEntropyLoss(label_smoothing=smoothing)``. With ``from_logits=False`` the output must
    already hold log-probabilities (e.g. a network ending in ``log_softmax``).

    Args:
        smoothing: Smoothing factor in ``[0, 1]``.
        from_logits: Whether the output holds logits (``True``) or log-probabilities (``False``).
        output_key: Key of the output in the sample.
        target_key: Key of the class targets (``[B]`` or ``[B, 1]``, any integer dtype).
    """

    checks_class_range = True

    def __init__(
        self,
        smoothing: float = 0.1,
        from_logits: bool = True,
        output_key: str = "output",
        target_key: str = "label",
    ) -> None:
        super().__init__(output_key, target_key)
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"Expected argument `smoothing` to be in [0, 1] but got {smoothing}")
        self.smoothing = smoothing
        self.from_logits = from_logits

    def forward(self, sample: Mapping[str, Any]) -> Tensor:
        """Return the smoothed loss of ``sample[output_key]`` against ``sample[target_key]``."""
        output, target = self._pair(sample)
        target = class_target(output, target, type(self).__name__)
        logp = F.log_softmax(output, dim=1) if self.from_logits else output
        nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
        uniform = -logp.mean(dim=1)
        return ((1.0 - self.smoothing) * nll + self.smoothing * uniform).mean()


def nss_per_sample(output: Tensor, target: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Normalized scanpath saliency of each sample.

    Each sample's output (all channels and positions together) is normalised to zero mean and unit
    (population) standard deviation; its NSS is the mean of the normalised values where the target is
    non-zero (the fixations).

    Args:
        output: Saliency predictions ``[B, *dims]`` (any channel count).
        target: Fixation maps with the same number of elements per sample; non-zero marks a fixation.
        eps: Added to the standard deviation so constant outputs do not divide by zero.

    Returns:
        ``(nss, has_fixations)``: float ``[B]`` NSS values (0 where a sample has no fixation) and a bool
        ``[B]`` mask of the samples that have at least one fixation.

    Raises:
        ValueError: If batch sizes or per-sample sizes differ.
    """
    if output.dim() < 2 or output.shape[0] != target.shape[0] or output.shape[1:].numel() != target.shape[1:].numel():
        raise ValueError(
            f"NSS: output of shape {tuple(output.shape)} and target of shape {tuple(target.shape)} "
            f"must have the same batch size and the same number of elements per sample"
        )
    batch, per_sample = output.shape[0], output.shape[1:].numel()
    flat = output.reshape(batch, per_sample).float()
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, correction=0, keepdim=True)
    normalised = (flat - mean) / (std + eps)
    fixations = (target.reshape(batch, per_sample) != 0).to(normalised.dtype)
    count = fixations.sum(dim=1)
    nss = (normalised * fixations).sum(dim=1) / count.clamp(min=1)
    return nss, count > 0


class NSSLoss(_DictLoss):
    """Negated normalized scanpath saliency (NSS) for saliency prediction.

    See :func:`nss_per_sample`. The loss is minus the mean NSS over the samples that have fixations, so it
    becomes negative as the network learns. A batch without any fixation gives 0 (connected to the graph).

    Args:
        output_key: Key of the saliency prediction ``[B, C, H, W]`` (any ``C``).
        target_key: Key of the binary fixation map (same number of elements per sample).
    """

    def __init__(self, output_key: str = "output", target_key: str = "target_image") -> None:
        super().__init__(output_key, target_key)

    def forward(self, sample: Mapping[str, Any]) -> Tensor:
        """Return ``-mean(NSS)`` of ``sample[output_key]`` against the fixations in ``sample[target_key]``."""
        output, target = self._pair(sample)
        nss, valid = nss_per_sample(output, target)
        weights = valid.to(nss.dtype)
        return -(nss * weights).sum() / weights.sum().clamp(min=1)
