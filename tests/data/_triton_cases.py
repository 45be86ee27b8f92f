"""Run the fused Triton kernel and the torch path on small cases; save both to an ``.npz`` file.

Used by ``test_triton_kernel.py`` in a subprocess with ``TRITON_INTERPRET=1`` (the variable must be set
before the kernel module is imported, and Triton interprets kernels on CPU tensors only then), and by the
same tests on CUDA in-process. Images stay tiny: interpreted kernels run Python per program and tap.

Usage: ``python -m tests.data._triton_cases OUT.npz [cpu|cuda]``
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from crumpets_lightning.data.augment.record import FIELD_INDEX, NEUTRAL_AUGMENTATION, split_noise_seed


def records(batch: int, sigmas_px: list[float], width: int, seed: int = 0) -> torch.Tensor:
    """Every op on, per-sample values, the given blur sigmas (pixels), distinct 48-bit noise seeds."""
    g = torch.Generator().manual_seed(seed)
    out = torch.from_numpy(np.repeat(NEUTRAL_AUGMENTATION[None], batch, axis=0).copy())
    out[:, FIELD_INDEX["color"]] = torch.tensor([float(i % 2 == 0) for i in range(batch)])
    out[:, FIELD_INDEX["gamma_gray"]] = 2 ** (torch.rand(batch, generator=g) * 2 - 1)
    out[:, FIELD_INDEX["gamma_r"] : FIELD_INDEX["gamma_b"] + 1] = 2 ** (torch.rand(batch, 3, generator=g) - 0.5)
    out[:, FIELD_INDEX["contrast"]] = torch.rand(batch, generator=g) * 2 - 1
    out[:, FIELD_INDEX["noise"]] = 0.02 + torch.rand(batch, generator=g) * 0.06
    out[:, FIELD_INDEX["blur"]] = torch.tensor(sigmas_px) / width
    for i in range(batch):
        lo, hi = split_noise_seed(int(torch.randint(0, 2**48, (1,), generator=g)))
        out[i, FIELD_INDEX["seed_lo"]], out[i, FIELD_INDEX["seed_hi"]] = lo, hi
    return out


def images(shape: tuple[int, int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8))


#: name -> (image shape, blur sigmas in pixels per sample)
CASES: dict[str, tuple[tuple[int, int, int, int], list[float]]] = {
    # RGB, per-sample radii 3 (separable path) and 0 (sigma 0.1 is below the threshold), one 16x16 tile
    "rgb": ((2, 3, 16, 16), [0.9, 0.1]),
    # gray, odd sizes (partial tiles, masks), radii 5 (as large as the image: reflect-101 wraps) and 2
    "gray": ((2, 1, 5, 9), [1.5, 0.4]),
    # radius 9, wider than the kernel's halo (the direct 2-d path), and an unblurred sample
    "wide": ((2, 1, 6, 10), [3.0, 0.0]),
}


def run(device: str) -> dict[str, np.ndarray]:
    from crumpets_lightning.data.augment import _triton_kernel
    from crumpets_lightning.data.augment.batched import noise_field, noise_keys, randomize_batch

    out: dict[str, np.ndarray] = {}
    for name, (shape, sigmas) in CASES.items():
        image = images(shape).to(device)
        aug = records(shape[0], sigmas, shape[3]).to(device)
        out[f"{name}_image"] = image.cpu().numpy()
        out[f"{name}_torch"] = randomize_batch(image, aug, backend="torch").cpu().numpy()
        out[f"{name}_triton"] = randomize_batch(image, aug, backend="triton").cpu().numpy()
        # the same sample alone: the kernel's result does not depend on the batch either
        out[f"{name}_triton_alone"] = randomize_batch(image[1:], aug[1:], backend="triton").cpu().numpy()
    keys = noise_keys(records(3, [0.0] * 3, 8, seed=1).to(device))
    out["noise_torch"] = noise_field(keys, (3, 4, 40)).cpu().numpy()
    out["noise_triton"] = _triton_kernel.noise_triton(keys, (3, 4, 40)).cpu().numpy()
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **run(sys.argv[2] if len(sys.argv) > 2 else "cpu"))
