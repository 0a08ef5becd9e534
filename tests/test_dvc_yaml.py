"""dvc.yaml declares exactly what each stage reads: its code, its data and its params."""

from pathlib import Path

import pytest
import yaml

from pipeline.core.paths import PROJECT_ROOT, Paths
from tests.imports import import_closure

DVC_YAML = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
# Code a stage ships rather than imports: train logs pipeline/model/packaged.py as the model's code.
SHIPPED = {"train": ["pipeline/model/packaged.py"]}


def module_of(stage: str) -> Path:
    return PROJECT_ROOT / "stages" / f"{stage.replace('-', '_')}.py"


def code_deps(stage: str) -> set[str]:
    files = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    return files


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_exactly_the_imported_project_modules(stage):
    roots = [module_of(stage)] + [PROJECT_ROOT / f for f in SHIPPED.get(stage, [])]
    imported = set().union(*(import_closure(root) for root in roots))
    expected = {p.relative_to(PROJECT_ROOT).as_posix() for p in imported if p.name != "__init__.py"}
    assert code_deps(stage) == expected


def test_package_init_files_hold_no_code():
    """__init__.py files are not declared as deps, so they must stay docstring-only."""
    import ast

    for init in [
        *(PROJECT_ROOT / "pipeline").rglob("__init__.py"),
        PROJECT_ROOT / "stages" / "__init__.py",
    ]:
        body = ast.parse(init.read_text()).body
        assert all(
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body
        ), init


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_runs_its_own_module(stage):
    assert STAGES[stage]["cmd"] == f"python -m stages.{stage.replace('-', '_')}"


def test_declared_params_exist():
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"{name} declares unknown param {key}"
                node = node[part]


def test_outputs_are_the_locations_in_paths():
    paths = Paths()
    known = {
        p.relative_to(PROJECT_ROOT).as_posix()
        for p in (
            paths.manifest,
            paths.images,
            paths.ingest_report,
            paths.split,
            paths.split_report,
            paths.normalize,
            paths.train_metrics,
            paths.train_history,
            paths.train_activations,
            paths.valid_metrics,
            paths.valid_plots,
            paths.test_metrics,
            paths.lr_find_curve,
            paths.lr_find_plot,
            paths.lr_find_metrics,
        )
    }
    from pipeline.core.paths import ModelFiles

    files = ModelFiles(paths.model_dir)
    known |= {
        p.relative_to(PROJECT_ROOT).as_posix() for p in (files.weights, files.spec, files.run)
    }
    declared = set()
    for stage in STAGES.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            declared.add(entry if isinstance(entry, str) else next(iter(entry)))
    assert declared == known


def test_only_test_holdout_reads_the_test_split():
    users = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in (PROJECT_ROOT / "stages").glob("*.py")
        if '"test"' in path.read_text()
    ]
    assert users == ["stages/test_holdout.py"]
