"""The main job: train a small CNN on handwritten digits with the crumpets loader, end to end, on CPU.

``crumpets-lightning demo`` (and ``make demo``) runs :func:`main`:

1. builds the demo data set from scikit-learn's handwritten digits (1797 8x8 gray images shipped inside the
   ``scikit-learn`` package, so nothing is downloaded): each digit is upscaled to 32x32, encoded as JPEG and
   written with its label to msgpack files, split into a training and a held-out set (stratified, fixed
   seed);
2. trains :class:`~crumpets_lightning.demo.DemoNet` through exactly the code path of
   ``crumpets-lightning fit --config crumpets_lightning/configs/demo.yaml`` (``LightningCLI`` in-process,
   with the data paths and output directory filled in), with crumpets augmentation suited to digits;
3. validates on the held-out set and prints the accuracy, and writes an augmentation gallery of a real
   photo next to the checkpoints and JSON logs.

Needs the ``demo`` extra (``pip install 'crumpets-lightning[demo]'``: scikit-learn).

Example::

    crumpets-lightning demo --output demo_output --epochs 12
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from crumpets_lightning.tools import require_extra

__all__ = ["DEMO_CONFIG", "DemoData", "build_digits_dataset", "demo_overrides", "main", "run_demo"]

#: The packaged LightningCLI config the demo trains with.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

_TRAIN_FILE = "digits_train.msgpack"
_HELD_OUT_FILE = "digits_held_out.msgpack"
_NEEDS_SKLEARN = "the digits demo (its data set comes from scikit-learn)"


@dataclass(frozen=True)
class DemoData:
    """Where :func:`build_digits_dataset` wrote the demo data set.

    Args:
        train: msgpack file of training samples.
        held_out: msgpack file of held-out samples (used for validation).
        num_train: number of training samples.
        num_held_out: number of held-out samples.
    """

    train: Path
    held_out: Path
    num_train: int
    num_held_out: int


def _digit_samples(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, size: int) -> list[dict[str, Any]]:
    """Upscale 8x8 digits (values 0..16) to ``size`` x ``size`` gray JPEG samples."""
    samples = []
    for index in indices:
        gray = images[index].astype(np.float32) * (255.0 / 16.0)
        big = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
        pixels = np.clip(np.rint(big), 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover - cv2 encodes any uint8 gray image
            raise RuntimeError(f"OpenCV could not encode digit {index} as JPEG")
        samples.append({"key": f"digit-{int(index):04d}", "image": encoded.tobytes(), "label": int(labels[index])})
    return samples


def build_digits_dataset(
    output_dir: str | Path,
    image_size: int = 32,
    held_out_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> DemoData:
    """Write the digits demo data set (JPEG samples in msgpack files) into ``output_dir``.

    Args:
        output_dir: directory for ``digits_train.msgpack`` and ``digits_held_out.msgpack`` (created if needed).
        image_size: side length in pixels the 8x8 digits are upscaled to before JPEG encoding.
        held_out_fraction: share of the samples kept out of training, stratified by class.
        seed: seed of the split, so the same samples are always held out.
        limit: use only the first ``limit`` digits (for quick runs and tests); ``None`` uses all 1797.

    Returns:
        The paths and sizes of the two files.

    Raises:
        ValueError: if ``image_size``, ``held_out_fraction`` or ``limit`` is out of range.
    """
    require_extra("sklearn", "demo", _NEEDS_SKLEARN)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from crumpets_lightning.data.sources import write_msgpack

    if image_size < 8:
        raise ValueError(f"Expected argument `image_size` to be at least 8 (the digits are 8x8) but got {image_size}")
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"Expected argument `held_out_fraction` to be in (0, 1) but got {held_out_fraction}")
    digits = load_digits()
    images, labels = digits.images, digits.target
    if limit is not None:
        if limit < 20:
            raise ValueError(f"Expected argument `limit` to be None or at least 20 but got {limit}")
        images, labels = images[:limit], labels[:limit]
    train_idx, held_out_idx = train_test_split(
        np.arange(len(labels)), test_size=held_out_fraction, random_state=seed, stratify=labels
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path, held_out_path = out / _TRAIN_FILE, out / _HELD_OUT_FILE
    num_train = write_msgpack(_digit_samples(images, labels, np.sort(train_idx), image_size), train_path)
    num_held_out = write_msgpack(_digit_samples(images, labels, np.sort(held_out_idx), image_size), held_out_path)
    return DemoData(train_path, held_out_path, num_train, num_held_out)


def demo_overrides(
    output_dir: Path,
    data: DemoData,
    epochs: int | None = None,
    nworkers: int | None = None,
    batch_size: int | None = None,
) -> list[str]:
    """Command-line overrides that point :data:`DEMO_CONFIG` at ``output_dir`` and the built data set.

    Args:
        output_dir: where checkpoints, logs and the config copy go.
        data: the data set written by :func:`build_digits_dataset`.
        epochs: training epochs; ``None`` keeps the config's ``max_epochs``.
        nworkers: loader worker processes; ``None`` keeps the config's value.
        batch_size: samples per batch; ``None`` keeps the config's value.

    Returns:
        Arguments for ``crumpets-lightning fit --config DEMO_CONFIG ...``.
    """
    overrides = [
        f"--data.train={data.train}",
        f"--data.val={data.held_out}",
        f"--trainer.default_root_dir={output_dir}",
        f"--trainer.logger.init_args.save_dir={output_dir / 'logs'}",
        f"--trainer.callbacks.outdir={output_dir / 'checkpoints'}",  # the last callback: Snapshot
    ]
    if epochs is not None:
        overrides.append(f"--trainer.max_epochs={epochs}")
    if nworkers is not None:
        overrides.append(f"--data.nworkers={nworkers}")
    if batch_size is not None:
        overrides.append(f"--data.batch_size={batch_size}")
    return overrides


def run_demo(
    output_dir: str | Path = "demo_output",
    epochs: int | None = None,
    limit: int | None = None,
    nworkers: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    torch_threads: int | None = 1,
) -> dict[str, Any]:
    """Build the digits data set, train :class:`~crumpets_lightning.demo.DemoNet` with the demo config, validate.

    Also writes an augmentation gallery of a real photo.

    Args:
        output_dir: directory for the data set, checkpoints, JSON logs and gallery (created if needed).
        epochs: training epochs; ``None`` uses the config's ``max_epochs``.
        limit: use only the first ``limit`` digits (quick runs); ``None`` uses all 1797.
        nworkers: loader worker processes; ``None`` uses the config's value.
        batch_size: samples per batch; ``None`` uses the config's value.
        progress: show Lightning's progress bars.
        torch_threads: intra-op threads for torch (``torch.set_num_threads``); ``None`` keeps torch's default.
            One thread is several times faster for this small net on a small machine that also runs the
            loader's worker processes (more threads than free cores thrash).

    Returns:
        ``{"accuracy", "loss", "output_dir", "checkpoints", "logs", "gallery", "seconds"}``.
    """
    require_extra("sklearn", "demo", _NEEDS_SKLEARN)
    import sklearn.datasets
    import torch

    from crumpets_lightning.gallery import make_gallery
    from crumpets_lightning.tools.lightning_cli import make_cli

    started = time.monotonic()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    out = Path(output_dir).resolve()
    data = build_digits_dataset(out, limit=limit)
    print(f"demo data: {data.num_train} training and {data.num_held_out} held-out digits (32x32 JPEG) in {out}")

    args = ["fit", "--config", str(DEMO_CONFIG), *demo_overrides(out, data, epochs, nworkers, batch_size)]
    if not progress:
        args.append("--trainer.enable_progress_bar=false")
    print("training: crumpets-lightning " + " ".join(args))
    cli = make_cli(args)
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    metrics = {key: float(value) for key, value in results[0].items()}

    photo = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    gallery = make_gallery(photo, out / "gallery.png")
    checkpoints = sorted((out / "checkpoints").glob("*.ckpt"))
    logs = sorted((out / "logs").rglob("metrics.jsonl"))
    summary = {
        "accuracy": metrics.get("val/accuracy", float("nan")),
        "loss": metrics.get("val/loss", float("nan")),
        "output_dir": out,
        "checkpoints": checkpoints,
        "logs": logs,
        "gallery": Path(gallery),
        "seconds": time.monotonic() - started,
    }
    _print_summary(summary, data)
    return summary


def _print_summary(summary: dict[str, Any], data: DemoData) -> None:
    rule = "=" * 72
    print(rule)
    print(f"held-out accuracy: {100 * summary['accuracy']:.2f} % on {data.num_held_out} digits (chance: 10 %)")
    print(f"held-out loss:     {summary['loss']:.4f}")
    print(f"time:              {summary['seconds']:.0f} s")
    print(f"checkpoints:       {', '.join(str(p) for p in summary['checkpoints']) or '(none)'}")
    print(f"JSON logs:         {', '.join(str(p) for p in summary['logs']) or '(none)'}")
    print(f"gallery:           {summary['gallery']}")
    print(f"data:              {data.train}, {data.held_out}")
    print(rule)


def main(argv: Sequence[str] | None = None) -> int:
    """``crumpets-lightning demo [--output DIR] [--epochs N] [--quick]``.

    Args:
        argv: arguments after ``demo``; ``None`` reads ``sys.argv``.

    Returns:
        0 when the held-out accuracy reaches the target (95 %, 70 % with ``--quick``), else 1.
    """
    parser = argparse.ArgumentParser(
        prog="crumpets-lightning demo",
        description="Train a small CNN on scikit-learn's handwritten digits with the crumpets loader and report "
        "the held-out accuracy. Writes the data set, checkpoints, JSON logs and an augmentation gallery.",
    )
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="output directory")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument("--nworkers", type=int, default=None, help="loader worker processes")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 digits, 6 epochs of batch 32")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    ns = parser.parse_args(argv)
    if ns.epochs is not None and ns.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {ns.epochs}")
    epochs = ns.epochs if ns.epochs is not None else (6 if ns.quick else None)
    summary = run_demo(
        ns.output,
        epochs=epochs,
        limit=500 if ns.quick else None,
        nworkers=ns.nworkers,
        batch_size=32 if ns.quick else None,
        progress=not ns.no_progress,
    )
    target = 0.7 if ns.quick else 0.95
    if not summary["accuracy"] >= target:
        print(f"held-out accuracy {100 * summary['accuracy']:.2f} % is below the target of {100 * target:.0f} %")
        return 1
    return 0
