"""The MLflow model's code (logged "from code", so nothing is unpickled when it is loaded).

predict() takes raw images, N x H x W or N x H x W x C with pixels 0..255, and returns the
predicted label, its probability and one probability column per class. It resizes the
images and normalizes them with the training split's statistics stored beside the weights.

It also takes a list of image files, as paths or as the encoded bytes, decoded and fitted as
the training images were; unreadable ones get an `error` instead of a label. MLflow checks
inputs against the logged signature (pixel tensors), so pass files to the unwrapped model:
`mlflow.pyfunc.load_model(uri).unwrap_python_model().predict(None, ["a.jpg", b"..."])`.
"""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

MAX_PIXELS = 50_000_000  # larger files are refused unread (decompression bombs)
BATCH_SIZE = 256


class ImageClassifier(PythonModel):
    def load_context(self, context):
        from pipeline.inference import Classifier
        from pipeline.paths import ModelFiles

        weights = Path(context.artifacts["weights"])
        spec = Path(context.artifacts["spec"])
        if weights.parent != spec.parent:
            raise ValueError("model weights and spec must sit in one folder")
        self.classifier = Classifier.load(ModelFiles(weights.parent))

    # np.ndarray is what MLflow passes under the logged tensor signature, and a hint it infers
    # no schema from: the logged signature stays the contract. Without a hint MLflow warns at
    # every log and load; any other hint (a union with list) makes it warn that it is unsupported.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        if isinstance(model_input, list | tuple | pd.Series):
            from pipeline.predict import predict_files

            return predict_files(self.classifier, list(model_input), MAX_PIXELS, BATCH_SIZE)
        return self.classifier.predict_frame(model_input)


mlflow.models.set_model(ImageClassifier())
