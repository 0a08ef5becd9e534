"""The packaged model over HTTP: MLflow's scoring server (the app `mlflow models serve` runs)
with Starlette's request body limit, which that command does not set: a body over the limit
gets a 413 before it is read, instead of being parsed into memory whole."""

from typing import Any

import mlflow
from mlflow.pyfunc import scoring_server

from pipeline.core.errors import StagewiseError


def scoring_app(model_uri: str, max_request_bytes: int) -> Any:
    """MLflow's scoring app (FastAPI) for model_uri, refusing larger request bodies."""
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StagewiseError(f"serve.model={model_uri}: cannot load it ({first})") from None
    app = scoring_server.init(model)
    app.max_body_size = max_request_bytes  # read when the middleware stack is built
    return app


def serve(app: Any, host: str, port: int) -> None:
    """Answer requests until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
