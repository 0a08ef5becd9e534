"""Compose conf/ into params.yaml, exactly as `dvc exp run -S ...` does, and check it.

`dvc repro` reads params.yaml as it is; run this after editing conf/ (scripts/run.sh does).
Arguments are Hydra overrides: `python scripts/compose_params.py model=resnet18 train.epochs=5`.
The composed config must pass the stages' schema check (stages.common.validated) before it
replaces params.yaml: a typo prints one line naming the key, exits 2 and leaves params.yaml
as it was, so scripts/run.sh stops before DVC deletes any output of a stage that would fail.
With --check, writes nothing and exits 1 when params.yaml differs from conf/ composed.
"""

import difflib
import shutil
import sys
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

from dvc.utils.hydra import compose_and_dump
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script's folder, not the project, is on the import path

from pipeline.core.config import Config, DataConfig
from pipeline.core.errors import StagewiseError
from stages.common import validated

PARAMS = ROOT / "params.yaml"


def schema_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema: train.epochs, train.fine_tune.freeze_epochs, ..."""
    keys = []
    for field in fields(schema):
        name = f"{prefix}{field.name}"
        keys += schema_keys(field.type, f"{name}.") if is_dataclass(field.type) else [name]
    return keys


def hydra_message(error: HydraException) -> str:
    """Hydra's multi-line composition error as one line naming the key or group, and what to do."""
    if isinstance(error, MissingConfigException) and error.options:  # model=resnet999
        group, _, choice = error.missing_cfg_file.rpartition("/")
        return (
            f"{group}={choice}: there is no conf/{error.missing_cfg_file}.yaml; "
            f"use one of {', '.join(error.options)}"
        )
    if key := getattr(error.__cause__, "full_key", None):  # train.epocs=3
        close = difflib.get_close_matches(key, schema_keys(), n=1)
        hint = f"did you mean {close[0]}?" if close else "see conf/ for the keys"
        return f"{key}: no such key; {hint}"
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("See https://"))


def compose(output: Path, overrides: list[str]) -> None:
    """DVC's own composition (same config dir, name and plugin path as .dvc/config gives it),
    then the schema check every stage starts with, on the file as written."""
    try:
        compose_and_dump(output, str(ROOT / "conf"), None, "config", str(ROOT), overrides)
    except HydraException as e:
        raise StagewiseError(f"config: {hydra_message(e)}") from None
    check_dataset(validated(OmegaConf.load(output)).data)


def check_dataset(data: DataConfig) -> None:
    """DVC hashes data.root and data.table before ingest runs (dvc.yaml's deps), so a missing
    one would stop `dvc repro` with DVC's bare 'No such file or directory': say what to do."""
    hints = {
        "data.root": "give the folder of your images (data/raw/<name>, or an absolute path)",
        "data.table": "data=table reads <data.root>/labels.csv unless data.table names the file",
    }
    for key, path in (("data.root", data.root), ("data.table", data.table)):
        if not (ROOT / path).exists():  # an absolute path stays itself
            raise StagewiseError(f"config: {key}={path}: no such file or folder; {hints[key]}")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    overrides = [arg for arg in argv if arg != "--check"]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        try:
            compose(fresh, overrides)
        except StagewiseError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if not check:
            shutil.copyfile(fresh, PARAMS)
        elif fresh.read_text() != PARAMS.read_text():
            print("params.yaml is out of date with conf/: run `python scripts/compose_params.py`")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
