"""The trained model in MLflow: logged as a pyfunc model that takes raw images, registered
as a candidate, and fetched back as weights for transfer learning."""

from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipeline.errors import StagewiseError
from pipeline.paths import PROJECT_ROOT, ModelFiles, Paths
from pipeline.tracking.runs import Run
from pipeline.tracking.store import open_store

PACKAGED_MODEL_CODE = PROJECT_ROOT / "pipeline" / "packaged_model.py"
REQUIREMENTS = ("torch", "numpy", "pandas", "safetensors", "pillow", "pyarrow")


def log_model(run: Run, files: ModelFiles, example: np.ndarray, output: pd.DataFrame) -> str:
    """Log the trained model as an MLflow pyfunc model that takes raw uint8 images; example
    is a few input images and output the model's answer for them. Returns the model URI.

    The model is logged "from code" (pipeline/packaged_model.py), not pickled; its weights
    and spec travel as artifacts.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    # Any batch size, image size and channel count: the model resizes and converts itself.
    images = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))])
    signature = ModelSignature(inputs=images, outputs=infer_signature(example, output).outputs)
    with mlflow.start_run(run_id=run.id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGED_MODEL_CODE),
            artifacts={"weights": str(files.weights), "spec": str(files.spec)},
            code_paths=[str(PROJECT_ROOT / "pipeline")],
            signature=signature,
            input_example=example,
            pip_requirements=[f"{name}=={version(name)}" for name in REQUIREMENTS],
        )
    return info.model_uri


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
