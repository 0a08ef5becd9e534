"""Small file helpers shared by the stages: atomic writes, JSON in and out."""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import StagewiseError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary sibling of path, fsync it, then rename it over path.

    A reader (or a crash) never sees a half-written file: path is either the old file,
    absent, or complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: Path, produced_by: str) -> Any:
    """Read a JSON file another stage wrote; a missing file names the stage to run first."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StagewiseError(f"{path} is missing: run `dvc repro {produced_by}` first") from None
    except json.JSONDecodeError as e:
        raise StagewiseError(
            f"{path} is not valid JSON ({e}); rerun `dvc repro {produced_by}`"
        ) from None


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """rows (dicts with the same keys) as a CSV with a header line; columns name the header
    when there may be no rows."""
    import csv
    import io

    buffer = io.StringIO()
    fieldnames = columns or (list(rows[0]) if rows else [])
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))
