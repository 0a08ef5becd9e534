"""Small file helpers shared by the stages: atomic writes, JSON in and out."""

import errno
import glob
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.errors import StagewiseError

# Why a write found no room, and what to do. EFBIG: a file-size limit (ulimit -f, a batch
# scheduler's; raised only with SIGXFSZ ignored, else that signal kills the process) or the
# filesystem's largest file.
NO_ROOM = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EFBIG: (
        "file too large for the file-size limit (ulimit -f) or the filesystem",
        "raise the limit or write elsewhere",
    ),
}


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary sibling of path, fsync it, then rename it over path.

    A reader (or a crash) never sees a half-written file: path is either the old file,
    absent, or complete. A full disk (or quota, or file-size limit) is a StagewiseError naming
    the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_files(path)
    tmp = None
    try:
        tmp = new_sibling(path)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in NO_ROOM:
            raise
        problem, remedy = NO_ROOM[e.errno]
        raise StagewiseError(
            f"{problem} to write {path}; the previous version, if any, is intact: {remedy} "
            "and rerun"
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def new_sibling(path: Path) -> Path:
    """A new empty file beside path, created with mode 0o666 so that the kernel applies the
    umask (and any default ACL), as for any file the user makes: a team's shared folder gets
    group-readable outputs. tempfile.mkstemp would make it 0600 whatever the umask; reading the
    umask to chmod afterwards would mean setting it, which races with other threads."""
    tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: a 64-bit random name never collides in practice, and never silently if it does.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


# Temporary files name their writer (host and process), so that the next write of the same path
# removes what a killed writer left: a SIGKILL skips atomic_write's own clean-up.
HOST = socket.gethostname().replace(".", "_")


def remove_dead_writers_files(path: Path) -> None:
    """Delete the temporary siblings of path whose writer, a process of this host, is gone.
    Writers on other hosts (a shared filesystem) and live ones are left alone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{HOST}.*.tmp"):
        pid = tmp.name[len(f".{path.name}.{HOST}.") :].split(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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


def file_md5(path: Path) -> str:
    """The hash DVC records for a file output, so a run can be matched to dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
