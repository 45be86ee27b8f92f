"""``TorchTurboDataLoader``: the loader yielding torch tensors (CPU views of shared memory, or CUDA copies).

On the CPU every buffer becomes ``torch.from_numpy`` of the shared-memory view: no copy, and the tensor
keeps the batch's slot alive as long as it exists. For a CUDA device the slots are page-locked once when the
loader starts and each batch is copied straight from its slot on a side stream (``non_blocking=True``); the
caller's stream waits for the copy, the host does not (see :mod:`~crumpets_lightning.data.loader.transfer`).
With ``gpu_augmentation=True`` the workers only record the pixel augmentations and
:func:`~crumpets_lightning.data.augment.batched.randomize_batch` applies them to each batch on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from typing_extensions import override

from crumpets_lightning.data._checks import check_bool
from crumpets_lightning.data.augment.batched import randomize_batch
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.loader.transfer import CudaBackend, SlotTransfer
from crumpets_lightning.data.workers.base import Worker

__all__ = ["TorchTurboDataLoader"]


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"Expected `device` to be a torch device such as 'cpu', 'cuda' or 'cuda:0' but got {device!r}"
        ) from None


def _transfer(device: torch.device, pin_memory: bool) -> SlotTransfer | None:
    return SlotTransfer(CudaBackend(device)) if device.type == "cuda" and pin_memory else None


class TorchTurboDataLoader(TurboDataLoader):
    """:class:`~crumpets_lightning.data.loader.TurboDataLoader` yielding torch tensors on ``device``.

    The positional arguments are crumpets' (``device`` is the 8th), the rest keyword-only.

    Arguments not listed are ``TurboDataLoader``'s (``worker_template`` is not modified: the loader works on a
    copy).

    Args:
        device: where tensors go. ``"cpu"`` gives zero-copy views of shared memory.
        gpu_augmentation: workers only record gamma/contrast/noise/blur parameters and
            :func:`~crumpets_lightning.data.augment.batched.randomize_batch` applies them on ``device``.
        pin_memory: copy to a CUDA device from page-locked memory (the slots themselves, or a pinned copy
            when they cannot be page-locked) with ``non_blocking=True``; None means True for CUDA devices.
            Ignored on the CPU.

    Raises:
        ValueError: ``device`` is not a device, or a CUDA one while CUDA is not available.
        TypeError: ``gpu_augmentation`` or ``pin_memory`` is not a bool.

    Example::

        loader = TorchTurboDataLoader(samples, 64, ClassificationWorker(...), 4, device="cuda:0")
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
        device: str | torch.device = "cpu",
        gpu_augmentation: bool = False,
        shared_memory: bool | int = True,
        *,
        pin_memory: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.device = _device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"TorchTurboDataLoader: device {str(self.device)!r} asked for but CUDA is not available here; "
                "pass device='cpu' (and let Lightning move batches) or run on a machine with a GPU"
            )
        self.gpu_augmentation = check_bool("gpu_augmentation", gpu_augmentation)
        if pin_memory is not None:
            check_bool("pin_memory", pin_memory)
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        if self.gpu_augmentation and isinstance(worker_template, Worker):
            worker_template = worker_template.copy()  # the caller's worker stays as it was
            worker_template.set_gpu_augmentation(True)
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
        #: host -> device copies (CUDA devices with ``pin_memory``); the slot ring's page-locking registrar
        self.transfer = self.slot_registrar = _transfer(self.device, self.pin_memory)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["transfer"], state["slot_registrar"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.transfer = self.slot_registrar = _transfer(self.device, self.pin_memory)

    @override
    def convert(self, buffers: dict[str, np.ndarray]) -> dict[str, Any]:
        """Tensors on ``device`` (zero-copy views on the CPU), pixel augmentation applied when asked."""
        if self.device.type == "cpu":
            out: dict[str, Any] = {key: torch.from_numpy(array) for key, array in buffers.items()}
        elif self.transfer is not None:
            out = dict(self.transfer.to_device(buffers))
        else:
            out = {key: torch.from_numpy(array).to(self.device) for key, array in buffers.items()}
        if self.gpu_augmentation:
            out["image"] = randomize_batch(out["image"], out["augmentation"])
        return out
