"""The metrics are right on a case worked out by hand, and agree with scikit-learn's
(the parts still hand-written: top-k, log loss) on random predictions."""

import numpy as np
import pytest
from sklearn import metrics as sk

from pipeline.evaluate.metrics import (
    classification_metrics,
    confusion_matrix,
    confusion_rows,
    most_confused,
    probability_metrics,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d", "e"]
    actual = rng.integers(0, 5, 200)
    predicted = np.where(
        rng.random(200) < 0.7, actual, rng.integers(0, 4, 200)
    )  # "e" rarely predicted
    result = classification_metrics(actual, predicted, classes)
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(actual, predicted))
    assert result["error_rate"] == pytest.approx(1 - sk.accuracy_score(actual, predicted))
    for ours, average in (("precision_macro", "macro"),):
        assert result[ours] == pytest.approx(
            sk.precision_score(actual, predicted, average=average, zero_division=0)
        )
    assert result["recall_macro"] == pytest.approx(
        sk.recall_score(actual, predicted, average="macro", zero_division=0)
    )
    assert result["f1_macro"] == pytest.approx(
        sk.f1_score(actual, predicted, average="macro", zero_division=0)
    )
    per_class_f1 = sk.f1_score(actual, predicted, average=None, labels=range(5), zero_division=0)
    assert [result["per_class"][c]["f1"] for c in classes] == pytest.approx(per_class_f1)
    np.testing.assert_array_equal(
        confusion_matrix(actual, predicted, 5),
        sk.confusion_matrix(actual, predicted, labels=range(5)),
    )


def test_a_class_never_predicted_scores_zero_not_nan():
    result = classification_metrics(np.array([0, 1, 1]), np.array([0, 0, 0]), ["x", "y"])
    assert result["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["accuracy"] == pytest.approx(1 / 3)


def test_confusion_rows_name_the_classes():
    assert confusion_rows(np.array([1]), np.array([0]), ["cat", "dog"]) == [
        {"actual": "dog", "predicted": "cat"}
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_balanced_top_k_and_log_loss_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, k = 300, 6
    actual = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[actual] * (rng.random(n) < 0.6)[:, None]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    result = classification_metrics(actual, predicted, [str(i) for i in range(k)])
    assert result["balanced_accuracy"] == pytest.approx(
        sk.balanced_accuracy_score(actual, predicted)
    )
    for name in ("precision", "recall", "f1"):
        score = getattr(sk, f"{name}_score")(actual, predicted, average="weighted", zero_division=0)
        assert result[f"{name}_weighted"] == pytest.approx(score), name
    probabilistic = probability_metrics(proba, actual, top_k=3)
    assert probabilistic["log_loss"] == pytest.approx(sk.log_loss(actual, proba, labels=range(k)))
    assert probabilistic["top_3_accuracy"] == pytest.approx(
        sk.top_k_accuracy_score(actual, proba, k=3, labels=range(k))
    )


def test_most_confused_counts_off_diagonal_pairs_most_first():
    actual = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([1, 1, 0, 0, 1, 1, 0, 2])
    assert most_confused(actual, predicted, ["a", "b", "c"]) == [
        {"actual": "a", "predicted": "b", "count": 2},
        {"actual": "b", "predicted": "a", "count": 1},
        {"actual": "c", "predicted": "a", "count": 1},
        {"actual": "c", "predicted": "b", "count": 1},
    ]
    assert most_confused(actual, predicted, ["a", "b", "c"], min_count=2) == [
        {"actual": "a", "predicted": "b", "count": 2}
    ]


def test_a_case_worked_out_by_hand():
    # confusion (rows actual a, b, c; columns predicted): [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    actual = np.array([0, 0, 1, 1, 2])
    proba = np.array(
        [[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.5, 0.3, 0.2]]
    )
    predicted = proba.argmax(axis=1)  # 0, 1, 1, 1, 0
    result = classification_metrics(actual, predicted, ["a", "b", "c"])
    precision, recall, f1 = [1 / 2, 2 / 3, 0.0], [1 / 2, 1.0, 0.0], [1 / 2, 4 / 5, 0.0]
    expected = {
        "accuracy": 3 / 5,
        "error_rate": 2 / 5,
        "balanced_accuracy": 1 / 2,
        "precision_macro": sum(precision) / 3,
        "recall_macro": sum(recall) / 3,
        "f1_macro": sum(f1) / 3,
        "precision_weighted": (2 * precision[0] + 2 * precision[1]) / 5,
        "recall_weighted": (2 * recall[0] + 2 * recall[1]) / 5,
        "f1_weighted": (2 * f1[0] + 2 * f1[1]) / 5,
        "images": 5,
    }
    assert {k: v for k, v in result.items() if k != "per_class"} == pytest.approx(expected)
    assert result["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 4 / 5, "support": 2}
    )
    np.testing.assert_array_equal(
        confusion_matrix(actual, predicted, 3), [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    )
    probabilistic = probability_metrics(proba, actual, top_k=2)
    assert probabilistic == pytest.approx(
        {"log_loss": -np.log([0.7, 0.4, 0.8, 0.6, 0.2]).mean(), "top_2_accuracy": 4 / 5}
    )


def test_top_k_ties_go_to_the_lower_class_as_argmax_does():
    proba = np.array([[0.25, 0.5, 0.25], [0.5, 0.5, 0.0]], dtype=np.float32)
    assert probability_metrics(proba, np.array([0, 0]), top_k=2)["top_2_accuracy"] == 1.0
    assert probability_metrics(proba, np.array([2, 1]), top_k=2)["top_2_accuracy"] == 0.5
    top_1 = probability_metrics(proba, np.array([1, 1]), top_k=1)["top_1_accuracy"]
    accuracy = classification_metrics(np.array([1, 1]), proba.argmax(axis=1), ["a", "b", "c"])
    assert top_1 == accuracy["accuracy"] == 0.5


def test_top_k_covering_every_class_is_one_and_the_key_names_the_k_used():
    proba = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert probability_metrics(proba, np.array([1, 1]), top_k=3) == pytest.approx(
        {"log_loss": -np.log([0.1, 0.2]).mean(), "top_2_accuracy": 1.0}
    )
