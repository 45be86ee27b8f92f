"""Train a small CIFAR-style network with crumpets data and Lightning (port of crumpets' ``pytorch_cifar10.py``).

crumpets' example trains a custom net on CIFAR-10 with its own ``Trainer``: a ``TorchTurboDataLoader`` per
split, dict losses and metrics, and a ``PolyPolicy`` stepped every iteration. The Lightning version keeps
those pieces and lets the Lightning ``Trainer`` run them:

- the network is a :class:`~crumpets_lightning.modules.CrumpetsModule` subclass whose ``forward`` takes the
  sample dict and returns it with ``"output"`` added (crumpets' dict-in/dict-out convention);
- a :class:`~crumpets_lightning.data.CrumpetsDataModule` runs the crumpets loader (worker processes, shared
  memory, CPU augmentation) for training and validation;
- ``PolyPolicy`` decays the learning rate every step; its length comes from the trainer and the DataModule.

Nothing is downloaded: the data are scikit-learn's handwritten digits, upscaled to 32x32 JPEGs (CIFAR's
size) and decoded as 3-channel images. Works on CPU; uses a GPU when there is one.

Run::

    python examples/pytorch_cifar10.py --epochs 10 --batch-size 64 --lr 0.05
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from crumpets_lightning.data import CrumpetsDataModule, MixtureRNG
from crumpets_lightning.modules import (
    AccuracyMetric,
    CrossEntropyLoss,
    CrumpetsModule,
    Normalize,
    PolyPolicy,
    Randomizer,
)

#: Digit-friendly augmentation: no mirrors (a mirrored 2 is no 2), small geometric and pixel changes.
DIGITS_RNG = MixtureRNG(
    prob=0.5,
    scale_range=(0.9, 1.1),
    shift_range=(-0.15, 0.15),
    rotation_sigma=8.0,
    aspect_sigma=0.05,
    brightness_range=(-0.3, 0.3),
    contrast_range=(-0.3, 0.3),
    noise_range=(0.01, 0.04),
)


class Net(CrumpetsModule):
    """The classic CIFAR-10 tutorial network (two conv layers, three linear layers) on crumpets sample dicts.

    Args:
        num_classes: Number of classes.
        lr: Learning rate of the SGD optimizer (momentum 0.9, weight decay 1e-4, as in crumpets' example).
        gpu_augmentation: Apply the pixel augmentation drawn by the workers on the device (``Randomizer``).
    """

    def __init__(self, num_classes: int = 10, lr: float = 0.05, gpu_augmentation: bool = False) -> None:
        super().__init__(
            loss=CrossEntropyLoss(target_key="label", output_key="output"),
            metric=AccuracyMetric(top_k=1, target_key="label", output_key="output"),
            optimizer=functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=1e-4),
            scheduler=functools.partial(PolyPolicy, power=1.0),  # length filled in from trainer and data
            scheduler_interval="step",
            randomizer=Randomizer() if gpu_augmentation else None,
            normalize=Normalize(mean=(0.25, 0.25, 0.25), std=(0.35, 0.35, 0.35)),
        )
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Classify ``sample["image"]`` (already normalised floats) into ``sample["output"]``.

        Args:
            sample: The batch dict.

        Returns:
            A new dict: the sample plus ``"output"`` (logits ``[B, num_classes]``).
        """
        return {**sample, "output": self.classifier(self.features(sample["image"]))}


def make_datamodule(
    train: Any, val: Any, batch_size: int, nworkers: int, gpu_augmentation: bool = False
) -> CrumpetsDataModule:
    """The crumpets loaders for training (random augmentation) and validation (fixed centre fit).

    Args:
        train: Training samples (msgpack file, image folder or sequence).
        val: Validation samples.
        batch_size: Samples per step.
        nworkers: Worker processes per loader.
        gpu_augmentation: Leave the pixel augmentation to the model's ``Randomizer``.

    Returns:
        The DataModule.
    """
    return CrumpetsDataModule(
        train,
        val,
        batch_size=batch_size,
        nworkers=nworkers,
        image_size=(32, 32),
        channels=3,
        train_rng=DIGITS_RNG,
        gpu_augmentation=gpu_augmentation,
        drop_last=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build the digits data, train ``Net`` and print the validation accuracy.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: no limit)")
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: a temp dir)")
    parser.add_argument("--gpu-augmentation", action="store_true", help="pixel augmentation on the device")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from crumpets_lightning.tools.demo import build_digits_dataset

    pl.seed_everything(args.seed, verbose=False)
    with tempfile.TemporaryDirectory(prefix="cifar-example-") as scratch:
        output = args.output or Path(scratch)
        data = build_digits_dataset(output / "data", image_size=32, limit=args.limit, seed=args.seed)
        print(f"data: {data.num_train} training and {data.num_held_out} validation digits in {output / 'data'}")
        datamodule = make_datamodule(data.train, data.held_out, args.batch_size, args.nworkers, args.gpu_augmentation)
        model = Net(lr=args.lr, gpu_augmentation=args.gpu_augmentation)
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            max_steps=args.max_steps,
            accelerator="auto",
            devices=1,
            default_root_dir=output,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, datamodule=datamodule)
        train_loss = float(trainer.callback_metrics["train/loss_epoch"])
        (results,) = trainer.validate(model, datamodule=datamodule, verbose=False)
        print(
            f"after {trainer.current_epoch} epochs ({trainer.global_step} steps): train loss {train_loss:.4f}, "
            f"val loss {results['val/loss']:.4f}, val accuracy {results['val/accuracy']:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
