"""Dict losses against torch's own losses and a numpy NSS reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crumpets_lightning.modules.losses import (
    CrossEntropyLoss,
    L1Loss,
    LabelSmoothing,
    MSELoss,
    NLLLoss,
    NSSLoss,
    out_of_range_labels,
)


def _logits(batch: int, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("column", [True, False])
def test_cross_entropy_and_nll_accept_crumpets_labels(batch: int, dtype: torch.dtype, column: bool) -> None:
    logits = _logits(batch)
    labels = torch.arange(batch) % 5
    target = (labels.view(-1, 1) if column else labels).to(dtype)
    expected = F.cross_entropy(logits, labels)
    got = CrossEntropyLoss()({"output": logits, "label": target})
    assert got.shape == () and torch.allclose(got, expected)
    nll = NLLLoss()({"output": logits.log_softmax(1), "label": target})
    assert torch.allclose(nll, expected)


def test_cross_entropy_options_are_passed_on() -> None:
    logits = _logits(6)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    loss = CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.1, output_key="o", target_key="t")
    expected = F.cross_entropy(logits, labels, weight=weight, ignore_index=1, label_smoothing=0.1)
    assert torch.allclose(loss({"o": logits, "t": labels.view(-1, 1)}), expected)
    none = CrossEntropyLoss(reduction="none")({"output": logits, "label": labels.view(-1, 1)})
    assert none.shape == (6,)


def test_dense_targets_with_channel_dimension() -> None:
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4), dtype=torch.int32)
    expected = F.cross_entropy(logits, target[:, 0].long())
    assert torch.allclose(
        CrossEntropyLoss(target_key="target_image")({"output": logits, "target_image": target}), expected
    )


def test_label_smoothing_matches_torch_and_log_probabilities() -> None:
    logits = _logits(8, 7)
    labels = torch.randint(0, 7, (8, 1))
    expected = F.cross_entropy(logits, labels[:, 0], label_smoothing=0.2)
    assert torch.allclose(LabelSmoothing(0.2)({"output": logits, "label": labels}), expected)
    from_logp = LabelSmoothing(0.2, from_logits=False)({"output": logits.log_softmax(1), "label": labels})
    assert torch.allclose(from_logp, expected)
    single = LabelSmoothing(0.1)({"output": logits[:1], "label": labels[:1]})
    assert torch.allclose(single, F.cross_entropy(logits[:1], labels[:1, 0], label_smoothing=0.1))


@pytest.mark.parametrize("cls, fn", [(L1Loss, F.l1_loss), (MSELoss, F.mse_loss)])
def test_regression_losses(cls: type, fn) -> None:
    output = torch.randn(3, 2, 4)
    target = torch.randn(3, 2, 4)
    assert torch.allclose(cls()({"output": output, "label": target}), fn(output, target))
    assert torch.allclose(
        cls(reduction="sum")({"output": output, "label": target}), fn(output, target, reduction="sum")
    )
    with pytest.raises(ValueError, match="differ"):
        cls()({"output": output, "label": torch.randn(3, 5)})


def _nss_reference(output: np.ndarray, target: np.ndarray) -> float:
    values = []
    for out, fix in zip(output, target):
        normalised = (out - out.mean()) / out.std()
        if fix.any():
            values.append(normalised[fix != 0].mean())
    return float(np.mean(values))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_nss_loss_matches_numpy_reference(channels: int, batch: int) -> None:
    rng = np.random.default_rng(channels * 10 + batch)
    output = rng.normal(size=(batch, channels, 6, 5)).astype(np.float32)
    target = (rng.random((batch, channels, 6, 5)) > 0.7).astype(np.uint8)
    target[:, 0, 0, 0] = 1
    loss = NSSLoss()({"output": torch.from_numpy(output), "target_image": torch.from_numpy(target)})
    assert loss.item() == pytest.approx(-_nss_reference(output, target), rel=1e-4)


def test_nss_loss_skips_samples_without_fixations_and_has_gradient() -> None:
    output = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 1, 1] = 1
    loss = NSSLoss()({"output": output, "target_image": target})
    expected = -_nss_reference(output[:1].detach().numpy(), target[:1].numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert output.grad is not None and output.grad[1].abs().sum() == 0


def test_missing_key_names_key_and_present_keys() -> None:
    with pytest.raises(KeyError, match=r"'label'.*\['image', 'output'\]"):
        CrossEntropyLoss()({"output": _logits(2), "image": torch.zeros(1)})


def test_shape_mismatch_and_float_targets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"target of shape \(3,\)"):
        CrossEntropyLoss()({"output": _logits(2), "label": torch.tensor([0, 1, 2])})
    with pytest.raises(ValueError, match="integers"):
        CrossEntropyLoss()({"output": _logits(2), "label": torch.tensor([0.0, 1.0])})
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="same batch size"):
        NSSLoss()({"output": torch.randn(2, 1, 4, 4), "target_image": torch.ones(2, 1, 3, 3)})


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), NLLLoss(), LabelSmoothing(0.1)])
def test_a_label_outside_the_classes_names_the_labels_and_the_class_count(loss: torch.nn.Module) -> None:
    labels = torch.tensor([[1], [12], [0], [-1]])
    with pytest.raises(ValueError, match=r"5 classes.*12 \(row 1\); -1 \(row 3\).*\[0, 5\)") as error:
        loss({"output": _logits(4), "label": labels})
    assert "Target" not in str(error.value)  # not torch's message: ours, raised before torch sees the labels


def test_ignore_index_is_allowed_outside_the_classes_and_dense_targets_are_checked() -> None:
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4))
    target[1, 0, 2, 2] = 255
    expected = F.cross_entropy(logits, target[:, 0], ignore_index=255)
    got = CrossEntropyLoss(ignore_index=255, target_key="t")({"output": logits, "t": target})
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match=r"255 \(row 1\).*or the ignore_index -100"):
        CrossEntropyLoss(target_key="t")({"output": logits, "t": target})


def test_out_of_range_labels_mask() -> None:
    target = torch.tensor([0, 4, 5, -1, -100], dtype=torch.int32)
    assert out_of_range_labels(target, 5).tolist() == [False, False, True, True, True]
    assert out_of_range_labels(target, 5, ignore_index=-100).tolist() == [False, False, True, True, False]
    assert not out_of_range_labels(torch.tensor([0, 1, 2], dtype=torch.uint8), 3).any()
    assert out_of_range_labels(torch.zeros(0, dtype=torch.long), 3).shape == (0,)
