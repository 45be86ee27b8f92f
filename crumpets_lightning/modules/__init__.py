"""The crumpets training toolkit for Lightning: module base, losses, metrics, LR policies, GPU augmentation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crumpets_lightning._lazy import lazy_getattr

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from crumpets_lightning.modules.losses import (
        CrossEntropyLoss,
        L1Loss,
        LabelSmoothing,
        MSELoss,
        NLLLoss,
        NSSLoss,
    )
    from crumpets_lightning.modules.metrics import (
        AccuracyMetric,
        AverageMetric,
        CombinedMetric,
        ConfusionMatrix,
        MSELossMetric,
        MSEMetric,
        NoopMetric,
        NSSMetric,
    )
    from crumpets_lightning.modules.module import (
        CrumpetsModule,
        default_optimizer,
    )
    from crumpets_lightning.modules.policies import (
        CrumpetsPolicy,
        NoopPolicy,
        PolyPolicy,
        RampPolicy,
        ReduceLROnPlateau,
        SigmoidPolicy,
    )
    from crumpets_lightning.modules.randomizer import Randomizer
    from crumpets_lightning.modules.utils import (
        Normalize,
        Unpacker,
    )

_NAMES = {
    "CrumpetsModule": "module",
    "default_optimizer": "module",
    # losses
    "CrossEntropyLoss": "losses",
    "L1Loss": "losses",
    "LabelSmoothing": "losses",
    "MSELoss": "losses",
    "NLLLoss": "losses",
    "NSSLoss": "losses",
    # metrics
    "AccuracyMetric": "metrics",
    "AverageMetric": "metrics",
    "CombinedMetric": "metrics",
    "ConfusionMatrix": "metrics",
    "MSELossMetric": "metrics",
    "MSEMetric": "metrics",
    "NSSMetric": "metrics",
    "NoopMetric": "metrics",
    # LR policies
    "CrumpetsPolicy": "policies",
    "NoopPolicy": "policies",
    "PolyPolicy": "policies",
    "SigmoidPolicy": "policies",
    "RampPolicy": "policies",
    "ReduceLROnPlateau": "policies",
    # augmentation and utilities
    "Randomizer": "randomizer",
    "Normalize": "utils",
    "Unpacker": "utils",
}

__all__ = [  # a literal list (the keys of _NAMES, tested), so type checkers know what is exported
    "AccuracyMetric",
    "AverageMetric",
    "CombinedMetric",
    "ConfusionMatrix",
    "CrossEntropyLoss",
    "CrumpetsModule",
    "CrumpetsPolicy",
    "L1Loss",
    "LabelSmoothing",
    "MSELoss",
    "MSELossMetric",
    "MSEMetric",
    "NLLLoss",
    "NSSLoss",
    "NSSMetric",
    "NoopMetric",
    "NoopPolicy",
    "Normalize",
    "PolyPolicy",
    "RampPolicy",
    "Randomizer",
    "ReduceLROnPlateau",
    "SigmoidPolicy",
    "Unpacker",
    "default_optimizer",
]
#: crumpets names (crumpets.torch.*) with no direct port -> what replaces them (the error message says it).
NO_PORT = {
    "Trainer": "train with lightning.Trainer and a CrumpetsModule (net, loss, metric, optimizer, scheduler), e.g. "
    "lightning.Trainer(max_epochs=N).fit(CrumpetsModule(net=..., loss=..., metric=...), datamodule=...).",
    "ParallelApply": "multi-GPU training is Lightning's: lightning.Trainer(accelerator='gpu', devices=N) runs a "
    "CrumpetsModule on N GPUs (DDP); the net needs no wrapper.",
    "resume": "resume training with lightning.Trainer.fit(model, ckpt_path=PATH), or load a snapshot's weights "
    "(and optimizer state) with crumpets_lightning.callbacks.load_snapshot(PATH, model, optimizer).",
    "save": "snapshots are written by the crumpets_lightning.callbacks.Snapshot callback or "
    "trainer.save_checkpoint(PATH); load them with crumpets_lightning.callbacks.load_snapshot.",
    "filter_state": "load weights with crumpets_lightning.callbacks.load_snapshot(PATH, model) or "
    "model.load_state_dict(state, strict=False).",
    "is_cpu_only": "devices are chosen by lightning.Trainer(accelerator=..., devices=...); the loader yields CPU "
    "tensors and Lightning moves each batch to the device.",
    "is_single_torch_device": "devices are chosen by lightning.Trainer(accelerator=..., devices=...); one "
    "CrumpetsModule runs on each.",
    "SharedTensorManager": "the loader's shared memory is internal: TorchTurboDataLoader(shared_memory=N) sets its "
    "slots and batches arrive as tensors.",
    "DummyTensorManager": "the loader's shared memory is internal: TorchTurboDataLoader(shared_memory=False) turns "
    "it off.",
    "shared_tensor": "the loader's shared memory is internal: TorchTurboDataLoader(shared_memory=N) sets its slots.",
    "Metric": "metrics are torchmetrics metrics here: subclass torchmetrics.Metric (update() and compute(), where "
    "crumpets had value()).",
    "AverageValue": "use torchmetrics.MeanMetric, or crumpets_lightning.modules.AverageMetric for a value in the "
    "sample dict.",
}

if not TYPE_CHECKING:  # type checkers see only the names imported above, so a typo is an error
    __getattr__ = lazy_getattr(__name__, _NAMES, NO_PORT)


def __dir__() -> list[str]:
    return __all__
