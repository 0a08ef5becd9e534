"""Scoring a trained model on one split: its outputs and the task's metrics
(pipeline.tasks.reports says what they are)."""

from dataclasses import dataclass

import numpy as np

from pipeline.core.config import AugmentConfig, EvalConfig
from pipeline.core.paths import ModelFiles, Paths
from pipeline.data.split import SplitImages, load_split_images
from pipeline.model.device import select_device
from pipeline.model.inference import TTA, Classifier
from pipeline.model.networks import ModelSpec
from pipeline.tasks.kinds import task_kind
from pipeline.tasks.reports import Report, task_report


@dataclass(frozen=True)
class Scored:
    split: str
    data: SplitImages
    outputs: np.ndarray  # N x outputs: class or label probabilities, or target values
    metrics: dict
    spec: ModelSpec

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def actual(self) -> np.ndarray:
        return self.data.targets

    @property
    def report(self) -> Report:
        return task_report(self.spec.task)


def score_split(
    paths: Paths, split: str, cfg: EvalConfig, augment: AugmentConfig | None = None
) -> Scored:
    """Predictions and metrics on a split; with eval.tta > 0 passes of test-time augmentation
    (the training augmentation, given as augment)."""
    classifier = Classifier.load(ModelFiles(paths.model_dir), device=str(select_device("auto")))
    spec = classifier.spec
    data = load_split_images(paths, split, task_kind(spec.task))
    tta = TTA(augment, cfg.tta) if cfg.tta and augment is not None else None
    outputs = classifier.predict_proba(data.images, cfg.batch_size, tta)
    metrics = task_report(spec.task).metrics(data.targets, outputs, data.classes, cfg, spec)
    return Scored(split, data, outputs, metrics, spec)


def headline(metrics: dict) -> dict:
    """The metrics without the per-class breakdown and curves (multi-label's F1 against the
    threshold): the numbers DVC shows as columns."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}
