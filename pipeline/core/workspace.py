"""One run at a time owns the workspace's params.yaml.

A stage reads params.yaml once, at start. Another run in the same workspace can rewrite it
meanwhile: a second `dvc exp run` started while one is running stashes and applies its own
params.yaml before DVC's lock stops it, and the first run's later stages then train on the
second's parameters. DVC itself does not notice (both experiments share one set of
executor refs, refs/exps/exec/*, and the failed one deletes them: the first then dies in
DVC with "'NoneType' object is not subscriptable"). So a stage checks, before it starts and
before it writes its outputs, that params.yaml is still the one it started with and, in a
`dvc exp run` in the workspace, still the one this experiment stashed.
"""

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StagewiseError

# DVC's ref to the stash commit of the experiment running in the workspace (DVC 3); the
# commit's message is "dvc-exp:<rev>:<baseline rev>:<experiment name>".
EXEC_MERGE = "refs/exps/exec/EXEC_MERGE"
QUEUE_INSTEAD = (
    "run experiments one after another, or queue them (each then runs in its own copy): "
    "dvc exp run --queue -S ..., then dvc queue start"
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def workspace_experiment(root: Path) -> str | None:
    """The name of the `dvc exp run` this process belongs to, when it runs in root itself
    (queued experiments run in private copies, where nothing else writes)."""
    name, dvc_root = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_ROOT")
    if name and dvc_root and Path(dvc_root).resolve() == root.resolve():
        return name
    return None


def git(root: Path, *args: str) -> bytes | None:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    return result.stdout if result.returncode == 0 else None


def stashed_params(root: Path, experiment: str) -> bytes | None:
    """params.yaml as DVC stashed it for experiment; None when the workspace's running
    experiment is no longer this one (another replaced or removed DVC's executor refs)."""
    message = git(root, "log", "-1", "--format=%s", EXEC_MERGE)
    if message is None or not message.decode("utf-8", "replace").strip().endswith(f":{experiment}"):
        return None
    return git(root, "show", f"{EXEC_MERGE}:params.yaml")


@dataclass(frozen=True)
class ParamsGuard:
    """params.yaml as a stage found it when it started, to check again later."""

    root: Path
    stage: str
    started_digest: str

    @classmethod
    def start(cls, root: Path, stage: str) -> "ParamsGuard":
        return cls(root, stage, digest(root / "params.yaml"))

    def check(self) -> None:
        """Raise when params.yaml is no longer what this stage started on, or no longer the
        parameters of the workspace experiment this stage belongs to."""
        params = self.root / "params.yaml"
        if experiment := workspace_experiment(self.root):
            stashed = stashed_params(self.root, experiment)
            if stashed is None or hashlib.sha256(stashed).hexdigest() != digest(params):
                raise StagewiseError(
                    f"another `dvc exp run` in this workspace rewrote {params} while experiment "
                    f"{experiment} ran, so {self.stage} stopped before writing its outputs; "
                    + QUEUE_INSTEAD
                )
        if digest(params) != self.started_digest:
            raise StagewiseError(
                f"{params} changed while {self.stage} ran (another run in this workspace?), so "
                f"it stopped before writing its outputs; rerun it, and {QUEUE_INSTEAD}"
            )
