"""Which version of the raw dataset a model was trained on, as DVC recorded it.

DVC hashes ingest's data dependencies (data.root and data.table, dvc.yaml) and writes their md5
to dvc.lock: that md5 names the dataset version (for a folder added with `dvc add`, it is the
md5 in its .dvc file too, and `dvc checkout` of a commit that records it brings those files
back). Where the dataset lives says how to get it back: a DVC remote, the repository or URL it
was imported from, git, or a folder outside the project that DVC hashes but cannot restore.

Read from DVC's own files (dvc.lock, the .dvc file, .dvc/config): no hash of our own.
"""

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from pipeline.core.config import DataConfig
from pipeline.core.io import file_md5
from pipeline.core.paths import Paths

UNKNOWN = "unknown"


def dataset_version(data: DataConfig, paths: Paths) -> dict[str, str]:
    """MLflow tags naming the dataset version: dataset.md5 (data.root's md5 in dvc.lock),
    dataset.table_md5 (data.table's, when it is a file of its own), dataset.path and
    dataset.source (where it lives). The md5s are "unknown" when dvc.lock does not describe
    the ingested data on disk (a stage run by hand after the data changed)."""
    deps = locked_ingest_deps(paths)
    tags = {
        "dataset.path": data.root,
        "dataset.md5": deps.get(normalized(data.root), UNKNOWN),
        "dataset.source": source_of(Path(data.root), paths.root),
    }
    if normalized(data.table) != normalized(data.root):
        tags["dataset.table_md5"] = deps.get(normalized(data.table), UNKNOWN)
    return tags


def normalized(path: str) -> str:
    return os.path.normpath(path)


def locked_ingest_deps(paths: Paths) -> dict[str, str]:
    """{dep path: md5} of the ingest stage in dvc.lock, when the manifest on disk is the one
    that lock entry records; else {} (the lock describes other data)."""
    try:
        lock = yaml.safe_load((paths.root / "dvc.lock").read_text(encoding="utf-8"))
        ingest = lock["stages"]["ingest"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    manifest = paths.manifest.relative_to(paths.root).as_posix()
    recorded = {out["path"]: out.get("md5") for out in ingest.get("outs", [])}
    if not paths.manifest.exists() or recorded.get(manifest) != file_md5(paths.manifest):
        return {}
    return {normalized(dep["path"]): dep.get("md5", UNKNOWN) for dep in ingest.get("deps", [])}


def source_of(root: Path, project: Path) -> str:
    """Where the dataset lives, and so how it is restored: 'dvc remote <url>', 'dvc import
    <url> <path>@<rev>', 'dvc import-url <url>', 'git', or why it cannot be restored."""
    absolute = root if root.is_absolute() else project / root
    if not absolute.resolve().is_relative_to(project.resolve()):
        return "outside the project: hashed by DVC in place, not versioned or pushed"
    if tracking := dvc_file_of(absolute, project):
        return tracked_source(tracking, project)
    if git_tracks(absolute, project):
        return "git"
    return "in the project but not versioned: run `dvc add` on it"


def dvc_file_of(path: Path, project: Path) -> Path | None:
    """The .dvc file `dvc add` / `dvc import` wrote for path or a folder above it (they name it
    <folder>.dvc, beside the folder)."""
    for folder in [path, *path.parents]:
        if folder == project or not folder.is_relative_to(project):
            return None
        candidate = folder.with_name(folder.name + ".dvc")
        if candidate.is_file():
            return candidate
    return None


def tracked_source(dvc_file: Path, project: Path) -> str:
    record = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    for dep in record.get("deps") or []:
        if repo := dep.get("repo"):  # dvc import <repository> <path>
            rev = repo.get("rev_lock") or repo.get("rev") or ""
            return f"dvc import {without_credentials(repo.get('url', ''))} {dep['path']}@{rev}"
        return f"dvc import-url {without_credentials(dep['path'])}"
    return f"dvc remote {default_remote_url(project) or '(none set: dvc remote add --default)'}"


def default_remote_url(project: Path) -> str | None:
    from dvc.config import Config  # DVC's reader of .dvc/config (+ config.local), 0.15 s

    config = Config(dvc_dir=str(project / ".dvc"))
    name = config["core"].get("remote")
    remote = config["remote"].get(name) if name else None
    return without_credentials(remote["url"]) if remote else None


def without_credentials(url: str) -> str:
    """url without a user:password@ part: tags are readable by everyone with the store."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def git_tracks(path: Path, project: Path) -> bool:
    result = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "--", str(path)],
        cwd=project,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0
