"""Export directories: `runs.csv` plus `history/<run_id>.csv|parquet` (format in the README)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.history import analysis_key_filter, history_frame_steps
from ..data.runs import (
    assemble_snapshot_frames,
    normalise_raw_run,
    set_nested,
    unwrap_config_value,
)
from ..errors import DataSourceError

# --------------------------------------------------------------------------------------------
# Export directory: runs.csv + history/<run_id>.csv|parquet
# --------------------------------------------------------------------------------------------
_EXPORT_META_COLUMNS = {"run_id", "name", "state", "config", "start_time", "created_at",
                        "updated_at", "heartbeat_at", "tags", "group"}
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STEP_COLUMNS = ("_step", "step", "training/global_step")


def _parse_cell(text: str) -> Any:
    """A runs.csv config cell -> number / bool / JSON value where it parses, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _export_config(row: Mapping[str, str], config_columns: Sequence[str]) -> tuple[dict, str | None]:
    config: dict = {}
    text = row.get("config") or ""
    if text.strip():
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            return {}, f"config column is not valid JSON ({exc.msg})"
        if not isinstance(parsed, dict):
            return {}, "config column is not a JSON object"
        config = {k: unwrap_config_value(v) for k, v in parsed.items()}
    for column in config_columns:
        cell = row.get(column) or ""
        if cell.strip():
            set_nested(config, column.split("."), _parse_cell(cell.strip()))
    config.pop("_wandb", None)
    return config, None


def read_history_table(path: Path, keep: Callable[[str], bool]) -> pd.DataFrame:
    """One exported history file (.parquet or .csv): its step columns (`_step`, `step`,
    `training/global_step`) and the columns `keep` accepts, the others left unread."""
    def wanted(column: Any) -> bool:
        return column in _STEP_COLUMNS or keep(str(column))

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path, columns=[c for c in pq.read_schema(path).names if wanted(c)])
        # Arrow's allocator keeps the decoding buffers (twice the table) for reuse: give them
        # back, or the run's normalisation adds to them (a 10^6-row run: 170 MB less at peak)
        pa.default_memory_pool().release_unused()
        return frame
    return pd.read_csv(path, usecols=wanted)


def load_export_dir(directory: str | os.PathLike, key_patterns: Sequence[str] = ()) -> dict:
    """Read an export directory -> runs, history, excluded frames (snapshot schema).

    runs.csv: run_id, name, optional state / start_time (or created_at) / updated_at / tags (a
    JSON list or `;`-separated) / group, and the config as a `config` JSON column and/or dotted
    columns (`data.train_batch_size`). Runs sharing a name whose history starts at a later step
    are resumed segments and are stitched (see cbs_rlvr/data/resume.py). Each run's
    history is history/<run_id>.parquet or .csv (parquet preferred when both exist); of it only
    the step and the keys the analysis reads are kept (`history.analysis_key_filter`, plus
    `key_patterns`).
    """
    keep = analysis_key_filter(tuple(key_patterns))
    directory = Path(directory)
    try:
        table = pd.read_csv(directory / "runs.csv", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot read {directory / 'runs.csv'}: {exc}") from None
    missing = [c for c in ("run_id", "name") if c not in table.columns]
    if missing:
        raise DataSourceError(f"{directory / 'runs.csv'} lacks column(s) {', '.join(missing)}")
    config_columns = [c for c in table.columns if c not in _EXPORT_META_COLUMNS]
    entries: list[dict] = []
    seen: set[str] = set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        run_id, name = row["run_id"].strip(), row["name"].strip() or None
        base = {"source": f"runs.csv:{line}", "run_id": run_id or None, "name": name}
        if not run_id or not _SAFE_RUN_ID.fullmatch(run_id):
            entries.append({"kind": "excluded", "row": {**base, "reason": f"missing or invalid run_id {run_id!r} in runs.csv line {line}"}})
            continue
        if run_id in seen:
            entries.append({"kind": "excluded", "row": {**base, "reason": f"duplicate run_id {run_id!r} (runs.csv line {line} repeats an earlier row)"}})
            continue
        seen.add(run_id)
        config, problem = _export_config(row, config_columns)
        if problem:
            entries.append({"kind": "excluded", "row": {**base, "reason": problem}})
            continue
        candidates = [directory / "history" / f"{run_id}{ext}" for ext in (".parquet", ".csv")]
        history_path = next((p for p in candidates if p.is_file()), None)
        if history_path is None:
            reason = f"no history file history/{run_id}.parquet or history/{run_id}.csv"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason}})
            continue
        base["source"] = history_path.relative_to(directory).as_posix()
        try:
            frame = read_history_table(history_path, keep)
        except Exception as exc:  # noqa: BLE001 -- any parser error means the same: unreadable file
            reason = f"cannot read history file {base['source']}: {type(exc).__name__}: {exc}"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason.splitlines()[0]}})
            continue
        if not set(_STEP_COLUMNS) & set(frame.columns):
            reason = f"history file {base['source']} has no step column (step, _step or training/global_step)"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason}})
            continue
        log_steps = history_frame_steps(frame)
        log_steps = log_steps[np.isfinite(log_steps)]
        raw = {
            **base,
            "config": config,
            "state": row.get("state") or "unknown",
            "history_frame": frame,
            "start_time": row.get("start_time") or row.get("created_at") or None,
            "updated_at": row.get("updated_at") or row.get("heartbeat_at") or None,
            "wandb_last_step": int(log_steps.max()) if log_steps.size else None,
            "tags": row.get("tags") or None,  # a JSON list or `;`-separated
            "group": (row.get("group") or "").strip() or None,
        }
        entries.append(normalise_raw_run(raw, key_patterns))
    return assemble_snapshot_frames(entries)


