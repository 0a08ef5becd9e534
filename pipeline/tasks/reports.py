"""The tasks in evaluate and test-holdout: the metrics of a scored split, its top losses, the
tables written under plots/<split>/ and the figures logged to MLflow.

single_label: accuracy, error rate, precision/recall/F1, log loss, top-k accuracy, the
              confusion matrix and fastai's most_confused.
multilabel:   accuracy_multi, hamming loss, precision/recall/F1 (samples, macro, micro and
              per label), ROC-AUC per label, and F1 against the threshold with the best one.
regression:   MSE, RMSE, MAE and R² per target and overall, predicted against actual.
"""

import re
from dataclasses import dataclass

import numpy as np

from pipeline.core.config import EvalConfig, Task
from pipeline.evaluate import metrics as m
from pipeline.evaluate import plots
from pipeline.tasks.heads import THRESHOLDS


@dataclass(frozen=True)
class Table:
    name: str  # the file under plots/<split>/
    rows: list[dict]
    columns: list[str] | None = None  # the header of an empty table
    logged: bool = True  # also an MLflow artifact


class Report:
    task: Task
    per_name = "per_class"  # the MLflow chart section of the per-class metrics
    column = "class"  # the first column of per_class.csv

    def metrics(
        self, actual: np.ndarray, outputs: np.ndarray, names: list[str], cfg: EvalConfig, spec
    ) -> dict:
        raise NotImplementedError

    def image_losses(self, scored) -> np.ndarray:
        raise NotImplementedError

    def describe_row(self, scored, i: int) -> dict:
        """A top-loss row's actual, predicted (and probability) for image i."""
        raise NotImplementedError

    def top_losses(self, scored, k: int) -> list[dict]:
        """fastai's top_losses: the k images the model is most wrong about, worst first."""
        losses = self.image_losses(scored)
        worst = np.argsort(-losses, kind="stable")[:k]
        return [
            {
                "id": scored.data.ids[i],
                **self.describe_row(scored, i),
                "loss": float(losses[i]),
                "index": int(i),
            }
            for i in worst
        ]

    def cam_outputs(self, scored, worst: list[dict]) -> list[int]:
        """The output Grad-CAM explains for each top-loss image: the predicted class."""
        return [int(scored.outputs[row["index"]].argmax()) for row in worst]

    def tables(self, scored, worst: list[dict]) -> list[Table]:
        shown = [{k: v for k, v in row.items() if k != "index"} for row in worst]
        return [
            Table(
                "per_class.csv",
                [{self.column: k, **v} for k, v in scored.metrics["per_class"].items()],
            ),
            Table("top_losses.csv", shown),
        ]

    def figures(self, scored, worst: list[dict]) -> dict:
        return {"top_losses.png": plots.top_losses_figure(scored.data.images, worst)}

    def mlflow_metrics(self, scored) -> dict[str, float]:
        """Flat metric names for MLflow: valid_accuracy, test_f1_macro, ..., and per class
        valid_per_class/f1_7: a chart section of their own in the MLflow UI, out of the way
        of the curves and the headline numbers."""
        split = scored.split
        flat = {f"{split}_{k}": v for k, v in scored.metrics.items() if isinstance(v, float)}
        for name, values in scored.metrics["per_class"].items():
            # characters MLflow accepts in a name, less "/": it would start a chart section
            safe = re.sub(r"[^\w\-. ]", "_", name)
            for metric, value in values.items():
                if isinstance(value, float):
                    flat[f"{split}_{self.per_name}/{metric}_{safe}"] = value
        return flat

    def describe(self, scored) -> list[str]:
        raise NotImplementedError


class SingleLabelReport(Report):
    task = Task.single_label

    def metrics(self, actual, outputs, names, cfg, spec):
        result = m.classification_metrics(actual, outputs.argmax(axis=1), names)
        return {**result, **m.probability_metrics(outputs, actual, cfg.top_k)}

    def image_losses(self, scored):
        return m.image_losses(scored.outputs, scored.actual)

    def describe_row(self, scored, i):
        return {
            "actual": scored.classes[scored.actual[i]],
            "predicted": scored.classes[int(scored.outputs[i].argmax())],
        }

    def top_losses(self, scored, k):
        rows = super().top_losses(scored, k)
        for row in rows:  # the probability of the predicted class, as fastai shows it
            row["probability"] = float(scored.outputs[row["index"]].max())
            row["index"] = row.pop("index")
        return rows

    def confusion(self, scored) -> np.ndarray:
        return m.confusion_matrix(scored.actual, scored.outputs.argmax(axis=1), len(scored.classes))

    def tables(self, scored, worst):
        predicted = scored.outputs.argmax(axis=1)
        per_class, top = super().tables(scored, worst)
        confused = m.most_confused(scored.actual, predicted, scored.classes)
        return [
            Table(
                "confusion.csv",
                m.confusion_rows(scored.actual, predicted, scored.classes),
                logged=False,
            ),
            per_class,
            top,
            Table("most_confused.csv", confused, ["actual", "predicted", "count"]),
        ]

    def figures(self, scored, worst):
        confusion = plots.confusion_figure(self.confusion(scored), scored.classes, scored.split)
        return {"confusion_matrix.png": confusion, **super().figures(scored, worst)}

    def describe(self, scored):
        metrics = scored.metrics
        lines = [
            f"{scored.split} accuracy {metrics['accuracy']:.4f} (error rate "
            f"{metrics['error_rate']:.4f}) on {metrics['images']} images"
        ]
        confused = m.most_confused(scored.actual, scored.outputs.argmax(axis=1), scored.classes)
        lines += [
            f"most confused: {p['actual']} predicted as {p['predicted']}, {p['count']} time(s)"
            for p in confused[:3]
        ]
        return lines


def label_text(row: np.ndarray, names: list[str]) -> str:
    """A label set as the table writes it; "" for none."""
    return ";".join(name for name, on in zip(names, row, strict=True) if on)


class MultiLabelReport(Report):
    task = Task.multilabel

    def metrics(self, actual, outputs, names, cfg, spec):
        result = m.multilabel_metrics(actual, outputs, names, spec.threshold)
        curve = m.threshold_curve(actual, outputs, THRESHOLDS)
        best = max(curve, key=lambda row: row["f1_samples"])  # the lowest of equal ones
        return {
            **result,
            "best_threshold": best["threshold"],
            "f1_samples_at_best_threshold": best["f1_samples"],
            "threshold_curve": curve,  # for the table and figure; not a headline number
        }

    def image_losses(self, scored):
        return m.binary_losses(scored.outputs, scored.actual)

    def describe_row(self, scored, i):
        predicted = scored.outputs[i] >= scored.metrics["threshold"]
        return {
            "actual": label_text(scored.actual[i] > 0.5, scored.classes),
            "predicted": label_text(predicted, scored.classes),
        }

    def cam_outputs(self, scored, worst):
        """The label whose probability is furthest from the truth."""
        return [
            int(np.abs(scored.outputs[row["index"]] - scored.actual[row["index"]]).argmax())
            for row in worst
        ]

    def tables(self, scored, worst):
        curve = scored.metrics["threshold_curve"]
        return [*super().tables(scored, worst), Table("threshold.csv", curve)]

    def figures(self, scored, worst):
        curve = scored.metrics["threshold_curve"]
        figure = plots.threshold_figure(curve, scored.metrics["threshold"], scored.split)
        return {**super().figures(scored, worst), "threshold.png": figure}

    def describe(self, scored):
        metrics = scored.metrics
        return [
            f"{scored.split} F1 (samples) {metrics['f1_samples']:.4f}, accuracy_multi "
            f"{metrics['accuracy_multi']:.4f} at threshold {metrics['threshold']:g} on "
            f"{metrics['images']} images; the best threshold here is "
            f"{metrics['best_threshold']:g} (F1 {metrics['f1_samples_at_best_threshold']:.4f})"
        ]


class RegressionReport(Report):
    task = Task.regression
    per_name = "per_target"
    column = "target"

    def metrics(self, actual, outputs, names, cfg, spec):
        return m.regression_metrics(actual, outputs, names)

    @staticmethod
    def standardized_errors(scored) -> np.ndarray:
        """N x targets errors, each in units of its train-split standard deviation (what
        training minimizes), so no target's units dominate."""
        std = np.maximum(np.asarray(scored.spec.target_std), 1e-12)
        return (scored.outputs - scored.actual) / std

    def image_losses(self, scored):
        """The squared standardized error summed over the targets."""
        return (self.standardized_errors(scored) ** 2).sum(axis=1)

    def describe_row(self, scored, i):
        def values(row: np.ndarray) -> str:
            return " ".join(f"{name}={v:.4g}" for name, v in zip(scored.classes, row, strict=True))

        return {"actual": values(scored.actual[i]), "predicted": values(scored.outputs[i])}

    def cam_outputs(self, scored, worst):
        """The target with the largest standardized error."""
        errors = np.abs(self.standardized_errors(scored))
        return [int(errors[row["index"]].argmax()) for row in worst]

    def tables(self, scored, worst):
        rows = [
            {"id": image_id}
            | {f"actual_{n}": float(a) for n, a in zip(scored.classes, actual, strict=True)}
            | {f"predicted_{n}": float(p) for n, p in zip(scored.classes, predicted, strict=True)}
            for image_id, actual, predicted in zip(
                scored.data.ids, scored.actual, scored.outputs, strict=True
            )
        ]
        return [*super().tables(scored, worst), Table("predictions.csv", rows, logged=False)]

    def figures(self, scored, worst):
        figure = plots.predicted_vs_actual_figure(
            scored.actual, scored.outputs, scored.classes, scored.split
        )
        return {**super().figures(scored, worst), "predicted_vs_actual.png": figure}

    def describe(self, scored):
        metrics = scored.metrics
        return [
            f"{scored.split} RMSE {metrics['rmse']:.4g}, MAE {metrics['mae']:.4g}, R² "
            f"{metrics['r2']:.4f} on {metrics['images']} images"
        ]


REPORTS = {r.task: r for r in (SingleLabelReport(), MultiLabelReport(), RegressionReport())}


def task_report(task: Task | str) -> Report:
    return REPORTS[Task(task)]
