"""Dict metrics against numpy / scikit-learn references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import mean_squared_error, top_k_accuracy_score

from crumpets_lightning.modules.metrics import (
    AccuracyMetric,
    AverageMetric,
    CombinedMetric,
    ConfusionMatrix,
    MSELossMetric,
    MSEMetric,
    NoopMetric,
    NSSMetric,
)


def _batches(n_batches: int = 3, batch: int = 7, classes: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        scores = rng.normal(size=(batch, classes)).astype(np.float32)
        labels = rng.integers(0, classes, size=(batch, 1))
        yield scores, labels


@pytest.mark.parametrize("top_k", [1, 3])
def test_accuracy_matches_sklearn(top_k: int) -> None:
    metric = AccuracyMetric(top_k=top_k)
    all_scores, all_labels = [], []
    for scores, labels in _batches():
        metric.update({"output": torch.from_numpy(scores), "label": torch.from_numpy(labels).int()})
        all_scores.append(scores)
        all_labels.append(labels)
    expected = top_k_accuracy_score(
        np.concatenate(all_labels)[:, 0], np.concatenate(all_scores), k=top_k, labels=range(6)
    )
    assert metric.compute().item() == pytest.approx(expected)
    assert metric.metric_key == ("accuracy" if top_k == 1 else "top3_accuracy")
    assert metric.higher_is_better and not metric.is_differentiable and not metric.full_state_update


def test_accuracy_batch_of_one_and_flat_targets() -> None:
    metric = AccuracyMetric()
    metric.update({"output": torch.tensor([[0.1, 0.9]]), "label": torch.tensor([1])})
    metric.update({"output": torch.tensor([[0.1, 0.9]]), "label": torch.tensor([[0]])})
    assert metric.compute().item() == 0.5


def test_confusion_matrix_and_true_false_positives() -> None:
    rng = np.random.default_rng(1)
    metric = ConfusionMatrix(nclasses=4)
    targets, predictions = [], []
    for _ in range(2):
        scores = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
        target = rng.integers(0, 4, size=(2, 1, 3, 5))
        metric.update({"output": torch.from_numpy(scores), "target_image": torch.from_numpy(target)})
        targets.append(target.ravel())
        predictions.append(scores.argmax(1).ravel())
    expected = sk_confusion_matrix(np.concatenate(targets), np.concatenate(predictions), labels=range(4))
    np.testing.assert_array_equal(metric.compute().numpy(), expected)
    tfp = metric.get_true_false_positives().numpy()
    np.testing.assert_array_equal(tfp[:, 0], np.diag(expected))
    np.testing.assert_array_equal(tfp[:, 1], expected.sum(0) - np.diag(expected))
    np.testing.assert_array_equal(tfp[:, 2], expected.sum(1))


def test_mse_matches_sklearn_and_alias() -> None:
    assert MSEMetric is MSELossMetric
    rng = np.random.default_rng(2)
    outputs = [rng.normal(size=(3, 1, 4, 4)) for _ in range(2)]
    targets = [rng.normal(size=(3, 1, 4, 4)) for _ in range(2)]
    metric = MSELossMetric()
    for out, target in zip(outputs, targets):
        metric.update({"output": torch.from_numpy(out).float(), "target_image": torch.from_numpy(target).float()})
    expected = mean_squared_error(np.concatenate(targets).ravel(), np.concatenate(outputs).ravel())
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)
    assert metric.metric_key == "mse" and metric.higher_is_better is False


def test_average_metric_is_mean_over_all_values() -> None:
    metric = AverageMetric(output_key="score")
    metric.update({"score": torch.tensor([1.0, 2.0, 3.0])})
    metric.update({"score": torch.tensor([10.0])})
    assert metric.compute().item() == pytest.approx(4.0)


def test_nss_metric_any_channel_count() -> None:
    rng = np.random.default_rng(3)
    output = rng.normal(size=(3, 2, 5, 5)).astype(np.float32)
    target = (rng.random((3, 2, 5, 5)) > 0.8).astype(np.float32)
    target[2] = 0  # no fixations: not counted
    metric = NSSMetric()
    metric.update({"output": torch.from_numpy(output), "target_image": torch.from_numpy(target)})
    expected = np.mean([((o - o.mean()) / o.std())[t != 0].mean() for o, t in zip(output[:2], target[:2])])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-4)


def test_combined_metric_computes_dict_of_children() -> None:
    combined = CombinedMetric([AccuracyMetric(), AccuracyMetric(top_k=2)])
    sample = {"output": torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]]), "label": torch.tensor([[2], [0]])}
    combined.update(sample)
    values = combined.compute()
    assert set(values) == {"accuracy", "top2_accuracy"}
    assert values["accuracy"].item() == 0.5 and values["top2_accuracy"].item() == 1.0
    with pytest.raises(ValueError, match="metric_key 'accuracy'"):
        CombinedMetric([AccuracyMetric(), AccuracyMetric()])


def test_noop_metric() -> None:
    metric = NoopMetric()
    metric.update({"anything": 1})
    assert metric.compute() == {}


def test_argument_validation_messages() -> None:
    with pytest.raises(ValueError, match="Expected argument `top_k` to be a positive int but got 0"):
        AccuracyMetric(top_k=0)
    with pytest.raises(ValueError, match="`nclasses`"):
        ConfusionMatrix(nclasses=0)
    with pytest.raises(ValueError, match="nclasses=3"):
        ConfusionMatrix(nclasses=3).update({"output": torch.zeros(1, 4), "target_image": torch.zeros(1, 1).long()})
    with pytest.raises(KeyError, match="'label'"):
        AccuracyMetric().update({"output": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match="at most the number of classes"):
        AccuracyMetric(top_k=5).update({"output": torch.zeros(1, 4), "label": torch.zeros(1, 1).long()})


def test_reset_clears_state() -> None:
    metric = AccuracyMetric()
    metric.update({"output": torch.tensor([[0.0, 1.0]]), "label": torch.tensor([[1]])})
    metric.reset()
    metric.update({"output": torch.tensor([[0.0, 1.0]]), "label": torch.tensor([[0]])})
    assert metric.compute().item() == 0.0


@pytest.mark.parametrize(
    "metric",
    [AccuracyMetric(), AverageMetric(), ConfusionMatrix(nclasses=3), MSELossMetric(), NSSMetric(), NoopMetric()],
)
def test_crumpets_value_names_compute(metric) -> None:
    with pytest.raises(AttributeError, match=r"value\(\) is crumpets' API.*call compute\(\)"):
        metric.value()


def test_combined_metric_value_names_compute() -> None:
    with pytest.raises(AttributeError, match=r"CombinedMetric.value\(\).*compute\(\)"):
        CombinedMetric([AccuracyMetric()]).value()


def test_a_batch_of_zero_rows_adds_nothing() -> None:
    """Under DDP a rank's evaluation batch may be all padding: the module updates the metrics with zero rows."""
    rng = np.random.default_rng(3)
    full = {
        "scores": torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32)),
        "label": torch.from_numpy(rng.integers(0, 3, size=(4, 1))),
        "output": torch.from_numpy(rng.normal(size=(4, 3, 2, 2)).astype(np.float32)),
        "target_image": torch.from_numpy((rng.random((4, 3, 2, 2)) > 0.5).astype(np.float32)),
    }
    empty = {key: value[:0] for key, value in full.items()}
    factories = [
        lambda: AccuracyMetric(output_key="scores"),
        lambda: AverageMetric(),
        lambda: ConfusionMatrix(nclasses=3, output_key="scores", target_key="label"),
        lambda: MSELossMetric(),
        lambda: NSSMetric(),
    ]
    for factory in factories:
        metric, reference = factory(), factory()
        metric.update(full)
        metric.update(empty)
        reference.update(full)
        torch.testing.assert_close(metric.compute(), reference.compute(), msg=type(metric).__name__)
        only_empty = factory()
        only_empty.update(empty)
        assert torch.isfinite(only_empty.compute()).all()


def test_accuracy_rejects_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match=r"3 classes.*7 \(row 1\)"):
        AccuracyMetric().update({"output": torch.randn(2, 3), "label": torch.tensor([[0], [7]])})
    # a confusion matrix ignores labels outside its classes (e.g. a segmentation "void" label)
    matrix = ConfusionMatrix(nclasses=3, target_key="label")
    matrix.update({"output": torch.randn(2, 3), "label": torch.tensor([[0], [255]])})
    assert int(matrix.compute().sum()) == 1
