"""A callback that measures how much of each training step is spent waiting for data, and images per second."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import STEP_OUTPUT
from typing_extensions import override

__all__ = ["DataWaitMonitor", "batch_size_of"]


def batch_size_of(batch: Any) -> int:
    """The number of samples in ``batch``.

    Args:
        batch: A dict with an ``"image"`` tensor (crumpets batches), any dict / list / tuple whose first tensor
            holds the samples along dimension 0, or a tensor.

    Returns:
        The leading dimension of the image (or first) tensor, else ``len(batch)``.

    Raises:
        TypeError: If no batch size can be found.
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        image = batch.get("image")
        if isinstance(image, torch.Tensor) and image.dim():
            return int(image.shape[0])
        values: Sequence[Any] = list(batch.values())
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        values = batch
    else:
        values = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    try:
        return len(batch)
    except TypeError:
        raise TypeError(
            f"Cannot tell the batch size of a {type(batch).__name__}; give the batch an 'image' tensor or make it"
            " a dict, list or tuple of tensors."
        ) from None


class DataWaitMonitor(Callback):
    """Logs the share of each training step spent waiting for data, and the images processed per second.

        The wait of step *i* is the wall time from the end of step *i-1* (``on_train_batch_end``; the epoch start
        for the first step) to the start of step *i* (``on_train_batch_start``): mostly fetching the batch, plus
        whatever other callbacks do between steps. The step's full time is that wait plus the time from
        ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward, optimizer). Per step it logs
        ``data/wait_fraction`` (wait / full time) and ``data/images_per_sec`` (batch size / full time), shown in the
        progress bar; at the end of each training epoch it logs ``data/epoch_wait_fraction`` and
        ``data/epoch_images_per_sec`` over the whole epoch, keeps them in :attr:`epoch_summaries` and (with
        ``verbose``) prints one line. Values are per process: under DDP the logged epoch values are the mean over
    the ranks (multiply images/s by the world size for the total), :attr:`epoch_summaries` holds this rank's.

        The batch size is the leading dimension of ``batch["image"]``, else of the first tensor in the batch, else
        ``len(batch)``.

        Args:
            log_every_n_steps: Log the per-step values every this many steps (the epoch summary covers all steps).
            prog_bar: Show the per-step values in the progress bar.
            verbose: Print the epoch summary (rank zero only).

        Raises:
            ValueError: If ``log_every_n_steps`` is not a positive int.

        Example::

            trainer = lightning.Trainer(callbacks=[DataWaitMonitor()])
            trainer.fit(model, datamodule)  # progress bar shows data/wait_fraction and data/images_per_sec
    """

    def __init__(self, log_every_n_steps: int = 1, prog_bar: bool = True, verbose: bool = True) -> None:
        super().__init__()
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ValueError(
                f"Expected argument `log_every_n_steps` to be a positive int but got {log_every_n_steps!r}."
            )
        self.log_every_n_steps = log_every_n_steps
        self.prog_bar = prog_bar
        self.verbose = verbose
        self.epoch_summaries: list[dict[str, float]] = []
        """Per finished training epoch: epoch, steps, images, wait_s, total_s, wait_fraction, images_per_sec."""
        self.last_wait_fraction: float | None = None
        """``data/wait_fraction`` of the latest step."""
        self.last_images_per_sec: float | None = None
        """``data/images_per_sec`` of the latest step."""
        self._previous_end: float | None = None
        self._pause_start: float | None = None
        self._step_start = 0.0
        self._wait = 0.0
        self._epoch_wait = 0.0
        self._epoch_total = 0.0
        self._epoch_images = 0
        self._epoch_steps = 0

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_end = time.perf_counter()
        self._epoch_wait = self._epoch_total = 0.0
        self._epoch_images = self._epoch_steps = 0

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._step_start = now
        self._wait = now - self._previous_end if self._previous_end is not None else 0.0

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._previous_end = now
        total = self._wait + (now - self._step_start)
        size = batch_size_of(batch)
        self._epoch_wait += self._wait
        self._epoch_total += total
        self._epoch_images += size
        self._epoch_steps += 1
        if total <= 0.0:
            return
        self.last_wait_fraction = self._wait / total
        self.last_images_per_sec = size / total
        if (batch_idx + 1) % self.log_every_n_steps == 0:
            values = {"data/wait_fraction": self.last_wait_fraction, "data/images_per_sec": self.last_images_per_sec}
            pl_module.log_dict(values, prog_bar=self.prog_bar, on_step=True, on_epoch=False, batch_size=size)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._epoch_steps or self._epoch_total <= 0.0:
            return
        summary = {
            "epoch": float(trainer.current_epoch),
            "steps": float(self._epoch_steps),
            "images": float(self._epoch_images),
            "wait_s": self._epoch_wait,
            "total_s": self._epoch_total,
            "wait_fraction": self._epoch_wait / self._epoch_total,
            "images_per_sec": self._epoch_images / self._epoch_total,
        }
        self.epoch_summaries.append(summary)
        pl_module.log_dict(
            {
                "data/epoch_wait_fraction": summary["wait_fraction"],
                "data/epoch_images_per_sec": summary["images_per_sec"],
            },
            on_step=False,
            on_epoch=True,
            batch_size=self._epoch_images,
            sync_dist=True,  # every rank ends the epoch with the same number of steps, so all take part
        )
        if self.verbose:
            rank_zero_info(
                f"Epoch {trainer.current_epoch}: waited for data {summary['wait_fraction']:.1%} of"
                f" {summary['total_s']:.2f} s, {summary['images_per_sec']:.1f} images/s over {self._epoch_steps} steps"
            )

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation inside the epoch must not count as waiting for the next training batch.
        self._pause_start = time.perf_counter()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous_end is not None and self._pause_start is not None:
            self._previous_end += time.perf_counter() - self._pause_start
        self._pause_start = None
