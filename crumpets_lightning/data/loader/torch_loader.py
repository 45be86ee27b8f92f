"""``TorchTurboDataLoader``: the loader yielding torch tensors (CPU views of shared memory, or CUDA copies).

On the CPU every buffer becomes ``torch.from_numpy`` of the shared-memory view: no copy, and the tensor
keeps the batch's slot alive as long as it exists. For a CUDA device each batch is copied through pinned
host memory with ``non_blocking=True`` on a side stream; the copy of the next batch is issued when the
current one is handed out, so it overlaps the caller's step. With ``gpu_augmentation=True`` the workers
only record the pixel augmentations and :class:`~crumpets_lightning.modules.randomizer.Randomizer` applies
them to each mini-batch on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from crumpets_lightning.data.loader.loader import TurboDataLoader, _EpochIterator, _EpochRun
from crumpets_lightning.data.workers.base import Worker

__all__ = ["TorchTurboDataLoader"]


class TorchTurboDataLoader(TurboDataLoader):
    """:class:`~crumpets_lightning.data.loader.TurboDataLoader` yielding torch tensors on ``device``.

    Args:
        iterable: see ``TurboDataLoader``.
        batch_size: see ``TurboDataLoader``.
        worker_template: see ``TurboDataLoader``.
        nworkers: see ``TurboDataLoader``.
        length: see ``TurboDataLoader``.
        num_mini_batches: see ``TurboDataLoader``.
        start_iteration: see ``TurboDataLoader``.
        shared_memory: see ``TurboDataLoader``.
        device: where tensors go. ``"cpu"`` gives zero-copy views of shared memory.
        gpu_augmentation: workers only record gamma/contrast/noise/blur parameters and ``Randomizer``
            applies them on ``device``.
        pin_memory: copy through pinned host memory (None: True for CUDA devices).
        **kwargs: the keyword-only arguments of ``TurboDataLoader`` (``seed``, ``shuffle``, ...).

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.

    Example::

        loader = TorchTurboDataLoader(samples, 64, ClassificationWorker(...), nworkers=4, device="cuda:0")
        for iteration, mini_batches in loader:
            logits = net(mini_batches[0]["image"].float())
    """

    def __init__(
        self,
        iterable: Iterable[Any],
        batch_size: int,
        worker_template: Worker,
        nworkers: int | None = None,
        length: int | None = None,
        num_mini_batches: int = 1,
        start_iteration: int = 0,
        shared_memory: bool | int = True,
        *,
        device: str | torch.device = "cpu",
        gpu_augmentation: bool = False,
        pin_memory: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            iterable,
            batch_size,
            worker_template,
            nworkers,
            length,
            num_mini_batches,
            start_iteration,
            shared_memory,
            **kwargs,
        )
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"TorchTurboDataLoader: device {str(self.device)!r} asked for but CUDA is not available")
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.gpu_augmentation = bool(gpu_augmentation)
        if self.gpu_augmentation:
            worker_template.set_gpu_augmentation(True)
        self._randomizer: torch.nn.Module | None = None
        self._copy_stream: Any = None
        # (run, iteration-independent converted batch, event) copied ahead for CUDA devices
        self._ahead: tuple[_EpochRun, list[dict[str, Any]], Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_copy_stream"] = None
        state["_ahead"] = None
        return state

    def stop(self) -> None:
        self._ahead = None
        super().stop()

    def _augment(self, mini_batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.gpu_augmentation:
            return mini_batches
        if self._randomizer is None:
            from crumpets_lightning.modules.randomizer import Randomizer

            self._randomizer = Randomizer().to(self.device)
        return [self._randomizer(mini) for mini in mini_batches]

    @staticmethod
    def _tensor(value: Any) -> Any:
        return torch.from_numpy(value) if isinstance(value, np.ndarray) else value

    def _convert(self, mini_batches: list[dict[str, Any]]) -> Any:
        if self.device.type == "cpu":
            return self._augment([{k: self._tensor(v) for k, v in m.items()} for m in mini_batches])
        converted, event = self._to_device(mini_batches)
        torch.cuda.current_stream(self.device).wait_event(event)
        return self._augment(converted)

    def _to_device(self, mini_batches: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        """Issue the host -> device copies on the side stream; return the tensors and an event to wait for."""
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        stream = self._copy_stream
        out = []
        with torch.cuda.stream(stream):
            for mini in mini_batches:
                converted = {}
                for key, value in mini.items():
                    if isinstance(value, np.ndarray):
                        host = torch.from_numpy(value)
                        if self.pin_memory:
                            host = host.pin_memory()
                        tensor = host.to(self.device, non_blocking=self.pin_memory)
                        # the tensor is used on the caller's stream: keep its memory until that is done
                        tensor.record_stream(torch.cuda.current_stream(self.device))
                        converted[key] = tensor
                    else:
                        converted[key] = value
                out.append(converted)
            event = torch.cuda.Event()
            event.record(stream)
        return out, event

    def _next_item(self, iterator: _EpochIterator) -> tuple[int, Any]:
        if self.device.type != "cuda":
            return super()._next_item(iterator)
        if iterator._run is None:
            iterator._run = self._begin_run()
            self._ahead = None
        run = iterator._run
        if run is not self._run:
            raise RuntimeError(
                f"{self.name}: this epoch iterator was superseded by a newer one or the loader was stopped; "
                "call iter(loader) again"
            )
        if self._ahead is not None and self._ahead[0] is run:
            _, converted, event = self._ahead
            self._ahead = None
        else:
            converted, event = self._to_device(self._produce(run))
        # copy the next batch now so it overlaps the caller's step; state_dict() counts only delivered ones
        self._ahead = None
        try:
            upcoming = self._produce(run)
        except StopIteration:
            upcoming = None
        if upcoming is not None:
            self._ahead = (run, *self._to_device(upcoming))
        torch.cuda.current_stream(self.device).wait_event(event)
        self._iteration += 1
        return self._iteration, self._augment(converted)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._ahead is not None and self._run is not None and self._ahead[0] is self._run and self._resume is None:
            state["batches_done"] -= 1  # the batch copied ahead was not delivered yet
        return state
