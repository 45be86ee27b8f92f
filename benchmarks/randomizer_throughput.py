"""Throughput of the batched ``Randomizer`` (images/s) for LUT only, blur only, noise only and all ops.

Usage::

    python benchmarks/randomizer_throughput.py --device cuda            # 256 x 3 x 224 x 224 uint8
    python benchmarks/randomizer_throughput.py --device cpu --batch-size 32 --iterations 2

Parameters are drawn per sample like ``AUGMENTATION_TRAIN`` (gamma/colour from brightness and colour
ranges, contrast in [-1, 1], noise strength in [0.03, 0.1], blur sigma up to 1.5 pixels). "all" applies
every op to every sample (the worst case). The SPEC target on one H100/H200 is >= 150,000 images/s for
"all"; the pinned host-to-GPU copy of the same batch is printed for comparison on CUDA.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from crumpets_lightning.data.augment.record import AUGMENTATION_FIELDS, NEUTRAL_AUGMENTATION
from crumpets_lightning.data.augment.batched import randomize_batch

_COL = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}


def _records(batch: int, width: int, lut: bool, blur: bool, noise: bool, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    records = torch.from_numpy(NEUTRAL_AUGMENTATION.copy()).repeat(batch, 1)
    if lut:
        records[:, _COL["color"]] = 1.0
        records[:, _COL["gamma_gray"]] = 2.0 ** -(torch.rand(batch, generator=g) - 0.5)
        records[:, _COL["gamma_r"] : _COL["gamma_b"] + 1] = 2.0 ** -(torch.rand(batch, 3, generator=g) * 0.5 - 0.25)
        records[:, _COL["contrast"]] = torch.rand(batch, generator=g) * 2 - 1
    if blur:
        records[:, _COL["blur"]] = (0.2 + 1.3 * torch.rand(batch, generator=g)) / width
    if noise:
        records[:, _COL["noise"]] = 0.03 + 0.07 * torch.rand(batch, generator=g)
    return records.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], batch: int, iterations: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _sync(device)
    return batch * iterations / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Print a table of images/s per variant."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=None, help="timed batches (default: 20 cuda, 2 cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (default: 3 cuda, 1 cpu)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    iterations = args.iterations or (20 if device.type == "cuda" else 2)
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)
    batch, size = args.batch_size, args.size
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device)
    variants = {
        "LUT only": (True, False, False),
        "blur only": (False, True, False),
        "noise only": (False, False, True),
        "all": (True, True, True),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"Randomizer on {name}: batch {batch} x 3 x {size} x {size} uint8, {iterations} timed batches")
    print(f"{'variant':<22}{'images/s':>14}")
    for label, flags in variants.items():
        records = _records(batch, size, *flags, device)
        rate = _rate(lambda records=records: randomize_batch(image, records), batch, iterations, warmup, device)
        print(f"{label:<22}{rate:>14,.0f}")
    if device.type == "cuda":
        host = image.cpu().pin_memory()
        rate = _rate(lambda: host.to(device, non_blocking=True), batch, iterations, warmup, device)
        print(f"{'pinned host->GPU copy':<22}{rate:>14,.0f}")


if __name__ == "__main__":
    main()
