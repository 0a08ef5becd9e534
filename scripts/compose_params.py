"""Compose conf/ into params.yaml, exactly as `dvc exp run -S ...` does.

`dvc repro` reads params.yaml as it is; run this after editing conf/ (scripts/run.sh does).
Arguments are Hydra overrides: `python scripts/compose_params.py model=resnet18 train.epochs=5`.
With --check, writes nothing and exits 1 when params.yaml differs from conf/ composed.
"""

import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def compose(output: Path, overrides: list[str]) -> None:
    """DVC's own composition (same config dir, name and plugin path as .dvc/config gives it)."""
    compose_and_dump(output, str(ROOT / "conf"), None, "config", str(ROOT), overrides)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    overrides = [arg for arg in argv if arg != "--check"]
    if not check:
        compose(PARAMS, overrides)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        compose(fresh, overrides)
        if fresh.read_text() != PARAMS.read_text():
            print("params.yaml is out of date with conf/: run `python scripts/compose_params.py`")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
