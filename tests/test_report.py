"""Confusion matrix, per-class metrics and the most confident mistakes, on hand-made examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.network import init_params, logits
from mlp_cli.reports.confusion import build_report, class_metrics, confident_mistakes, confusion_matrix


def test_confusion_rows_are_true_classes_and_columns_predictions() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    C = confusion_matrix(y, predicted, classes=3)
    assert C.tolist() == [[1, 2, 0], [0, 1, 1], [0, 0, 1]]
    assert C.dtype == np.int64 and C.sum() == len(y)


def test_confusion_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.array([0, 1]), np.array([0]), classes=2)


def test_class_metrics_from_a_known_matrix() -> None:
    C = np.array([[1, 2, 0], [0, 1, 1], [0, 0, 1]])  # n = 6
    m0, m1, m2 = class_metrics(C)
    assert (m0.support, m0.predicted, m0.correct) == (3, 1, 1)
    assert m0.precision == 1.0 and m0.recall == pytest.approx(1 / 3)
    assert m0.f1 == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert m0.accuracy == pytest.approx((1 + 3) / 6)  # TP 1 + TN 3 (rows 1,2 without column 0)
    assert m1.precision == pytest.approx(1 / 3) and m1.recall == pytest.approx(1 / 2)
    assert m1.accuracy == pytest.approx((1 + 2) / 6)  # TN: (0 -> 0) and (2 -> 2)
    assert m2.precision == pytest.approx(1 / 2) and m2.recall == 1.0


def test_undefined_precision_and_recall_are_none_not_nan() -> None:
    C = np.array([[2, 0, 0], [1, 0, 0], [0, 0, 0]])  # class 1 never predicted, class 2 absent
    metrics = class_metrics(C)
    assert metrics[1].precision is None and metrics[1].recall == 0.0 and metrics[1].f1 is None
    assert metrics[2].recall is None and metrics[2].precision is None
    json.dumps([m.to_dict() for m in metrics], allow_nan=False)  # JSON-safe


def test_confident_mistakes_are_the_surest_wrong_predictions_first() -> None:
    P = np.array([
        [0.9, 0.1, 0.0],  # label 0: right
        [0.6, 0.4, 0.0],  # label 1: wrong, 0.6
        [0.05, 0.05, 0.9],  # label 0: wrong, 0.9
        [0.2, 0.7, 0.1],  # label 2: wrong, 0.7
    ])
    y = np.array([0, 1, 0, 2])
    images = np.arange(4 * 28 * 28, dtype=np.uint32).reshape(4, 28, 28) % 256
    found = confident_mistakes(P, y, 2, images)
    assert [m.index for m in found] == [2, 3]
    assert (found[0].label, found[0].prediction) == (0, 2)
    assert found[0].probability == pytest.approx(0.9) and found[0].label_probability == pytest.approx(0.05)
    np.testing.assert_array_equal(found[1].image, images[3])
    assert [m.index for m in confident_mistakes(P, y, 10)] == [2, 3, 1]  # fewer than asked
    assert confident_mistakes(P, y, 0) == ()


@pytest.fixture
def problem() -> tuple:
    rng = np.random.default_rng(3)
    params = init_params(20, rng, "xavier", "float32")
    X = rng.standard_normal((257, 784)).astype(np.float32)
    y = rng.integers(0, 10, 257)
    return params, X, y


def test_report_agrees_with_the_training_metrics(problem: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    params, X, y = problem
    result = build_report(params, X, y, "test", errors=5)
    loss, accuracy = loss_and_accuracy(params, X, y)
    assert result.examples == 257 and result.split == "test"
    assert (result.loss, result.accuracy) == (loss, accuracy)  # one evaluation path, not a second one
    assert result.confusion.sum() == 257
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / 257)
    assert [c.support for c in result.per_class] == np.bincount(y, minlength=10).tolist()
    assert len(result.mistakes) == 5
    probabilities = [m.probability for m in result.mistakes]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(m.label != m.prediction for m in result.mistakes)


def test_the_evaluation_hands_out_the_scores_it_judged(problem: tuple) -> None:
    params, X, y = problem
    scores = np.empty((len(y), 10))
    loss, accuracy = loss_and_accuracy(params, X, y, block=100, scores=scores)  # the last block partial
    Z2 = logits(params, X).astype(np.float64)
    np.testing.assert_allclose(scores, Z2 - Z2.max(axis=1, keepdims=True), atol=1e-5)
    assert scores.max(axis=1).tolist() == [0.0] * len(y)
    assert accuracy == np.mean(scores.argmax(axis=1) == y)
    assert loss == pytest.approx(loss_and_accuracy(params, X, y)[0], rel=1e-6)  # blocks sum in float32


def test_report_to_dict_is_plain_json(problem: tuple) -> None:
    params, X, y = problem
    data = json.loads(json.dumps(build_report(params, X, y, "dev", errors=2).to_dict(), allow_nan=False))
    assert set(data) == {"split", "examples", "loss", "accuracy", "per_class", "confusion", "errors"}
    assert len(data["confusion"]) == 10 and all(len(row) == 10 for row in data["confusion"])
    assert len(data["per_class"]) == 10 and len(data["errors"]) == 2
    assert set(data["errors"][0]) == {"index", "label", "prediction", "probability", "label_probability"}
