"""The MLflow model's code (logged "from code", so nothing is unpickled when it is loaded).

predict() takes raw images, N x H x W or N x H x W x C with pixels 0..255, and returns the
predicted label, its probability and one probability column per class. It resizes the
images and normalizes them with the training split's statistics stored beside the weights.
"""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class ImageClassifier(PythonModel):
    def load_context(self, context):
        from pipeline.inference import Classifier
        from pipeline.paths import ModelFiles

        weights = Path(context.artifacts["weights"])
        spec = Path(context.artifacts["spec"])
        if weights.parent != spec.parent:
            raise ValueError("model weights and spec must sit in one folder")
        self.classifier = Classifier.load(ModelFiles(weights.parent))

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        return self.classifier.predict_frame(model_input)


mlflow.models.set_model(ImageClassifier())
