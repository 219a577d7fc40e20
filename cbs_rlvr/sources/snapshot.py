"""The snapshot: any source -> runs.parquet, history.parquet, excluded_runs.csv, manifest.json.

Written atomically as a set (temporary files, the previous set kept in data/.prev, manifest
last with the sha256 of every file), read back with those hashes checked. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.select import apply_phase_selection
from ..errors import (
    DataSourceError,
    SnapshotError,
    SnapshotMissingError,
    portable_source,
    redact_secrets,
    secrets_in_environment,
    source_text,
)
from ..params import load_all_phase_params, selection_of_invalid
from .export_dir import load_export_dir
from .manifest import SNAPSHOT_FILES, file_sha256, remove_stale_temps
from .manifest import snapshot_data_dir as _snapshot_data_dir
from .manifest import verify_snapshot_files as _verify_snapshot_files
from .wandb_api import fetch_wandb_project
from .wandb_file import find_wandb_files, load_offline_runs

_DATA_LOG = logging.getLogger("cbs_rlvr.data")

SNAPSHOT_SCHEMA_VERSION = 1

# --------------------------------------------------------------------------------------------
# Snapshot: build, write atomically, read back
# --------------------------------------------------------------------------------------------
def _package_versions() -> dict:
    from importlib import metadata

    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in ("numpy", "pandas", "pyarrow", "wandb", "protobuf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


_DIGEST_BLOCK = 1 << 16


def _frame_digest(hasher: Any, name: str, frame: pd.DataFrame) -> None:
    """Feed a canonical, writer-independent encoding of a frame into a hash."""
    hasher.update(f"table:{name}:{len(frame)}\n".encode())
    for column in frame.columns:
        series = frame[column]
        hasher.update(f"column:{column}\n".encode())
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(values)
            hasher.update(np.where(missing, 0.0, values).tobytes())
            hasher.update(np.packbits(missing).tobytes())
        else:  # in blocks, so a history's run_id column is never one giant string
            for start in range(0, len(series), _DIGEST_BLOCK):
                if start:
                    hasher.update(b"\x1f")
                values = series.iloc[start:start + _DIGEST_BLOCK].to_numpy(dtype=object)
                texts = [str(v) for v in values.tolist()]
                for i in np.flatnonzero(pd.isna(values)):
                    texts[i] = "\x00"
                hasher.update("\x1f".join(texts).encode())


def snapshot_content_hash(runs: pd.DataFrame, history: pd.DataFrame, excluded: pd.DataFrame) -> str:
    """sha256 over the snapshot's data (not its creation time): same input -> same hash."""
    hasher = hashlib.sha256()
    for name, frame in (("runs", runs), ("history", history), ("excluded", excluded)):
        _frame_digest(hasher, name, frame)
    return "sha256:" + hasher.hexdigest()


def _classify_source(source: str) -> tuple[str, Any]:
    text = str(source).strip()
    if text.startswith("wandb:"):
        path = text[len("wandb:"):].strip().strip("/")
        parts = path.split("/")
        if len(parts) != 2 or not all(parts):
            raise DataSourceError(f"bad W&B source {redact_secrets(text)!r}: expected wandb:<entity>/<project>")
        return "wandb", path
    path = Path(text).expanduser()
    hint = "expected an offline-runs directory, an export directory with runs.csv, or wandb:<entity>/<project>"
    if not path.exists():
        raise DataSourceError(f"source not found: {text} ({hint})")
    if path.is_file() and path.name == "runs.csv":
        return "export", path.parent
    if not path.is_dir():
        raise DataSourceError(f"source is not a directory: {text} ({hint})")
    if (path / "runs.csv").is_file():
        return "export", path
    if not find_wandb_files(path):
        raise DataSourceError(f"no W&B offline run files (*.wandb) and no runs.csv under {text}")
    return "offline", path


def clean_source_strings(frames: Mapping) -> dict:
    """The snapshot's one boundary for text from a source: every string of runs and excluded
    (names, ids, tags, group, config, reasons...) and every history key passes through
    `errors.source_text` (secrets redacted, line-breaking characters made visible), whichever
    source it came from, before anything is hashed, written or shown. A column whose strings
    are all clean is left as it is (a clean sweep's snapshot does not change)."""
    secrets = secrets_in_environment()
    cleaned: dict[str, str] = {}

    def changes(values: Iterable) -> dict[str, str]:
        found = {}
        for value in values:
            if isinstance(value, str):
                if value not in cleaned:
                    cleaned[value] = source_text(value, secrets)
                if cleaned[value] != value:
                    found[value] = cleaned[value]
        return found

    out = dict(frames)
    for name in ("runs", "excluded"):
        frame = frames[name]
        replaced = {}
        for column in frame.columns:
            if frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype):
                found = changes(pd.unique(frame[column].dropna()))
                if found:
                    replaced[column] = frame[column].replace(found)
        if replaced:
            out[name] = frame.assign(**replaced)
    history = frames["history"]
    run_ids = changes(pd.unique(frames["runs"]["run_id"].dropna())) if len(frames["runs"]) else {}
    keys = {c: source_text(c, secrets) for c in history.columns if isinstance(c, str)}
    keys = {c: k for c, k in keys.items() if k != c}
    if run_ids or keys:
        history = history.assign(run_id=history["run_id"].replace(run_ids)) if run_ids else history
        taken, drop = set(history.columns) - set(keys), []
        for column, key in keys.items():  # two keys that differ only in a secret: the first stays
            if key in taken:
                drop.append(column)
            taken.add(key)
        history = history.drop(columns=drop).rename(columns=keys)
        first = [c for c in ("run_id", "step") if c in history.columns]  # then the keys in order,
        out["history"] = history[first + sorted(c for c in history.columns if c not in first)]  # as ever
    return out


def build_snapshot(source: str, previous_dir: str | os.PathLike | None = None, api: Any = None,
                   params_dir: str | os.PathLike | None = None, **fetch_options: Any) -> dict:
    """Read a source into the snapshot tables: dict(runs, history, excluded, manifest).

    source: `wandb:<entity>/<project>`, an export directory (has runs.csv) or a directory of
    offline runs (`.wandb` files). For W&B, `previous_dir` (an earlier snapshot's output dir)
    makes the fetch incremental; a corrupt earlier snapshot is ignored with a warning.
    `fetch_options` go to `fetch_wandb_project` (max_workers, limits, progress, ...).
    Resumed runs are stitched by every source (cbs_rlvr/data/resume.py). params_dir: the phases'
    params files; a run that no phase selects (by name, or by its params' `select`) is listed in
    excluded_runs.csv with what would include it. Without params_dir runs are selected by name.
    """
    kind, target = _classify_source(source)
    phase_params = None
    if params_dir is not None:
        phase_params, invalid = load_all_phase_params(params_dir)  # the build reports the invalid
        for phase in invalid:  # their runs stay as they were, selected as the file would
            phase_params[phase] = selection_of_invalid(params_dir, phase)
    # the phases' own metric patterns are kept beside the keys the analysis always reads
    key_patterns = tuple(sorted({str(p["metric"]) for p in (phase_params or {}).values() if p.get("metric")}))
    warnings_: list[str] = []
    extra: dict[str, Any] = {}
    if kind == "wandb":
        previous_runs = previous_history = None
        if previous_dir is not None:
            try:
                previous_runs, previous_history, _ = read_snapshot(previous_dir)
            except SnapshotMissingError:
                pass  # first snapshot: nothing to reuse
            except SnapshotError as exc:
                message = f"earlier snapshot ignored, fetching every run again: {exc}"
                _DATA_LOG.warning(message)
                warnings_.append(message)
        fetch_options.setdefault("key_patterns", key_patterns)
        frames = fetch_wandb_project(target, api=api, previous_runs=previous_runs,
                                     previous_history=previous_history, **fetch_options)
        warnings_.extend(frames.pop("warnings"))
        extra = {"n_fetched": frames.pop("n_fetched"), "n_reused": frames.pop("n_reused")}
    elif kind == "export":
        frames = load_export_dir(target, key_patterns)
    else:
        frames = load_offline_runs(target, key_patterns=key_patterns)
    frames = apply_phase_selection(frames, phase_params or None)
    frames = clean_source_strings(frames)
    runs, history, excluded = frames["runs"], frames["history"], frames["excluded"]
    manifest = {
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "source": portable_source(source),
        "source_kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_runs": len(runs),
        "n_excluded": len(excluded),
        "n_history_rows": len(history),
        "content_hash": snapshot_content_hash(runs, history, excluded),
        **extra,
        "warnings": [source_text(w) for w in warnings_],
        "package_versions": _package_versions(),
    }
    return {"runs": runs, "history": history, "excluded": excluded, "manifest": manifest}


def _write_temp_file(directory: Path, name: str, write: Callable[[Any], None]) -> Path:
    """A temporary file beside `name` in directory, filled by write(binary handle) and fsynced."""
    fd, temp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (shared clusters)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # a full disk: said as a failed write of the file, not of a handle
        Path(temp).unlink(missing_ok=True)
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(directory / name)) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


# history rows per parquet row group: a reader of one phase decodes one group at a time
HISTORY_ROW_GROUP = 1 << 18


def _write_parquet(frame: pd.DataFrame, handle: Any, row_group: int | None = None) -> None:
    """frame -> parquet, converted to Arrow one row group at a time (a whole-frame conversion
    would hold a second copy of a large history)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(frame, preserve_index=False)  # types inferred one column at a time
    row_group = row_group or HISTORY_ROW_GROUP
    with pq.ParquetWriter(handle, schema) as writer:
        for start in range(0, max(len(frame), 1), row_group):
            block = frame.iloc[start:start + row_group]
            writer.write_table(pa.Table.from_pandas(block, schema=schema, preserve_index=False))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_snapshot(snapshot: Mapping, out_dir: str | os.PathLike) -> dict:
    """Write <out_dir>/data/{runs.parquet, history.parquet, excluded_runs.csv, manifest.json}.

    Atomic per file and safe as a set: all files are first written to temporary names in the
    same directory; the current set is hard-linked into data/.prev/; then each file replaces its
    predecessor with os.replace, manifest.json last. The manifest records the sha256 of every
    other file, so a reader detects a torn set and can fall back to .prev. Returns the manifest.
    """
    data_dir = Path(out_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(data_dir)
    writers: dict[str, Callable[[Any], None]] = {
        "runs.parquet": lambda handle: _write_parquet(snapshot["runs"], handle),
        "history.parquet": lambda handle: _write_parquet(snapshot["history"], handle),
        "excluded_runs.csv": lambda handle: handle.write(
            snapshot["excluded"].to_csv(index=False, lineterminator="\n").encode()),
    }
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = _write_temp_file(data_dir, name, write)
        manifest = dict(snapshot["manifest"])
        manifest["files"] = {name: {"sha256": file_sha256(temps[name]), "bytes": temps[name].stat().st_size}
                             for name in writers}
        text = (json.dumps(manifest, indent=2) + "\n").encode()
        temps["manifest.json"] = _write_temp_file(data_dir, "manifest.json", lambda handle: handle.write(text))
        _keep_previous_set(data_dir)
        for name in [*SNAPSHOT_FILES, "manifest.json"]:
            os.replace(temps.pop(name), data_dir / name)
        _fsync_directory(data_dir)
        shutil.rmtree(data_dir / ".prev", ignore_errors=True)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return manifest


def _keep_previous_set(data_dir: Path) -> None:
    """Hard-link the current snapshot into data/.prev/ before replacing its files.

    Only a consistent set is kept: after a torn write the older good .prev stays in place.
    """
    try:
        _verify_snapshot_files(data_dir)
    except SnapshotError:
        return
    staging = Path(tempfile.mkdtemp(prefix=f".prev.{os.getpid()}.", suffix=".tmp", dir=data_dir))
    try:
        for name in [*SNAPSHOT_FILES, "manifest.json"]:
            if (data_dir / name).is_file():
                try:
                    os.link(data_dir / name, staging / name)
                except OSError:
                    shutil.copy2(data_dir / name, staging / name)
        shutil.rmtree(data_dir / ".prev", ignore_errors=True)
        os.replace(staging, data_dir / ".prev")
    except OSError:  # another writer put its .prev in place meanwhile: keep that one
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class SnapshotHistory:
    """A snapshot's history.parquet, read on demand: the rows of some runs, some columns.

    What `open_snapshot(..., lazy=True)` returns in place of the history frame, so that a section
    holds its phase's runs only (`measure.phase_runs` reads them), however large the sweep. The
    file is opened when the set is verified, so a snapshot written meanwhile does not change
    what is read."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = Path(path)
        # pre_buffer=False: read one row group at a time (the default reads ahead the whole file)
        self._file = pq.ParquetFile(self.path, read_dictionary=["run_id"], pre_buffer=False)
        self.columns = list(self._file.schema_arrow.names)

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def __repr__(self) -> str:
        return (f"<SnapshotHistory {self.path}: {len(self):,} rows, {len(self.columns)} columns; "
                ".read(run_ids, columns) gives a frame>")

    def read(self, run_ids: Iterable | None = None, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """The history rows of `run_ids` (default: every run) in the file's order (run id, then
        step), with `columns` (default: all; run_id and step always).

        Two passes over the row groups: the run ids first (which rows are kept), then the other
        columns, each group's kept rows copied straight into arrays sized for the result. Memory
        holds the result once plus one row group; an allocator never sees the many mid-sized
        blocks a decode-then-concatenate leaves behind."""
        names = self.columns if columns is None else list(dict.fromkeys(
            ["run_id", "step", *(c for c in columns if c in self.columns)]))
        wanted = None if run_ids is None else {str(r) for r in run_ids}
        ids: dict[str, int] = {}
        selections = []  # (row group, mask of its kept rows or None for all, their run codes)
        for group in range(self._file.num_row_groups):
            run_id = self._file.read_row_group(group, columns=["run_id"]).column(0).combine_chunks()
            labels = [str(v) for v in run_id.dictionary.to_pylist()]
            indices = run_id.indices.to_numpy(zero_copy_only=False)
            mask = None if wanted is None else np.array([v in wanted for v in labels], dtype=bool)[indices]
            if mask is not None and not mask.any():
                continue
            local = np.array([ids.setdefault(v, len(ids)) for v in labels], dtype=np.int64)
            selections.append((group, mask, local[indices if mask is None else indices[mask]]))
        total = sum(len(codes) for _, _, codes in selections)
        schema = self._file.schema_arrow
        data = {name: np.empty(total, dtype=schema.field(name).type.to_pandas_dtype())
                for name in names if name != "run_id"}
        start = 0
        for group, mask, codes in selections:
            table = self._file.read_row_group(group, columns=list(data))
            for name, target in data.items():
                values = table.column(name).to_numpy()
                target[start:start + len(codes)] = values if mask is None else values[mask]
            start += len(codes)
            del table
        labels = np.array(list(ids), dtype=object)
        run_codes = np.concatenate([codes for _, _, codes in selections]) if selections else np.empty(0, np.int64)
        frame = {"run_id": pd.array(labels[run_codes] if len(labels) else np.empty(0, object), dtype="str"), **data}
        return pd.DataFrame({name: frame[name] for name in names}, copy=False)


def _read_verified_set(data_dir: Path, lazy: bool = False) -> tuple[pd.DataFrame, Any, dict]:
    manifest = _verify_snapshot_files(data_dir)
    try:
        runs = pd.read_parquet(data_dir / "runs.parquet")
        history = SnapshotHistory(data_dir / "history.parquet")
        if not lazy:
            history = history.read()
    except Exception as exc:  # noqa: BLE001 -- any parquet error means a corrupt file
        raise SnapshotError(f"corrupt snapshot in {data_dir}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in ("run_id", "name", "phase", "n_prompts", "n_rollouts", "source") if c not in runs.columns]
    missing += [f"history.{c}" for c in ("run_id", "step") if c not in history.columns]
    if missing:
        raise SnapshotError(f"snapshot in {data_dir} lacks column(s) {', '.join(missing)}")
    return runs, history, manifest


def read_snapshot(out_dir: str | os.PathLike, lazy: bool = False) -> tuple[pd.DataFrame, Any, dict]:
    """Read a snapshot written by `write_snapshot` -> (runs, history, manifest); with lazy=True
    the history is a `SnapshotHistory` to read runs and columns from.

    Every file is checked against the hashes in manifest.json. A torn set (a write interrupted
    between two renames) falls back, with a warning, to the previous complete set in data/.prev.
    Raises SnapshotMissingError / SnapshotError with a one-line message otherwise.
    """
    data_dir = _snapshot_data_dir(out_dir)
    try:
        return _read_verified_set(data_dir, lazy)
    except SnapshotMissingError:
        raise
    except SnapshotError as exc:
        backup = data_dir / ".prev"
        if not backup.is_dir():
            raise
        try:
            runs, history, manifest = _read_verified_set(backup, lazy)
        except SnapshotError:
            raise exc from None
        _DATA_LOG.warning("%s; using the previous complete snapshot kept in %s", exc, backup)
        return runs, history, manifest


def snapshot_unchanged(manifest: dict, out_dir) -> bool:
    """True when OUT already holds a readable snapshot of the same source with the same content."""
    try:  # the per-file hashes prove the set is whole; no need to parse the parquet again
        old = _verify_snapshot_files(_snapshot_data_dir(out_dir))
    except Exception:  # noqa: BLE001 -- missing, torn or corrupt: write a new one
        return False
    return (old.get("content_hash") == manifest.get("content_hash")
            and old.get("source") == manifest.get("source"))


def read_excluded_runs(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The excluded_runs.csv of a snapshot (source, run_id, name, reason)."""
    return pd.read_csv(_snapshot_data_dir(out_dir) / "excluded_runs.csv", dtype=str, keep_default_na=False)


def open_snapshot(out_dir: str | Path, source: str | None = None, params_dir: str | Path | None = None,
                  lazy: bool = False):
    """(runs, history, manifest) of the snapshot in <out_dir>/data. When there is none yet
    (a notebook opened in JupyterLab before any `make snapshot`) and a source is given, build it
    first with the same code as `make snapshot` (phases selected with params_dir, by default
    the project's params/). lazy=True: the history is a `SnapshotHistory`, from which
    `phase_runs` reads one phase's runs (what the sections do: memory then follows the phase,
    not the sweep)."""
    from ..paths import DEFAULT_PARAMS, project_path

    out_dir = Path(out_dir)
    if source is not None and not (out_dir / "data" / "manifest.json").exists():
        params_dir = project_path(params_dir if params_dir is not None else DEFAULT_PARAMS)
        write_snapshot(build_snapshot(source, params_dir=params_dir if params_dir.is_dir() else None), out_dir)
    return read_snapshot(out_dir, lazy)


