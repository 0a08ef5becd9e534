"""Classification metrics from predictions, computed by scikit-learn: accuracy, error rate,
balanced accuracy, precision/recall/F1 (per class, macro, weighted) and the confusion matrix.

Hand-written here only what scikit-learn lacks: each image's loss (top losses need it per
image; sklearn's log_loss only sums or averages, so the log loss is their mean), top-k
accuracy with argmax's tie-break, fastai's most_confused, and the rows of DVC's confusion plot.
"""

import numpy as np
from sklearn import metrics as sk


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j] = images of class i predicted as class j; every class has a row and a
    column, also one absent from both."""
    return sk.confusion_matrix(actual, predicted, labels=range(n_classes))


def classification_metrics(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """accuracy, error_rate, balanced accuracy and macro/weighted precision/recall/F1, plus
    precision/recall/F1/support per class.

    A class never predicted has precision 0 (and one absent from `actual` recall 0):
    zero_division=0. Macro averages count every class of `classes`, present or not.
    """
    labels = range(len(classes))
    scores = {
        average: sk.precision_recall_fscore_support(
            actual, predicted, labels=labels, average=average, zero_division=0
        )
        for average in (None, "macro", "weighted")
    }
    accuracy = float(sk.accuracy_score(actual, predicted))
    result = {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        # Mean recall over the classes that occur: accuracy that every class counts equally in.
        # This is sklearn's balanced_accuracy_score, without its warning when a class absent
        # from `actual` is predicted (a small valid split may lack a class).
        "balanced_accuracy": float(
            sk.recall_score(actual, predicted, labels=np.unique(actual), average="macro")
        ),
        "images": len(actual),
    }
    for average in ("macro", "weighted"):
        for name, value in zip(("precision", "recall", "f1"), scores[average][:3], strict=True):
            result[f"{name}_{average}"] = float(value)
    precision, recall, f1, support = scores[None]
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    return result


def confusion_rows(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict]:
    """One {actual, predicted} row per image: the input of DVC's confusion-matrix plot."""
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(actual, predicted, strict=True)
    ]


def probability_metrics(proba: np.ndarray, actual: np.ndarray, top_k: int) -> dict:
    """Log loss and top-k accuracy, from class probabilities (N x classes)."""
    k = min(top_k, proba.shape[1])
    return {
        # The mean of the per-image losses that top losses show, so the two always agree.
        # Not sklearn's log_loss: it clips at the eps of the probabilities' dtype, which for
        # torch's float32 caps a confidently wrong image's loss at 15.9 instead of 34.5
        # (tests/test_metrics.py checks that the two agree on float64 probabilities).
        "log_loss": float(image_losses(proba, actual).mean()),
        f"top_{k}_accuracy": top_k_accuracy(proba, actual, k),
    }


def top_k_accuracy(proba: np.ndarray, actual: np.ndarray, k: int) -> float:
    """Share of images whose class is among the k most probable; ties go to the lower class
    index, as argmax's do, so top-1 accuracy is the accuracy.

    Not sklearn's top_k_accuracy_score: it breaks ties toward the higher index (ties happen
    when a confident model's small float32 probabilities underflow to 0), and it refuses a
    two-column score matrix when there are two classes.
    """
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float((top == actual[:, None]).any(axis=1).mean())


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


def multilabel_metrics(
    actual: np.ndarray, proba: np.ndarray, labels: list[str], threshold: float
) -> dict:
    """Several labels per image (actual: N x labels of 0/1; proba: their probabilities):
    fastai's accuracy_multi (the share of image-label pairs right at the threshold, i.e.
    1 - hamming loss), precision/recall/F1 averaged over images (samples), labels (macro) and
    pairs (micro), ROC-AUC per label, and the mean binary cross-entropy.

    An image with no label that is predicted to have none scores 1 (zero_division=1 for the
    samples average); a label never predicted has precision 0 (zero_division=0). ROC-AUC is
    left out for a label that is on (or off) for every image: it is undefined there.
    """
    actual = actual.astype(int)
    predicted = (proba >= threshold).astype(int)
    result = {
        "accuracy_multi": float((predicted == actual).mean()),
        "hamming_loss": float(sk.hamming_loss(actual, predicted)),
        "exact_match": float(sk.accuracy_score(actual, predicted)),
        "threshold": float(threshold),
        "images": len(actual),
    }
    for average, zero_division in (("samples", 1), ("macro", 0), ("micro", 0)):
        scores = sk.precision_recall_fscore_support(
            actual, predicted, average=average, zero_division=zero_division
        )
        for name, value in zip(("precision", "recall", "f1"), scores[:3], strict=True):
            result[f"{name}_{average}"] = float(value)
    auc = per_label_auc(actual, proba)
    if defined := [v for v in auc if v is not None]:
        result["roc_auc_macro"] = float(np.mean(defined))
    result["log_loss"] = float(binary_losses(proba, actual).mean())
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        actual, predicted, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        | ({"roc_auc": a} if a is not None else {})
        for name, p, r, f, s, a in zip(labels, precision, recall, f1, support, auc, strict=True)
    }
    return result


def per_label_auc(actual: np.ndarray, proba: np.ndarray) -> list[float | None]:
    return [
        float(sk.roc_auc_score(actual[:, j], proba[:, j])) if len(set(actual[:, j])) == 2 else None
        for j in range(actual.shape[1])
    ]


def binary_losses(proba: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each image's binary cross-entropy, the mean over its labels (probabilities clipped at
    1e-15): what training minimizes, per image, for top losses."""
    p = np.clip(proba.astype(np.float64), 1e-15, 1 - 1e-15)  # float32 would round 1 - 1e-15 to 1
    return -(actual * np.log(p) + (1 - actual) * np.log(1 - p)).mean(axis=1)


def threshold_curve(actual: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    """F1 (samples) and accuracy_multi at each threshold: fastai chooses the threshold by
    plotting such a curve on the validation set."""
    actual = actual.astype(int)
    rows = []
    for threshold in thresholds:
        predicted = (proba >= threshold).astype(int)
        f1 = sk.f1_score(actual, predicted, average="samples", zero_division=1)
        accuracy = float((predicted == actual).mean())
        rows.append(
            {
                "threshold": round(float(threshold), 4),
                "f1_samples": float(f1),
                "accuracy_multi": accuracy,
            }
        )
    return rows


def regression_metrics(actual: np.ndarray, predicted: np.ndarray, targets: list[str]) -> dict:
    """MSE, RMSE, MAE and R² per target and over all of them (the mean over targets,
    scikit-learn's multioutput="uniform_average"), in the targets' units."""
    per_target = {}
    for j, name in enumerate(targets):
        mse = float(sk.mean_squared_error(actual[:, j], predicted[:, j]))
        per_target[name] = {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(sk.mean_absolute_error(actual[:, j], predicted[:, j])),
            "r2": float(sk.r2_score(actual[:, j], predicted[:, j])),
        }
    overall = {
        metric: float(np.mean([values[metric] for values in per_target.values()]))
        for metric in ("mse", "rmse", "mae", "r2")
    }
    return {**overall, "images": len(actual), "per_class": per_target}
