"""A temporary copy of the project, to run the real DVC pipeline in without touching ours."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.paths import PROJECT_ROOT

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "stagewise tests",
    "GIT_AUTHOR_EMAIL": "tests@stagewise.invalid",
    "GIT_COMMITTER_NAME": "stagewise tests",
    "GIT_COMMITTER_EMAIL": "tests@stagewise.invalid",
}


@dataclass
class ProjectCopy:
    root: Path

    @classmethod
    def create(cls, destination: Path) -> "ProjectCopy":
        """Copy the source files git knows (tracked or new, not ignored) into a fresh repo."""
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        for name in filter(None, listed):
            if name == "data/holdout_ledger.json":
                continue  # each copy starts with a test set nobody has looked at
            source = PROJECT_ROOT / name
            if source.is_file():
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        copy = cls(destination)
        copy.run("git", "init", "-q")
        copy.run("git", "add", "-A")
        copy.run("git", "commit", "-qm", "copy")
        return copy

    def env(self, warnings: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if not warnings:
            env["PYTHONWARNINGS"] = "ignore"
        return {**env, **GIT_IDENTITY}

    def run(
        self, *command: str, check: bool = True, warnings: bool = False
    ) -> subprocess.CompletedProcess:
        """Run a command in the copy; warnings=True shows Python warnings as a user sees them."""
        result = subprocess.run(
            command, cwd=self.root, env=self.env(warnings), capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def compose(self, *overrides: str) -> None:
        self.run("python", "scripts/compose_params.py", *overrides)

    def json(self, relative: str) -> dict:
        return json.loads((self.root / relative).read_text())

    def lock_deps(self, stage: str) -> dict[str, str]:
        """{dep path: md5} from dvc.lock for the stage."""
        import yaml

        lock = yaml.safe_load((self.root / "dvc.lock").read_text())["stages"]
        return {dep["path"]: dep["md5"] for dep in lock[stage]["deps"]}

    def lock_outs(self, *stages: str) -> dict[str, str]:
        """{out path: md5} from dvc.lock for the given stages."""
        import yaml

        lock = yaml.safe_load((self.root / "dvc.lock").read_text())["stages"]
        return {out["path"]: out["md5"] for stage in stages for out in lock[stage]["outs"]}


def ran_stages(output: str) -> list[str]:
    """Stage names DVC actually ran (not skipped or restored), in order."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


# The tiny training config every end-to-end test runs the pipeline with.
TINY = ("train.epochs=2", "model.widths=[8,16]")
ALL_STAGES = [
    "ingest", "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
]  # fmt: skip


def shared_root(tmp_path_factory) -> Path:
    """A folder shared by every pytest-xdist worker of this session (each has its own
    basetemp below it), or the basetemp of a plain run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def pipeline_template(tmp_path_factory) -> tuple[Path, dict]:
    """A project copy that ran the whole tiny pipeline (`dvc repro`, warnings shown as a user
    sees them) once for the whole session, and that run's output. Built by the first worker
    that asks; the others wait for it and copy it: one pipeline run instead of one per module."""
    from filelock import FileLock

    template = shared_root(tmp_path_factory) / "pipeline-template"
    output = template.with_name("pipeline-template.json")
    with FileLock(template.with_name("pipeline-template.lock")):
        if not output.exists():
            shutil.rmtree(template, ignore_errors=True)
            copy = ProjectCopy.create(template)
            copy.compose(*TINY)
            result = copy.run("dvc", "repro", warnings=True, check=False)
            output.write_text(
                json.dumps({k: getattr(result, k) for k in ("returncode", "stdout", "stderr")})
            )
    return template, json.loads(output.read_text())


def copy_of_template(tmp_path_factory, name: str) -> ProjectCopy:
    """A private copy of the pipeline template (a moved project: its MLflow store follows it)
    for tests that change their workspace."""
    from pipeline.core.paths import Paths
    from pipeline.tracking.store import open_store

    template, first = pipeline_template(tmp_path_factory)
    assert first["returncode"] == 0, first["stdout"] + first["stderr"]
    destination = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(template, destination, symlinks=True)
    open_store(Paths(destination))  # as the first stage run there would: artifacts follow
    return ProjectCopy(destination)


def mlflow_client(project: ProjectCopy):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
