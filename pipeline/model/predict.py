"""Predictions for new image files with a trained model: decoded and fitted exactly as the
training images were, unreadable files reported in the output instead of stopping the run."""

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import StagewiseError, first_line
from pipeline.core.io import atomic_write
from pipeline.data.decode import BadImage, decode_bytes
from pipeline.data.store import iter_chunks
from pipeline.model.inference import Classifier


def input_files(source: str, extensions: list[str]) -> list[Path]:
    """The images to predict: every image file under a folder, or a CSV's path column
    (relative paths resolve against the CSV's folder)."""
    path = Path(source).expanduser()
    if path.is_dir():
        suffixes = {e.lower() for e in extensions}
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if path.is_file() and path.suffix.lower() == ".csv":
        return csv_paths(path, source)
    raise StagewiseError(
        f"predict.input={source}: give a folder of images or a CSV with a path column"
    )


def csv_paths(path: Path, source: str) -> list[Path]:
    """A CSV's path column, relative paths resolved against the CSV's folder."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:
        raise StagewiseError(
            f"predict.input={source}: the CSV is not UTF-8 text (byte 0x{e.object[e.start]:02x} "
            "cannot be decoded); save it as UTF-8"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise StagewiseError(
            f"predict.input={source} is not a readable CSV ({first_line(e)})"
        ) from None
    if "path" not in table.columns:
        raise StagewiseError(f"predict.input={source}: the CSV needs a path column")
    if empty := [i + 2 for i, v in enumerate(table["path"]) if not v.strip()]:
        raise StagewiseError(
            f"predict.input={source}: the path column is empty on line {empty[0]}; "
            "give every row a file path"
        )
    return [p if (p := Path(v)).is_absolute() else path.parent / p for v in table["path"]]


def output_file(setting: str) -> Path:
    """predict.output as a file path, checked before any work: a folder is refused."""
    path = Path(setting).expanduser()
    if path.is_dir():
        raise StagewiseError(
            f"predict.output={setting} is a folder; give a file path, e.g. "
            f"predict.output={path / 'predictions.csv'}"
        )
    return path


def write_predictions(path: Path, table: pd.DataFrame, setting: str) -> None:
    """table as a CSV at path, atomically; an unwritable path is a one-line error."""
    try:
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    except OSError as e:
        raise StagewiseError(
            f"predict.output={setting}: cannot write {path} ({e.strerror or e}); "
            "give a path in a writable folder"
        ) from None


def predict_files(
    classifier: Classifier, files: list[Path | str | bytes], max_pixels: int, batch_size: int
) -> pd.DataFrame:
    """One row per file (a path, or an encoded image's bytes): the model's answer (label,
    probability, p_<class>... for one class per image) or the error that kept it out."""
    spec = classifier.spec
    settings = spec.decode_settings(max_pixels)
    frames = []
    for chunk in iter_chunks(len(files), batch_size):
        arrays, errors = [], []
        for file in files[chunk]:
            try:
                raw = file if isinstance(file, bytes) else Path(file).read_bytes()
                arrays.append(decode_bytes(raw, settings).array)
                errors.append("")
            except (BadImage, OSError) as e:
                arrays.append(None)
                errors.append(str(e))
        good = [a for a in arrays if a is not None]
        predicted = classifier.predict_frame(np.stack(good)) if good else None
        rows = iter(predicted.to_dict("records")) if predicted is not None else iter(())
        frames += [
            {"path": source_name(file), **(next(rows) if error == "" else {}), "error": error}
            for file, error in zip(files[chunk], errors, strict=True)
        ]
    columns = ["path", *classifier.answer_columns, "error"]
    return pd.DataFrame(frames, columns=columns)


def source_name(file: Path | str | bytes) -> str:
    return f"<{len(file)} bytes>" if isinstance(file, bytes) else str(file)
