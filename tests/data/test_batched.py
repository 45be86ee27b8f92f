"""randomize_batch (the torch path): noise keyed per sample, results independent of batch, rank and torch's RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crumpets_lightning.data.augment.batched import (
    _reflect101_index,
    hash32,
    noise_field,
    noise_keys,
    randomize_batch,
)
from crumpets_lightning.data.augment.record import FIELD_INDEX, NEUTRAL_AUGMENTATION, split_noise_seed
from tests.data._helpers import photo_crops


def _records(batch: int, seed: int = 0) -> torch.Tensor:
    """Every op on with per-sample values, blur radii 1..4, and distinct 48-bit noise seeds."""
    g = torch.Generator().manual_seed(seed)
    records = torch.from_numpy(np.repeat(NEUTRAL_AUGMENTATION[None], batch, axis=0).copy())
    records[:, FIELD_INDEX["color"]] = (torch.rand(batch, generator=g) > 0.3).float()
    records[:, FIELD_INDEX["gamma_gray"]] = 2 ** (torch.rand(batch, generator=g) * 2 - 1)
    records[:, FIELD_INDEX["gamma_r"] : FIELD_INDEX["gamma_b"] + 1] = 2 ** (torch.rand(batch, 3, generator=g) - 0.5)
    records[:, FIELD_INDEX["contrast"]] = torch.rand(batch, generator=g) * 2 - 1
    records[:, FIELD_INDEX["noise"]] = torch.rand(batch, generator=g) * 0.1
    records[:, FIELD_INDEX["blur"]] = (0.3 + torch.rand(batch, generator=g) * 1.0) / 20  # sigma 0.3..1.3 px
    for i in range(batch):
        lo, hi = split_noise_seed(int(torch.randint(0, 2**48, (1,), generator=g)))
        records[i, FIELD_INDEX["seed_lo"]], records[i, FIELD_INDEX["seed_hi"]] = lo, hi
    return records


def _images(batch: int, channels: int = 3, height: int = 14, width: int = 20, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(batch, channels, height, width), dtype=np.uint8))


def test_hash_matches_a_plain_python_uint32_reference() -> None:
    def reference(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x735A2D97) & 0xFFFFFFFF
        return x ^ (x >> 15)

    values = [0, 1, 2, 12345, 2**24 - 1, 2**31, 2**32 - 1]
    assert hash32(torch.tensor(values)).tolist() == [reference(v) for v in values]
    assert len(set(hash32(torch.arange(4096)).tolist())) == 4096  # a bijection on 32-bit values


def test_noise_field_is_standard_normal_and_differs_between_keys() -> None:
    noise = noise_field(torch.tensor([0, 1, 2**32 - 1]), (3, 64, 64))
    assert noise.shape == (3, 3, 64, 64) and noise.dtype == torch.float32
    for sample in noise:
        assert abs(float(sample.mean())) < 0.05 and float(sample.std()) == pytest.approx(1.0, abs=0.05)
    flat = noise.view(3, -1)
    assert abs(float(torch.corrcoef(flat)[0, 1])) < 0.05  # neighbouring keys: unrelated noise
    assert abs(float(torch.corrcoef(torch.stack([flat[0, :-1], flat[0, 1:]]))[0, 1])) < 0.05
    assert torch.equal(noise_field(torch.tensor([1]), (3, 64, 64))[0], noise[1])  # pure function of key, pixel


def test_both_seed_columns_change_the_key() -> None:
    records = torch.from_numpy(np.repeat(NEUTRAL_AUGMENTATION[None], 4, axis=0).copy())
    for i, seed in enumerate([0, 1, 1 << 24, (1 << 48) - 1]):
        records[i, FIELD_INDEX["seed_lo"]], records[i, FIELD_INDEX["seed_hi"]] = split_noise_seed(seed)
    assert len(set(noise_keys(records).tolist())) == 4
    assert records[3, FIELD_INDEX["seed_lo"]] == 2**24 - 1  # exact in float32


def test_reflect101_index_covers_any_offset() -> None:
    assert _reflect101_index(torch.arange(-5, 9), 4).tolist() == [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert _reflect101_index(torch.arange(-3, 4), 1).tolist() == [0] * 7


def test_a_sample_is_bitwise_equal_in_any_batch_and_under_any_torch_seed() -> None:
    image, records = _images(6), _records(6)
    torch.manual_seed(0)
    whole = randomize_batch(image, records)
    assert int((whole.int() - image.int()).abs().max()) > 20  # every op really changed something
    torch.manual_seed(12345)
    order = torch.tensor([4, 1, 5, 0, 3, 2])
    shuffled = randomize_batch(image[order], records[order])
    assert torch.equal(shuffled, whole[order])
    for i in range(6):  # alone, the batch's largest blur radius and noise flag differ
        torch.manual_seed(i)
        assert torch.equal(randomize_batch(image[i : i + 1], records[i : i + 1]), whole[i : i + 1])
    quiet = records.clone()  # the other samples without blur or noise
    quiet[:, FIELD_INDEX["blur"]] = 0
    quiet[:, FIELD_INDEX["noise"]] = 0
    quiet[2] = records[2]
    assert torch.equal(randomize_batch(image, quiet)[2], whole[2])


def test_records_on_the_device_give_the_same_result_as_records_on_the_host() -> None:
    # on the CPU device both are host tensors; the blur radius read from the records or given must agree
    from crumpets_lightning.data.augment.batched import apply_luts, gaussian_blur, sample_params

    image, records = _images(3), _records(3)
    params = sample_params(records, 3, image.shape[3])
    luts = apply_luts(image, params.luts)
    assert torch.equal(
        gaussian_blur(luts, params.blur_inv, params.blur_radius),
        gaussian_blur(luts, params.blur_inv, params.blur_radius, int(params.blur_radius.max())),
    )
    wider = gaussian_blur(luts, params.blur_inv, params.blur_radius, int(params.blur_radius.max()) + 3)
    assert torch.equal(wider, gaussian_blur(luts, params.blur_inv, params.blur_radius))  # extra taps add exact 0


def test_noise_strength_scales_one_fixed_field() -> None:
    image = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    records = torch.from_numpy(np.repeat(NEUTRAL_AUGMENTATION[None], 2, axis=0).copy())
    records[:, FIELD_INDEX["noise"]] = torch.tensor([0.02, 0.04])
    records[:, FIELD_INDEX["seed_lo"]] = 99  # same seed: the same field, twice as strong
    residual = randomize_batch(image, records).float() - 128
    field = noise_field(noise_keys(records[:1]), (3, 32, 32))[0]
    for i, strength in enumerate((0.02, 0.04)):
        expected = (field * torch.tensor([1.0, 0.6, 1.0]).view(3, 1, 1) * strength * 255).round().clamp(-128, 127)
        difference = (residual[i] - expected).abs()  # float rounding may move a value sitting on .5
        assert float(difference.max()) <= 1 and float((difference == 0).float().mean()) > 0.99


def _augmented_by_key(world_size: int, batch_size: int, torch_seed: int) -> dict[object, torch.Tensor]:
    """Run a gpu_augmentation loader on the CPU device over every rank; each sample's image by its key."""
    from crumpets_lightning.data.augment.rng import MixtureRNG
    from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader
    from crumpets_lightning.data.workers.image import ClassificationWorker

    samples = [{"image": data, "label": i, "key": f"photo{i}"} for i, data in enumerate(photo_crops(6, (40, 48)))]
    rng = MixtureRNG(prob=1.0, noise_range=(0.02, 0.08), brightness_range=(-0.4, 0.4), contrast_range=(-0.5, 0.5),
                     blur_range=(0.01, 0.04), color_range=(-0.2, 0.2), rotation_sigma=5)  # fmt: skip
    torch.manual_seed(torch_seed)
    out: dict[object, torch.Tensor] = {}
    for rank in range(world_size):
        worker = ClassificationWorker(((3, 24, 24), np.uint8), ((1,), np.int64), image_rng=rng)
        loader = TorchTurboDataLoader(
            samples, batch_size, worker, nworkers=2, seed=7, shuffle=True, gpu_augmentation=True,
            rank=rank, world_size=world_size, drop_last=True,
        )  # fmt: skip
        try:
            for _, mini_batches in loader:
                for mini in mini_batches:
                    for key, image in zip(mini["key"], mini["image"]):
                        out.setdefault(key, image.clone())
        finally:
            loader.stop()
    return out


def test_one_rank_and_two_ranks_give_bitwise_equal_samples() -> None:
    one = _augmented_by_key(world_size=1, batch_size=4, torch_seed=0)
    two = _augmented_by_key(world_size=2, batch_size=3, torch_seed=99)
    common = sorted(set(one) & set(two))
    assert len(common) >= 3, (sorted(one), sorted(two))
    for key in common:
        assert torch.equal(one[key], two[key]), key
    assert not torch.equal(one[common[0]], one[common[1]])


def test_a_failing_kernel_warns_once_and_auto_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    from crumpets_lightning.data.augment import _triton_kernel, batched

    def broken(image: torch.Tensor, params: object) -> torch.Tensor:
        raise RuntimeError("no kernel image for this GPU")

    real_use_triton = batched._use_triton
    monkeypatch.setattr(batched, "_use_triton", lambda image, backend: backend != "torch")  # as on CUDA
    monkeypatch.setattr(_triton_kernel, "randomize_triton", broken)
    monkeypatch.setattr(_triton_kernel, "_DISABLED", None)
    image, records = _images(2), _records(2)
    expected = randomize_batch(image, records, backend="torch")
    with pytest.raises(RuntimeError, match="no kernel image"):
        randomize_batch(image, records, backend="triton")  # asked for explicitly: the error itself
    with pytest.warns(RuntimeWarning, match=r"fused Randomizer kernel failed \(RuntimeError: no kernel image"):
        assert torch.equal(randomize_batch(image, records), expected)
    assert not _triton_kernel.available()
    monkeypatch.setattr(batched, "_use_triton", real_use_triton)
    with pytest.raises(RuntimeError, match=r"fused kernel is not available \(RuntimeError: no kernel image"):
        randomize_batch(image, records, backend="triton")
