"""Every file location the stages exchange, in one place.

Locations are resolved from the project root (the folder holding this package), never from the
working directory, so stages behave the same when DVC runs them from a temporary copy.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The embedded default dataset (conf/data/digits.yaml's data.table), in git.
EMBEDDED_DIGITS = PROJECT_ROOT / "data/raw/digits/digits.csv.gz"


@dataclass(frozen=True)
class Paths:
    root: Path = PROJECT_ROOT

    # ingest
    @property
    def manifest(self) -> Path:
        return self.root / "data/ingested/manifest.parquet"

    @property
    def images(self) -> Path:
        return self.root / "data/ingested/images.npy"

    @property
    def ingest_report(self) -> Path:
        return self.root / "data/ingested/report.json"

    # split
    @property
    def split(self) -> Path:
        return self.root / "data/split/split.parquet"

    @property
    def split_report(self) -> Path:
        return self.root / "data/split/report.json"

    # normalize-stats
    @property
    def normalize(self) -> Path:
        return self.root / "data/stats/normalize.json"

    # train
    @property
    def model_dir(self) -> Path:
        return self.root / "models"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics/train.json"

    @property
    def train_history(self) -> Path:
        return self.root / "plots/train/history.csv"

    @property
    def train_activations(self) -> Path:
        """A folder: train.activation_stats's CSV and PNG files (a note alone when it is off)."""
        return self.root / "plots/train/activations"

    @property
    def checkpoint(self) -> Path:
        """Not a DVC output, so DVC does not delete it before rerunning train (resume)."""
        return self.root / "checkpoints/train.pt"

    # lr-find
    @property
    def lr_find_curve(self) -> Path:
        return self.root / "plots/lr_find/curve.csv"

    @property
    def lr_find_plot(self) -> Path:
        return self.root / "plots/lr_find/curve.png"

    @property
    def lr_find_metrics(self) -> Path:
        return self.root / "metrics/lr_find.json"

    # evaluate / test-holdout
    @property
    def valid_metrics(self) -> Path:
        return self.root / "metrics/valid.json"

    @property
    def valid_plots(self) -> Path:
        """evaluate's tables (pipeline.tasks.reports names them per task)."""
        return self.root / "plots/valid"

    @property
    def valid_grad_cam(self) -> Path:
        """A folder: Grad-CAM of the top losses with train.activation_stats (else a note)."""
        return self.root / "plots/valid/grad_cam"

    @property
    def test_metrics(self) -> Path:
        return self.root / "metrics/test.json"

    # Records that outlive any one run live in the project's home (see `home`).
    @property
    def home(self) -> Path:
        """The project the user works in. `dvc exp run --queue` runs experiments in temporary
        copies and names the original in DVC_ROOT: records kept there survive the copy."""
        dvc_root = os.environ.get("DVC_ROOT")
        return Path(dvc_root).resolve() if dvc_root and self.root == PROJECT_ROOT else self.root

    @property
    def holdout_ledger(self) -> Path:
        """Not a DVC output: it accumulates across runs and is committed to git."""
        return self.home / "data/holdout_ledger.json"

    @property
    def mlruns(self) -> Path:
        return self.home / "mlruns"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one trained model; a folder so multirun jobs can each keep their own."""

    dir: Path

    @property
    def weights(self) -> Path:
        return self.dir / "model.safetensors"

    @property
    def spec(self) -> Path:
        return self.dir / "model.json"

    @property
    def run(self) -> Path:
        return self.dir / "run.json"
