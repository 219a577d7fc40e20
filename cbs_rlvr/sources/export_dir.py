"""Export directories: `runs.csv` plus `history/<run_id>.csv|parquet` (format in the README)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataSourceError
from ..runs import analysis_key_filter, assemble_snapshot_frames, normalise_raw_run, set_nested, unwrap_config_value

# --------------------------------------------------------------------------------------------
# Export directory: runs.csv + history/<run_id>.csv|parquet
# --------------------------------------------------------------------------------------------
_EXPORT_META_COLUMNS = {"run_id", "name", "state", "config", "start_time", "created_at",
                        "updated_at", "heartbeat_at", "tags", "group"}
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def history_rows_from_frame(frame: pd.DataFrame) -> tuple[list[dict], int]:
    """A wide history table (step column + metric columns) -> (rows in file order, n_non_numeric).

    Step column: `_step`, else `step`; `training/global_step` (if present) takes precedence per
    row later. An empty cell means "not logged"; a non-numeric cell is counted and becomes NaN.
    """
    step_column = "_step" if "_step" in frame.columns else "step" if "step" in frame.columns else None
    metric_columns = [c for c in frame.columns if c not in ("_step", "step")]
    n_non_numeric = 0
    numeric: dict[str, np.ndarray] = {}
    for column in metric_columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        n_non_numeric += int((values.isna() & frame[column].notna()).sum())
        numeric[str(column)] = values.to_numpy(dtype="float64", na_value=np.nan)
    steps = (pd.to_numeric(frame[step_column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
             if step_column else np.arange(len(frame), dtype="float64"))
    rows = []
    for i in range(len(frame)):
        row: dict[str, Any] = {"_step": steps[i]}
        for column, values in numeric.items():
            if not np.isnan(values[i]):
                row[column] = values[i]
        rows.append(row)
    return rows, n_non_numeric


def read_history_table(path: Path) -> pd.DataFrame:
    """One exported history file (.parquet or .csv)."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def load_export_dir(directory: str | os.PathLike, key_patterns: Sequence[str] = ()) -> dict:
    """Read an export directory -> runs, history, excluded frames (snapshot schema).

    runs.csv: run_id, name, optional state / start_time (or created_at) / updated_at / tags (a
    JSON list or `;`-separated) / group, and the config as a `config` JSON column and/or dotted
    columns (`data.train_batch_size`). Runs sharing a name whose history starts at a later step
    are resumed segments and are stitched (see cbs_rlvr/resume.py). Each run's
    history is history/<run_id>.parquet or .csv (parquet preferred when both exist); of it only
    the step and the keys the analysis reads are kept (`runs.analysis_key_filter`, plus
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
            frame = read_history_table(history_path)
        except Exception as exc:  # noqa: BLE001 -- any parser error means the same: unreadable file
            reason = f"cannot read history file {base['source']}: {type(exc).__name__}: {exc}"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason.splitlines()[0]}})
            continue
        if not {"_step", "step", "training/global_step"} & set(frame.columns):
            reason = f"history file {base['source']} has no step column (step, _step or training/global_step)"
            entries.append({"kind": "excluded", "row": {**base, "reason": reason}})
            continue
        frame = frame[[c for c in frame.columns if c in ("_step", "step") or keep(str(c))]]
        rows, n_non_numeric = history_rows_from_frame(frame)
        steps = [r["_step"] for r in rows if math.isfinite(r["_step"])]
        raw = {
            **base,
            "config": config,
            "state": row.get("state") or "unknown",
            "rows": rows,
            "n_non_numeric": n_non_numeric,
            "start_time": row.get("start_time") or row.get("created_at") or None,
            "updated_at": row.get("updated_at") or row.get("heartbeat_at") or None,
            "wandb_last_step": int(max(steps)) if steps else None,
            "tags": row.get("tags") or None,  # a JSON list or `;`-separated
            "group": (row.get("group") or "").strip() or None,
        }
        entries.append(normalise_raw_run(raw, key_patterns))
    return assemble_snapshot_frames(entries)


