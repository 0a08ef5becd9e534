"""The tasks' labels and targets, without torch or scikit-learn: how ingest reads an image's
label, how the split stratifies, how training encodes targets, and which epoch metrics a
task has (and its main one, which compare, tune and the sweep summary rank by).

A manifest's `label` column holds: the class name (single_label, as it always has), the
sorted list of label names, possibly empty (multilabel), or {target column: value} in
data.targets' order (regression; a struct column, so the names travel with the data).
"""

import math
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import DataConfig, EvalConfig, Label, Source, Task
from pipeline.core.errors import StagewiseError

# (path relative to the source, the table row or None) -> the image's label; raises
# ValueError when the image has none (it is listed in the ingest report).
Labeller = Callable[[Path, dict | None], object]
# What a missing value becomes when a tool writes a label column as text (str(nan), str(None)).
MISSING_LABELS = {"", "nan", "NaN", "None"}
NONE = "(none)"  # multi-label: the reports' and the split's name for an empty label set
NONE_IMAGES = "(images)"  # regression: the split's one pseudo-class, every image
TARGET_DTYPE = np.float32  # what encode() gives training: regression's values must fit it


class Stratify(StrEnum):
    """How a random split keeps the labels' shares (pipeline.data.split)."""

    classes = "classes"  # every class keeps its share in every split
    label_sets = "label_sets"  # iterative stratification over the label matrix
    none = "none"  # a seeded shuffle


class TaskKind:
    task: Task
    epoch_metrics: tuple[str, ...]  # valid_* metrics of every epoch, after the losses
    main_metric: str  # the epoch metric compare, tune and the sweep summary rank by
    gate_metric: str  # the test metric eval.register_min_accuracy is compared with
    stratify: Stratify
    counts_key = "classes"  # the reports' key for counts()
    label_word = "label"  # what an image's label is called in messages
    smooths_labels = False  # whether train.label_smoothing means anything

    def labeller(self, cfg: DataConfig, text_labeller: Callable[[], Labeller]) -> Labeller:
        """How an image gets its label; text_labeller builds the single-label one."""
        return text_labeller()

    def table_columns(self, cfg: DataConfig) -> set[str]:
        """The columns data.table must have besides path."""
        return {"label"} if cfg.label == Label.column else set()

    def check(self, labels: pd.Series, where: str = "ingest", images: str = "the images") -> None:
        """Refuse images this task cannot learn from: every image (ingest), then the training
        images (split). where and images name the stage and the images in the message."""

    def constant(self, labels: pd.Series, names: list[str]) -> list[str]:
        """The outputs among names that these images cannot teach, because every image has the
        same one (a label on all or none of them, a target with one value)."""
        return []

    def constant_warning(self, constant: list[str], where: str, images: str) -> str:
        """The warning line for constant outputs that check() lets through (multilabel's labels
        when others vary)."""
        return (
            f"warning: {where}: label(s) {', '.join(map(repr, constant))} are on all {images} "
            "or on none: the model learns nothing about them (add images that differ)"
        )

    def names(self, labels: pd.Series) -> list[str]:
        """The model's outputs in order: classes, labels or targets."""
        raise NotImplementedError

    def indicator(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        """N x len(names): 1 where an image has the label, float; what iterative
        stratification splits (a kind whose stratify is label_sets has it)."""
        raise NotImplementedError

    def pairs(self, labels: pd.Series) -> pd.Series:
        """The (image, class) pairs the split balances and reports, long: one value per pair,
        indexed by the image's label's index (an image with several labels repeats)."""
        raise NotImplementedError

    def encode(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        """The training targets of these images."""
        raise NotImplementedError

    def counts(self, labels: pd.Series) -> dict:
        """Per class/label counts (or per target statistics) for the ingest and split reports."""
        return {str(k): int(v) for k, v in self.pairs(labels).value_counts().sort_index().items()}

    def model_fields(
        self, train_targets: np.ndarray, evaluation: EvalConfig, y_range: list | None
    ) -> dict:
        """What the trained model keeps about its task (pipeline.model.networks.ModelSpec):
        the task, and multilabel's threshold or regression's target statistics and range."""
        if evaluation.choose_threshold and self.task != Task.multilabel:
            raise StagewiseError(
                f"eval.choose_threshold=true picks a multi-label threshold; task={self.task} "
                "has none: set it to false"
            )
        if y_range is not None:
            raise StagewiseError(
                f"model.y_range={list(y_range)} bounds regression outputs; task={self.task} "
                "has none: set model.y_range=null"
            )
        return {"task": str(self.task)}

    def check_label_smoothing(self, label_smoothing: float) -> None:
        if label_smoothing and not self.smooths_labels:
            raise StagewiseError(
                f"train.label_smoothing={label_smoothing} softens single-label targets; "
                f"task={self.task} takes its targets as they are: set train.label_smoothing=0"
            )

    @property
    def monitors(self) -> tuple[str, ...]:
        """What early stopping, keep-best and a sweep's objective may watch."""
        return ("train_loss", "valid_loss", *self.epoch_metrics)

    def check_monitor(self, key: str, metric: str) -> None:
        if metric not in self.monitors:
            raise StagewiseError(
                f"{key}={metric!r}: task={self.task} has the epoch metrics {', '.join(self.monitors)}"
            )


class SingleLabel(TaskKind):
    task = Task.single_label
    smooths_labels = True
    epoch_metrics = ("valid_accuracy", "valid_error_rate")
    main_metric = "valid_error_rate"
    gate_metric = "accuracy"
    stratify = Stratify.classes

    def check(self, labels: pd.Series, where: str = "ingest", images: str = "the images") -> None:
        if labels.nunique() < 2:
            raise StagewiseError(
                f"{where}: only one class ({labels.iloc[0]!r}) found among {images}; a "
                "classifier needs at least two"
            )

    def names(self, labels: pd.Series) -> list[str]:
        return sorted(labels.unique())

    def pairs(self, labels: pd.Series) -> pd.Series:
        return labels

    def encode(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        lookup = {label: i for i, label in enumerate(names)}
        return labels.map(lookup).to_numpy(dtype=np.int64)


class MultiLabel(TaskKind):
    task = Task.multilabel
    epoch_metrics = ("valid_accuracy_multi", "valid_f1_samples")
    main_metric = "valid_f1_samples"
    gate_metric = "accuracy_multi"
    stratify = Stratify.label_sets

    def labeller(self, cfg: DataConfig, text_labeller: Callable[[], Labeller]) -> Labeller:
        """A set of labels, possibly empty: the label column's cell or the parent folder's
        name split at data.label_delimiter, or every match of data.label_regex's group in
        the file name."""
        if not cfg.label_delimiter and cfg.label != Label.regex:
            raise StagewiseError("data.label_delimiter is empty: give the text between labels")
        if cfg.label == Label.regex:
            pattern = compiled(cfg.label_regex)
            if pattern.groups != 1:
                raise StagewiseError(
                    f"data.label_regex={cfg.label_regex!r}: task=multilabel needs one group; "
                    "every match in the file name is one label"
                )
            return lambda path, _: label_set(pattern.findall(path.name))
        if cfg.label == Label.column:
            if cfg.source != Source.table:
                raise StagewiseError("data.label=column needs data.source=table")
            return lambda _, row: label_set(split_cell(row.get("label"), cfg.label_delimiter))

        def by_parent(path: Path, _: dict | None) -> list[str]:
            if len(path.parts) < 2:
                raise ValueError("not in a label folder (data.label=parent)")
            return label_set(path.parent.name.split(cfg.label_delimiter))

        return by_parent

    def model_fields(
        self, train_targets: np.ndarray, evaluation: EvalConfig, y_range: list | None
    ) -> dict:
        threshold = evaluation.threshold
        if not 0 < threshold < 1:
            raise StagewiseError(f"eval.threshold={threshold}: must be a probability in (0, 1)")
        fields = super().model_fields(train_targets, evaluation, y_range)
        return {**fields, "threshold": threshold}

    def check(self, labels: pd.Series, where: str = "ingest", images: str = "the images") -> None:
        """At least one label that some images have and others lack: a label on every image
        (or on none) is learnt perfectly by always (never) predicting it, F1 1.0 for nothing."""
        names = self.names(labels)
        if not names:
            raise StagewiseError(
                f"{where}: no image has a label; task=multilabel needs at least one label name "
                "(check data.label_delimiter and the label column)"
            )
        if self.constant(labels, names) == names:
            raise StagewiseError(
                f"{where}: no label varies across {images} (all {len(labels)} have exactly "
                f"{', '.join(map(repr, names))}); a multi-label model learns which labels an image has and which it "
                "lacks: add images without some of these labels"
            )

    def constant(self, labels: pd.Series, names: list[str]) -> list[str]:
        share = self.indicator(labels, names).mean(axis=0)
        return [name for name, s in zip(names, share, strict=True) if s in (0.0, 1.0)]

    def names(self, labels: pd.Series) -> list[str]:
        return sorted({name for cell in labels for name in cell})

    def indicator(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        column = {name: i for i, name in enumerate(names)}
        matrix = np.zeros((len(labels), len(names)))
        for row, cell in enumerate(labels):
            matrix[row, [column[name] for name in cell if name in column]] = 1.0
        return matrix

    def encode(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        return self.indicator(labels, names).astype(np.float32)

    def pairs(self, labels: pd.Series) -> pd.Series:
        """Every label of every image, and "(none)" for an image without: the split balances
        and reports images that have none too (a group of them must not all land in one split)."""
        return labels.map(lambda cell: list(cell) or [NONE]).explode()


class Regression(TaskKind):
    task = Task.regression
    epoch_metrics = ("valid_rmse", "valid_mae", "valid_r2")
    main_metric = "valid_rmse"
    gate_metric = "r2"
    stratify = Stratify.none
    counts_key = "targets"
    label_word = "target values"

    def labeller(self, cfg: DataConfig, text_labeller: Callable[[], Labeller]) -> Labeller:
        targets = self.targets(cfg)
        if cfg.source != Source.table:
            raise StagewiseError(
                f"task=regression reads data.targets from a table: set data=table (not {cfg.source})"
            )

        return lambda _, row: {name: number(row.get(name), name) for name in targets}

    @staticmethod
    def targets(cfg: DataConfig) -> list[str]:
        if not cfg.targets:
            raise StagewiseError(
                "task=regression needs data.targets: the table's numeric columns, e.g. "
                "data.targets=[x,y]"
            )
        return list(cfg.targets)

    def table_columns(self, cfg: DataConfig) -> set[str]:
        return set(self.targets(cfg))

    def model_fields(
        self, train_targets: np.ndarray, evaluation: EvalConfig, y_range: list | None
    ) -> dict:
        """The train split's mean and std of each target: the model learns the standardized
        targets and answers in the targets' units."""
        fields = {
            **super().model_fields(train_targets, evaluation, None),
            "target_mean": train_targets.mean(axis=0, dtype=np.float64).tolist(),
            "target_std": train_targets.std(axis=0, dtype=np.float64).tolist(),
        }
        if y_range is None:
            return fields
        if len(y_range) != 2 or not y_range[0] < y_range[1]:
            raise StagewiseError(f"model.y_range={list(y_range)}: give [low, high] with low < high")
        low, high = float(y_range[0]), float(y_range[1])
        if (train_targets < low).any() or (train_targets > high).any():
            raise StagewiseError(
                f"model.y_range=[{low}, {high}] excludes some train targets (from "
                f"{train_targets.min():g} to {train_targets.max():g}); widen it"
            )
        return {**fields, "y_range": [low, high]}

    def check(self, labels: pd.Series, where: str = "ingest", images: str = "the images") -> None:
        names = self.names(labels)
        if constant := self.constant(labels, names):
            raise StagewiseError(
                f"{where}: target column(s) {', '.join(map(repr, constant))} have the same value "
                f"for all {images}; nothing to learn"
            )

    def constant(self, labels: pd.Series, names: list[str]) -> list[str]:
        # float64: the spread of float32 values beyond ~1e19 overflows float32's squares
        spread = self.encode(labels, names).std(axis=0, dtype=np.float64)
        return [name for name, s in zip(names, spread, strict=True) if s == 0]

    def names(self, labels: pd.Series) -> list[str]:
        return [] if labels.empty else list(labels.iloc[0])

    def pairs(self, labels: pd.Series) -> pd.Series:
        """One pseudo-class for every image: group splits balance the images' counts."""
        return pd.Series(NONE_IMAGES, index=labels.index)

    def encode(self, labels: pd.Series, names: list[str]) -> np.ndarray:
        values = [[cell[name] for name in names] for cell in labels]
        return np.asarray(values, dtype=TARGET_DTYPE).reshape(len(labels), len(names))

    def counts(self, labels: pd.Series) -> dict:
        """Per target: min, mean, max and std over the images."""
        names = self.names(labels)
        values = self.encode(labels, names).astype(float)
        stats = ("min", "mean", "max", "std")
        return {
            name: {stat: float(getattr(np, stat)(values[:, i])) for stat in stats}
            for i, name in enumerate(names)
            if len(values)
        }


SINGLE_LABEL = SingleLabel()  # the default of code that predates the other tasks
TASKS: dict[Task, TaskKind] = {k.task: k for k in (SINGLE_LABEL, MultiLabel(), Regression())}


def task_kind(task: Task | str) -> TaskKind:
    return TASKS[Task(task)]


def compiled(regex: str | None) -> re.Pattern:
    if not regex:
        raise StagewiseError("data.label=regex needs data.label_regex, e.g. '^(.+)_\\d+\\.jpg$'")
    try:
        return re.compile(regex)
    except re.error as e:
        raise StagewiseError(f"data.label_regex={regex!r} is not a valid regex: {e}") from None


def missing(value: object) -> bool:
    return (
        value is None
        or (not isinstance(value, str) and pd.isna(value))
        or str(value).strip() in MISSING_LABELS
    )


def split_cell(value: object, delimiter: str) -> list[str]:
    """A cell of delimited labels; an empty (or missing) cell is the empty set."""
    return [] if missing(value) else str(value).split(delimiter)


def label_set(names: list[str]) -> list[str]:
    """Sorted, unique, stripped, without empty names (a trailing delimiter adds none)."""
    return sorted({name.strip() for name in names} - {""})


def number(value: object, column: str) -> float:
    if missing(value):
        raise ValueError(f"no value in target column {column!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"target column {column!r} holds {value!r}, not a number") from None
    if not math.isfinite(result):
        raise ValueError(f"target column {column!r} holds {value!r}, not a finite number")
    with np.errstate(over="ignore"):
        trainable = np.isfinite(TARGET_DTYPE(result))
    if not trainable:  # e.g. 1e308: finite as a float64, inf once encode() casts it
        raise ValueError(
            f"target column {column!r} holds {value!r}, beyond the range of {TARGET_DTYPE.__name__} "
            f"that training uses (±{np.finfo(TARGET_DTYPE).max:.3g}); rescale the column"
        )
    return result
