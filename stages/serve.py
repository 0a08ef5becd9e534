"""serve: the trained model over HTTP; not a DVC stage.

    python -m stages.serve                                   # the workspace's model
    python -m stages.serve serve.model=models:/digits@candidate serve.port=8080

The same API as `mlflow models serve` (MLflow's own scoring app: POST /invocations with
`image` or `pixels` rows, GET /ping), with limits that command lacks (pipeline/model/serving.py):
bodies over serve.max_request_mb get a 413 before they are read, bodies other than JSON a 415,
requests over serve.max_rows or serve.max_request_megapixels a 400 before any image is
decoded. Binds 127.0.0.1 unless serve.host says otherwise.
"""

import logging
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.model.request_limits import RequestLimits
from pipeline.model.serving import scoring_app, serve
from pipeline.tracking.store import open_store
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> None:
    model_uri = cfg.serve.model or read_json(ModelFiles(paths.model_dir).run, "train")["model_uri"]
    if not Path(model_uri).exists():  # a runs:/ or models:/ URI names a model in the store
        open_store(paths)
    serving = cfg.serve
    limits = RequestLimits(
        serving.max_rows, serving.max_request_megapixels, serving.max_image_megapixels,
        serving.max_json_values,
    )  # fmt: skip
    app = scoring_app(model_uri, int(cfg.serve.max_request_mb * 2**20), limits)
    log.info(
        "serving %s on http://%s:%d (POST /invocations; requests up to %g MB)",
        model_uri, cfg.serve.host, cfg.serve.port, cfg.serve.max_request_mb,
    )  # fmt: skip
    serve(app, cfg.serve.host, cfg.serve.port)


main = entrypoint(run)

if __name__ == "__main__":
    main()
