"""Imports point one way (DESIGN.md §2): checked over the real import graph, both the
project's own imports (anywhere in a file, also inside functions) and what a real Python
process has loaded after importing a stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.paths import PROJECT_ROOT
from tests.imports import import_closure, imported_names
from tests.test_dvc_yaml import STAGES, module_of

PIPELINE = PROJECT_ROOT / "pipeline"
# The served model: its code (logged with it) and its HTTP server.
SERVED = {PIPELINE / "model" / "packaged.py", PIPELINE / "model" / "serving.py"}
PROJECT_FILES = sorted([*PIPELINE.rglob("*.py"), *(PROJECT_ROOT / "stages").glob("*.py")])


def package(name: str) -> set[Path]:
    return set((PIPELINE / name).glob("*.py"))


def relative(files: set[Path]) -> list[str]:
    return sorted(f.relative_to(PROJECT_ROOT).as_posix() for f in files)


def top_level(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)}


def test_only_tracking_and_the_served_model_import_mlflow():
    importers = {f for f in PROJECT_FILES if "mlflow" in top_level(f)}
    assert relative(importers - package("tracking") - SERVED) == []


def test_only_the_tune_code_imports_optuna():
    importers = {f for f in PROJECT_FILES if "optuna" in top_level(f)}
    assert relative(importers) == ["pipeline/train/tune.py"]
    reached = set().union(*(import_closure(module_of(s)) for s in STAGES))
    assert PIPELINE / "train" / "tune.py" not in reached  # no DVC stage loads Optuna


def test_tracking_imports_no_training_evaluation_or_model_code():
    reached = set().union(*(import_closure(f) for f in package("tracking")))
    assert relative(reached & (package("train") | package("evaluate") | package("model"))) == []


def test_the_served_model_imports_no_training_or_tracking_code():
    reached = set().union(*(import_closure(f) for f in SERVED))
    assert relative(reached & (package("train") | package("tracking"))) == []
    assert PIPELINE / "model" / "inference.py" in reached  # the check follows the real path


def test_data_code_imports_no_model_training_evaluation_or_tracking_code():
    reached = set().union(*(import_closure(f) for f in package("data")))
    others = package("model") | package("train") | package("evaluate") | package("tracking")
    assert relative(reached & others) == []


def test_pipeline_imports_no_hydra_and_nothing_from_stages():
    for file in PIPELINE.rglob("*.py"):
        assert not top_level(file) & {"hydra", "omegaconf", "stages"}, file


@pytest.mark.parametrize("stage", ["ingest", "split", "normalize_stats"])
def test_data_stages_load_neither_torch_nor_mlflow(stage):
    """A real interpreter imports the stage; then what it loaded is listed."""
    code = (
        f"import sys, json; import stages.{stage}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert not {"torch", "mlflow", "torchvision", "sklearn"} & set(loaded)


def test_editing_a_metrics_module_does_not_rerun_lr_find():
    assert "pipeline/evaluate/metrics.py" not in STAGES["lr-find"]["deps"]
    assert "pipeline/evaluate/metrics.py" in STAGES["evaluate"]["deps"]
