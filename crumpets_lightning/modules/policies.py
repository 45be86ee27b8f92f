"""Learning-rate policies (crumpets names) as torch LR schedulers stepped once per iteration.

``step()`` is called after every optimizer step (Lightning: ``interval: step``, which is what
:class:`~crumpets_lightning.modules.module.CrumpetsModule` uses by default). After ``n`` steps the policy is
at ``t = n / steps_per_epoch`` (fractional) epochs and each parameter group gets ``base_lr * factor(t)``;
the formula of each policy is in its ``_factor`` method. Past the end of the schedule ``t`` is clamped to
``num_epochs`` so the learning rate stays at its final, real, non-negative value.

The length may be left open (``num_epochs=None``, ``steps_per_epoch=None``) so YAML configs need not know
the loader length: :meth:`configure_length` fills it in (CrumpetsModule does so at ``on_train_start`` from
``trainer.max_epochs``/``max_steps`` and the Trainer's batches per epoch). Used standalone,
``steps_per_epoch=None`` means 1 (one step per epoch).

Example::

    >>> import torch
    >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> policy = PolyPolicy(optimizer, num_epochs=2, power=1.0, steps_per_epoch=10)
    >>> for _ in range(10):
    ...     optimizer.step()
    ...     policy.step()
    >>> round(policy.get_last_lr()[0], 6)
    0.05
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CrumpetsPolicy", "NoopPolicy", "PolyPolicy", "RampPolicy", "ReduceLROnPlateau", "SigmoidPolicy"]


def _check_positive(name: str, value: float | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"Expected argument `{name}` to be a positive number but got {value!r}")


class CrumpetsPolicy(LRScheduler):
    """Base of the length-aware policies: ``lr = base_lr * _factor(t)`` with ``t`` in (fractional) epochs.

    Args:
        optimizer: The wrapped optimizer.
        num_epochs: Length of the schedule in epochs, or ``None`` to fill in later.
        last_epoch: Index of the last step taken (``-1``: start fresh).
        steps_per_epoch: Steps per epoch, or ``None`` (1 unless filled in by :meth:`configure_length`).
    """

    #: Whether the formula needs ``num_epochs``.
    needs_num_epochs: bool = True

    def __init__(
        self,
        optimizer: Optimizer,
        num_epochs: float | None = None,
        last_epoch: int = -1,
        steps_per_epoch: int | None = None,
    ) -> None:
        _check_positive("num_epochs", num_epochs)
        _check_positive("steps_per_epoch", steps_per_epoch)
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        super().__init__(optimizer, last_epoch)

    @property
    def length_known(self) -> bool:
        """Whether the schedule length is set (always true for policies that do not need it)."""
        return self.num_epochs is not None or not self.needs_num_epochs

    def configure_length(self, num_epochs: float | None = None, steps_per_epoch: int | None = None) -> None:
        """Fill in the length where it was left open (``None``); explicit values are kept.

        The current learning rates are recomputed for the current step.

        Args:
            num_epochs: Schedule length in epochs.
            steps_per_epoch: Number of ``step()`` calls per epoch.
        """
        _check_positive("num_epochs", num_epochs)
        _check_positive("steps_per_epoch", steps_per_epoch)
        if self.num_epochs is None:
            self.num_epochs = num_epochs
        if self.steps_per_epoch is None:
            self.steps_per_epoch = steps_per_epoch
        lrs = self._lrs_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def _epochs(self, step: int) -> float:
        return max(step, 0) / (self.steps_per_epoch or 1)

    def _lrs_at(self, step: int) -> list[float | Tensor]:
        if step > 0 and not self.length_known:
            raise RuntimeError(
                f"{type(self).__name__} was stepped but its length is unknown: pass num_epochs=... or call "
                f"configure_length(num_epochs, steps_per_epoch) before training (CrumpetsModule does this in "
                f"on_train_start: call super().on_train_start() if you override it)"
            )
        if not self.length_known:
            return list(self.base_lrs)
        factor = self._factor(self._epochs(step))
        return [base_lr * factor for base_lr in self.base_lrs]

    def _factor(self, t: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float | Tensor]:
        """Learning rates for the current step (``self.last_epoch`` steps taken)."""
        return self._lrs_at(self.last_epoch)

    def step(self, epoch: int | None = None, metrics: Any = None) -> None:
        """Advance one iteration (crumpets signature; ``metrics`` is ignored, ``epoch`` jumps to that step)."""
        if epoch is None:
            super().step()
        else:
            super().step(epoch)

    def _clamped(self, t: float) -> float:
        assert self.num_epochs is not None
        return min(t, self.num_epochs)


class NoopPolicy(CrumpetsPolicy):
    """Leaves the learning rates as they are (useful as an explicit "no schedule")."""

    needs_num_epochs = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        super().__init__(optimizer, None, last_epoch, None)

    def get_lr(self) -> list[float | Tensor]:
        """The learning rates currently set in the optimizer."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def configure_length(self, num_epochs: float | None = None, steps_per_epoch: int | None = None) -> None:
        """Nothing to configure."""


class PolyPolicy(CrumpetsPolicy):
    """Polynomial decay: ``lr = base_lr * (1 - t / num_epochs) ** power``, reaching 0 at the end.

    Args:
        optimizer: The wrapped optimizer.
        num_epochs: Schedule length in epochs (``None``: filled in by :meth:`configure_length`).
        power: Non-negative exponent (1: linear decay).
        last_epoch: Index of the last step taken (``-1``: start fresh).
        steps_per_epoch: Steps per epoch (``None``: 1 unless filled in).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        num_epochs: float | None = None,
        power: float = 1.0,
        last_epoch: int = -1,
        steps_per_epoch: int | None = None,
    ) -> None:
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power >= 0 or math.isinf(power):
            raise ValueError(f"Expected argument `power` to be a non-negative number but got {power!r}")
        self.power = power
        super().__init__(optimizer, num_epochs, last_epoch, steps_per_epoch)

    def _factor(self, t: float) -> float:
        assert self.num_epochs is not None
        remaining = 1.0 - self._clamped(t) / self.num_epochs
        return max(remaining, 0.0) ** self.power


class SigmoidPolicy(CrumpetsPolicy):
    """Sigmoid decay (crumpets formula): ``lr = base_lr / (1 + exp(q * x))`` with ``x = t / num_epochs - 1``.

    ``x`` runs from -1 to 0, so with the default ``q=6`` the rate falls from ``~0.998 * base_lr`` to
    ``0.5 * base_lr`` (larger ``q``: sharper drop near the end).

    Args:
        optimizer: The wrapped optimizer.
        num_epochs: Schedule length in epochs (``None``: filled in by :meth:`configure_length`).
        q: Steepness.
        last_epoch: Index of the last step taken (``-1``: start fresh).
        steps_per_epoch: Steps per epoch (``None``: 1 unless filled in).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        num_epochs: float | None = None,
        q: float = 6.0,
        last_epoch: int = -1,
        steps_per_epoch: int | None = None,
    ) -> None:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
            raise ValueError(f"Expected argument `q` to be a finite number but got {q!r}")
        self.q = q
        super().__init__(optimizer, num_epochs, last_epoch, steps_per_epoch)

    def _factor(self, t: float) -> float:
        assert self.num_epochs is not None
        x = self._clamped(t) / self.num_epochs - 1.0
        # 1 / (1 + exp(z)) written with tanh so that large |q| cannot overflow
        return 0.5 * (1.0 - math.tanh(0.5 * self.q * x))


class RampPolicy(CrumpetsPolicy):
    """Linear warm-up: the rate rises to ``base_lr`` over ``ramp_epochs`` and then stays there.

    The first step already uses ``base_lr / ramp_steps`` (never a wasted step at lr 0):
    ``lr = base_lr * min((n + 1) / (ramp_epochs * steps_per_epoch), 1)`` after ``n`` steps.

    Args:
        optimizer: The wrapped optimizer.
        ramp_epochs: Length of the ramp in epochs (positive).
        last_epoch: Index of the last step taken (``-1``: start fresh).
        steps_per_epoch: Steps per epoch (``None``: 1 unless filled in).
    """

    needs_num_epochs = False

    def __init__(
        self,
        optimizer: Optimizer,
        ramp_epochs: float = 1.0,
        last_epoch: int = -1,
        steps_per_epoch: int | None = None,
    ) -> None:
        _check_positive("ramp_epochs", ramp_epochs, allow_none=False)
        self.ramp_epochs = ramp_epochs
        super().__init__(optimizer, None, last_epoch, steps_per_epoch)

    def _lrs_at(self, step: int) -> list[float | Tensor]:
        factor = self._factor(self._epochs(step + 1))
        return [base_lr * factor for base_lr in self.base_lrs]

    def _factor(self, t: float) -> float:
        return min(t / self.ramp_epochs, 1.0)


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau`` with the crumpets ``step(epoch=None, metrics=None)`` signature.

    torch and Lightning pass the monitored value as the first positional argument; that still works:
    when only one value is given it is taken as the metric. Under Lightning, step it per epoch and set a
    ``monitor`` (CrumpetsModule uses ``scheduler_monitor``, default ``"val/loss"``).
    """

    def step(self, epoch: Any = None, metrics: Any = None) -> None:  # type: ignore[override]
        """Update the rate from ``metrics`` (or from the single positional value).

        Raises:
            ValueError: If no metric value is given.
        """
        if metrics is None:
            metrics, epoch = epoch, None
        if metrics is None:
            raise ValueError("ReduceLROnPlateau.step needs the monitored value: call step(metrics=value)")
        super().step(metrics)
