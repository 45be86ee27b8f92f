"""Train a small ResNet with snapshots, JSON logs and hooks (port of crumpets' ``pytorch_resnet.py``).

crumpets' ResNet example adds to the CIFAR one what a longer run needs: snapshots of model and optimizer
every epoch in ``outdir``, loss and metrics logged as JSON lines, and resuming from a snapshot. Here:

- :class:`~crumpets_lightning.callbacks.Snapshot` writes ``<output>/snapshots/epoch_%02d.ckpt`` (model,
  optimizer, scheduler, RNG and loader state; they load with ``torch.load(..., weights_only=True)``);
  ``--resume`` continues from one;
- :class:`~crumpets_lightning.callbacks.JSONLogger` writes ``<output>/logs/resnet/version_<n>/metrics.jsonl``;
- :class:`~crumpets_lightning.callbacks.CrumpetsHooks` prints the loss every few iterations and a line per
  validation epoch, as crumpets' trainer hooks would;
- :class:`~crumpets_lightning.callbacks.DataWaitMonitor` reports how long the steps waited for data.

The data are scikit-learn's handwritten digits as 32x32 JPEGs (nothing is downloaded).

Run::

    python examples/pytorch_resnet.py --epochs 6 --output resnet_out
    python examples/pytorch_resnet.py --epochs 8 --output resnet_out --resume resnet_out/snapshots/epoch_05.ckpt
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

from crumpets_lightning.callbacks import CrumpetsHooks, DataWaitMonitor, JSONLogger, Snapshot
from crumpets_lightning.data import CrumpetsDataModule, MixtureRNG
from crumpets_lightning.modules import AccuracyMetric, CrossEntropyLoss, CrumpetsModule, Normalize, PolyPolicy

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


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 projection when the shape changes).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution (2 halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(body(x) + shortcut(x))``."""
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet(num_classes: int = 10, width: int = 16, blocks: int = 1, in_channels: int = 3) -> nn.Sequential:
    """A CIFAR-style ResNet: a 3x3 stem, three stages (width, 2x, 4x; the last two halve the resolution).

    Args:
        num_classes: Output classes.
        width: Channels of the first stage.
        blocks: Basic blocks per stage.
        in_channels: Image channels.

    Returns:
        The network, mapping ``[B, in_channels, H, W]`` floats to ``[B, num_classes]`` logits.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    channels = width
    for stage in range(3):
        out_channels = width * 2**stage
        for block in range(blocks):
            layers.append(BasicBlock(channels, out_channels, stride=2 if stage and not block else 1))
            channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


class ResNetModule(CrumpetsModule):
    """The ResNet as a :class:`~crumpets_lightning.modules.CrumpetsModule` (``net`` on ``sample["image"]``).

    Args:
        num_classes: Output classes.
        width: Channels of the first stage.
        blocks: Basic blocks per stage.
        lr: SGD learning rate (momentum 0.9, weight decay 1e-4), decayed by ``PolyPolicy`` every step.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: int = 1, lr: float = 0.1) -> None:
        super().__init__(
            net=resnet(num_classes, width, blocks),
            loss=CrossEntropyLoss(),
            metric={"accuracy": AccuracyMetric(top_k=1), "top3_accuracy": AccuracyMetric(top_k=3)},
            optimizer=functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=1e-4),
            scheduler=functools.partial(PolyPolicy, power=0.9),
            normalize=Normalize(mean=(0.25, 0.25, 0.25), std=(0.35, 0.35, 0.35)),
        )


def console_hooks(print_every: int) -> CrumpetsHooks:
    """Hooks that print progress like crumpets' trainer: the loss every few iterations, validation per epoch.

    Args:
        print_every: Print the training loss every this many iterations.

    Returns:
        The callback.
    """
    hooks = CrumpetsHooks()

    def print_loss(state: dict[str, Any], metric: dict[str, Any], loss: torch.Tensor, output: Any) -> None:
        if state["batch_idx"] % print_every == 0:
            lr = state["trainer"].optimizers[0].param_groups[0]["lr"]
            print(f"epoch {state['epoch']} iteration {state['iteration']}: loss {loss.item():.4f} lr {lr:.5f}")

    def print_validation(state: dict[str, Any]) -> None:
        metrics = state["trainer"].callback_metrics
        print(
            f"epoch {state['epoch']} validation: loss {float(metrics['val/loss']):.4f}, accuracy"
            f" {float(metrics['val/accuracy']):.4f}, top-3 accuracy {float(metrics['val/top3_accuracy']):.4f}"
        )

    hooks.add_hook("train_forward", print_loss)
    hooks.add_hook("val_end", print_validation)
    return hooks


def main(argv: Sequence[str] | None = None) -> int:
    """Build the digits data, train the ResNet with snapshots, logs and hooks, optionally resuming.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: no limit)")
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--width", type=int, default=16, help="channels of the first ResNet stage")
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits")
    parser.add_argument("--output", type=Path, default=None, help="snapshots and logs go here (default: temp dir)")
    parser.add_argument("--snapshot-interval", type=int, default=1, help="epochs between snapshots (0: none)")
    parser.add_argument("--resume", type=Path, default=None, help="snapshot to continue training from")
    parser.add_argument("--print-every", type=int, default=10, help="print the loss every N iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from crumpets_lightning.tools.demo import build_digits_dataset

    pl.seed_everything(args.seed, verbose=False)
    with tempfile.TemporaryDirectory(prefix="resnet-example-") as scratch:
        output = args.output or Path(scratch)
        data = build_digits_dataset(output / "data", image_size=32, limit=args.limit, seed=args.seed)
        datamodule = CrumpetsDataModule(
            data.train,
            data.held_out,
            batch_size=args.batch_size,
            nworkers=args.nworkers,
            image_size=(32, 32),
            channels=3,
            train_rng=DIGITS_RNG,
            seed=args.seed,
        )
        logger = JSONLogger(output / "logs", name="resnet")
        snapshot = Snapshot(output / "snapshots", snapshot_interval=args.snapshot_interval)
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            max_steps=args.max_steps,
            accelerator="auto",
            devices=1,
            default_root_dir=output,
            logger=logger,
            log_every_n_steps=max(1, args.print_every),
            callbacks=[console_hooks(max(1, args.print_every)), DataWaitMonitor(prog_bar=False), snapshot],
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(ResNetModule(width=args.width, lr=args.lr), datamodule=datamodule, ckpt_path=args.resume)
        snapshots = sorted(p.name for p in (output / "snapshots").glob("*.ckpt"))
        print(f"snapshots in {output / 'snapshots'}: {', '.join(snapshots) or 'none'}")
        print(f"JSON log: {logger.path}")
        if args.output is None:
            print("(a temporary folder, removed now: pass --output DIR to keep snapshots and logs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
