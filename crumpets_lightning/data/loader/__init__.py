"""The main-process side of loading: plan each epoch, hand work to the pool, yield batches and steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crumpets_lightning._lazy import lazy_getattr

if TYPE_CHECKING:
    from crumpets_lightning.data.loader.loader import TurboDataLoader
    from crumpets_lightning.data.loader.plan import EpochPlan
    from crumpets_lightning.data.loader.steps import StepLoader
    from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader

_NAMES = {
    "EpochPlan": "plan",
    "StepLoader": "steps",
    "TurboDataLoader": "loader",
    "TorchTurboDataLoader": "torch_loader",
}

__all__ = ["EpochPlan", "StepLoader", "TorchTurboDataLoader", "TurboDataLoader"]
__getattr__ = lazy_getattr(__name__, _NAMES)
