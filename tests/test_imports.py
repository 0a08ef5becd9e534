"""Imports point one way (DESIGN.md §2): checked over the real import graph, both the
project's own imports (anywhere in a file, also inside functions) and what a real Python
process has loaded after importing a stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.paths import PROJECT_ROOT
from tests.imports import import_closure, imported_names

PIPELINE = PROJECT_ROOT / "pipeline"
TRACKING = PIPELINE / "tracking"
PROJECT_FILES = sorted([*PIPELINE.rglob("*.py"), *(PROJECT_ROOT / "stages").glob("*.py")])
# Training: the loop and everything only training needs.
TRAINING = {
    PIPELINE / f"{name}.py"
    for name in ("loop", "callbacks", "checkpoint", "fine_tune", "lr_find", "learner", "weights")
}
EVALUATION = {PIPELINE / f"{name}.py" for name in ("evaluation", "metrics", "plots", "compare")}
INFERENCE = {PIPELINE / f"{name}.py" for name in ("inference", "predict", "preprocess", "device")}


def relative(files: set[Path]) -> list[str]:
    return sorted(f.relative_to(PROJECT_ROOT).as_posix() for f in files)


def top_level(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)}


SERVED = {PIPELINE / "packaged_model.py", PIPELINE / "serving.py"}  # the model and its server


def test_only_tracking_and_the_served_model_import_mlflow():
    allowed = {*TRACKING.glob("*.py"), *SERVED}
    importers = {f for f in PROJECT_FILES if "mlflow" in top_level(f)}
    assert relative(importers - allowed) == []


def test_tracking_imports_no_training_evaluation_or_inference_code():
    reached = set().union(*(import_closure(f) for f in TRACKING.glob("*.py")))
    assert relative(reached & (TRAINING | EVALUATION | INFERENCE)) == []


def test_the_served_model_imports_no_training_code():
    reached = set().union(*(import_closure(f) for f in SERVED))
    assert relative(reached & (TRAINING | set(TRACKING.glob("*.py")))) == []
    assert PIPELINE / "inference.py" in reached  # the check follows the real path


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
    from tests.test_dvc_yaml import STAGES

    assert "pipeline/metrics.py" not in STAGES["lr-find"]["deps"]
    assert "pipeline/metrics.py" in STAGES["evaluate"]["deps"]
