"""``StepLoader``: what Lightning iterates, one dict per training/evaluation step, straight from the epoch plan.

A crumpets batch of ``batch_size`` rows is ``num_mini_batches`` steps; the
:class:`~crumpets_lightning.data.loader.plan.EpochPlan` says where each step begins, so the loader's epoch
iterator hands out steps directly (no list of mini-batches is built and flattened again), and a checkpoint
resumes at the exact step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import SequentialSampler

if TYPE_CHECKING:
    from crumpets_lightning.data.loader.loader import TurboDataLoader

__all__ = ["StepLoader"]


class _SequentialEpochSampler(SequentialSampler):
    """The ``sampler`` of a loader that does not shuffle: a ``SequentialSampler`` forwarding ``set_epoch``.

    Under ``Trainer(overfit_batches=...)`` Lightning replaces every loader whose sampler is not a
    ``SequentialSampler`` by a rebuilt torch ``DataLoader``, which our loaders cannot be.
    """

    def __init__(self, data_source: Sized, sampler: Any) -> None:
        super().__init__(data_source)
        self._sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        """Forward to the loader's sampler (sets the epoch of the next iteration)."""
        self._sampler.set_epoch(epoch)


class StepLoader:
    """One batch dict per Lightning step of a :class:`~crumpets_lightning.data.loader.TorchTurboDataLoader`.

    Each step dict holds the worker's buffers (CPU tensors viewing shared memory, no copy, on a CPU
    loader), the worker's lists, and

    * ``"index"``: int64 ``[B]``, the source index of every row;
    * ``"padding"``: bool ``[B]``, True on rows that repeat a sample to pad this rank's shard (DDP
      evaluation); present in every step when the loader pads (``world_size > 1`` and not ``drop_last``),
      absent otherwise.

    ``len()`` is the steps per epoch on this rank (the same on every rank), computed without starting
    anything; ``iter()`` starts no work and every ``iter()`` is a fresh epoch of exactly ``len()`` steps
    (also after an abandoned iterator). ``state_dict()`` / ``load_state_dict()`` resume mid-epoch at the
    exact step (Lightning's order: ``load_state_dict`` -> ``iter()`` -> ``sampler.set_epoch(e)`` -> first
    ``next()``).

    Args:
        loader: the loader to iterate (usually a ``TorchTurboDataLoader`` on ``device="cpu"``).
        pin_memory: copy each step's tensors into pinned host memory for faster non-blocking copies to a GPU
            (one CPU copy; does nothing when CUDA is not available).

    Example::

        steps = StepLoader(TorchTurboDataLoader(dataset, 64, worker, 4, num_mini_batches=2))
        len(steps)  # 2 * batches per epoch
        for step in steps:
            loss = model(step["image"])
    """

    #: Lightning looks for a batch sampler next to ``sampler``; this loader has none.
    batch_sampler: None = None

    def __init__(self, loader: TurboDataLoader, pin_memory: bool = False) -> None:
        self.loader = loader
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()

    @property
    def dataset(self) -> Any:
        """The source of the samples (``len()`` is its number of samples)."""
        return self.loader.iterable

    @property
    def sampler(self) -> Any:
        """An object with ``set_epoch(epoch)`` (Lightning calls it at the start of every training epoch).

        For a loader that does not shuffle it is a ``SequentialSampler`` (see :class:`_SequentialEpochSampler`).
        """
        if self.loader.shuffle:
            return self.loader.sampler
        return _SequentialEpochSampler(self.dataset, self.loader.sampler)

    @property
    def batch_size(self) -> int:
        """Rows per full step (``batch_size // num_mini_batches`` of the loader)."""
        return self.loader.plan.step_size

    def __len__(self) -> int:
        return self.loader.plan.num_steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._epoch()

    def _epoch(self) -> Iterator[dict[str, Any]]:
        # A generator: nothing below runs until the first next(), so iter() starts no work.
        epoch = self.loader.epoch_iterator()
        while True:
            try:
                batch = epoch.next_batch()
            except StopIteration:
                return
            index = torch.from_numpy(batch.index)
            padding = None if batch.padding is None else torch.from_numpy(batch.padding)
            for number, (start, stop) in enumerate(batch.steps):
                step = batch.step(number)
                step["index"] = index[start:stop]
                if padding is not None:
                    step["padding"] = padding[start:stop]
                epoch.deliver(batch, number + 1)
                yield _pinned(step) if self.pin_memory else step
            # let the slot go as soon as the caller does, not only once the next batch has arrived
            del batch, step

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch (the loader's state, counting steps), for checkpoints."""
        return self.loader.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next ``iter()`` yields only the rest of that epoch.

        Raises:
            ValueError: ``state_dict`` was not made by a loader that makes the same steps.
        """
        self.loader.load_state_dict(state_dict)

    def stop(self) -> None:
        """Stop the loader's processes and free its shared memory (idempotent; it restarts when iterated)."""
        self.loader.stop()

    def __repr__(self) -> str:
        try:
            steps: object = len(self)
        except TypeError:
            steps = "unknown"
        return f"{type(self).__name__}(steps={steps}, loader={self.loader!r})"


def _pinned(step: dict[str, Any]) -> dict[str, Any]:
    return {key: value.pin_memory() if isinstance(value, torch.Tensor) else value for key, value in step.items()}
