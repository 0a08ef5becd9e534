"""Classification metrics from predictions: accuracy, error rate, precision/recall/F1, confusion.

Pure numpy, so they can be checked against scikit-learn and reused by every stage.
"""

import numpy as np


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j] = images of class i predicted as class j."""
    return np.bincount(actual * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def classification_metrics(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """accuracy, error_rate and macro precision/recall/F1, plus the same per class.

    A class never predicted has precision 0 (and one absent from `actual` recall 0), as
    scikit-learn does with zero_division=0.
    """
    counts = confusion_matrix(actual, predicted, len(classes))
    hits = np.diag(counts).astype(float)
    predicted_per_class = counts.sum(axis=0)
    actual_per_class = counts.sum(axis=1)
    precision = np.divide(
        hits, predicted_per_class, out=np.zeros_like(hits), where=predicted_per_class > 0
    )
    recall = np.divide(hits, actual_per_class, out=np.zeros_like(hits), where=actual_per_class > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(hits), where=denominator > 0
    )
    accuracy = float(hits.sum() / max(len(actual), 1))
    weights = actual_per_class / max(actual_per_class.sum(), 1)
    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        # mean recall over the classes that occur: accuracy that every class counts equally in
        "balanced_accuracy": float(recall[actual_per_class > 0].mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float(precision @ weights),
        "recall_weighted": float(recall @ weights),
        "f1_weighted": float(f1 @ weights),
        "images": len(actual),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(
                classes, precision, recall, f1, actual_per_class, strict=True
            )
        },
    }


def confusion_rows(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict]:
    """One {actual, predicted} row per image: the input of DVC's confusion-matrix plot."""
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(actual, predicted, strict=True)
    ]


def probability_metrics(proba: np.ndarray, actual: np.ndarray, top_k: int) -> dict:
    """Log loss and top-k accuracy, from class probabilities (N x classes)."""
    k = min(top_k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return {
        "log_loss": float(image_losses(proba, actual).mean()),
        f"top_{k}_accuracy": float((top == actual[:, None]).any(axis=1).mean()),
    }


def image_losses(proba: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each image's cross-entropy: -log p(true class), probabilities clipped at 1e-15."""
    return -np.log(np.clip(proba[np.arange(len(actual)), actual], 1e-15, 1.0))


def most_confused(
    actual: np.ndarray, predicted: np.ndarray, classes: list[str], min_count: int = 1
) -> list[dict]:
    """fastai's most_confused: (actual, predicted, count) off the diagonal, most frequent first."""
    counts = confusion_matrix(actual, predicted, len(classes))
    np.fill_diagonal(counts, 0)
    pairs = [(counts[i, j], i, j) for i, j in zip(*np.nonzero(counts >= min_count), strict=True)]
    return [
        {"actual": classes[i], "predicted": classes[j], "count": int(n)}
        for n, i, j in sorted(pairs, key=lambda pair: (-pair[0], pair[1], pair[2]))
    ]
