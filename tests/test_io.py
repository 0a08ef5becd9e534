"""Files written through pipeline.core.io: atomic, and with the permissions the user's umask asks."""

import os
import stat

import pandas as pd
import pytest

from pipeline.core.io import atomic_write, read_json, write_json


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the previous one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_the_umask_asks_for(tmp_path, umask, mask, expected):
    umask(mask)
    report = tmp_path / "data/ingested/report.json"
    write_json(report, {"rejected": []})
    table = tmp_path / "data/split/split.parquet"
    atomic_write(table, lambda tmp: pd.DataFrame({"id": [1]}).to_parquet(tmp))
    write_json(report, {"rejected": ["again"]})  # replacing a file, too
    assert (mode(report), mode(table)) == (expected, expected)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "report.json",
        "split.parquet",
    ]  # no temporary file left behind


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    """A SIGKILL skips atomic_write's clean-up; the next write of the path removes the
    temporary file of the dead process, and leaves a live writer's alone."""
    import subprocess
    import sys

    from pipeline.core.io import HOST

    target = tmp_path / "train.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = tmp_path / f".train.pt.{HOST}.{dead}.0123456789abcdef.tmp"
    live = tmp_path / f".train.pt.{HOST}.{os.getpid()}.fedcba9876543210.tmp"
    other_host = tmp_path / ".train.pt.elsewhere.1.0123456789abcdef.tmp"
    for file in (left, live, other_host):
        file.write_bytes(b"partial")
    write_json(target, {"epoch": 2})
    assert not left.exists() and live.exists() and other_host.exists()
    assert read_json(target, "train") == {"epoch": 2}
