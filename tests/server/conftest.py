"""A real MLflow tracking server (PostgreSQL + basic-auth + served artifacts), started by
scripts/tracking_server.sh: the one CI started (STAGEWISE_SERVER_DIR), or one of this session's.

Without it the tests skip, saying why; with STAGEWISE_REQUIRE_SERVER=1 (CI) they fail."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.paths import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "tracking_server.sh"


@dataclass(frozen=True)
class Server:
    dir: Path
    uri: str
    username: str
    password: str

    def env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }

    def script(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "STAGEWISE_SERVER_DIR": str(self.dir)}
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
        )

    def crash(self) -> None:
        """The MLflow server's processes die at once (PostgreSQL stays up)."""
        pid = int((self.dir / "mlflow.pid").read_text())
        os.killpg(pid, signal.SIGKILL)


def start(server_dir: Path) -> Server:
    env = {**os.environ, "STAGEWISE_SERVER_DIR": str(server_dir)}
    env.setdefault("STAGEWISE_SERVER_WORKERS", "1")  # 2 cores: one worker starts fastest
    result = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        why = f"the tracking server did not start: {result.stderr.strip()}"
        if os.environ.get("STAGEWISE_REQUIRE_SERVER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    uri = re.search(r"MLFLOW_TRACKING_URI=(\S+)", result.stdout).group(1)
    credentials = dict(
        line.split("=", 1) for line in (server_dir / "credentials.env").read_text().splitlines()
    )
    return Server(
        server_dir,
        uri,
        credentials["MLFLOW_TRACKING_USERNAME"],
        credentials["MLFLOW_TRACKING_PASSWORD"],
    )


@pytest.fixture(scope="module")
def server():
    """The tracking server. A test that stops it starts it again."""
    if given := os.environ.get("STAGEWISE_SERVER_DIR"):
        yield start(Path(given))
        return
    with own_server() as started:
        yield started


@contextmanager
def own_server():
    """A server of one's own (its own PostgreSQL too), stopped and removed at the end."""
    # Not under pytest's tmp folder: PostgreSQL runs as its own user, which must reach it.
    own = Path(tempfile.mkdtemp(prefix="stagewise-server-"))
    try:
        yield start(own)
    finally:
        Server(own, "", "", "").script("stop")
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture
def crashable_server():
    """A server that a test may crash and restart: not the one other test modules (other
    pytest workers) are using at the same time."""
    with own_server() as started:
        yield started
