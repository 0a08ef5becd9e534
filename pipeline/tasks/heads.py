"""The tasks in torch: what a model's raw outputs mean, the loss they are trained with, and
the metrics the fit loop reports after each epoch.

single_label: softmax over the classes, cross-entropy (with label smoothing).
multilabel:   one sigmoid per label, binary cross-entropy; a label is predicted when its
              probability reaches the threshold stored with the model.
regression:   the outputs are the targets standardized with the train split's mean and std
              (stored with the model), optionally squashed into y_range by a scaled sigmoid
              (fastai's sigmoid_range); MSE on the standardized targets, metrics in the
              targets' own units.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core.config import Task

# Where fastai's threshold plot looks for the best multi-label threshold.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


class Head:
    task: Task

    def loss(
        self, output: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        raise NotImplementedError

    def epoch_scores(self, output: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The task's epoch metrics (pipeline.tasks.kinds names them) on a split's outputs."""
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """What the outputs mean: class or label probabilities, or target values."""
        raise NotImplementedError

    def answer(self, predicted: np.ndarray, names: list[str]) -> pd.DataFrame:
        """The served model's answer, one row per image, from predict()'s values."""
        raise NotImplementedError

    def answer_columns(self, names: list[str]) -> list[str]:
        return [f"p_{name}" for name in names]


class SingleLabelHead(Head):
    task = Task.single_label

    def loss(self, output, targets, label_smoothing=0.0):
        return F.cross_entropy(output, targets, label_smoothing=label_smoothing)

    def epoch_scores(self, output, targets):
        accuracy = float((output.argmax(dim=1) == targets).float().mean())
        return {"valid_accuracy": accuracy, "valid_error_rate": 1.0 - accuracy}

    def predict(self, output):
        return torch.softmax(output, dim=1)

    def answer(self, predicted, names):
        """label, its probability, and one probability column per class."""
        best = predicted.argmax(axis=1)
        frame = pd.DataFrame(
            {"label": [names[i] for i in best], "probability": predicted.max(axis=1)}
        )
        return probability_columns(frame, predicted, names)

    def answer_columns(self, names):
        return ["label", "probability", *super().answer_columns(names)]


@dataclass(frozen=True)
class MultiLabelHead(Head):
    threshold: float
    task = Task.multilabel

    def loss(self, output, targets, label_smoothing=0.0):
        # Label smoothing is single-label's (a softmax over classes); BCE takes hard targets.
        return F.binary_cross_entropy_with_logits(output, targets)

    def epoch_scores(self, output, targets):
        predicted = torch.sigmoid(output) >= self.threshold
        actual = targets > 0.5
        both = (predicted & actual).sum(dim=1).float()
        either = predicted.sum(dim=1) + actual.sum(dim=1)
        # An image with no label, predicted to have none, is right: its F1 counts as 1
        # (scikit-learn's f1_score(average="samples", zero_division=1)).
        f1 = torch.where(either > 0, 2 * both / either.clamp_min(1), torch.ones_like(both))
        return {
            "valid_accuracy_multi": float((predicted == actual).float().mean()),
            "valid_f1_samples": float(f1.mean()),
        }

    def predict(self, output):
        return torch.sigmoid(output)

    @staticmethod
    def best_threshold(output: torch.Tensor, targets: torch.Tensor) -> float:
        """The threshold with the best F1 (samples) on these outputs, the lowest of equals."""
        scores = [
            MultiLabelHead(float(t)).epoch_scores(output, targets)["valid_f1_samples"]
            for t in THRESHOLDS
        ]
        return float(THRESHOLDS[int(np.argmax(scores))])

    def answer(self, predicted, names):
        """labels: the labels whose probability reaches the threshold (possibly none), and
        one probability column per label."""
        chosen = predicted >= self.threshold
        labels = [[name for name, on in zip(names, row, strict=True) if on] for row in chosen]
        return probability_columns(pd.DataFrame({"labels": labels}), predicted, names)

    def answer_columns(self, names):
        return ["labels", *super().answer_columns(names)]


@dataclass(frozen=True)
class RegressionHead(Head):
    mean: torch.Tensor  # per target, of the train split
    std: torch.Tensor
    y_range: tuple[float, float] | None  # in the targets' units
    task = Task.regression

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        """(values - mean) / std, computed in float64: float32 overflows on the difference of
        targets near its limit (3e38 - -1e38) although the standardized value is small."""
        mean = self.mean.to(values.device, torch.float64)
        std = self.std.to(values.device, torch.float64)
        return ((values.double() - mean) / std).float()

    def unstandardize(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardized values in the targets' units, float64 (see standardize; predict
        answers in float32)."""
        mean = self.mean.to(standardized.device, torch.float64)
        std = self.std.to(standardized.device, torch.float64)
        return standardized.double() * std + mean

    def standardized(self, output: torch.Tensor) -> torch.Tensor:
        """The model's outputs as standardized targets, squashed into y_range if set."""
        if self.y_range is None:
            return output
        bounds = torch.tensor(self.y_range, device=output.device)[:, None]  # 2 x 1
        low, high = self.standardize(bounds)  # each per target
        return torch.sigmoid(output) * (high - low) + low

    def loss(self, output, targets, label_smoothing=0.0):
        return F.mse_loss(self.standardized(output).float(), self.standardize(targets))

    def epoch_scores(self, output, targets):
        """RMSE, MAE and R² in the targets' units, each the mean over the targets (as
        scikit-learn's multioutput="uniform_average"); in float64, whose squares of large
        targets (beyond ~1e19) do not overflow."""
        targets = targets.double()
        error = self.unstandardize(self.standardized(output)) - targets
        spread = ((targets - targets.mean(dim=0)) ** 2).sum(dim=0)
        r2 = 1 - (error**2).sum(dim=0) / spread.clamp_min(1e-12)
        return {
            "valid_rmse": float(error.pow(2).mean(dim=0).sqrt().mean()),
            "valid_mae": float(error.abs().mean()),
            "valid_r2": float(r2.mean()),
        }

    def predict(self, output):
        mean, std = self.mean.to(output.device), self.std.to(output.device)
        return self.standardized(output).float() * std + mean

    def answer(self, predicted, names):
        """One column per target, in the targets' units."""
        return pd.DataFrame({name: predicted[:, i] for i, name in enumerate(names)})

    def answer_columns(self, names):
        return list(names)


def probability_columns(
    frame: pd.DataFrame, predicted: np.ndarray, names: list[str]
) -> pd.DataFrame:
    for i, name in enumerate(names):
        frame[f"p_{name}"] = predicted[:, i]
    return frame


def make_head(
    task: Task | str,
    threshold: float | None = None,
    target_mean: list[float] | None = None,
    target_std: list[float] | None = None,
    y_range: list[float] | None = None,
) -> Head:
    """The head of a model trained for task (its spec holds the other arguments)."""
    if Task(task) == Task.multilabel:
        return MultiLabelHead(0.5 if threshold is None else threshold)
    if Task(task) == Task.regression:
        std = torch.tensor(target_std, dtype=torch.float32).clamp_min(1e-12)
        bounds = (float(y_range[0]), float(y_range[1])) if y_range else None
        return RegressionHead(torch.tensor(target_mean, dtype=torch.float32), std, bounds)
    return SingleLabelHead()


SINGLE_LABEL = SingleLabelHead()  # the default of code that predates the other tasks
