"""Scoring a trained model on one split: predictions, metrics, and the confusion matrix."""

import re
from dataclasses import dataclass

import numpy as np

from pipeline.core.config import AugmentConfig, EvalConfig
from pipeline.core.paths import ModelFiles, Paths
from pipeline.data.split import SplitImages, load_split_images
from pipeline.evaluate.metrics import classification_metrics, image_losses, probability_metrics
from pipeline.model.device import select_device
from pipeline.model.inference import TTA, Classifier


@dataclass(frozen=True)
class Scored:
    split: str
    data: SplitImages
    proba: np.ndarray  # N x classes
    metrics: dict

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def actual(self) -> np.ndarray:
        return self.data.targets

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def score_split(
    paths: Paths, split: str, cfg: EvalConfig, augment: AugmentConfig | None = None
) -> Scored:
    """Predictions and metrics on a split; with eval.tta > 0 passes of test-time augmentation
    (the training augmentation, given as augment)."""
    classifier = Classifier.load(ModelFiles(paths.model_dir), device=str(select_device("auto")))
    data = load_split_images(paths, split)
    tta = TTA(augment, cfg.tta) if cfg.tta and augment is not None else None
    proba = classifier.predict_proba(data.images, cfg.batch_size, tta)
    metrics = classification_metrics(data.targets, proba.argmax(axis=1), data.classes)
    metrics.update(probability_metrics(proba, data.targets, cfg.top_k))
    return Scored(split, data, proba, metrics)


def top_losses(scored: Scored, k: int) -> list[dict]:
    """fastai's top_losses: the k images the model is most wrong about, worst first."""
    losses = image_losses(scored.proba, scored.actual)
    worst = np.argsort(-losses, kind="stable")[:k]
    predicted = scored.predicted  # an argmax over all images: once, not once per row
    return [
        {
            "id": scored.data.ids[i],
            "actual": scored.classes[scored.actual[i]],
            "predicted": scored.classes[predicted[i]],
            "loss": float(losses[i]),
            "probability": float(scored.proba[i].max()),
            "index": int(i),
        }
        for i in worst
    ]


def headline(metrics: dict) -> dict:
    """The metrics without the per-class breakdown: what DVC shows as columns."""
    return {k: v for k, v in metrics.items() if k != "per_class"}


def per_class_rows(metrics: dict) -> list[dict]:
    return [{"class": name, **values} for name, values in metrics["per_class"].items()]


def mlflow_metrics(scored: Scored) -> dict[str, float]:
    """Flat metric names for MLflow: valid_accuracy, test_f1_macro, ..., and per class
    valid_per_class/f1_7: a chart section of their own in the MLflow UI, out of the way of
    the curves and the headline numbers."""
    flat = {
        f"{scored.split}_{name}": value
        for name, value in scored.metrics.items()
        if isinstance(value, float)
    }
    for name, per_class in scored.metrics["per_class"].items():
        for metric in ("precision", "recall", "f1"):
            # characters MLflow accepts in a name, less "/": it would start a chart section
            safe = re.sub(r"[^\w\-. ]", "_", name)
            flat[f"{scored.split}_per_class/{metric}_{safe}"] = per_class[metric]
    return flat


def describe(scored: Scored) -> str:
    m = scored.metrics
    return f"{scored.split} accuracy {m['accuracy']:.4f} (error rate {m['error_rate']:.4f}) on {m['images']} images"
