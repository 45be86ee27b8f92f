"""The demo's model: :class:`DemoNet`, a small CNN for the handwritten digits.

The demo itself (building the digits data set from scikit-learn and training with the packaged config) lives
outside the library core, in :mod:`crumpets_lightning.tools.demo`: ``crumpets-lightning demo`` (``make demo``)
runs it. ``DemoNet`` stays here, where configs name it::

    model:
      class_path: crumpets_lightning.demo.DemoNet   # or just DemoNet on the command line: --model DemoNet
"""

from __future__ import annotations

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from crumpets_lightning.modules.losses import CrossEntropyLoss
from crumpets_lightning.modules.metrics import AccuracyMetric
from crumpets_lightning.modules.module import CrumpetsModule, default_optimizer
from crumpets_lightning.modules.randomizer import Randomizer
from crumpets_lightning.modules.utils import Normalize

__all__ = ["DemoNet"]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DemoNet(CrumpetsModule):
    """A small CNN for the digits demo: three conv stages, global average pooling and a linear classifier.

    Trained with cross-entropy and evaluated with top-1 accuracy (logged as ``val/accuracy``). The image is
    normalised with a mean and std suited to the dark digit images (one value per channel).

    Args:
        channels: number of input image channels (1 for the gray digits).
        num_classes: number of classes (10 digits).
        width: number of channels of the first conv stage; later stages use 2x and 4x.
        dropout: dropout probability before the classifier.
        optimizer: builds the optimizer from the parameters (YAML: ``class_path`` + ``init_args``).
        scheduler: builds the LR scheduler from the optimizer, stepped every ``scheduler_interval``; crumpets
            policies (``PolyPolicy`` ...) get their length from the trainer and the DataModule.
        scheduler_interval: ``"step"`` or ``"epoch"``.
        randomizer: GPU/CPU pixel augmentation applied to training batches (pair with the DataModule's
            ``gpu_augmentation``).
    """

    def __init__(
        self,
        channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        dropout: float = 0.1,
        optimizer: OptimizerCallable = default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
        randomizer: Randomizer | None = None,
    ) -> None:
        net = nn.Sequential(
            _conv_block(channels, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * width, num_classes),
        )
        super().__init__(
            net=net,
            loss=CrossEntropyLoss(),
            metric=AccuracyMetric(),
            optimizer=optimizer,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            randomizer=randomizer,
            normalize=Normalize(mean=(0.25,) * channels, std=(0.35,) * channels),
        )
