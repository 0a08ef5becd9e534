"""The MLflow model's code (logged "from code", so nothing is unpickled when it is loaded).

predict() takes a table with one image per row, in one of two columns:
- `image`: the encoded file (JPEG, PNG, ...), decoded and fitted as the training images
  were; over HTTP the scoring server base64-decodes it from `dataframe_split` or
  `dataframe_records` JSON. An unreadable file gets an `error` instead of a label.
- `pixels`: the raw image, H x W or H x W x C (C = 1, 3 or 4) integers 0..255, any size.
It answers the predicted label, its probability and one probability column per class; a
row without an answer (an unreadable file) has null (None) there, as JSON has no NaN.
Images are resized as the training images were and normalized with the training split's
statistics stored beside the weights.

Served by `python -m stages.serve`, the model also holds per-request limits (rows, decoding
work, time: pipeline/model/request_limits.py), which the server sets on it.

The unwrapped model also takes an N x H x W (x C) uint8 array, or a list of image files as
paths or bytes: `mlflow.pyfunc.load_model(uri).unwrap_python_model().predict(None, images)`.
"""

import binascii
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

# Images decoded and run through the network per step: the request's deadline is checked
# between steps, and a step's activations stay small (256 64x64 images through the default
# small CNN hold ~130 MB per layer).
BATCH_SIZE = 32
# ... and at most about this much decoding work (request_limits.decode_weight) per step, so
# that work stops within about a second of the deadline.
STEP_MEGAPIXELS = 4.0
IMAGE, PIXELS = "image", "pixels"  # the signature's columns (pipeline/tracking/models.py)


class ImageClassifier(PythonModel):
    # Per-request limits (pipeline.model.request_limits.RequestLimits), set by the server
    # (pipeline/model/serving.py); None in-process, where the caller pays for its own calls.
    limits = None

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
            return without_nan(self.answer(model_input))
        except StagewiseError as e:
            # The scoring server turns an MlflowException into a 400 carrying this message.
            raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None
        except Exception as e:
            # A failure no check foresaw: its trace goes to the server's log, and the answer
            # gets one line (the scoring server would put the trace, with this machine's
            # paths, into the answer of any exception but an MlflowException).
            logging.getLogger("stagewise").exception("predict failed")
            raise MlflowException(
                f"the model failed on this request ({type(e).__name__}); the server's log "
                "has the details",
                INTERNAL_ERROR,
            ) from None

    def answer(self, model_input) -> pd.DataFrame:
        from pipeline.core.errors import StagewiseError
        from pipeline.model.request_limits import REQUEST_DEADLINE, check_rows

        deadline = REQUEST_DEADLINE.get()
        if isinstance(model_input, pd.DataFrame):
            if self.limits is not None:
                check_rows(len(model_input), self.limits)
            columns = {IMAGE, PIXELS} & set(model_input.columns)
            if columns == {IMAGE, PIXELS}:
                raise StagewiseError(
                    f"got both columns `{IMAGE}` and `{PIXELS}`; send each request's images in "
                    "one of them"
                )
            if IMAGE in columns:
                files = [encoded_file(value) for value in model_input[IMAGE]]
                return self.predict_files(files, deadline)
            if PIXELS in columns:
                return self.predict_pixels(list(model_input[PIXELS]), deadline)
            # Over HTTP, MLflow drops the columns its signature lacks before predict is
            # called: the columns sent are in MLflow's preview before this message.
            got = [str(c) for c in model_input.columns][:10]
            raise StagewiseError(
                f"send a column `{IMAGE}` (encoded image files; base64 in JSON) or `{PIXELS}` "
                f"(one H x W x C array of integers 0..255 per row); "
                + (
                    f"got columns {got}"
                    if got
                    else "this request has neither (other columns are not read)"
                )
            )
        if isinstance(model_input, list | tuple | pd.Series):
            return self.predict_files(list(model_input), deadline)
        return self.classifier.predict_frame(model_input)

    def predict_files(self, files: list, deadline: float | None) -> pd.DataFrame:
        """One row per file; served, files whose header is over the limits are not decoded
        (their row gets the reason) and a request over its budget is refused first."""
        from pipeline.data.decode import MAX_PIXELS
        from pipeline.model.predict import predict_files, source_name
        from pipeline.model.request_limits import ImageCost, check_deadline, screen, steps

        if self.limits is not None:
            costs = screen(files, self.limits)
        else:
            costs = [ImageCost(0.0, "")] * len(files)
        rows = []
        for step in steps([c.megapixels for c in costs], BATCH_SIZE, STEP_MEGAPIXELS):
            check_deadline(deadline)
            good = [files[i] for i in step if not costs[i].refused]
            answers = predict_files(self.classifier, good, MAX_PIXELS, BATCH_SIZE)
            answer = iter(answers.to_dict("records"))
            rows += [
                {"path": source_name(files[i]), "error": costs[i].refused}
                if costs[i].refused
                else next(answer)
                for i in step
            ]
        return pd.DataFrame(rows, columns=["path", *self.classifier.answer_columns, "error"])

    def predict_pixels(self, images: list, deadline: float | None) -> pd.DataFrame:
        """Every row fitted (and checked, each error naming its row) first; then run in steps."""
        from pipeline.data.decode import fit_pixels
        from pipeline.model.request_limits import check_deadline

        fitted = fit_pixels(images, self.classifier.spec.decode_settings())
        frames = []
        for start in range(0, len(fitted), BATCH_SIZE):
            check_deadline(deadline)
            frames.append(self.classifier.predict_frame(fitted[start : start + BATCH_SIZE]))
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else self.classifier.predict_frame(fitted)
        )


def without_nan(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing answers (a row whose file was unreadable) as None: the scoring server writes a
    float NaN as `NaN`, which is not JSON; None becomes null."""
    missing = frame.isna()
    if not missing.to_numpy().any():
        return frame
    return frame.astype(object).where(~missing, None)


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
