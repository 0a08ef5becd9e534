"""moto's standalone S3-compatible server, for tests of DVC remotes on S3 storage."""

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import requests

BUCKET = "team"


@dataclass(frozen=True)
class S3:
    endpoint: str
    key_id: str
    secret: str

    def env(self) -> dict[str, str]:
        """The teammate's keys, in the variables boto3 (and so DVC) reads."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3-compatible server on 127.0.0.1 with an empty bucket (it takes any keys)."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.2)
        keys = S3(endpoint, f"AKIA{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30))
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=keys.key_id,
            aws_secret_access_key=keys.secret,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield keys
    finally:
        server.terminate()
        server.wait(timeout=10)


def add_remotes(project, folder, s3: S3, prefix: str) -> None:
    """The README's two DVC remotes: the folder as the default `team`, and s3://BUCKET/prefix
    on moto as `team-s3`, this user's keys in .dvc/config.local (git-ignored; a teammate
    uses the AWS_* variables)."""
    project.run("dvc", "remote", "add", "--default", "team", str(folder))
    project.run("dvc", "remote", "add", "team-s3", f"s3://{BUCKET}/{prefix}")
    project.run("dvc", "remote", "modify", "team-s3", "endpointurl", s3.endpoint)
    project.run("dvc", "remote", "modify", "--local", "team-s3", "access_key_id", s3.key_id)
    project.run("dvc", "remote", "modify", "--local", "team-s3", "secret_access_key", s3.secret)
