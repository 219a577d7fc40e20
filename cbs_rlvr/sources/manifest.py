"""The snapshot's manifest (manifest.json): read and verified without pandas.

The manifest records the source, the content hash and the sha256 of every file of the snapshot
set; `verify` proves the set is whole. Kept apart from snapshot.py so that the report build
can decide "nothing changed" in well under a second, without importing pandas or pyarrow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import SnapshotError, SnapshotMissingError

SNAPSHOT_FILES = ("runs.parquet", "history.parquet", "excluded_runs.csv")


def snapshot_data_dir(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    # accept the data directory itself as well as its parent
    return out_dir if (out_dir / "manifest.json").is_file() and not (out_dir / "data").is_dir() else out_dir / "data"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (a large history never sits in memory whole)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_snapshot_files(data_dir: Path) -> dict:
    """The manifest of a snapshot set whose files all match their recorded sha256."""
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise SnapshotMissingError(f"no snapshot in {data_dir} (manifest.json missing); run `make snapshot`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"corrupt snapshot in {data_dir}: manifest.json unreadable ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SnapshotError(f"corrupt snapshot in {data_dir}: manifest.json has no file list")
    for name in SNAPSHOT_FILES:
        path, expected = data_dir / name, manifest["files"].get(name) or {}
        if not path.is_file():
            raise SnapshotError(f"incomplete snapshot in {data_dir}: {name} missing")
        if file_sha256(path) != expected.get("sha256"):
            raise SnapshotError(f"torn or corrupt snapshot in {data_dir}: {name} does not match manifest.json "
                                "(interrupted write?); run `make snapshot` again")
    return manifest


def _writer_alive(temp: Path) -> bool:
    """Whether the process that made a temporary file `.<name>.<pid>.<random>.tmp` still runs
    (another writer's file is left alone; one from a killed writer is removed)."""
    parts = temp.name.split(".")
    pid = parts[-3] if len(parts) >= 4 else ""
    if not pid.isdigit():
        return False  # an older naming: no writer to wait for
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(data_dir: Path) -> None:
    """Remove what interrupted writes left (temporary files, staging folders), but never a
    temporary file of a writer that is still running: it is about to rename it."""
    for stale in data_dir.glob(".*.tmp"):
        if stale.is_dir():
            if not _writer_alive(stale):
                shutil.rmtree(stale, ignore_errors=True)
        elif not _writer_alive(stale):
            stale.unlink(missing_ok=True)
