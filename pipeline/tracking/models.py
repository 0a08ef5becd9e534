"""The trained model in MLflow: logged as a pyfunc model that takes image files or pixels, registered
as a candidate, and fetched back as weights for transfer learning."""

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT, ModelFiles, Paths
from pipeline.tracking.runs import Run
from pipeline.tracking.store import open_store

PACKAGED_MODEL_CODE = PROJECT_ROOT / "pipeline" / "model" / "packaged.py"
IMAGE, PIXELS = "image", "pixels"  # the input columns pipeline/model/packaged.py reads
REQUIREMENTS = ("torch", "numpy", "pandas", "safetensors", "pillow", "pyarrow")


def log_model(run: Run, files: ModelFiles, example: list[bytes], output: pd.DataFrame) -> str:
    """Log the trained model as an MLflow pyfunc model that takes image files or raw uint8
    pixels (see pipeline/model/packaged.py); example is a few encoded image files and output
    the model's answer for them. Returns the model URI.

    The model is logged "from code" (pipeline/model/packaged.py), not pickled; its weights
    and spec travel as artifacts.
    """
    with mlflow.start_run(run_id=run.id, log_system_metrics=False), requirements_unchecked():
        info = mlflow.pyfunc.log_model(name="model", **pyfunc_arguments(files, example, output))
    return info.model_uri


def save_packaged_model(
    files: ModelFiles, path: Path, example: list[bytes], output: pd.DataFrame
) -> None:
    """The model log_model logs, saved into a local folder instead (for `mlflow models serve
    -m path`, benchmarks and tests that need no tracking store)."""
    with requirements_unchecked():
        mlflow.pyfunc.save_model(str(path), **pyfunc_arguments(files, example, output))


@contextmanager
def requirements_unchecked() -> Iterator[None]:
    """Skips MLflow's check that this environment satisfies the model's pip requirements while
    logging it: they are this environment's own versions (pyfunc_arguments), and the check maps
    every installed package to its modules first, 1.2-2.7 s of each training (measured with
    cProfile: 2.7 s of a 3.1 s save_model). Leaves MLflow alone if the function is renamed."""
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    original = getattr(environment, name, None)
    if original is None:
        yield
        return
    setattr(environment, name, lambda requirements: None)
    try:
        yield
    finally:
        setattr(environment, name, original)


def pyfunc_arguments(files: ModelFiles, example: list[bytes], output: pd.DataFrame) -> dict:
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import AnyType

    # One image per row: an encoded file (binary: the scoring server base64-decodes it from
    # JSON) or its raw pixels as nested lists of any size (AnyType: MLflow would check every
    # value of an Array column one by one in Python). A signature is either columns or one
    # tensor, so pixel arrays travel as a column too.
    example_frame = pd.DataFrame({IMAGE: example})
    inputs = Schema(
        [
            ColSpec(DataType.binary, IMAGE, required=False),
            ColSpec(AnyType(), PIXELS, required=False),
        ]
    )
    return {
        "python_model": str(PACKAGED_MODEL_CODE),
        "artifacts": {"weights": str(files.weights), "spec": str(files.spec)},
        "code_paths": [str(PROJECT_ROOT / "pipeline")],
        "signature": ModelSignature(inputs, infer_signature(example_frame, output).outputs),
        "input_example": example_frame,
        "pip_requirements": [f"{name}=={version(name)}" for name in REQUIREMENTS],
    }


def register_candidate(run: Run, model_uri: str, name: str, metrics: dict[str, float]) -> str:
    """Register the model as a new version of `name`, alias it "candidate", tag its metrics."""
    client = run.store.client
    registered = mlflow.register_model(model_uri, name).version
    client.set_registered_model_alias(name, "candidate", registered)
    for key, value in metrics.items():
        client.set_model_version_tag(name, registered, key, str(value))
    return str(registered)


def run_model_files(paths: Paths, run_id: str, dst: Path) -> ModelFiles:
    """Download the weights and spec of the model an earlier training run logged into dst."""
    store = open_store(paths)
    try:
        store.client.get_run(run_id)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/model/artifacts", dst_path=str(dst)
        )
    except mlflow.exceptions.MlflowException as e:
        first = str(e).splitlines()[0]
        raise StagewiseError(
            f"model.weights=runs:/{run_id}: no trained model of that run in {store.uri} ({first})"
        ) from None
    return ModelFiles(Path(local))
