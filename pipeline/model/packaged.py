"""The MLflow model's code (logged "from code", so nothing is unpickled when it is loaded).

predict() takes a table with one image per row, in one of two columns:
- `image`: the encoded file (JPEG, PNG, ...), decoded and fitted as the training images
  were; over HTTP the scoring server base64-decodes it from `dataframe_split` or
  `dataframe_records` JSON. An unreadable file gets an `error` instead of a label.
- `pixels`: the raw image, H x W or H x W x C (C = 1, 3 or 4) integers 0..255, any size.
It answers the predicted label, its probability and one probability column per class.
Images are resized as the training images were and normalized with the training split's
statistics stored beside the weights.

The unwrapped model also takes an N x H x W (x C) uint8 array, or a list of image files as
paths or bytes: `mlflow.pyfunc.load_model(uri).unwrap_python_model().predict(None, images)`.
"""

import binascii
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

BATCH_SIZE = 256
IMAGE, PIXELS = "image", "pixels"  # the signature's columns (pipeline/tracking/models.py)


class ImageClassifier(PythonModel):
    def load_context(self, context):
        from pipeline.core.paths import ModelFiles
        from pipeline.model.inference import Classifier

        weights = Path(context.artifacts["weights"])
        spec = Path(context.artifacts["spec"])
        if weights.parent != spec.parent:
            raise ValueError("model weights and spec must sit in one folder")
        self.classifier = Classifier.load(ModelFiles(weights.parent))

    # np.ndarray is a hint MLflow infers no schema from, so the logged signature stays the
    # contract (it hands this model a DataFrame of `image`/`pixels` rows). Without a hint
    # MLflow warns at every log and load; pd.DataFrame or a union makes it warn too.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        from pipeline.core.errors import StagewiseError

        try:
            return self.answer(model_input)
        except StagewiseError as e:
            # The scoring server turns an MlflowException into a 400 carrying this message
            # and no stack trace (any other exception's answer carries the server's trace).
            raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None

    def answer(self, model_input) -> pd.DataFrame:
        from pipeline.core.errors import StagewiseError
        from pipeline.data.decode import MAX_PIXELS
        from pipeline.model.predict import predict_files

        if isinstance(model_input, pd.DataFrame):
            if IMAGE in model_input.columns:
                files = [encoded_file(value) for value in model_input[IMAGE]]
                return predict_files(self.classifier, files, MAX_PIXELS, BATCH_SIZE)
            if PIXELS in model_input.columns:
                return self.classifier.predict_frame(list(model_input[PIXELS]))
            raise StagewiseError(
                f"send a column `{IMAGE}` (encoded image files; base64 in JSON) or `{PIXELS}` "
                f"(one H x W x C array of integers 0..255 per row); got columns "
                f"{[str(c) for c in model_input.columns][:10]}"
            )
        if isinstance(model_input, list | tuple | pd.Series):
            return predict_files(self.classifier, list(model_input), MAX_PIXELS, BATCH_SIZE)
        return self.classifier.predict_frame(model_input)


def encoded_file(value: object) -> bytes:
    """An `image` cell as file bytes. MLflow base64-decodes binary columns sent as
    `dataframe_split`/`dataframe_records`, but hands `inputs` over as the base64 text's bytes:
    that text is decoded here. An image file is never valid base64 text (its first bytes,
    e.g. JPEG's 0xFF 0xD8 or PNG's 0x89, are not base64 characters)."""
    if not isinstance(value, bytes):
        from pipeline.core.errors import StagewiseError

        raise StagewiseError(
            f"column `{IMAGE}` holds encoded image files; got {type(value).__name__}"
        )
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return value


mlflow.models.set_model(ImageClassifier())
