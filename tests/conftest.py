"""Shared fixtures: the real conf/ composed by Hydra, and real pipeline data in temp folders."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipeline.core.config import Config
from pipeline.core.paths import PROJECT_ROOT, Paths
from stages.common import validated
from tests.s3 import s3  # noqa: F401 - moto's S3 server, a fixture for the tests that ask for it

# Test files that start first, longest first, so that the parallel workers finish together:
# one end-to-end file builds the shared pipeline template (a minute) while the others run
# files that do not need it; the short unit-test files then fill the end. The rest keep
# pytest's order after these.
FIRST = (
    "tests/e2e/test_pipeline.py",
    "tests/e2e/test_fresh.py",
    "tests/e2e/test_tasks.py",
    "tests/test_distributed.py",
    "tests/e2e/test_experiments.py",
    "tests/e2e/test_queued.py",
    "tests/server/test_writers.py",
    "tests/e2e/test_tune.py",
    "tests/faults/test_killed_stages.py",
    "tests/server/test_server.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(PROJECT_ROOT).as_posix()
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: pytest's order within a file and among the rest


def compose_config(*overrides: str) -> Config:
    """conf/ composed exactly as scripts/compose_params.py does, then schema-checked."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base=None):
        return validated(compose(config_name="config", overrides=list(overrides)))


@pytest.fixture(autouse=True)
def local_mlflow_store(monkeypatch):
    """Tests use each project copy's own store, never a server from the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def digits_paths(tmp_path_factory) -> Paths:
    """The real ingest, split and normalize-stats stages run on digits into a temp root."""
    from stages import ingest, normalize_stats, split

    paths = Paths(tmp_path_factory.mktemp("digits"))
    cfg = compose_config()
    for stage in (ingest, split, normalize_stats):
        stage.run(cfg, paths)
    return paths


@pytest.fixture(scope="module")
def project(request, tmp_path_factory):
    """The calling module's own copy of the session's tiny pipeline run (tests/project.py),
    to change as its tests please; modules that need another project define their own."""
    from tests.project import copy_of_template

    return copy_of_template(tmp_path_factory, request.module.__name__.rpartition(".")[2])


def write_image_folder(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10)
) -> Path:
    """root/<label>/<i>.png: a small distinct image per file, classes = {label: count}."""
    from PIL import Image

    for c, (label, count) in enumerate(sorted(classes.items())):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            value = (40 * c + 7 * i) % 256
            Image.new("RGB", size, (value, 255 - value, (c * 90) % 256)).save(
                root / label / f"{i}.png"
            )
    return root


def project_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONWARNINGS"] = "ignore"
    return env
