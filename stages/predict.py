"""predict: label new images with the trained model; not a DVC stage.

python -m stages.predict predict.input=path/to/folder_or.csv [predict.output=out.csv]
"""

import logging
from pathlib import Path

import pandas as pd

from pipeline.core.config import Config
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT, ModelFiles
from pipeline.model.inference import Classifier
from pipeline.model.predict import input_files, output_file, predict_files, write_predictions
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config) -> Path:
    if not cfg.predict.input:
        raise StagewiseError(
            "predict.input is not set: give a folder of images or a CSV with a path column"
        )
    files = input_files(cfg.predict.input, cfg.data.extensions)
    if not files:
        raise StagewiseError(f"predict.input={cfg.predict.input}: no image files found")
    output = output_file(cfg.predict.output)
    classifier = Classifier.load(ModelFiles(PROJECT_ROOT / cfg.predict.model_dir))
    predictions = predict_files(classifier, files, cfg.data.max_pixels, cfg.eval.batch_size)
    table = joined_lists(predictions, cfg.data.label_delimiter)
    write_predictions(output, table, cfg.predict.output)
    failed = predictions[predictions["error"] != ""]
    for _, row in failed.iterrows():
        log.warning("could not read %s: %s", row["path"], row["error"])
    log.info(
        "predicted %d image(s), %d unreadable, into %s",
        len(predictions) - len(failed),
        len(failed),
        output,
    )
    return output


def joined_lists(frame: pd.DataFrame, delimiter: str) -> pd.DataFrame:
    """A multi-label model's label lists as a label table writes them: joined by
    data.label_delimiter (an empty cell for none), not as Python's repr of a list."""
    return frame.apply(
        lambda column: column.map(lambda v: delimiter.join(v) if isinstance(v, list) else v)
    )


main = entrypoint(run)

if __name__ == "__main__":
    main()
