"""Scoring a trained model on one split: predictions, metrics, and the confusion matrix."""

import re
from dataclasses import dataclass

import numpy as np

from pipeline.inference import Classifier
from pipeline.metrics import classification_metrics
from pipeline.paths import ModelFiles, Paths
from pipeline.split import load_split_images


@dataclass(frozen=True)
class Scored:
    split: str
    classes: list[str]
    actual: np.ndarray
    predicted: np.ndarray
    metrics: dict


def log_loss(proba: np.ndarray, actual: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-15)."""
    picked = proba[np.arange(len(actual)), actual]
    return float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())


def score_split(paths: Paths, split: str, batch_size: int) -> Scored:
    classifier = Classifier.load(ModelFiles(paths.model_dir))
    data = load_split_images(paths, split)
    proba = classifier.predict_proba(data.images, batch_size)
    predicted = proba.argmax(axis=1)
    metrics = classification_metrics(data.targets, predicted, data.classes)
    metrics["loss"] = log_loss(proba, data.targets)
    return Scored(split, data.classes, data.targets, predicted, metrics)


def headline(metrics: dict) -> dict:
    """The metrics without the per-class breakdown: what DVC shows as columns."""
    return {k: v for k, v in metrics.items() if k != "per_class"}


def per_class_rows(metrics: dict) -> list[dict]:
    return [{"class": name, **values} for name, values in metrics["per_class"].items()]


def mlflow_metrics(scored: Scored) -> dict[str, float]:
    """Flat metric names for MLflow: valid_accuracy, test_f1_macro, valid_f1_class_7, ..."""
    flat = {
        f"{scored.split}_{name}": value
        for name, value in scored.metrics.items()
        if isinstance(value, float)
    }
    for name, per_class in scored.metrics["per_class"].items():
        for metric in ("precision", "recall", "f1"):
            safe = re.sub(r"[^\w\-. /]", "_", name)  # characters MLflow accepts in a name
            flat[f"{scored.split}_{metric}_class_{safe}"] = per_class[metric]
    return flat


def describe(scored: Scored) -> str:
    m = scored.metrics
    return f"{scored.split} accuracy {m['accuracy']:.4f} (error rate {m['error_rate']:.4f}) on {m['images']} images"
