"""Normalize and Unpacker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crumpets_lightning.modules.utils import Normalize, Unpacker


def test_normalize_uint8_matches_numpy_and_does_not_mutate() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(2, 3, 4, 5), dtype=np.uint8)
    image = torch.from_numpy(array.copy())
    out = Normalize()(image)
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out.numpy(), (array / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32 and torch.equal(image, torch.from_numpy(array))


def test_normalize_float_input_keeps_dtype_and_custom_stats() -> None:
    image = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    original = image.clone()
    out = Normalize(mean=(0.5,), std=(0.25,), scale=1.0)(image)
    assert out.dtype == torch.float64 and torch.equal(image, original)
    torch.testing.assert_close(out, (original - 0.5) / 0.25)


def test_normalize_errors() -> None:
    with pytest.raises(ValueError, match="`std`"):
        Normalize(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="3 channel"):
        Normalize()(torch.zeros(1, 4, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="same length"):
        Normalize(mean=(0.1, 0.2), std=(0.1, 0.2, 0.3))


def test_gray_images_use_the_average_of_rgb_statistics() -> None:
    array = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 15
    out = Normalize()(torch.from_numpy(array))
    mean, std = np.mean([0.485, 0.456, 0.406]), np.mean([0.229, 0.224, 0.225])
    assert out.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(out.numpy(), (array / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)


def test_normalize_moves_with_module_and_is_not_in_state_dict() -> None:
    assert Normalize().state_dict() == {}


def test_unpacker_returns_new_dict_with_output() -> None:
    net = nn.Linear(4, 2)
    sample = {"x": torch.randn(3, 4), "label": torch.zeros(3, 1)}
    out = Unpacker(net, input_key="x", output_key="y")(sample)
    assert set(sample) == {"x", "label"} and set(out) == {"x", "label", "y"}
    torch.testing.assert_close(out["y"], net(sample["x"]))
    with pytest.raises(KeyError, match="'image'"):
        Unpacker(net)(sample)


def test_unpacker_hands_uint8_images_to_the_net_as_float_like_crumpets() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    sample = {"image": image, "label": torch.zeros(2, 1, dtype=torch.long)}
    out = Unpacker(conv)(sample)
    # crumpets' .float(): values stay 0..255, no scaling; the sample's own image stays uint8
    torch.testing.assert_close(out["output"], conv(image.float()))
    assert sample["image"].dtype == torch.uint8 and out["image"] is image
    with pytest.raises(RuntimeError, match=r"(Byte|unsigned char|same)"):
        Unpacker(conv, float_input=False)(sample)


def test_unpacker_passes_other_dtypes_unchanged() -> None:
    embedding = nn.Embedding(10, 2)
    tokens = torch.tensor([[1, 2], [3, 4]])
    out = Unpacker(embedding, input_key="tokens")({"tokens": tokens})
    torch.testing.assert_close(out["output"], embedding(tokens))
    double = torch.randn(2, 4, dtype=torch.float64)
    linear = nn.Linear(4, 2).double()
    torch.testing.assert_close(Unpacker(linear, input_key="x")({"x": double})["output"], linear(double))


def test_unpacker_takes_crumpets_positional_order_output_then_input_key() -> None:
    sample = {"x": torch.ones(2, 3)}
    out = Unpacker(nn.Identity(), "y", "x")(sample)
    assert torch.equal(out["y"], sample["x"]) and set(out) == {"x", "y"}
