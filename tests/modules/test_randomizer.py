"""Randomizer: agreement with the CPU pixel ops, with the formulas written out in numpy, and with OpenCV."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crumpets_lightning.data.augment.pixel_ops import apply_pixel_ops
from crumpets_lightning.data.augment.record import AUGMENTATION_FIELDS, NEUTRAL_AUGMENTATION
from crumpets_lightning.modules.randomizer import Randomizer, randomize_batch

COL = {name: i for i, name in enumerate(AUGMENTATION_FIELDS)}


def _images(batch: int, channels: int = 3, height: int = 12, width: int = 16, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(batch, channels, height, width), dtype=np.uint8))


def _records(batch: int) -> torch.Tensor:
    return torch.from_numpy(np.repeat(NEUTRAL_AUGMENTATION[None], batch, axis=0).copy())


def _numpy_lut(row: np.ndarray, channels: int) -> np.ndarray:
    """The COMMON gamma + contrast semantics written out independently, float64, ``[channels, 256]``."""
    x = np.arange(256) / 255.0
    gammas = []
    for c in range(channels):
        colour = row[COL["gamma_r"] + c] if (channels == 3 and row[COL["color"]]) else 1.0
        gammas.append(row[COL["gamma_gray"]] * colour)
    out = []
    for g in gammas:
        y = x**g
        k = row[COL["contrast"]]
        steeper = (1 - np.cos(np.pi * y)) / 2
        flatter = np.arccos(1 - 2 * y) / np.pi
        y = y + abs(k) * ((steeper if k >= 0 else flatter) - y)
        out.append(np.clip(y * 255, 0, 255))
    return np.stack(out)


def _cpu_ops(image: torch.Tensor, records: torch.Tensor, seed: int = 0) -> np.ndarray:
    """helper B's CPU pixel ops on each sample (CHW <-> HWC)."""
    out = []
    for i, (im, row) in enumerate(zip(image.numpy(), records.numpy())):
        hwc = np.ascontiguousarray(im.transpose(1, 2, 0))
        if hwc.shape[2] == 1:
            hwc = hwc[:, :, 0]
        result = apply_pixel_ops(hwc, row, np.random.default_rng(seed + i), True)
        out.append(result.reshape(im.shape[1], im.shape[2], -1).transpose(2, 0, 1))
    return np.stack(out)


def _diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int32) - np.asarray(b, dtype=np.int32)).max())


@pytest.mark.parametrize("channels", [1, 3])
def test_neutral_record_is_identity_and_input_untouched(channels: int) -> None:
    image = _images(4, channels)
    original = image.clone()
    sample = {"image": image, "augmentation": _records(4), "label": torch.arange(4)}
    out = Randomizer()(sample)
    assert out is not sample and out["image"] is not image
    assert torch.equal(out["image"], original) and torch.equal(image, original)
    assert out["image"].dtype == torch.uint8 and out["label"] is sample["label"]


def _lut_records() -> torch.Tensor:
    records = _records(5)
    records[:, COL["color"]] = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    records[:, COL["gamma_gray"]] = torch.tensor([0.5, 1.0, 1.7, 2.0, 0.8])
    records[:, COL["gamma_r"] : COL["gamma_b"] + 1] = torch.tensor(
        [[1.0, 1.0, 1.0], [0.7, 1.3, 1.0], [1.2, 0.9, 0.6], [2.0, 2.0, 2.0], [1.1, 1.0, 0.8]]
    )
    records[:, COL["contrast"]] = torch.tensor([0.0, 0.6, -0.5, 1.0, -1.0])
    return records


@pytest.mark.parametrize("channels", [1, 3])
def test_gamma_contrast_agrees_with_formulas_and_cpu_ops(channels: int) -> None:
    image = _images(5, channels, seed=1)
    records = _lut_records()
    out = randomize_batch(image, records)
    reference = np.stack(
        [
            np.take_along_axis(_numpy_lut(row, channels), im.reshape(channels, -1).astype(np.int64), 1).reshape(
                im.shape
            )
            for im, row in zip(image.numpy(), records.numpy().astype(np.float64))
        ]
    )
    assert _diff(out, np.rint(reference)) <= 1
    assert _diff(out, _cpu_ops(image, records)) <= 1
    assert _diff(out, image) > 10  # it really changed something


@settings(max_examples=25)
@given(
    gamma=st.floats(0.5, 2.0),
    colour=st.tuples(st.floats(0.5, 2.0), st.floats(0.5, 2.0), st.floats(0.5, 2.0)),
    contrast=st.floats(-1.0, 1.0),
)
def test_lut_property_against_numpy(gamma: float, colour: tuple[float, float, float], contrast: float) -> None:
    image = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(1, 3, 1, 1)
    records = _records(1)
    records[0, COL["color"]] = 1.0
    records[0, COL["gamma_gray"]] = gamma
    records[0, COL["gamma_r"] : COL["gamma_b"] + 1] = torch.tensor(colour)
    records[0, COL["contrast"]] = contrast
    out = randomize_batch(image, records)[0].reshape(3, 256).numpy()
    assert _diff(out, np.rint(_numpy_lut(records[0].numpy().astype(np.float64), 3))) <= 1


def _blur_reference(image: np.ndarray, sigma: float) -> np.ndarray:
    """OpenCV's GaussianBlur with the COMMON kernel size, on float planes."""
    if sigma < 0.2:
        return image.astype(np.float64)
    size = 2 * math.ceil(3 * sigma) + 1
    planes = [
        cv2.GaussianBlur(plane.astype(np.float32), (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        for plane in image
    ]
    return np.stack(planes)


@pytest.mark.parametrize("channels", [1, 3])
def test_blur_agrees_with_opencv_and_cpu_ops(channels: int) -> None:
    image = _images(5, channels, height=14, width=20, seed=2)
    records = _records(5)
    # sigma in pixels: 0 (none), 0.1 (below threshold), 0.6, 1.7, 9 (kernel larger than the image)
    records[:, COL["blur"]] = torch.tensor([0.0, 0.1, 0.6, 1.7, 9.0]) / 20
    out = randomize_batch(image, records)
    for i in range(5):
        sigma = float(records[i, COL["blur"]]) * 20
        assert _diff(out[i], np.rint(_blur_reference(image[i].numpy(), sigma))) <= 2, f"sample {i}"
    assert torch.equal(out[:2], image[:2])
    assert _diff(out, _cpu_ops(image, records)) <= 2
    assert _diff(out[2:], image[2:]) > 10


def test_all_ops_without_noise_agree_with_cpu_ops() -> None:
    image = _images(5, 3, seed=3)
    records = _lut_records()
    records[:, COL["blur"]] = torch.tensor([0.0, 0.02, 0.05, 0.1, 0.03])
    assert _diff(randomize_batch(image, records), _cpu_ops(image, records)) <= 2


@pytest.mark.parametrize("rgb_noise", [True, False])
def test_noise_statistics_match_cpu_ops(rgb_noise: bool) -> None:
    batch, height, width = 3, 64, 64
    image = torch.full((batch, 3, height, width), 128, dtype=torch.uint8)
    records = _records(batch)
    strengths = [0.0, 0.02, 0.08]
    records[:, COL["noise"]] = torch.tensor(strengths)
    torch.manual_seed(0)
    out = Randomizer(rgb_noise=rgb_noise)({"image": image, "augmentation": records})["image"]
    residual = out.float() - 128
    weights = (1.0, 0.6, 1.0) if rgb_noise else (1.0, 1.0, 1.0)
    cpu = []
    for i in range(batch):
        hwc = np.full((height, width, 3), 128, dtype=np.uint8)
        cpu.append(
            apply_pixel_ops(hwc, records[i].numpy(), np.random.default_rng(i), rgb_noise).astype(np.float64) - 128
        )
    assert torch.equal(out[0], image[0])
    for i, strength in enumerate(strengths[1:], start=1):
        for c in range(3):
            expected_std = strength * 255 * weights[c]
            std = residual[i, c].std().item()
            assert std == pytest.approx(expected_std, rel=0.15), (i, c)
            assert abs(residual[i, c].mean().item()) < 0.2 * expected_std
            assert cpu[i][:, :, c].std() == pytest.approx(std, rel=0.2)


def test_net_is_applied_to_augmented_sample() -> None:
    def net(sample: dict) -> dict:
        return {**sample, "output": sample["image"].float().mean()}

    image = _images(2)
    records = _records(2)
    records[:, COL["gamma_gray"]] = 0.5
    out = Randomizer(net)({"image": image, "augmentation": records})
    assert out["output"].item() > image.float().mean().item()


def test_errors_are_clear() -> None:
    randomizer = Randomizer()
    with pytest.raises(KeyError, match=r"'augmentation'.*gpu_augmentation=True"):
        randomizer({"image": _images(1)})
    with pytest.raises(TypeError, match="uint8"):
        randomizer({"image": _images(1).float(), "augmentation": _records(1)})
    with pytest.raises(ValueError, match=r"shape \(2, 10\).*'seed_lo', 'seed_hi'.*but got \(3, 10\)"):
        randomizer({"image": _images(2), "augmentation": _records(3)})
    with pytest.raises(ValueError, match="C = 1 or 3"):
        randomizer({"image": _images(1, channels=4), "augmentation": _records(1)})


def _gpu_records(batch: int) -> torch.Tensor:
    records = _records(batch)
    g = torch.Generator().manual_seed(0)
    records[:, COL["color"]] = (torch.rand(batch, generator=g) > 0.5).float()
    records[:, COL["gamma_gray"]] = 2 ** (torch.rand(batch, generator=g) * 2 - 1)
    records[:, COL["gamma_r"] : COL["gamma_b"] + 1] = 2 ** (torch.rand(batch, 3, generator=g) - 0.5)
    records[:, COL["contrast"]] = torch.rand(batch, generator=g) * 2 - 1
    records[:, COL["blur"]] = torch.rand(batch, generator=g) * 0.02
    return records


@pytest.mark.gpu
def test_cuda_and_cpu_agree_without_noise() -> None:
    image = _images(64, 3, height=56, width=64, seed=5)
    records = _gpu_records(64)
    cpu = randomize_batch(image, records)
    cuda = randomize_batch(image.cuda(), records.cuda()).cpu()
    assert _diff(cpu, cuda) <= 1
    assert _diff(cuda, _cpu_ops(image, records)) <= 2


@pytest.mark.gpu
def test_cuda_noise_statistics() -> None:
    image = torch.full((8, 3, 128, 128), 128, dtype=torch.uint8, device="cuda")
    records = _records(8).cuda()
    records[:, COL["noise"]] = 0.05
    residual = randomize_batch(image, records).float() - 128
    for c, weight in enumerate((1.0, 0.6, 1.0)):
        assert residual[:, c].std().item() == pytest.approx(0.05 * 255 * weight, rel=0.05)


def test_batch_result_does_not_depend_on_the_other_samples() -> None:
    image = _images(4, 3, height=10, width=12, seed=6)
    records = _lut_records()[:4]
    records[:, COL["blur"]] = torch.tensor([0.03, 0.08, 0.05, 0.2])  # every sample blurred, radius up to 8
    batch = randomize_batch(image, records)
    for i in range(4):
        single = randomize_batch(image[i : i + 1], records[i : i + 1])
        assert _diff(batch[i : i + 1], single) <= 1
        sigma = float(records[i, COL["blur"]]) * 12
        lut_only = records[i : i + 1].clone()
        lut_only[0, COL["blur"]] = 0
        luts = randomize_batch(image[i : i + 1], lut_only)[0].numpy()
        assert _diff(batch[i], np.rint(_blur_reference(luts, sigma))) <= 2


def test_backend_is_checked_and_torch_backend_equals_auto_on_cpu() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'\), got 'cuda'"):
        Randomizer(backend="cuda")
    image, records = _images(3), _lut_records()[:3]
    records[:, COL["noise"]] = 0.05
    records[:, COL["seed_lo"]] = torch.tensor([1.0, 2.0, 3.0])
    auto = Randomizer()({"image": image, "augmentation": records})["image"]
    assert torch.equal(Randomizer(backend="torch")({"image": image, "augmentation": records})["image"], auto)
    assert "backend='torch'" in repr(Randomizer(backend="torch"))
