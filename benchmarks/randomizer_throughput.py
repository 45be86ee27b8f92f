"""GPU augmentation throughput: fused kernel vs torch path vs kornia, host-to-GPU copies, loader end to end.

Three tables (images/s, higher is better):

1. ``randomize_batch`` on a ``B x 3 x S x S`` uint8 batch (default 256 x 3 x 224 x 224) with per-sample
   parameters drawn like ``AUGMENTATION_TRAIN`` (gamma/colour, contrast in [-1, 1], noise strength in
   [0.03, 0.1], blur sigma 0.2..1.5 pixels); "all" applies every op to every sample (the worst case). Rows per
   backend: the fused Triton kernel (CUDA with Triton), the torch path, and kornia (if installed: ColorJiggle +
   RandomGaussianBlur + RandomGaussianNoise with per-sample parameters on float input, comparable work).
   SPEC target on one H100/H200: >= 150,000 images/s for the kernel's "all", aiming at the copy rate.
2. Host-to-GPU copies of the same uint8 batch: from page-locked (``cudaHostRegister``) shared memory as the
   loader's slots are, through the loader's ``SlotTransfer`` when it exists, against a plain pinned tensor
   copy. Target: registered >= 0.9 x pinned. CUDA only.
3. End to end: ``TorchTurboDataLoader`` (``ClassificationWorker``, JPEGs cut from the sklearn sample photos,
   ``AUGMENTATION_TRAIN``) with ``gpu_augmentation=True`` (the kernel applies the pixel ops on the device)
   against ``False`` (the workers apply them on the CPU). Bounded by JPEG decoding on the CPU cores.

Usage::

    python benchmarks/randomizer_throughput.py --device cuda          # everything, full size
    python benchmarks/randomizer_throughput.py --device cpu --quick   # a small smoke run of every part here
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from crumpets_lightning.data.augment.batched import randomize_batch
from crumpets_lightning.data.augment.record import FIELD_INDEX, NEUTRAL_AUGMENTATION, split_noise_seed

__all__ = ["main"]


def _records(batch: int, width: int, lut: bool, blur: bool, noise: bool, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    records = torch.from_numpy(NEUTRAL_AUGMENTATION.copy()).repeat(batch, 1)
    if lut:
        records[:, FIELD_INDEX["color"]] = 1.0
        records[:, FIELD_INDEX["gamma_gray"]] = 2.0 ** -(torch.rand(batch, generator=g) - 0.5)
        gammas = 2.0 ** -(torch.rand(batch, 3, generator=g) * 0.5 - 0.25)
        records[:, FIELD_INDEX["gamma_r"] : FIELD_INDEX["gamma_b"] + 1] = gammas
        records[:, FIELD_INDEX["contrast"]] = torch.rand(batch, generator=g) * 2 - 1
    if blur:
        records[:, FIELD_INDEX["blur"]] = (0.2 + 1.3 * torch.rand(batch, generator=g)) / width
    if noise:
        records[:, FIELD_INDEX["noise"]] = 0.03 + 0.07 * torch.rand(batch, generator=g)
    for i in range(batch):
        records[i, FIELD_INDEX["seed_lo"]], records[i, FIELD_INDEX["seed_hi"]] = split_noise_seed(i * 7919 + 1)
    return records.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], items: int, iterations: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _sync(device)
    return items * iterations / (time.perf_counter() - start)


def _kornia(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    pipeline = K.AugmentationSequential(
        K.ColorJiggle(brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, p=1.0),
        K.RandomGaussianBlur((7, 7), (0.2, 1.5), p=1.0),
        K.RandomGaussianNoise(mean=0.0, std=0.05, p=1.0),
    ).to(device)

    def run(image: torch.Tensor) -> torch.Tensor:
        out = pipeline(image.float().div_(255.0))
        return out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)

    return run


def _backends(device: torch.device) -> list[str]:
    from crumpets_lightning.data.augment import _triton_kernel

    names = ["triton"] if device.type == "cuda" and _triton_kernel.available() else []
    return [*names, "torch"]


def randomizer_table(device: torch.device, batch: int, size: int, iterations: int, warmup: int) -> dict[str, float]:
    """Table 1; returns ``{"backend/variant": images_per_s}``."""
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device)
    variants = {"LUT only": (True, False, False), "blur only": (False, True, False),
                "noise only": (False, False, True), "all": (True, True, True)}  # fmt: skip
    results: dict[str, float] = {}
    print(f"\n1. randomize_batch: batch {batch} x 3 x {size} x {size} uint8, per-sample parameters, images/s")
    print(f"{'backend':<10}" + "".join(f"{name:>14}" for name in variants))
    for backend in _backends(device):
        row = []
        for name, flags in variants.items():
            records = _records(batch, size, *flags, device)
            rate = _rate(
                lambda r=records, b=backend: randomize_batch(image, r, backend=b), batch, iterations, warmup, device
            )
            results[f"{backend}/{name}"] = rate
            row.append(f"{rate:>14,.0f}")
        print(f"{backend:<10}" + "".join(row))
    kornia = _kornia(device)
    if kornia is None:
        print("kornia    not installed (pip install kornia for its row)")
    else:
        rate = _rate(lambda: kornia(image), batch, iterations, warmup, device)
        results["kornia/all"] = rate
        print(f"{'kornia':<10}" + f"{'':>14}" * 3 + f"{rate:>14,.0f}")
    if "triton/all" in results:
        print(f"fused kernel / torch path (all ops): {results['triton/all'] / results['torch/all']:.2f}x")
    return results


def transfer_table(device: torch.device, batch: int, size: int, iterations: int, warmup: int) -> dict[str, float]:
    """Table 2 (CUDA only): registered shared memory against a pinned copy; images/s."""
    import mmap

    print(f"\n2. host -> GPU copy of a {batch} x 3 x {size} x {size} uint8 batch, images/s")
    if device.type != "cuda":
        print("skipped: needs a CUDA device")
        return {}
    nbytes = batch * 3 * size * size
    results: dict[str, float] = {}
    pinned = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).pin_memory()
    results["pinned tensor .to(device)"] = _rate(
        lambda: pinned.to(device, non_blocking=True), batch, iterations, warmup, device
    )
    region = mmap.mmap(-1, nbytes)  # anonymous shared mapping, like a slot of the loader's ring
    try:
        label = _registered_rate(region, device, pinned, iterations, warmup, results)
    finally:
        region.close()
    for name, rate in results.items():
        print(f"{name:<38}{rate:>14,.0f}")
    if label is not None:
        ratio = results[label] / results["pinned tensor .to(device)"]
        print(f"registered / pinned: {ratio:.2f} (target >= 0.9)")
    return results


def _registered_rate(
    region: Any, device: torch.device, pinned: torch.Tensor, iterations: int, warmup: int, results: dict[str, float]
) -> str | None:
    """Copy rate from page-locked shared memory into ``results``; returns its row label (None: not registered)."""
    batch = pinned.shape[0]
    array = np.frombuffer(region, dtype=np.uint8).reshape(pinned.shape)
    array[...] = pinned.numpy()
    address, nbytes = array.__array_interface__["data"][0], array.nbytes
    try:
        from crumpets_lightning.data.loader.transfer import CudaBackend, SlotTransfer
    except ImportError:  # the loader's page-locked slots are not there: the same calls by hand
        host = torch.from_numpy(array)
        if int(torch.cuda.cudart().cudaHostRegister(address, nbytes, 0)) != 0:
            print("cudaHostRegister failed here: the loader falls back to pinned copies")
            return None
        try:
            label = "registered slot (cudaHostRegister)"
            results[label] = _rate(lambda: host.to(device, non_blocking=True), batch, iterations, warmup, device)
        finally:
            torch.cuda.cudart().cudaHostUnregister(address)
        return label
    transfer = SlotTransfer(CudaBackend(device))
    if not transfer.register(address, nbytes):
        print("cudaHostRegister failed here: the loader falls back to pinned copies")
        return None
    try:
        label = "registered slot (SlotTransfer)"
        results[label] = _rate(lambda: transfer.to_device({"image": array}), batch, iterations, warmup, device)
    finally:
        transfer.finish()
        transfer.unregister(address)
    return label


def _jpegs(count: int, size: tuple[int, int] = (375, 500)) -> list[bytes]:
    from pathlib import Path

    import cv2
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = [cv2.imread(str(folder / name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        photo = photos[i % 2]
        h, w = photo.shape[:2]
        y, x = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
        crop = cv2.resize(photo[y : y + 3 * h // 4, x : x + 3 * w // 4], (size[1], size[0]))
        out.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def loader_table(device: torch.device, images: int, batch: int, nworkers: int, epochs: int) -> dict[str, float]:
    """Table 3: TorchTurboDataLoader -> device, with the pixel ops on the device or on the CPU; images/s."""
    from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN
    from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader
    from crumpets_lightning.data.workers.image import ClassificationWorker

    samples = [{"image": data, "label": i % 10} for i, data in enumerate(_jpegs(images))]
    print(f"\n3. TorchTurboDataLoader -> {device}: {images} JPEGs 500x375 -> 224x224, batch {batch}, "
          f"{nworkers} workers, AUGMENTATION_TRAIN, best of {epochs} epochs, images/s")  # fmt: skip
    results: dict[str, float] = {}
    for gpu_augmentation in (True, False):
        worker = ClassificationWorker(((3, 224, 224), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN)
        loader = TorchTurboDataLoader(
            samples, batch, worker, nworkers, seed=0, shuffle=True, device=device, gpu_augmentation=gpu_augmentation
        )
        best = 0.0
        try:
            for _ in range(epochs):
                start, count = time.perf_counter(), 0
                for _, mini_batches in loader:
                    for mini in mini_batches:
                        count += int(mini["image"].shape[0])
                _sync(device)
                best = max(best, count / (time.perf_counter() - start))
        finally:
            loader.stop()
        name = "pixel ops on the device (Randomizer)" if gpu_augmentation else "pixel ops in the workers (CPU)"
        results[name] = best
        print(f"{name:<38}{best:>14,.0f}")
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Parse arguments, print the tables, return their figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every table")
    parser.add_argument("--batch-size", type=int, default=None, help="randomizer/copy batch (256; quick: 8)")
    parser.add_argument("--size", type=int, default=None, help="image side (224; quick: 64)")
    parser.add_argument("--iterations", type=int, default=None, help="timed batches (20; quick or cpu: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (3; quick or cpu: 1)")
    parser.add_argument("--loader-images", type=int, default=None, help="JPEGs in the loader run (2048; quick: 32)")
    parser.add_argument("--nworkers", type=int, default=None, help="loader workers (CPU cores - 1; quick: 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["randomizer", "transfer", "loader"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    small = args.quick or device.type == "cpu"
    batch = args.batch_size or (8 if args.quick else 256)
    size = args.size or (64 if args.quick else 224)
    iterations = args.iterations or (2 if small else 20)
    warmup = args.warmup if args.warmup is not None else (1 if small else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"GPU augmentation benchmarks on {name}, torch {torch.__version__}")
    results: dict[str, dict[str, Any]] = {}
    if "randomizer" not in args.skip:
        results["randomizer"] = randomizer_table(device, batch, size, iterations, warmup)
    if "transfer" not in args.skip:
        results["transfer"] = transfer_table(device, batch, size, iterations, warmup)
    if "loader" not in args.skip:
        images = args.loader_images or (32 if args.quick else 2048)
        nworkers = args.nworkers or (2 if args.quick else max(1, (os.cpu_count() or 2) - 1))
        results["loader"] = loader_table(device, images, 16 if args.quick else 256, nworkers, 1 if args.quick else 3)
    return results


if __name__ == "__main__":
    main()
