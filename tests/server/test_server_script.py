"""scripts/tracking_server.sh keeps its secrets: it uses only a state folder it made that no
one else can write, its default folder is private, and no password is on a command line."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.server.conftest import SCRIPT, Server, start

NOBODY = 65534


def script(server_dir: Path | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STAGEWISE_SERVER_DIR"}
    if server_dir is not None:
        env["STAGEWISE_SERVER_DIR"] = str(server_dir)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )


def refused(server_dir: Path, why: str) -> None:
    """The script stops at once with one line saying why, and writes nothing there."""
    before = sorted(p.name for p in server_dir.iterdir())
    mode = server_dir.stat().st_mode
    result = script(server_dir, "start")
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.count("\n") == 1 and why in result.stderr, result.stderr
    assert sorted(p.name for p in server_dir.iterdir()) == before
    assert server_dir.stat().st_mode == mode


@pytest.fixture
def state(tmp_path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    return folder


def test_a_folder_others_can_write_is_refused(state):
    state.chmod(0o777)
    refused(state, "can be written by others (mode 777)")


def test_a_folder_the_script_did_not_make_is_refused(state):
    (state / "credentials.env").write_text("MLFLOW_TRACKING_PASSWORD=planted\n")
    refused(state, "has no .stagewise-server: this script did not make it")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_or_secret_of_another_user_is_refused(state):
    os.chown(state, NOBODY, NOBODY)
    refused(state, f"belongs to user {NOBODY}, not you")
    os.chown(state, 0, 0)
    (state / ".stagewise-server").touch()
    planted = state / "credentials.env"
    planted.write_text("MLFLOW_TRACKING_PASSWORD=planted\n")
    planted.chmod(0o600)
    os.chown(planted, NOBODY, NOBODY)
    refused(state, "credentials.env is not yours")
    os.chown(planted, 0, 0)
    planted.chmod(0o644)
    refused(state, "credentials.env can be read or written by others (mode 644)")


def test_the_default_folder_is_the_users_own_and_private():
    default = Path(f"/tmp/stagewise-server-{os.geteuid()}")
    existed = default.exists()
    try:
        result = script(None, "status")  # starts nothing: both are down
        assert result.returncode == 3 and f"({default})" in result.stdout, result
        info = default.stat()
        assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o711
        assert (default / ".stagewise-server").is_file()
    finally:
        if not existed:
            shutil.rmtree(default, ignore_errors=True)


def test_no_password_is_on_a_command_line(tmp_path):
    """Every psql the script runs is recorded (a wrapper in STAGEWISE_PG_BIN): the database
    password goes to PostgreSQL on stdin, never in psql's arguments; nor is any secret in the
    running MLflow server's command lines (readable by every user in the process list)."""
    real = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
    shim = Path(tempfile.mkdtemp(prefix="stagewise-pg-bin-"))  # PostgreSQL's user runs these
    record = shim / "psql.args"
    record.touch()
    record.chmod(0o666)
    for program in real.iterdir():
        (shim / program.name).symlink_to(program)
    (shim / "psql").unlink()
    (shim / "psql").write_text(f'#!/bin/sh\necho "$*" >> {record}\nexec {real}/psql "$@"\n')
    (shim / "psql").chmod(0o755)
    shim.chmod(0o755)
    own = Path(tempfile.mkdtemp(prefix="stagewise-server-"))
    os.environ["STAGEWISE_PG_BIN"] = str(shim)
    try:
        server = start(own)
        secrets = [
            server.password,
            (own / "pg_password").read_text().strip(),
            (own / "secret_key").read_text().strip(),
        ]
        assert "CREATE ROLE" not in record.read_text() and record.read_text().count("\n") >= 1
        pid = int((own / "mlflow.pid").read_text())
        group = [p for p in Path("/proc").iterdir() if p.name.isdigit() and pgid(p) == pid]
        lines = [(p / "cmdline").read_bytes().replace(b"\0", b" ").decode() for p in group]
        assert len(lines) >= 2 and any("mlflow" in line for line in lines)
        shown = record.read_text() + "".join(lines)
        assert [s for s in secrets if s in shown] == []
    finally:
        del os.environ["STAGEWISE_PG_BIN"]
        Server(own, "", "", "").script("stop")
        shutil.rmtree(own, ignore_errors=True)
        shutil.rmtree(shim, ignore_errors=True)


def pgid(process: Path) -> int | None:
    try:
        return os.getpgid(int(process.name))
    except ProcessLookupError:
        return None
